"""Issue #14, long jobs that survive: the cache and `skdeep extract` keep their work as they go,
resume after a kill or Ctrl-C, and heal a damaged cache.

Fast and deterministic: ten 16x16 images, image_size=32, fp32, the bundled backbone's blocks.1,
batches of 2 returned one at a time (``_FLUSH_EVERY = 1``), so that a job stopped at batch k has
committed exactly k batches. Killed children tell the parent where they are through a file.
"""

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skdeep import FeatureCache, PretrainedCNNFeatures
from skdeep import _inference, _layers
from skdeep import features as features_module
from skdeep._outputs import ResumableOutput, output_files, partial_files
from skdeep.cache import DamagedCacheWarning, IncompatibleCacheError
from skdeep.cli import main, read_paths
from skdeep.datasets import find_images

N_IMAGES, BATCH, STOP_AFTER = 10, 2, 2  # a job stopped at its 3rd batch has committed 4 rows
PARAMS = {"layer": "blocks.1", "image_size": 32, "precision": "fp32", "batch_size": BATCH,
          "compile": False}
FAST = ["--layer", "blocks.1", "--image-size", "32", "--precision", "fp32", "--batch-size",
        str(BATCH), "--compile", "off", "--no-progress"]


@pytest.fixture(autouse=True)
def _one_batch_per_chunk(monkeypatch):
    monkeypatch.setattr(_inference, "_FLUSH_EVERY", 1)


@pytest.fixture
def photos(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(N_IMAGES):
        pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"{i:02d}.png")
    return root


@pytest.fixture
def forwarded(monkeypatch):
    """Counts the images that go through the network."""
    seen = []
    original = _layers.FeatureExtractor.forward
    monkeypatch.setattr(_layers.FeatureExtractor, "forward",
                        lambda self, x: seen.append(len(x)) or original(self, x))
    return seen


@contextlib.contextmanager
def _ctrl_c_after(batches):
    """Ctrl-C (KeyboardInterrupt) in the forward pass of batch ``batches + 1``."""
    calls = []
    original = _layers.FeatureExtractor.forward

    def forward(self, x):
        calls.append(len(x))
        if len(calls) > batches:
            raise KeyboardInterrupt
        return original(self, x)

    _layers.FeatureExtractor.forward = forward
    try:
        yield
    finally:
        _layers.FeatureExtractor.forward = original


def _cnn(cache=None, **params):
    return PretrainedCNNFeatures(**{**PARAMS, "cache": cache, **params})


def _assert_same_output(out, whole):
    """Byte for byte, but for the time in the provenance of a parquet file (its metadata)."""
    if out.suffix != ".parquet":
        assert out.read_bytes() == whole.read_bytes()
        return
    import pyarrow.parquet as pq

    tables = [pq.read_table(path) for path in (out, whole)]
    metadata = [dict(table.schema.metadata) for table in tables]
    records = [json.loads(data.pop(b"skdeep.provenance")) for data in metadata]
    assert metadata[0] == metadata[1]
    assert [{k: v for k, v in record.items() if k != "fitted_at"} for record in records] == [
        {k: v for k, v in records[1].items() if k != "fitted_at"}] * 2
    assert tables[0].replace_schema_metadata().equals(tables[1].replace_schema_metadata())
    assert out.stat().st_size == whole.stat().st_size  # same row groups, same encoding


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    _, err = capsys.readouterr()
    return code, err


# A child process that blocks (forever) in the forward pass of batch STOP_AFTER + 1, after
# writing the file SIGNAL: the parent then kills it with SIGKILL.
_BLOCKING_CHILD = """
    import sys, time
    from skdeep import _inference, _layers
    _inference._FLUSH_EVERY = 1
    signal_file, stop_after = sys.argv[1], int(sys.argv[2])
    original, calls = _layers.FeatureExtractor.forward, []

    def forward(self, x):
        calls.append(len(x))
        if len(calls) > stop_after:
            open(signal_file, "w").close()
            time.sleep(600)
        return original(self, x)

"""


def _run_until_blocked(script, signal_file, args=()):
    """Start a child, wait for it to block, SIGKILL it."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), str(signal_file),
                              str(STOP_AFTER), *map(str, args)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not signal_file.exists():
        if child.poll() is not None:
            raise AssertionError(f"the child ended early: {child.communicate()}")
        assert time.monotonic() < deadline, "the child never reached its blocking batch"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL


# --- 1. the cache commits as the job goes ------------------------------------------------------


def test_killed_cached_transform_resumes_without_recomputing(tmp_path, photos, forwarded):
    paths = find_images(photos)
    script = _BLOCKING_CHILD + """
    _layers.FeatureExtractor.forward = forward
    from skdeep import PretrainedCNNFeatures
    paths = sys.argv[3:-1]
    PretrainedCNNFeatures(layer="blocks.1", image_size=32, precision="fp32", batch_size=2,
                          compile=False, cache=sys.argv[-1]).fit().transform(paths)
    """
    _run_until_blocked(script, tmp_path / "blocked", [*paths, tmp_path / "cache"])
    committed = STOP_AFTER * BATCH
    assert FeatureCache(tmp_path / "cache").info().entries == committed

    cnn = _cnn(FeatureCache(tmp_path / "cache")).fit()
    forwarded.clear()
    resumed = cnn.transform(paths)
    info = cnn.cache_info()
    assert (info.hits, info.misses) == (committed, N_IMAGES - committed)
    assert sum(forwarded) == N_IMAGES - committed  # committed rows never went through again
    np.testing.assert_array_equal(resumed, _cnn().fit().transform(paths))


def test_ctrl_c_in_transform_keeps_the_committed_chunks(tmp_path, photos):
    paths = find_images(photos)
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt) as interrupted, _ctrl_c_after(STOP_AFTER):
        _cnn(cache).fit().transform(paths)
    assert "the same call again computes only the rest" in "".join(interrupted.value.__notes__)
    assert cache.info().entries == STOP_AFTER * BATCH
    before = cache.info().misses
    np.testing.assert_array_equal(_cnn(cache).fit().transform(paths), _cnn().fit().transform(paths))
    assert cache.info().misses - before == N_IMAGES - STOP_AFTER * BATCH


def test_all_layers_of_a_row_are_committed_together(tmp_path, photos):
    paths = find_images(photos)
    cache = FeatureCache(tmp_path / "cache")
    with pytest.raises(KeyboardInterrupt), _ctrl_c_after(STOP_AFTER):
        _cnn(cache, cache_layers=["blocks.2", "penultimate"]).fit().transform(paths)
    with sqlite3.connect(tmp_path / "cache" / "features.sqlite") as connection:
        per_image = dict(connection.execute(
            "SELECT image_key, COUNT(*) FROM features GROUP BY image_key").fetchall())
    assert len(per_image) == STOP_AFTER * BATCH and set(per_image.values()) == {3}


def test_hits_and_misses_interleave_in_bounded_blocks(tmp_path, photos, monkeypatch):
    paths = find_images(photos)
    cache = FeatureCache(tmp_path / "cache")
    _cnn(cache).fit().transform(paths[::3])  # rows 0, 3, 6 and 9 are hits
    monkeypatch.setattr(features_module, "_BLOCK_BYTES", 4 * 24 * 3)  # 3 rows per block
    cnn = _cnn(cache).fit()
    blocks = list(cnn.iter_transform(paths))
    assert max(len(block) for block in blocks) <= 3
    np.testing.assert_array_equal(np.concatenate(blocks), _cnn().fit().transform(paths))
    assert (cnn.cache_info().hits, cnn.cache_info().misses) == (4, 4 + 6)


def test_entries_gone_after_the_lookup_are_computed_again(tmp_path, photos, monkeypatch):
    paths = find_images(photos)
    cache = FeatureCache(tmp_path / "cache")
    _cnn(cache).fit().transform(paths[:4])
    # Another process evicts (or a damaged cache is replaced) between lookup and read.
    monkeypatch.setattr(FeatureCache, "contains", lambda self, layers, keys, widths: set(keys))
    rows = _cnn(cache).fit().transform(paths)
    np.testing.assert_array_equal(rows, _cnn().fit().transform(paths))
    assert cache.info().entries == N_IMAGES
    assert (cache.info().hits, cache.info().misses) == (4, 4 + 6)


def test_a_transaction_left_open_by_an_interruption_is_rolled_back(tmp_path):
    cache = FeatureCache(tmp_path)
    cache._connection().execute("BEGIN IMMEDIATE")  # Ctrl-C between BEGIN and COMMIT
    cache.put("layer", {"image": np.ones(3, np.float32)})
    assert cache.get("layer", ["image"], width=3).keys() == {"image"}


# --- 2 and 4. skdeep extract streams, resumes, and says how --------------------------------------


def test_killed_extract_resumes_to_the_same_file(tmp_path, photos, capsys, forwarded):
    pytest.importorskip("pyarrow")
    out = tmp_path / "out.parquet"
    partial, state = partial_files(out)
    script = _BLOCKING_CHILD + """
    import runpy
    _layers.FeatureExtractor.forward = forward
    sys.argv = ["skdeep", "extract", *sys.argv[3:]]
    runpy.run_module("skdeep", run_name="__main__")
    """
    _run_until_blocked(script, tmp_path / "blocked", [photos, "-o", out, *FAST])
    assert not out.exists()  # never a partial output under the output's name
    assert json.loads(state.read_text())["rows"] == STOP_AFTER * BATCH
    with pytest.raises(Exception):
        pd.read_parquet(partial)  # and the partial file is no parquet file either

    forwarded.clear()
    code, err = _run(["extract", photos, "-o", out, *FAST], capsys)
    assert code == 0, err
    assert f"Resuming: {STOP_AFTER * BATCH} of {N_IMAGES} row(s) reused from {partial}" in err
    assert sum(forwarded) == N_IMAGES - STOP_AFTER * BATCH
    assert not partial.exists() and not state.exists()
    whole = tmp_path / "whole.parquet"
    assert _run(["extract", photos, "-o", whole, *FAST], capsys)[0] == 0
    _assert_same_output(out, whole)
    assert pd.read_parquet(out).index.tolist() == find_images(photos)


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".parquet"])
def test_ctrl_c_in_extract_says_how_to_resume_and_the_rerun_equals_a_whole_run(
        tmp_path, photos, capsys, suffix):
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    out = tmp_path / f"out{suffix}"
    with _ctrl_c_after(STOP_AFTER):
        code, err = _run(["extract", photos, "-o", out, *FAST], capsys)
    assert code == 130 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last == (f"skdeep: interrupted; {STOP_AFTER * BATCH} of {N_IMAGES} row(s) are kept in "
                    f"{partial_files(out)[0]}: run the same command again to resume")
    assert not out.exists()

    code, err = _run(["extract", photos, "-o", out, *FAST], capsys)
    assert code == 0 and "Resuming: 4 of 10 row(s) reused" in err
    whole = tmp_path / f"whole{suffix}"
    assert _run(["extract", photos, "-o", whole, *FAST], capsys)[0] == 0
    _assert_same_output(out, whole)
    if suffix == ".npy":
        assert read_paths(tmp_path / "out.paths.txt") == find_images(photos)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["photos"] + [path.name for target in (out, whole) for path in output_files(target)])


def test_extract_with_a_cache_resumes_from_the_output_and_the_cache(tmp_path, photos, capsys):
    out, cache = tmp_path / "out.npy", tmp_path / "cache"
    with _ctrl_c_after(STOP_AFTER):
        assert _run(["extract", photos, "-o", out, "--cache", cache, *FAST], capsys)[0] == 130
    assert FeatureCache(cache).info().entries == STOP_AFTER * BATCH
    code, err = _run(["extract", photos, "-o", out, "--cache", cache, *FAST], capsys)
    assert code == 0 and "Resuming: 4 of 10" in err
    np.testing.assert_array_equal(np.load(out), _cnn().fit().transform(find_images(photos)))


@pytest.mark.parametrize("change, named", [
    (["--layer", "blocks.2"], "columns, layers"),
    (["--pooling", "max"], "pooling"),
    (["--on-error", "nan"], "on_error"),
])
def test_a_partial_output_of_other_settings_is_not_resumed(tmp_path, photos, capsys, change,
                                                           named):
    out = tmp_path / "out.npy"
    with _ctrl_c_after(STOP_AFTER):
        assert _run(["extract", photos, "-o", out, *FAST], capsys)[0] == 130
    code, err = _run(["extract", photos, "-o", out, *FAST, *change], capsys)
    assert code == 0 and "Resuming" not in err
    assert f"is made with other {named}: starting afresh" in err


def test_a_partial_output_of_edited_images_is_not_resumed(tmp_path, photos, capsys):
    out = tmp_path / "out.npy"
    with _ctrl_c_after(STOP_AFTER):
        assert _run(["extract", photos, "-o", out, *FAST], capsys)[0] == 130
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photos / "00.png")  # a committed row
    code, err = _run(["extract", photos, "-o", out, *FAST], capsys)
    assert code == 0 and "made with other inputs: starting afresh" in err
    np.testing.assert_array_equal(np.load(out), _cnn().fit().transform(find_images(photos)))


def test_overwrite_starts_afresh(tmp_path, photos, capsys, forwarded):
    out = tmp_path / "out.csv"
    with _ctrl_c_after(STOP_AFTER):
        assert _run(["extract", photos, "-o", out, *FAST], capsys)[0] == 130
    forwarded.clear()
    code, err = _run(["extract", photos, "-o", out, "--overwrite", *FAST], capsys)
    assert code == 0 and "Resuming" not in err
    assert sum(forwarded) == N_IMAGES


def test_a_second_run_on_the_same_output_is_refused_while_the_first_writes(tmp_path, photos,
                                                                          capsys):
    out = tmp_path / "out.npy"
    first = ResumableOutput(out, ["a.png"], ["f0"], {}, str)
    first.start()
    try:
        code, err = _run(["extract", photos, "-o", out, *FAST], capsys)
    finally:
        first.close()
    assert code == 1 and "another skdeep extract is writing it" in err and str(out) in err


def test_ctrl_c_before_any_row_leaves_no_file(tmp_path, photos, capsys):
    with _ctrl_c_after(0):
        code, err = _run(["extract", photos, "-o", tmp_path / "out.npy", *FAST], capsys)
    assert code == 130 and err.strip().splitlines()[-1] == "skdeep: interrupted"
    assert os.listdir(tmp_path) == ["photos"]


def test_ctrl_c_in_evaluate_says_how_to_keep_or_resume(tmp_path, capsys):
    argv = ["evaluate", "--max-images", "20", "--folds", "2", "--layers", "blocks.1",
            "--image-size", "32", "--no-progress", "-o", tmp_path / "report"]
    with _ctrl_c_after(0):
        code, err = _run(argv, capsys)
    assert code == 130 and "Traceback" not in err
    assert err.strip().splitlines()[-1].endswith("run it again with --cache DIR to keep the "
                                                 "features computed before an interruption")
    with _ctrl_c_after(0):
        code, err = _run([*argv, "--cache", tmp_path / "cache"], capsys)
    assert code == 130
    assert err.strip().splitlines()[-1].endswith(
        f"kept in the cache {tmp_path / 'cache'}: run the same command again to resume")


# --- 3. a damaged cache is moved aside, a newer one is refused clearly --------------------------


def _warm_cache(folder, paths):
    """A cache holding ``paths``' features, checkpointed into its database file."""
    _cnn(FeatureCache(folder)).fit().transform(paths)
    with sqlite3.connect(folder / "features.sqlite") as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        (root,) = connection.execute(
            "SELECT rootpage FROM sqlite_master WHERE name = 'features'").fetchone()
        (page_size,) = connection.execute("PRAGMA page_size").fetchone()
    return root, page_size


@pytest.mark.parametrize("damage", ["header", "table page"])
def test_a_damaged_cache_is_moved_aside_and_the_job_completes(tmp_path, photos, damage):
    paths = find_images(photos)
    folder = tmp_path / "cache"
    root, page_size = _warm_cache(folder, paths)
    database = folder / "features.sqlite"
    with open(database, "r+b") as file:  # a disk hiccup: garbage over part of the file
        file.seek(0 if damage == "header" else (root - 1) * page_size)
        file.write(b"\xa5" * 64)
    cache = FeatureCache(folder)
    with pytest.warns(DamagedCacheWarning) as caught:
        rows = _cnn(cache).fit().transform(paths)
    assert len(caught) == 1
    message = str(caught[0].message)
    moved = sorted(name for name in os.listdir(folder) if "damaged" in name)
    aside = moved[0]  # with its write-ahead log and shared memory, if any
    assert set(moved) <= {aside, f"{aside}-wal", f"{aside}-shm"}
    assert aside.startswith("features.sqlite.damaged-")
    assert str(database) in message and aside in message
    np.testing.assert_array_equal(rows, _cnn().fit().transform(paths))
    assert (folder / aside).stat().st_size > 0  # kept for inspection
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        cnn = _cnn(FeatureCache(folder)).fit()
        cnn.transform(paths)
    assert not [w for w in later if issubclass(w.category, DamagedCacheWarning)]  # healed
    assert (cnn.cache_info().hits, cnn.cache_info().misses) == (N_IMAGES, 0)


def test_a_damaged_cache_does_not_fail_extract(tmp_path, photos, capsys):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "features.sqlite").write_bytes(b"this is not an SQLite database" * 100)
    out = tmp_path / "out.npy"
    code, err = _run(["extract", photos, "-o", out, "--cache", cache, *FAST], capsys)
    assert code == 0, err
    warning = [line for line in err.splitlines() if line.startswith("skdeep: warning:")]
    assert len(warning) == 1 and "is damaged" in warning[0]
    assert str(cache / "features.sqlite") in warning[0]
    np.testing.assert_array_equal(np.load(out), _cnn().fit().transform(find_images(photos)))


def test_a_cache_from_a_newer_skdeep_is_refused_with_its_version(tmp_path, photos, capsys):
    folder = tmp_path / "cache"
    FeatureCache(folder).info()
    with sqlite3.connect(folder / "features.sqlite") as connection:
        connection.execute("PRAGMA user_version = 99")
        connection.execute("UPDATE meta SET value = '9.9.0' WHERE key = 'skdeep_version'")
    with pytest.raises(IncompatibleCacheError, match=r"written by skdeep 9\.9\.0") as raised:
        _cnn(FeatureCache(folder)).fit()
    assert str(folder) in str(raised.value) and "upgrade skdeep" in str(raised.value)
    code, err = _run(["extract", photos, "-o", tmp_path / "out.npy", "--cache", folder, *FAST],
                     capsys)
    assert code == 1 and "Traceback" not in err
    assert "skdeep: error: " in err and "9.9.0" in err
    assert [name for name in os.listdir(folder) if "damaged" in name] == []  # nothing moved


def test_a_cache_made_before_versions_is_adopted(tmp_path):
    folder = tmp_path / "cache"
    folder.mkdir()
    with sqlite3.connect(folder / "features.sqlite") as connection:  # the layout of skdeep 0.1
        connection.executescript("""
            CREATE TABLE features (layer_key TEXT NOT NULL, image_key TEXT NOT NULL,
                vector BLOB NOT NULL, nbytes INTEGER NOT NULL, last_used REAL NOT NULL,
                PRIMARY KEY (layer_key, image_key)) WITHOUT ROWID;
            INSERT INTO features VALUES ('layer', 'image', x'0000803f', 4, 0);
        """)
    # The layout is adopted; the entry, stored before vectors carried a checksum, is not served
    # (in use, its layer key holds the older feature format and is never looked up at all).
    with pytest.warns(DamagedCacheWarning):
        assert FeatureCache(folder).get("layer", ["image"], width=1) == {}
    with sqlite3.connect(folder / "features.sqlite") as connection:
        assert connection.execute("PRAGMA user_version").fetchone() == (1,)


# --- issue 20, item 4: a resumed extract verifies the rows it keeps ------------------------------


def _interrupted(tmp_path, photos, capsys, out):
    with _ctrl_c_after(STOP_AFTER):
        assert _run(["extract", photos, "-o", out, *FAST], capsys)[0] == 130
    return partial_files(out)


@pytest.mark.parametrize("tamper, reason", [
    (lambda s: {**s, "rows": s["rows"] + 3, "blocks": s["blocks"] + [[3, 12345]]}, "damaged"),
    (lambda s: {**s, "rows": s["rows"] + 3}, "not the file its state describes"),
    (lambda s: {k: v for k, v in s.items() if k != "blocks"}, "unreadable"),
    (lambda s: {**s, "version": 1}, "from another skdeep version"),
])
def test_a_state_claiming_rows_that_were_not_written_is_not_trusted(tmp_path, photos, capsys,
                                                                    tamper, reason):
    out = tmp_path / "out.npy"
    _, state = _interrupted(tmp_path, photos, capsys, out)
    state.write_text(json.dumps(tamper(json.loads(state.read_text()))))
    code, err = _run(["extract", photos, "-o", out, *FAST], capsys)
    assert code == 0 and "Resuming" not in err
    assert f"is {reason}" in err and "starting afresh" in err
    np.testing.assert_array_equal(np.load(out), _cnn().fit().transform(find_images(photos)))


def test_a_partial_file_of_the_same_shape_from_another_job_is_not_resumed(tmp_path, photos,
                                                                           capsys):
    other = tmp_path / "other"
    shutil.copytree(photos, other)
    for path in other.iterdir():  # other images, the same number and size
        Image.fromarray(255 - np.asarray(Image.open(path))).save(path)
    out, decoy = tmp_path / "out.npy", tmp_path / "decoy.npy"
    partial, _ = _interrupted(tmp_path, photos, capsys, out)
    decoy_partial, _ = _interrupted(tmp_path, other, capsys, decoy)
    os.replace(decoy_partial, partial)  # this job's state, another job's rows
    code, err = _run(["extract", photos, "-o", out, *FAST], capsys)
    assert code == 0 and "Resuming" not in err and "is damaged (rows 0 to" in err
    np.testing.assert_array_equal(np.load(out), _cnn().fit().transform(find_images(photos)))


def test_a_same_size_edit_with_its_mtime_put_back_is_not_resumed(tmp_path, photos, capsys):
    out = tmp_path / "out.npy"
    image = photos / "00.png"  # a committed row, stored uncompressed: any edit keeps its size
    Image.open(image).save(image, compress_level=0)
    _interrupted(tmp_path, photos, capsys, out)
    before = os.stat(image)
    Image.fromarray(255 - np.asarray(Image.open(image))).save(image, compress_level=0)
    assert os.stat(image).st_size == before.st_size
    os.utime(image, ns=(before.st_atime_ns, before.st_mtime_ns))  # `touch -r`: mtime put back
    code, err = _run(["extract", photos, "-o", out, *FAST], capsys)
    assert code == 0 and "made with other inputs: starting afresh" in err
    np.testing.assert_array_equal(np.load(out), _cnn().fit().transform(find_images(photos)))
