"""Damaged and hostile inputs (issue #15): a corpus generated at test time, never committed.

Every case of the issue's list is written into a temporary folder and read by
``PretrainedCNNFeatures`` under ``on_error="raise"`` and ``"nan"``. Its documented outcome (the
table in docs/user_guide/inputs.rst) is one of

- ``ERROR``: wrong data or a bad table; a ``ValueError`` naming the row (or table and column),
  whatever ``on_error`` says;
- ``NAN``: messy data; :class:`BadImageError` naming the row and the path under "raise", a NaN row
  and a warning naming them under "nan", the other rows exactly those of a clean run;
- ``WORKS``: the features of what the case means (the first frame of an animated file, the
  16-bit pixels scaled by their range, the file behind an odd path...).

Each read runs in a thread with a deadline, so a regression that blocks (a FIFO, a device)
fails the test instead of hanging the suite. The case table is counted at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import struct
import sys
import threading
import warnings
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skdeep import BadImageError, PretrainedCNNFeatures
from skdeep._device import torch_threads
from skdeep._inputs import ImageDataset, decode
from skdeep.datasets import RESOLVED_PATH_COLUMN, read_image_table

ERROR, NAN, WORKS = "clear error", "NaN row", "works"
DEADLINE = 20  # seconds; a read of three tiny images takes well under one
POSIX = os.name == "posix"


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


# --- running a read under a deadline -----------------------------------------------------------


def within(seconds: float, work: Callable[[], Any]) -> Any:
    """``work()`` in a daemon thread: its result, its exception, or a failure if it blocks."""
    outcome: dict[str, Any] = {}

    def target():
        try:
            outcome["value"] = work()
        except BaseException as exc:  # re-raised in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        pytest.fail(f"the read did not return within {seconds} s: it blocks")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def unblock(path: Path) -> None:
    """Open a FIFO for writing, so that a reader stuck in open() returns (a failed test)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader waiting: nothing to release
        pass


@pytest.fixture
def fifos():
    """FIFOs made by a test; released at teardown in case a reader blocked on one."""
    made: list[Path] = []
    yield made
    for path in made:
        unblock(path)


# --- the clean images every case is read among -------------------------------------------------


@dataclass
class Clean:
    """Three small RGB images (rows 0, 1, 2) as arrays and PNG files."""

    arrays: np.ndarray
    paths: list[str]

    def around(self, item: Any) -> list:
        """``item`` as row 1, between the clean rows 0 and 2."""
        return [self.paths[0], item, self.paths[2]]


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Clean:
    folder = tmp_path_factory.mktemp("clean")
    arrays = np.random.default_rng(0).integers(0, 256, size=(3, 10, 12, 3), dtype=np.uint8)
    paths = []
    for i, pixels in enumerate(arrays):
        Image.fromarray(pixels).save(folder / f"clean{i}.png")
        paths.append(str(folder / f"clean{i}.png"))
    return Clean(arrays, paths)


@pytest.fixture(scope="module")
def cnn():
    with torch_threads(1):
        return PretrainedCNNFeatures(weights=None, random_state=0, image_size=32).fit()


@pytest.fixture(scope="module")
def clean_features(cnn, clean):
    return cnn.set_params(on_error="raise").transform(clean.paths)


# --- the corpus --------------------------------------------------------------------------------


@dataclass
class Trial:
    """What one case reads: ``X`` (or a table of paths), and what to compare it with."""

    X: Any
    path: str | None = None  # the bad file, which the error must name
    same_as: Any = None  # WORKS: an X whose features must be identical
    table: dict | None = None  # X is a table: read_image_table's keyword arguments


@dataclass(frozen=True)
class Case:
    name: str
    group: str  # "images", "arrays" or "tables"
    outcome: str
    match: str | None  # regex: in the error (ERROR, NAN) or in a warning (WORKS)
    build: Callable[[Clean, Path], Trial]
    posix_only: bool = False


CASES: list[Case] = []


def case(name: str, group: str, outcome: str, match: str | None = None, *,
         posix_only: bool = False):
    """Register the decorated ``build(clean, folder) -> Trial`` as a corpus case."""
    def register(build):
        CASES.append(Case(name, group, outcome, match, build, posix_only))
        return build
    return register


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` pixels, with almost no data behind it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def copy_of_row1(clean: Clean, folder: Path, name: str | bytes) -> Trial:
    """Clean row 1 under an odd file name: the same features as the clean run."""
    path = os.path.join(os.fsencode(folder), name) if isinstance(name, bytes) else folder / name
    shutil.copyfile(clean.paths[1], path)
    path = os.fsdecode(path)
    return Trial(clean.around(path), same_as=clean.paths)


# images: files that are not what they claim ---------------------------------------------------


@case("zero-byte file", "images", NAN, "cannot identify image file")
def _zero_bytes(clean, folder):
    path = folder / "empty.png"
    path.write_bytes(b"")
    return Trial(clean.around(str(path)), path=str(path))


@case("FIFO named like an image", "images", NAN, r"is a named pipe \(FIFO\)", posix_only=True)
def _fifo(clean, folder):
    path = folder / "pipe.png"
    os.mkfifo(path)
    return Trial(clean.around(str(path)), path=str(path))


@case("character device /dev/zero", "images", NAN, "is a character device", posix_only=True)
def _dev_zero(clean, folder):
    return Trial(clean.around("/dev/zero"), path="/dev/zero")


@case("character device /dev/null", "images", NAN, "is a character device", posix_only=True)
def _dev_null(clean, folder):
    return Trial(clean.around("/dev/null"), path="/dev/null")


@case("symbolic-link loop", "images", NAN, "cannot access", posix_only=True)
def _link_loop(clean, folder):
    os.symlink("b.png", folder / "a.png")
    os.symlink("a.png", folder / "b.png")
    return Trial(clean.around(str(folder / "a.png")), path=str(folder / "a.png"))


@case("directory named like an image", "images", NAN, "is a directory")
def _directory(clean, folder):
    path = folder / "photo.jpg"
    path.mkdir()
    return Trial(clean.around(str(path)), path=str(path))


@case("text file with an image extension", "images", NAN, "cannot identify image file")
def _text_as_png(clean, folder):
    path = folder / "notes.png"
    path.write_text("not an image\n")
    return Trial(clean.around(str(path)), path=str(path))


@case("PNG header claiming 100k x 100k px", "images", NAN, "(?i)decompression ?bomb")
def _header_bomb(clean, folder):
    path = folder / "bomb.png"
    path.write_bytes(png_claiming(100_000, 100_000))
    return Trial(clean.around(str(path)), path=str(path))


# images: unusual but valid --------------------------------------------------------------------


@case("PNG with a .jpg extension", "images", WORKS)
def _wrong_extension(clean, folder):
    return copy_of_row1(clean, folder, "really_a_png.jpg")


@case("animated GIF (first frame)", "images", WORKS)
def _animated_gif(clean, folder):
    palette = [255, 0, 0, 0, 0, 255, 0, 200, 0] + [0] * (256 * 3 - 9)
    frames = []
    for colours in ([0, 1], [2, 2]):  # frame 0: red/blue stripes; frame 1: all green
        index = np.zeros((8, 8), np.uint8)
        index[::2] = colours[0]
        index[1::2] = colours[1]
        frame = Image.fromarray(index, "P")
        frame.putpalette(palette)
        frames.append(frame)
    path = folder / "animated.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    first = np.asarray(frames[0].convert("RGB"))
    return Trial(clean.around(str(path)), same_as=clean.around(first))


@case("multi-frame TIFF (first frame)", "images", WORKS)
def _multi_frame_tiff(clean, folder):
    frames = [Image.fromarray(pixels) for pixels in (clean.arrays[1], clean.arrays[0])]
    path = folder / "pages.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return Trial(clean.around(str(path)), same_as=clean.paths)


@case("WebP (lossless)", "images", WORKS)
def _webp(clean, folder):
    path = folder / "image.webp"
    Image.fromarray(clean.arrays[1]).save(path, "WEBP", lossless=True)
    return Trial(clean.around(str(path)), same_as=clean.paths)


@case("1x1 image", "images", WORKS)
def _one_pixel(clean, folder):
    pixel = np.array([[[10, 200, 30]]], np.uint8)
    path = folder / "pixel.png"
    Image.fromarray(pixel).save(path)
    return Trial(clean.around(str(path)), same_as=clean.around(pixel))


@case("16-bit TIFF", "images", WORKS)
def _sixteen_bit_tiff(clean, folder):
    pixels = np.linspace(0, 65535, 80).astype(np.uint16).reshape(8, 10)
    path = folder / "deep.tif"
    Image.fromarray(pixels).save(path)  # mode I;16: scaled by 65535 -> 255, never clamped
    return Trial(clean.around(str(path)), same_as=clean.around(pixels))


@case("float TIFF", "images", WORKS)
def _float_tiff(clean, folder):
    # 0.3 and 0.5862745 round differently in float32 and float64 arithmetic (76 / 77)
    values = np.array([0.0, 0.3, 0.5862745, 0.672549, 1.0] * 16, np.float32).reshape(8, 10)
    path = folder / "float.tif"
    Image.fromarray(values).save(path)  # mode F: [0, 1] like float arrays
    return Trial(clean.around(str(path)), same_as=clean.around(values))


@case("float TIFF outside [0, 1]", "images", NAN, r"values in \[300, 300\].*\[0, 1\]")
def _float_tiff_out_of_range(clean, folder):
    path = folder / "radiance.tif"
    Image.fromarray(np.full((8, 8), 300, np.float32)).save(path)
    return Trial(clean.around(str(path)), path=str(path))


@case("path with spaces", "images", WORKS)
def _spaces(clean, folder):
    return copy_of_row1(clean, folder, "my holiday photo .png")


@case("path with a newline", "images", WORKS, posix_only=True)
def _newline(clean, folder):
    return copy_of_row1(clean, folder, "two\nlines.png")


@case("path with non-ASCII characters", "images", WORKS)
def _non_ascii(clean, folder):
    return copy_of_row1(clean, folder, "chat_\u00e9t\u00e9_\u732b.png")


@case("file name that is not UTF-8", "images", WORKS, posix_only=True)
def _not_utf8(clean, folder):
    if sys.platform == "darwin":  # APFS refuses such names
        pytest.skip("the file system requires UTF-8 names")
    return copy_of_row1(clean, folder, b"caf\xe9.png")  # Latin-1: str with a surrogate


# arrays: wrong data raises whatever on_error says; odd containers work -------------------------


@case("bool array", "arrays", ERROR, "X is a boolean array")
def _bool_batch(clean, folder):
    return Trial(clean.arrays > 127)


@case("bool image in a list", "arrays", ERROR, r"row 1 is a boolean array")
def _bool_item(clean, folder):
    return Trial(clean.around(clean.arrays[1] > 127))


@case("int64 array in [0, 255]", "arrays", WORKS)
def _int64(clean, folder):
    return Trial(clean.arrays.astype(np.int64), same_as=clean.arrays)


@case("negative values", "arrays", ERROR, r"rows \[1\], int64 values outside \[0, 255\]")
def _negative(clean, folder):
    X = clean.arrays.astype(np.int64)
    X[1, 0, 0, 0] = -5
    return Trial(X)


@case("inf pixels", "arrays", ERROR, r"rows \[1\], NaN or infinite pixels")
def _inf(clean, folder):
    X = clean.arrays / 255.0
    X[1, 2, 3, 1] = np.inf
    return Trial(X)


@case("object array mixing paths and arrays", "arrays", WORKS)
def _mixed_object_array(clean, folder):
    X = np.empty(3, dtype=object)
    X[:] = [clean.paths[0], clean.arrays[1], Path(clean.paths[2])]
    return Trial(X, same_as=clean.paths)


@case("Series with a non-default index", "arrays", WORKS)
def _series(clean, folder):
    return Trial(pd.Series(clean.paths, index=["z", "a", "m"]), same_as=clean.paths)


@case("Series with a non-default index, a missing file", "arrays", NAN,
      r"row 1 \(index 'a'\): image file not found")
def _series_missing(clean, folder):
    path = str(folder / "gone.png")
    return Trial(pd.Series(clean.around(path), index=["z", "a", "m"]), path=path)


# tables of paths -------------------------------------------------------------------------------


@case("table without the path column", "tables", ERROR, r"no column 'path'.*\['file'\]")
def _no_path_column(clean, folder):
    pd.DataFrame({"file": clean.paths}).to_csv(folder / "t.csv", index=False)
    return Trial(folder / "t.csv", table={})


@case("empty table (header only)", "tables", ERROR, "has no rows")
def _empty_table(clean, folder):
    (folder / "t.csv").write_text("path,label\n")
    return Trial(folder / "t.csv", table={})


@case("empty table file (0 bytes)", "tables", ERROR, "cannot read .* as CSV")
def _empty_file(clean, folder):
    (folder / "t.csv").write_bytes(b"")
    return Trial(folder / "t.csv", table={})


@case("duplicate paths", "tables", WORKS, r"row 1 repeats row 0")
def _duplicates(clean, folder):
    rows = [clean.paths[0], clean.paths[0], clean.paths[2]]
    pd.DataFrame({"path": rows}).to_csv(folder / "t.csv", index=False)
    return Trial(folder / "t.csv", table={}, same_as=rows)


@case("relative paths (against the table's folder)", "tables", WORKS)
def _relative(clean, folder):
    tables = folder / "tables"
    (tables / "img").mkdir(parents=True)
    for i, path in enumerate(clean.paths):
        shutil.copyfile(path, tables / "img" / f"{i}.png")
    # The same relative path from the current folder is another image: it must not be read.
    decoy = folder / "img"
    decoy.mkdir()
    for i in range(3):
        Image.new("RGB", (10, 12), (0, 0, 0)).save(decoy / f"{i}.png")
    os.chdir(folder)
    rows = ["img/0.png", "img/1.png", "img/2.png"]
    pd.DataFrame({"path": rows}).to_csv(tables / "t.csv", index=False)
    return Trial(tables / "t.csv", table={}, same_as=clean.paths)


@case("paths that look like numbers (001)", "tables", WORKS)
def _numeric_names(clean, folder):
    for i, path in enumerate(clean.paths):
        shutil.copyfile(path, folder / f"00{i + 1}")
        Image.new("RGB", (10, 12), (0, 0, 0)).save(folder / f"{i + 1}", "PNG")  # what 1 would be
    (folder / "t.csv").write_text("path\n001\n002\n003\n")
    return Trial(folder / "t.csv", table={}, same_as=clean.paths)


EXPECTED_COUNTS = {ERROR: 7, NAN: 10, WORKS: 17}


def read(cnn, trial: Trial, on_error: str, X: Any = None) -> tuple[np.ndarray, list[str]]:
    """Features of ``trial`` (or of ``X``) and the warnings, under the deadline."""
    def work():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            items = trial.X if X is None else X
            if X is None and trial.table is not None:
                items = read_image_table(items, **trial.table)[RESOLVED_PATH_COLUMN]
            features = cnn.set_params(on_error=on_error).transform(items)
        return features, [str(warning.message) for warning in caught]

    return within(DEADLINE, work)


@pytest.mark.parametrize("on_error", ["raise", "nan"])
@pytest.mark.parametrize("corpus_case", CASES, ids=[c.name for c in CASES])
def test_hostile_input(corpus_case, on_error, cnn, clean, clean_features, tmp_path, fifos,
                       monkeypatch):
    if corpus_case.posix_only and not POSIX:
        pytest.skip("needs a POSIX file system")
    monkeypatch.chdir(tmp_path)  # a case may change folder; this restores it
    trial = corpus_case.build(clean, tmp_path)
    fifos.extend(p for p in tmp_path.iterdir() if stat.S_ISFIFO(os.lstat(p).st_mode))
    outcome, match = corpus_case.outcome, corpus_case.match
    if outcome == ERROR or (outcome == NAN and on_error == "raise"):
        with pytest.raises(ValueError) as caught:
            read(cnn, trial, on_error)
        message = str(caught.value)
        assert re.search(match, message), message
        if outcome == NAN:
            assert isinstance(caught.value, BadImageError)
            assert message.startswith("row 1"), message
            assert repr(trial.path) in message, message
        return
    features, messages = read(cnn, trial, on_error)
    unreadable = [m for m in messages if "could not be read" in m]
    if outcome == NAN:
        assert np.isnan(features[1]).all()
        # The neighbours' features are theirs: equal up to float rounding (a batch of other
        # rows may take another oneDNN kernel: 2e-7 apart on an AMD EPYC, exact on a Xeon).
        np.testing.assert_allclose(features[[0, 2]], clean_features[[0, 2]], rtol=1e-5,
                                   atol=1e-6)
        assert len(unreadable) == 1, messages
        assert "row 1" in unreadable[0] and repr(trial.path) in unreadable[0], unreadable
        assert re.search(match, unreadable[0]), unreadable
        return
    assert not unreadable, unreadable
    assert np.isfinite(features).all()
    expected, _ = read(cnn, trial, "raise", X=trial.same_as)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    if match is not None:
        assert any(re.search(match, m) for m in messages), messages


def test_first_frame_is_what_is_read(clean, cnn, tmp_path):
    """The GIF and TIFF cases compare with frame 0: make sure frame 1 would differ."""
    gif = _animated_gif(clean, tmp_path)
    features = cnn.set_params(on_error="raise").transform(gif.X)
    with Image.open(gif.X[1]) as image:
        image.seek(1)
        second = np.asarray(image.convert("RGB"))
    assert not np.array_equal(features, cnn.transform(clean.around(second)))


def test_corpus_counts():
    """Every case of the issue's list is in the table; print the tally for the closing note."""
    names = [c.name for c in CASES]
    assert len(names) == len(set(names))
    counts = Counter(c.outcome for c in CASES)
    groups = Counter(c.group for c in CASES)
    print(f"\nhostile corpus: {len(CASES)} cases ({dict(groups)}): "
          + ", ".join(f"{counts[o]} {o}" for o in (ERROR, NAN, WORKS)))
    assert dict(counts) == EXPECTED_COUNTS
    assert len(CASES) == sum(EXPECTED_COUNTS.values()) == 34


# --- reading a path never blocks (item 3) --------------------------------------------------------


needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
DATASET = dict(transform=np.asarray, input_size=(3, 8, 8))


@needs_fifo
def test_fifo_is_refused_by_the_stat_before_it_is_opened(tmp_path, fifos):
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    fifos.append(path)
    # Building the dataset decodes nothing: only the stat can have found it.
    with pytest.raises(BadImageError, match=r"^row 0: .*pipe\.png' is a named pipe \(FIFO\)"):
        within(DEADLINE, lambda: ImageDataset([path], **DATASET))
    dataset = within(DEADLINE, lambda: ImageDataset([path], on_error="nan", **DATASET))
    assert "named pipe" in dataset.bad[0]
    image, error = within(DEADLINE, lambda: dataset[0])
    assert error == dataset.bad[0] and not image.any()


@needs_fifo
@pytest.mark.parametrize("on_error", ["raise", "nan"])
def test_a_path_replaced_by_a_fifo_after_the_stat_does_not_block(tmp_path, fifos, on_error):
    path = tmp_path / "image.png"
    Image.new("RGB", (8, 8)).save(path)
    dataset = ImageDataset([path], on_error=on_error, **DATASET)  # the stat sees a file
    path.unlink()
    os.mkfifo(path)  # ... which is a FIFO by the time it is read
    fifos.append(path)
    if on_error == "raise":
        with pytest.raises(BadImageError, match=r"^row 0: cannot read image .* named pipe"):
            within(DEADLINE, lambda: dataset[0])
    else:
        image, error = within(DEADLINE, lambda: dataset[0])
        assert "named pipe" in error and not image.any()


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero and /dev/null")
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_decode_refuses_a_device(device):
    with pytest.raises(BadImageError, match=rf"'{device}' is a character device"):
        within(DEADLINE, lambda: decode(device))


# --- the command line on the corpus (item 4) ------------------------------------------------------


@pytest.fixture
def bad_folder(tmp_path, clean, fifos):
    """Three clean images and four bad files, as `skdeep extract` finds them (sorted)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, path in enumerate(clean.paths):
        shutil.copyfile(path, folder / f"good{i}.png")
    (folder / "zero.png").write_bytes(b"")
    (folder / "text.png").write_text("not an image")
    bad = [folder / "text.png", folder / "zero.png"]
    if POSIX:
        os.mkfifo(folder / "pipe.png")
        fifos.append(folder / "pipe.png")
        os.symlink("loop.png", folder / "loop.png")
        bad += [folder / "pipe.png", folder / "loop.png"]
    return folder, sorted(str(path) for path in bad)


def extract(folder: Path, out: Path, on_error: str, capsys) -> tuple[int, str]:
    from skdeep.cli import main

    argv = ["extract", str(folder), "-o", str(out), "--weights", "none", "--image-size", "32",
            "--precision", "fp32", "--no-progress", "--on-error", on_error]
    code = within(DEADLINE, lambda: main(argv))
    return code, capsys.readouterr().err


def test_cli_extract_stops_at_a_bad_file_under_raise(bad_folder, tmp_path, capsys):
    folder, bad = bad_folder
    code, err = extract(folder, tmp_path / "f.npy", "raise", capsys)
    assert code == 1
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("skdeep: error: ")]
    assert len(errors) == 1 and any(repr(path) in errors[0] for path in bad), err
    assert not (tmp_path / "f.npy").exists()


def test_cli_extract_gives_nan_rows_and_exit_0_under_nan(bad_folder, tmp_path, capsys):
    folder, bad = bad_folder
    code, err = extract(folder, tmp_path / "f.npy", "nan", capsys)
    assert code == 0
    assert "Traceback" not in err
    for path in bad:
        assert repr(path) in err, err
    features = np.load(tmp_path / "f.npy")
    assert np.isnan(features).any(axis=1).sum() == len(bad)


def test_cli_summary_has_one_line_per_bad_file(bad_folder, tmp_path, capsys):
    folder, bad = bad_folder
    _, err = extract(folder, tmp_path / "f.npy", "nan", capsys)
    for path in bad:
        assert sum(repr(path) in line for line in err.splitlines()) == 1, err
    lines = [line for line in err.splitlines() if any(repr(path) in line for path in bad)]
    assert len(lines) == len(bad), err


def test_cli_evaluate_summary_has_one_line_per_bad_file(tmp_path, capsys):
    from skdeep.cli import main

    folder, bad = tmp_path / "photos", []
    for label in ("a", "b"):
        (folder / label).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (16, 16), (80 * i, 200 if label == "a" else 0, 0)).save(
                folder / label / f"{i}.png")
        (folder / label / "zero.png").write_bytes(b"")
        bad.append(str(folder / label / "zero.png"))
    argv = ["evaluate", str(folder), "-o", str(tmp_path / "report"), "--weights", "none",
            "--image-size", "32", "--layers", "penultimate", "--folds", "2", "--no-progress"]
    code = within(DEADLINE, lambda: main([*argv, "--on-error", "nan"]))
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err
    lines = [line for line in err.splitlines() if any(repr(path) in line for path in bad)]
    assert len(lines) == len(bad), err  # one line per file
    for path in bad:
        assert sum(repr(path) in line for line in err.splitlines()) == 1, err
    code = within(DEADLINE, lambda: main([*argv, "--on-error", "raise"]))
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "--on-error nan" in err


@needs_fifo
def test_evaluate_auto_image_size_does_not_block_on_a_fifo(tmp_path, fifos):
    # evaluate(image_size="auto") reads image headers to choose the input size, before the
    # embedding's own checks: that read must refuse a FIFO too (it hung before).
    from skdeep.evaluation import evaluate

    paths = []
    for index in range(8):
        path = tmp_path / f"{index}.png"
        Image.new("RGB", (16, 16), (30 * index, 0, 0)).save(path)
        paths.append(str(path))
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    fifos.append(fifo)
    labels = [0, 1] * 4 + [0]
    result = within(DEADLINE, lambda: evaluate(
        [str(fifo), *paths], labels, weights=None, layers=["penultimate"], cv=2,
        on_error="nan", random_state=0,
    ))
    assert result.config["image_size"] == 96  # chosen from the readable 16 px images
