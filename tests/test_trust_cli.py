"""Issue #16 for the command line and Dask: outputs that cannot misalign, problems found before the
work, errors that name the real file, the cache and the worker's own traceback.

Fast: three 16x16 images, image_size=32, the bundled backbone's blocks.1.
"""

import errno
import os
import pathlib
import traceback

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.base import BaseEstimator, TransformerMixin

from skdeep import PretrainedCNNFeatures
from skdeep.cli import main
from skdeep.datasets import find_images

FAST = ["--layer", "blocks.1", "--image-size", "32", "--precision", "fp32", "--no-progress"]
TEMPORARY = ".out."  # the prefix of the hidden temporaries of OUT ("out.npy", "out.paths.txt")


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _error_line(err):
    """The one `skdeep: error:` line, with no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert lines and lines[-1].startswith("skdeep: error: "), err
    assert sum(line.startswith("skdeep: error: ") for line in lines) == 1, err
    return lines[-1]


def _folder(root, names):
    """Images of clearly different brightness under ``root``, one per name (str or bytes)."""
    os.makedirs(root, exist_ok=True)
    for value, name in zip((30, 130, 230), names):
        pixels = np.full((16, 16, 3), value, dtype=np.uint8)
        pixels[::3] = 255 - value  # some structure, so that the features differ
        folder = os.fsencode(root) if isinstance(name, bytes) else root
        with open(os.path.join(folder, name), "wb") as file:
            Image.fromarray(pixels).save(file, format="PNG")
    return root


@pytest.fixture
def no_embedding(monkeypatch):
    """Replaces the embedding by a recorder: the test asserts the work was not started."""
    calls = []

    def transform(self, X):
        calls.append(len(X))
        raise AssertionError("the images were embedded before the output was checked")

    monkeypatch.setattr(PretrainedCNNFeatures, "transform", transform)
    return calls


def _old_pair(out):
    """An earlier run's .npy and sidecar, to check they survive a failed run."""
    sidecar = out.with_suffix(".paths.txt")
    np.save(out, np.zeros((1, 1), dtype=np.float32))
    sidecar.write_text("old.png\n", encoding="utf-8")
    return sidecar


def _assert_old_pair_intact(out, sidecar):
    np.testing.assert_array_equal(np.load(out), np.zeros((1, 1), dtype=np.float32))
    assert sidecar.read_text(encoding="utf-8") == "old.png\n"
    assert not [name for name in os.listdir(out.parent) if name.startswith(TEMPORARY)]


# --- defect 10: the .paths.txt sidecar maps every row, whatever the file names ------------------


def test_newline_filename_roundtrips_through_the_npy_sidecar(tmp_path, capsys):
    from skdeep.cli import read_paths

    folder = _folder(tmp_path / "photos", ["a\nb.png", "c.png", '"quoted".png'])
    out = tmp_path / "out.npy"
    code, _, err = _run(["extract", folder, "-o", out, *FAST], capsys)
    assert code == 0, err
    matrix = np.load(out)
    sidecar = tmp_path / "out.paths.txt"
    assert len(sidecar.read_text(encoding="utf-8").splitlines()) == len(matrix) == 3
    paths = read_paths(sidecar)
    assert paths == find_images(folder)
    assert paths[1] == str(folder / "a\nb.png")  # sorted: '"quoted"', 'a\nb', 'c'
    # every row is the features of the image its sidecar line names
    expected = PretrainedCNNFeatures(layer="blocks.1", image_size=32, precision="fp32").fit()
    np.testing.assert_allclose(matrix, expected.transform(paths), rtol=1e-5, atol=1e-6)
    # plain names stay plain lines, as before
    assert sidecar.read_text(encoding="utf-8").splitlines()[2] == str(folder / "c.png")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_newline_filename_roundtrips_through_tables(tmp_path, capsys, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    folder = _folder(tmp_path / "photos", ["a\nb.png", "c.png", "d\r.png"])
    out = tmp_path / f"out{suffix}"
    code, _, err = _run(["extract", folder, "-o", out, *FAST], capsys)
    assert code == 0, err
    frame = pd.read_csv(out, index_col="path") if suffix == ".csv" else pd.read_parquet(out)
    assert frame.index.tolist() == find_images(folder) and len(frame) == 3


@pytest.fixture
def non_utf8_folder(tmp_path):
    try:
        return _folder(tmp_path / "photos", [b"\xff.png", b"b.png", b"c.png"])
    except (OSError, UnicodeError):  # a file system that only takes UTF-8 names (macOS)
        pytest.skip("this file system refuses file names that are not UTF-8")


def test_non_utf8_filename_roundtrips_through_the_npy_sidecar(non_utf8_folder, tmp_path, capsys):
    from skdeep.cli import read_paths

    out = tmp_path / "out.npy"
    code, _, err = _run(["extract", non_utf8_folder, "-o", out, *FAST], capsys)
    assert code == 0, err
    paths = read_paths(tmp_path / "out.paths.txt")
    assert [os.path.basename(os.fsencode(p)) for p in paths] == [b"b.png", b"c.png", b"\xff.png"]
    assert len(np.load(out)) == 3


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_non_utf8_filename_fails_before_embedding_for_tables(non_utf8_folder, tmp_path, capsys,
                                                            no_embedding, suffix):
    out = tmp_path / f"out{suffix}"
    code, _, err = _run(["extract", non_utf8_folder, "-o", out, *FAST], capsys)
    assert code == 1 and no_embedding == []
    line = _error_line(err)
    assert "row 2" in line and r"\udcff.png" in line and "UTF-8" in line and ".npy" in line
    assert not out.exists()


@pytest.mark.parametrize("failing", ["npy", "sidecar"])
def test_failure_between_the_two_writes_leaves_the_old_pair(tmp_path, capsys, monkeypatch, failing):
    folder = _folder(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out.npy"
    sidecar = _old_pair(out)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if failing == "npy":
        monkeypatch.setattr(np.lib.format, "open_memmap", disk_full)
    else:
        write_text = pathlib.Path.write_text
        monkeypatch.setattr(pathlib.Path, "write_text", lambda self, *a, **k: (
            disk_full() if ".paths.txt" in self.name else write_text(self, *a, **k)))
    code, _, err = _run(["extract", folder, "-o", out, *FAST], capsys)
    assert code == 1
    assert "No space left" in _error_line(err)
    _assert_old_pair_intact(out, sidecar)


# --- defect 15a: output problems are found before the work, under the output's real name -------


def test_unwritable_output_folder_is_found_before_embedding(tmp_path, capsys, no_embedding):
    folder = _folder(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    out = a_file / "out.npy"
    code, _, err = _run(["extract", folder, "-o", out, *FAST], capsys)
    assert code == 1 and no_embedding == []
    line = _error_line(err)
    assert str(out) in line and "notes.txt" in line and "is a file" in line


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root writes into read-only folders")
def test_read_only_output_folder_is_found_before_embedding(tmp_path, capsys, no_embedding):
    folder = _folder(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, err = _run(["extract", folder, "-o", locked / "out.csv", *FAST], capsys)
    finally:
        locked.chmod(0o755)
    assert code == 1 and no_embedding == []
    line = _error_line(err)
    assert str(locked / "out.csv") in line and TEMPORARY not in line


@pytest.mark.parametrize("taken", ["out.npy", "out.paths.txt"])
def test_output_that_is_a_folder_is_found_before_embedding(tmp_path, capsys, no_embedding, taken):
    folder = _folder(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    (tmp_path / taken).mkdir()
    code, _, err = _run(["extract", folder, "-o", tmp_path / "out.npy", *FAST], capsys)
    assert code == 1 and no_embedding == []
    line = _error_line(err)
    assert str(tmp_path / taken) in line and "folder" in line


def test_report_folder_that_is_a_file_is_found_before_evaluating(tmp_path, capsys, monkeypatch):
    import skdeep.evaluation

    calls = []
    monkeypatch.setattr(skdeep.evaluation, "evaluate", lambda *a, **k: calls.append(1))
    report = tmp_path / "report"
    report.write_text("a file where the report folder should go")
    code, _, err = _run(["evaluate", "-o", report, "--image-size", "32"], capsys)
    assert code == 1 and calls == []
    assert str(report) in _error_line(err)


def test_write_failure_names_the_real_output_not_the_temporary(tmp_path, capsys, monkeypatch):
    folder = _folder(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out.npy"

    def disk_full(file, *args, **kwargs):  # as numpy reports it: under the file it writes
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))

    monkeypatch.setattr(np.lib.format, "open_memmap", disk_full)
    code, _, err = _run(["extract", folder, "-o", out, *FAST], capsys)
    assert code == 1
    line = _error_line(err)
    assert "No space left on device" in line and str(out) in line and TEMPORARY not in line
    assert os.listdir(tmp_path) == ["photos"]  # no temporary left behind


# --- defect 15b: a broken feature cache is one line naming it ----------------------------------


@pytest.mark.parametrize("broken", ["a folder"])  # a damaged file is healed: test_long_jobs
def test_sqlite_errors_name_the_cache_in_one_line(tmp_path, capsys, broken):
    folder = _folder(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    cache = tmp_path / "cache"
    cache.mkdir()
    database = cache / "features.sqlite"  # the cache's one database file
    if broken == "a folder":
        database.mkdir()  # sqlite3.OperationalError: unable to open database file
    else:
        database.write_bytes(b"this is not an SQLite database" * 100)  # sqlite3.DatabaseError
    code, _, err = _run(["extract", folder, "-o", tmp_path / "out.npy", "--cache", cache, *FAST],
                        capsys)
    assert code == 1
    line = _error_line(err)
    assert str(cache) in line and "--cache" in line


# --- defect 15c: a Dask worker's error keeps its type, message, notes and traceback ------------


class _RowError(TransformerMixin, BaseEstimator):
    """Fails on the block holding "bad" with a two-line message, a note and an attribute."""

    def __init__(self, kind="value"):
        self.kind = kind

    def fit(self, X=None, y=None):
        self.fitted_ = True
        return self

    def get_feature_names_out(self, input_features=None):
        return np.asarray(["f0"], dtype=object)

    def transform(self, X):
        if "bad" not in list(X):
            return np.zeros((len(X), 1), dtype=np.float32)
        row = list(X).index("bad")
        if self.kind == "oserror":
            raise OSError(errno.EIO, f"row {row} cannot be read", "bad.png")
        error = ValueError(f"row {row} is bad\n    second line of the message")
        error.add_note("a note for the user")
        error.path = "bad.png"
        raise error


def test_dask_worker_error_keeps_type_message_notes_and_traceback():
    da = pytest.importorskip("dask.array")
    import skdeep.dask as skdask

    X = da.from_array(np.asarray(["a", "b", "c", "d", "bad", "f"], dtype=object), chunks=3)
    with pytest.raises(ValueError) as raised:
        skdask.transform(_RowError().fit(), X).compute(scheduler="sync")
    error = raised.value
    # Another estimator's message is its own (skdeep names rows globally in its own messages
    # only); a note says which block raised it.
    assert str(error) == "row 1 is bad\n    second line of the message"
    assert error.__notes__ == ["a note for the user",
                               "(skdeep.dask: raised while transforming the block of rows 3 to 5)"]
    assert error.path == "bad.png"
    # the error's own traceback reaches the line that raised it, not only skdeep.dask's re-raise
    frames = [frame.name for frame in traceback.extract_tb(error.__traceback__)]
    assert frames[-1] == "transform" and "_run" in frames


def test_dask_worker_oserror_keeps_errno_and_filename():
    da = pytest.importorskip("dask.array")
    import skdeep.dask as skdask

    X = da.from_array(np.asarray(["a", "b", "c", "d", "bad", "f"], dtype=object), chunks=3)
    with pytest.raises(OSError) as raised:
        skdask.transform(_RowError(kind="oserror").fit(), X).compute(scheduler="sync")
    error = raised.value
    assert error.errno == errno.EIO and error.filename == "bad.png"
    assert error.strerror == "row 1 cannot be read"
    assert error.__notes__ == ["(skdeep.dask: raised while transforming the block of rows 3 to 5)"]


# --- issue 20, item 1: an output never replaces an input ---------------------------------------


def _table(path, folder):
    """A labelled table of the images of ``folder``, written as CSV, parquet or TSV by suffix."""
    frame = pd.DataFrame({"path": find_images(folder), "label": ["x", "y", "z"]})
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, index=False)
    return path.read_bytes()


def _refused(argv, capsys, table, before):
    code, _, err = _run(["extract", *argv, *FAST], capsys)
    assert code == 1
    line = _error_line(err)
    assert "is the input" in line and table.name in line, line
    assert table.read_bytes() == before  # the labels are still there
    return line


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_output_that_is_the_input_table_is_refused(tmp_path, capsys, monkeypatch, no_embedding,
                                                   suffix):
    folder = _folder(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    table = tmp_path / f"index{suffix}"
    before = _table(table, folder)
    monkeypatch.chdir(tmp_path)
    _refused([table, "-o", table], capsys, table, before)
    _refused([table.name, "-o", f".{os.sep}{table.name}"], capsys, table, before)  # other spelling
    assert no_embedding == [] and sorted(os.listdir(tmp_path)) == ["index" + suffix, "photos"]


@pytest.mark.parametrize("link", ["symbolic", "hard"])
@pytest.mark.parametrize("written", ["out.csv", "out.csv.json", "out.csv.partial",
                                     "out.csv.partial.json"])
def test_output_file_linked_to_the_input_table_is_refused(tmp_path, capsys, no_embedding, link,
                                                          written):
    folder = _folder(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    table = tmp_path / "index.csv"
    before = _table(table, folder)
    (os.symlink if link == "symbolic" else os.link)(table, tmp_path / written)
    line = _refused([table, "-o", tmp_path / "out.csv"], capsys, table, before)
    assert str(tmp_path / written) in line
    assert no_embedding == []


def test_npy_sidecar_that_is_the_input_table_is_refused(tmp_path, capsys, no_embedding):
    folder = _folder(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    table = tmp_path / "features.paths.txt"  # a comma-separated .txt table
    before = _table(table, folder)
    line = _refused([table, "-o", tmp_path / "features.npy"], capsys, table, before)
    assert "its file" in line and no_embedding == []


def test_an_existing_output_that_is_no_input_is_still_replaced(tmp_path, capsys):
    folder = _folder(tmp_path / "photos", ["a.png", "b.png", "c.png"])
    table = tmp_path / "index.csv"
    _table(table, folder)
    out = tmp_path / "out.csv"
    out.write_text("an earlier run's features\n")
    code, _, err = _run(["extract", table, "-o", out, *FAST], capsys)
    assert code == 0, err
    assert pd.read_csv(out, index_col=0).shape[0] == 3
