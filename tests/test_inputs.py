"""Image inputs: every accepted form, every mode, every bad file, under both on_error policies.

The corpus is generated in tmp_path (no binary fixtures). Features come from the bundled
efficientnet_lite0 at 32 px in fp32, so equal inputs must give bit-identical rows.
"""

import io
import pickle
import re
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from skdeep import BadImageError, BadImageWarning, PretrainedCNNFeatures
from skdeep._inputs import (
    ImageDataset,
    ImageNotFoundError,
    as_items,
    decode,
    load_item,
    to_rgb,
    warn_bad_rows,
)

# --- fixtures ----------------------------------------------------------------------------------


def _pattern(height, width, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 9, yy * 7, (xx + yy) * 4], axis=-1)
    base = base + rng.integers(0, 60, (height, width, 3))
    return (base % 256).astype(np.uint8)


@pytest.fixture(scope="module")
def cnn():
    return PretrainedCNNFeatures(image_size=32, precision="fp32", batch_size=4).fit()


def assert_same_rows(actual, expected):
    """Same images in batches of another size: equal up to float32 summation order (features
    up to ~4 here, so differences up to ~1.5e-5 measured)."""
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=3e-5)


def embed(cnn, X, on_error="raise", num_workers=0):
    return cnn.set_params(on_error=on_error, num_workers=num_workers).transform(X)


@pytest.fixture(scope="module")
def images():
    return np.stack([_pattern(24, 24, seed) for seed in range(3)])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, images):
    """Good PNGs, every kind of bad file, and every awkward mode, written once per module."""
    root = tmp_path_factory.mktemp("corpus")
    files = {}
    for i, image in enumerate(images):
        files[f"good{i}"] = root / f"good{i}.png"
        Image.fromarray(image).save(files[f"good{i}"])
    files["missing"] = root / "moved_away.jpg"
    files["directory"] = root / "album.jpg"
    files["directory"].mkdir()
    files["text"] = root / "notes.jpg"
    files["text"].write_text("this is not a JPEG\n")
    jpeg = io.BytesIO()
    Image.fromarray(_pattern(64, 64, 7)).save(jpeg, "JPEG", quality=90)
    files["truncated"] = root / "truncated.jpg"
    files["truncated"].write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    files["bomb"] = root / "bomb.png"  # 1,600 px: above BOMB_LIMIT, under Pillow's own 2x error
    Image.fromarray(_pattern(40, 40, 8)).save(files["bomb"])
    files["huge_bomb"] = root / "huge_bomb.png"  # 4,096 px: above 2x, Pillow itself raises
    Image.fromarray(_pattern(64, 64, 9)).save(files["huge_bomb"])
    return files


GOOD = ["good0", "good1"]
BOMB_LIMIT = 1500  # pixels; above the 32x32 network crop, which Pillow checks too


@pytest.fixture(scope="module")
def good_features(cnn, corpus):
    return embed(cnn, [corpus[name] for name in GOOD])


# --- messy files: one outcome per policy ----------------------------------------------------------

# name -> (exception under "raise", text the message must contain besides the row)
BAD_FILES = {
    "missing": (ImageNotFoundError, "image file not found"),
    "directory": (BadImageError, "is a directory"),
    "text": (BadImageError, "cannot identify image file"),
    "truncated": (BadImageError, "truncated"),
    "bomb": (BadImageError, "decompression bomb refused"),
    "huge_bomb": (BadImageError, "DecompressionBombError"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_file_raises_naming_row_and_path(cnn, corpus, name, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)
    error, reason = BAD_FILES[name]
    path = str(corpus[name])
    with pytest.raises(error, match=rf"^row 1: .*{re.escape(repr(path))}") as caught:
        embed(cnn, [str(corpus["good0"]), path, str(corpus["good1"])])
    assert reason in str(caught.value)
    assert isinstance(caught.value, ValueError)
    if name == "missing":
        assert isinstance(caught.value, FileNotFoundError)


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_a_bad_file_becomes_a_nan_row_and_the_others_are_unchanged(cnn, corpus, good_features, name,
                                                                   monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", BOMB_LIMIT)
    path = corpus[name]
    X = [corpus["good0"], path, corpus["good1"]]
    with pytest.warns(BadImageWarning, match=rf"row 1: .*{re.escape(repr(str(path)))}"):
        out = embed(cnn, X, on_error="nan")
    assert out.shape == (3, cnn.n_features_out_)
    assert np.isnan(out[1]).all()
    assert_same_rows(out[[0, 2]], good_features)


@pytest.mark.parametrize("missing", [None, np.nan, pd.NA], ids=["None", "nan", "pd.NA"])
def test_a_missing_value_in_a_column_of_paths(cnn, corpus, good_features, missing):
    column = pd.Series([str(corpus["good0"]), missing, str(corpus["good1"])], index=["a", "b", "c"],
                       dtype=object)
    with pytest.raises(BadImageError, match=r"^row 1 \(index 'b'\): missing value"):
        embed(cnn, column)
    with pytest.warns(BadImageWarning, match=r"row 1 \(index 'b'\): missing value"):
        out = embed(cnn, column, on_error="nan")
    assert np.isnan(out[1]).all()
    assert_same_rows(out[[0, 2]], good_features)


def test_missing_paths_and_directories_are_found_before_any_image_is_read(corpus):
    def never(_):
        raise AssertionError("no image may be decoded before the cheap checks pass")

    X = [corpus["good0"], corpus["missing"], corpus["directory"], None, corpus["missing"]]
    with pytest.raises(BadImageError) as caught:
        ImageDataset(X, transform=never, input_size=(3, 8, 8))
    message = str(caught.value)
    assert message.startswith("4 images cannot be read: row 1: image file not found")
    for row in ("row 1", "row 2", "row 3", "row 4"):
        assert row in message
    assert "on_error='nan'" in message
    only_missing = [corpus["missing"], corpus["good0"], corpus["missing"]]
    with pytest.raises(FileNotFoundError, match=r"2 images cannot be read: row 0: .*; row 2: "):
        ImageDataset(only_missing, transform=never, input_size=(3, 8, 8))
    dataset = ImageDataset(X, transform=never, input_size=(3, 8, 8), on_error="nan")
    assert sorted(dataset.bad) == [1, 2, 3, 4]


def test_nan_warning_lists_every_bad_row_with_its_path():
    errors = {i: f"row {i}: image file not found: '/data/{i}.jpg'" for i in range(13)}
    with pytest.warns(BadImageWarning) as record:
        warn_bad_rows(errors)
    message = str(record[0].message)
    assert message.startswith("13 image(s) could not be read; their rows are NaN")
    assert "row 9: image file not found: '/data/9.jpg'" in message
    assert "and 3 more, rows [10, 11, 12]" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_bad_rows({})


# --- DataLoader workers ------------------------------------------------------------------------


def test_errors_in_workers_keep_row_and_path_first(cnn, corpus):
    path = str(corpus["text"])
    with pytest.raises(BadImageError) as caught:
        embed(cnn, [corpus["good0"], path], num_workers=1)
    first_line = str(caught.value).splitlines()[0]
    assert first_line.startswith(f"row 1: cannot read image {path!r}")
    assert "DataLoader worker process" in first_line


def test_a_file_that_vanishes_after_the_checks_is_reported_from_the_worker(tmp_path, images):
    path = tmp_path / "soon_gone.png"
    Image.fromarray(images[0]).save(path)
    dataset = ImageDataset([path], transform=np.asarray, input_size=(3, 8, 8))
    path.unlink()
    with pytest.raises(ImageNotFoundError) as caught:
        next(iter(DataLoader(dataset, batch_size=1, num_workers=1, collate_fn=list)))
    assert isinstance(caught.value, FileNotFoundError)
    assert str(caught.value).startswith(f"row 0: image file not found: {str(path)!r}")


def test_workers_give_the_same_rows_as_the_main_process(cnn, corpus, good_features):
    X = [corpus["good0"], corpus["text"], corpus["good1"]]
    with pytest.warns(BadImageWarning, match="row 1"):
        out = embed(cnn, X, on_error="nan", num_workers=2)
    assert np.isnan(out[1]).all()
    assert_same_rows(out[[0, 2]], good_features)


def test_the_dataset_pickles_for_spawned_workers(cnn, corpus):
    dataset = cnn._dataset([corpus["good0"], corpus["missing"]], on_error="nan")
    clone = pickle.loads(pickle.dumps(dataset))
    image, error = clone[0]
    assert image.dtype == torch.uint8 and tuple(image.shape) == (3, 32, 32) and error == ""
    assert torch.equal(image, dataset[0][0])
    assert clone[1][1].startswith("row 1: image file not found")


# --- structured errors: the rows and paths as attributes ----------------------------------------


def _raising(X, **kwargs):
    return ImageDataset(X, transform=np.asarray, input_size=(3, 8, 8), **kwargs)


def test_bad_image_error_lists_its_rows_and_paths(corpus, images):
    X = [corpus["good0"], corpus["missing"], images[0], None, corpus["directory"]]
    with pytest.raises(BadImageError) as caught:
        _raising(X)
    assert caught.value.rows == [1, 3, 4]
    assert caught.value.paths == [str(corpus["missing"]), None, str(corpus["directory"])]


def test_an_undecodable_file_error_has_its_row_and_path(corpus):
    dataset = _raising([corpus["good0"], corpus["text"]])
    with pytest.raises(BadImageError) as caught:
        dataset[1]
    assert (caught.value.rows, caught.value.paths) == ([1], [str(corpus["text"])])


def test_rows_and_paths_survive_the_worker_reraise(tmp_path, images):
    # A path no message parser could take apart: a newline, a colon, quotes, non-UTF-8 bytes.
    odd = tmp_path / "a\nb: 'c\udcff.png"
    odd.write_text("not an image")
    good = tmp_path / "good.png"
    Image.fromarray(images[0]).save(good)
    dataset = _raising([good, odd])
    with pytest.raises(BadImageError) as caught:
        list(DataLoader(dataset, batch_size=1, num_workers=1, collate_fn=list))
    assert (caught.value.rows, caught.value.paths) == ([1], [str(odd)])
    assert str(caught.value).startswith("row 1: cannot read image")
    assert "rows and paths of this error" not in str(caught.value)  # the carrier note is dropped


@pytest.mark.parametrize("error", [
    BadImageError("row 2: cannot read image", rows=[2], paths=["a.png"]),
    ImageNotFoundError("row 2: image file not found", rows=[2], paths=["a.png"]),
    BadImageWarning("1 image(s) could not be read", rows=[2], paths=[None]),
])
def test_rows_and_paths_survive_pickling(error):
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error) and clone.args == error.args
    assert (clone.rows, clone.paths) == (error.rows, error.paths)
    # Dask pickles exceptions through tblib, which has its own way with __init__ and __reduce__.
    pickling_support = pytest.importorskip("tblib.pickling_support")
    pickling_support.install(error)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error) and (clone.rows, clone.paths) == (error.rows, error.paths)


def test_bad_image_warning_lists_its_rows_and_paths(corpus, images):
    dataset = _raising([corpus["good0"], corpus["missing"], images[0]], on_error="nan")
    with pytest.warns(BadImageWarning) as caught:
        warn_bad_rows({1: "row 1: missing", 2: "row 2: bad pixels"}, dataset)
    assert caught[0].message.rows == [1, 2]
    assert caught[0].message.paths == [str(corpus["missing"]), None]
    with pytest.warns(BadImageWarning) as caught:
        warn_bad_rows({4: "row 4: missing"})
    assert (caught[0].message.rows, caught[0].message.paths) == ([4], [None])


# --- wrong data: always a ValueError, whatever on_error says -------------------------------------

rng = np.random.default_rng(0)
WRONG = {
    "empty list": ([], "X is empty"),
    "empty array": (np.zeros((0, 8, 8, 3), np.uint8), "X is empty"),
    "empty frame": (pd.DataFrame({"path": []}), "X is empty"),
    "NaN pixels": (np.where(np.arange(4)[:, None, None] == 2, np.nan, 0.5) * np.ones((4, 8, 8)),
                   r"rows \[2\], NaN or infinite"),
    "inf tensor": (torch.full((2, 3, 8, 8), float("inf")), "NaN or infinite"),
    "float 0-255": (rng.integers(0, 256, (3, 8, 8, 3)).astype(np.float32),
                    r"outside \[0, 1\].*largest value is 255, so divide by 255"),
    "2-D": (np.zeros((28, 28), np.uint8), "2-D input is not a batch"),
    "1-D": (np.zeros(10, np.uint8), "expected"),
    "5-D": (np.zeros((2, 1, 8, 8, 3), np.uint8), "expected"),
    "5 channels": (np.zeros((2, 8, 8, 5), np.uint8), "5 channels"),
    "channel-first array": (np.zeros((2, 3, 8, 8), np.uint8), "np.moveaxis"),
    "channel-last tensor": (torch.zeros((2, 8, 8, 3), dtype=torch.uint8), r"permute\(0, 3, 1, 2\)"),
    "single RGB image": (np.zeros((16, 16, 3), np.uint8), r"one color image.*X\[None\]"),
    "boolean": (np.zeros((2, 8, 8), bool), "boolean"),
    "int32 above 255": (np.full((2, 8, 8), 1000, np.int32), r"astype\(np.uint16\)"),
    "negative int16": (np.full((2, 8, 8), -5, np.int16), "must not be negative"),
    "complex": (np.zeros((2, 8, 8), complex), "integers or floats"),
    "object grid": (np.empty((2, 8, 8), object), "np.stack"),
    "directory string": ("__DIR__", "X is a directory"),
    "single path": ("__FILE__", r"wrap it in a list"),
    "single bytes": (b"\x89PNG", "wrap it in a list"),
    "two columns": (pd.DataFrame({"a": ["x"], "b": ["y"]}), "2 columns"),
    "dict": ({"a": 1}, "not a supported collection"),
    "float 0-255 item": ([np.zeros((8, 8)), np.full((9, 9, 3), 200.0)],
                         r"^row 1 has float64 values"),
    "5-channel item": ([np.zeros((8, 8, 5), np.uint8)], r"^row 0 has shape \(8, 8, 5\)"),
    "HWC tensor item": ([torch.zeros(8, 8, 3)], r"permute\(2, 0, 1\)"),
    "empty item": ([np.zeros((0, 4), np.uint8)], "must not be empty"),
    "number item": (["a.png", 7], r"^row 1: int 7 is not an image"),
    "byte-string array": (np.array([b"a.png"]), "byte-string"),
}


@pytest.mark.parametrize("on_error", ["raise", "nan"])
@pytest.mark.parametrize("name", list(WRONG))
def test_wrong_data_is_always_a_clear_value_error(cnn, corpus, name, on_error):
    X, message = WRONG[name]
    X = {"__DIR__": str(corpus["directory"].parent), "__FILE__": str(corpus["good0"])}.get(
        X if isinstance(X, str) else None, X
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NaN rows, no warning: an error
        with pytest.raises(ValueError, match=message):
            embed(cnn, X, on_error=on_error)


def test_targets_must_match_the_images():
    items = as_items(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="X has 3 images but y has 4 targets"):
        ImageDataset(items, transform=np.asarray, input_size=(3, 8, 8), targets=[0, 1, 0, 1])
    dataset = ImageDataset(items, transform=np.asarray, input_size=(3, 8, 8),
                           targets=pd.Series([5, 6, 7], index=[2, 1, 0]))
    assert dataset[0][2] == 5  # by position, never by pandas label


# --- every accepted form gives the same features ---------------------------------------------


def test_numeric_forms_give_identical_features(cnn, images):
    expected = embed(cnn, images)
    forms = {
        "float32 in [0, 1]": images.astype(np.float32) / 255,
        "float64 in [0, 1]": images / 255.0,
        "float16 in [0, 1]": (images / 255.0).astype(np.float16),
        "uint16": images.astype(np.uint16) * 257,
        "int64 in [0, 255]": images.astype(np.int64),
        "uint8 tensor NCHW": torch.from_numpy(images).permute(0, 3, 1, 2),
        "float tensor NCHW": torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255,
        "float64 tensor NCHW": torch.from_numpy(images / 255.0).permute(0, 3, 1, 2),
        "list of arrays": list(images),
        "list of float tensors": [torch.from_numpy(i).permute(2, 0, 1) / 255.0 for i in images],
        "Series of arrays": pd.Series(list(images), index=[10, 20, 30]),
    }
    for name, X in forms.items():
        np.testing.assert_array_equal(embed(cnn, X), expected, err_msg=name)


def test_int16_is_scaled_by_its_positive_range(cnn, images):
    scaled = np.rint(images.astype(np.float64) * 32767 / 255).astype(np.int16)
    np.testing.assert_array_equal(embed(cnn, scaled), embed(cnn, images))


def test_encoded_forms_give_identical_features(cnn, corpus, images):
    expected = embed(cnn, images)
    paths = [corpus[f"good{i}"] for i in range(3)]
    forms = {
        "str list": [str(p) for p in paths],
        "pathlib list": paths,
        "str ndarray": np.asarray([str(p) for p in paths]),
        "object ndarray": np.asarray(paths, dtype=object),
        "Series, custom index": pd.Series([str(p) for p in paths], index=["x", "y", "z"]),
        "one-column frame": pd.DataFrame({"path": paths}),
        "frame as 2-D object array": pd.DataFrame({"path": paths}).to_numpy(),
        "bytes": [p.read_bytes() for p in paths],
        "PIL images": [Image.open(p) for p in paths],
        "mixed kinds": [str(paths[0]), paths[1].read_bytes(), images[2]],
    }
    for name, X in forms.items():
        np.testing.assert_array_equal(embed(cnn, X), expected, err_msg=name)


def test_mixed_sizes_match_one_image_at_a_time(cnn):
    X = [_pattern(16, 16, 1), _pattern(40, 24, 2), _pattern(24, 90, 3), _pattern(9, 9, 4)[..., 0]]
    together = embed(cnn, X)
    for row, image in enumerate(X):
        assert_same_rows(together[row], embed(cnn, [image])[0])


def test_gray_and_alpha_arrays_become_rgb(cnn, images):
    gray = images[..., 0]
    as_rgb = np.repeat(gray[..., None], 3, axis=-1)
    np.testing.assert_array_equal(embed(cnn, gray), embed(cnn, as_rgb))
    np.testing.assert_array_equal(embed(cnn, torch.from_numpy(gray)), embed(cnn, as_rgb))
    opaque = np.concatenate([images, np.full(images.shape[:-1] + (1,), 255, np.uint8)], axis=-1)
    np.testing.assert_array_equal(embed(cnn, opaque), embed(cnn, images))
    clear = opaque.copy()
    clear[..., 3] = 0
    np.testing.assert_array_equal(embed(cnn, clear), embed(cnn, np.full_like(images, 255)))


# --- decoding: every mode to the right RGB ------------------------------------------------------


def test_16_bit_png_is_rescaled_not_clamped(tmp_path):
    values = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    rgb = np.asarray(decode(path))
    expected = np.rint(values / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(rgb, np.repeat(expected[..., None], 3, axis=-1))
    assert rgb.max() == 255 and (rgb[..., 0] == 255).sum() <= 2  # Pillow would clamp ~all to 255
    # the same image as a uint16 array gives the same pixels
    np.testing.assert_array_equal(np.asarray(load_item(values)), rgb)


def test_mode_I_is_read_as_16_bit_and_never_clipped(tmp_path):
    values = np.array([[0, 257, 65535, 1000]], dtype=np.uint16).repeat(4, axis=0)
    pgm = tmp_path / "deep.pgm"  # Pillow opens 16-bit PGM as mode I
    Image.fromarray(values).save(pgm)
    assert Image.open(pgm).mode == "I"
    np.testing.assert_array_equal(np.asarray(decode(pgm))[0, :, 0], [0, 1, 255, 4])
    with pytest.raises(BadImageError, match=r"mode 'I' image has values in \[0, 70000\]"):
        to_rgb(Image.fromarray(np.array([[0, 70000]], dtype=np.int32)))


def test_mode_F_must_lie_in_0_1():
    unit = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(np.asarray(to_rgb(Image.fromarray(unit)))[0, :, 0], [0, 128, 255])
    with pytest.raises(BadImageError, match=r"'F'.*\[0, 200\]"):
        to_rgb(Image.fromarray(unit * 200))


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = tmp_path / "print.jpg"
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(path, quality=95)  # pure red ink
    assert Image.open(path).mode == "CMYK"
    pixel = np.asarray(decode(path))[8, 8].astype(int)
    np.testing.assert_allclose(pixel, [255, 0, 0], atol=6)


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    image = Image.new("P", (8, 4))
    image.putpalette([255, 0, 0, 0, 128, 0] + [0] * 762)
    image.paste(1, (4, 0, 8, 4))  # right half: index 1 (green); left half: index 0 (transparent)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    assert Image.open(path).mode == "P" and "transparency" in Image.open(path).info
    rgb = np.asarray(decode(path))
    assert (rgb[:, :4] == 255).all() and (rgb[:, 4:] == [0, 128, 0]).all()
    opaque = tmp_path / "opaque.png"
    image.save(opaque)
    assert (np.asarray(decode(opaque))[:, :4] == [255, 0, 0]).all()


@pytest.mark.parametrize("mode", ["LA", "RGBA"])
def test_alpha_is_composited_on_white(tmp_path, mode):
    black = (0, 255) if mode == "LA" else (0, 0, 0, 255)
    image = Image.new(mode, (3, 1), black)
    image.putpixel((1, 0), black[:-1] + (0,))
    image.putpixel((2, 0), black[:-1] + (128,))
    path = tmp_path / f"{mode}.png"
    image.save(path)
    assert Image.open(path).mode == mode
    np.testing.assert_array_equal(np.asarray(decode(path))[0, :, 0], [0, 255, 127])


def test_exif_orientation_is_applied(tmp_path):
    array = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high: left half red, right half blue
    array[:, :20] = [255, 0, 0]
    array[:, 20:] = [0, 0, 255]
    image = Image.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "phone.jpg"
    image.save(path, exif=exif, quality=95)
    assert Image.open(path).size == (40, 20)
    upright = decode(path)
    assert upright.size == (20, 40)  # width and height swap
    pixels = np.asarray(upright).astype(int)
    assert pixels[5, 10, 0] > 200 and pixels[35, 10, 2] > 200  # red on top, blue below
    np.testing.assert_array_equal(np.asarray(load_item(path.read_bytes())), pixels)


def test_decoding_keeps_no_file_open(corpus):
    image = decode(corpus["good0"])
    assert image.mode == "RGB" and image.size == (24, 24)
    np.asarray(image)  # still usable after the file was closed
