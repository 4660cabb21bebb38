"""Inputs that must not be trusted blindly (issue #16): symlink loops in image folders, images
that become decompression bombs once resized, EPS files that would run Ghostscript, and arrays
or PIL images that used to give confusing errors.
"""

import io
import os
import stat

import numpy as np
import pytest
import torch
from PIL import EpsImagePlugin, Image

import skdeep._preprocessing
from skdeep import BadImageError, BadImageWarning, PretrainedCNNFeatures
from skdeep._inputs import ImageDataset, decode, load_item
from skdeep._preprocessing import geometric_transform
from skdeep.datasets import find_images, load_image_folder

needs_symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt",
                                    reason="symbolic links need a POSIX file system")


def _png(path, value=128, size=(8, 8)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (value, value, value)).save(path)
    return path


def _relative(paths, root):
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]


@pytest.fixture
def walk_budget(monkeypatch):
    """Fail (instead of hanging) if a listing opens more than 200 folders."""
    calls = []
    real_scandir = os.scandir

    def counted(path="."):
        calls.append(path)
        if len(calls) > 200:
            raise RuntimeError(f"listing did not terminate: {len(calls)} folders opened")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", counted)
    return calls


# --- defect 3: symbolic-link loops under an image folder ---------------------------------------


@needs_symlinks
def test_symlink_loop_lists_each_real_image_once(tmp_path, walk_budget):
    root = tmp_path / "photos"
    _png(root / "cat" / "a.png")
    _png(root / "dog" / "b.png")
    os.symlink("..", root / "cat" / "up")  # cat/up/cat/up/... used to give 41 rows
    assert _relative(find_images(root), root) == ["cat/a.png", "dog/b.png"]


@needs_symlinks
def test_two_symlink_loops_terminate(tmp_path, walk_budget):
    root = tmp_path / "photos"
    _png(root / "a" / "x.png")
    _png(root / "a" / "b" / "y.png")
    os.symlink("..", root / "a" / "up")
    os.symlink("../..", root / "a" / "b" / "top")  # two loops: exponentially many paths
    assert _relative(find_images(root), root) == ["a/b/y.png", "a/x.png"]


@needs_symlinks
def test_load_image_folder_symlink_loop_does_not_relabel_images(tmp_path, walk_budget):
    root = tmp_path / "photos"
    _png(root / "cat" / "a.png")
    _png(root / "dog" / "b.png")
    os.symlink("..", root / "cat" / "up")  # used to list dog/b.png 40 times labelled "cat"
    frame = load_image_folder(root)
    assert _relative(frame["path"], root) == ["cat/a.png", "dog/b.png"]
    assert frame["label"].tolist() == ["cat", "dog"]


@needs_symlinks
def test_symlinked_file_is_listed_once(tmp_path):
    root = tmp_path / "photos"
    _png(root / "a.png")
    os.symlink("a.png", root / "b.png")
    assert _relative(find_images(root), root) == ["a.png"]


@needs_symlinks
def test_same_image_under_two_classes_is_refused_naming_both_paths(tmp_path):
    root = tmp_path / "photos"
    _png(root / "dog" / "b.png")
    _png(root / "cat" / "a.png")
    os.symlink(os.path.join("..", "dog", "b.png"), root / "cat" / "b_link.png")
    with pytest.raises(ValueError, match="labelled twice") as caught:
        load_image_folder(root)
    message = str(caught.value)
    assert os.path.join(str(root), "cat", "b_link.png") in message
    assert os.path.join(str(root), "dog", "b.png") in message


@needs_symlinks
def test_symlinked_folders_outside_the_root_are_still_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    _png(elsewhere / "c.png")
    root = tmp_path / "photos"
    _png(root / "cat" / "a.png")
    os.symlink(elsewhere, root / "cat" / "more")
    os.symlink(elsewhere, root / "cat" / "again")  # the same real folder: listed once
    assert _relative(find_images(root), root) == ["cat/a.png", "cat/again/c.png"]


@needs_symlinks
def test_a_folder_reached_twice_keeps_the_path_that_sorts_first(tmp_path):
    root = tmp_path / "photos"
    _png(root / "a" / "b" / "c" / "f.png")
    os.symlink(os.path.join("b", "c"), root / "a" / "z")  # a/z is listed before a/b/c is
    assert _relative(find_images(root), root) == ["a/b/c/f.png"]


# --- defect 4: an image that becomes a bomb once resized ----------------------------------------

TALL = (1, 20000)  # (width, height): ~100 bytes of PNG, 5.1 million px tall once resized


@pytest.fixture
def tall_png(tmp_path):
    return _png(tmp_path / "tall.png", size=TALL)


@pytest.fixture
def never_resize_tall(monkeypatch):
    """The network's transform fails on the tall image instead of taking 6 GB to resize it."""
    real_create = skdeep._preprocessing.create_transform

    def guarded_create(**kwargs):
        real = real_create(**kwargs)

        def guarded(image):
            assert image.size != TALL, "the tall image reached the resize"
            return real(image)

        return guarded

    monkeypatch.setattr(skdeep._preprocessing, "create_transform", guarded_create)


@pytest.fixture(scope="module")
def default_size_cnn():
    # The default 224 px input (resize to 256 then crop) is what makes the tall image a bomb.
    return PretrainedCNNFeatures(weights=None, random_state=0, batch_size=2).fit()


def test_resize_bomb_raises_before_resizing(default_size_cnn, tall_png, tmp_path,
                                            never_resize_tall):
    good = _png(tmp_path / "good.png")
    cnn = default_size_cnn.set_params(on_error="raise")
    with pytest.raises(BadImageError) as caught:
        cnn.transform([good, tall_png])
    message = str(caught.value)
    assert message.startswith(f"row 1: cannot read image {str(tall_png)!r}")
    for part in ("1x20000", "256x5120000", "aspect ratio 1:20000", "MAX_IMAGE_PIXELS"):
        assert part in message


def test_resize_bomb_becomes_a_nan_row(default_size_cnn, tall_png, tmp_path, never_resize_tall):
    good = _png(tmp_path / "good.png")
    cnn = default_size_cnn.set_params(on_error="nan")
    with pytest.warns(BadImageWarning, match=r"row 1: .*tall\.png.*1x20000"):
        features = cnn.transform([good, tall_png])
    assert np.isnan(features[1]).all()
    assert np.isfinite(features[0]).all()


def _tall_items(path):
    pixels = np.zeros(TALL[::-1], dtype=np.uint8)  # (H, W)
    return {
        "path": [path],
        "bytes": [path.read_bytes()],
        "pil": [Image.open(path)],
        "array": [pixels],
        "tensor": [torch.from_numpy(pixels)],
        "batch": pixels[None],
    }


@pytest.mark.parametrize("kind", ["path", "bytes", "pil", "array", "tensor", "batch"])
def test_resize_bomb_is_refused_for_every_item_kind(tall_png, kind, monkeypatch):
    transform = geometric_transform({"input_size": (3, 224, 224), "interpolation": "bilinear",
                                     "crop_pct": 0.875, "crop_mode": "center"})
    monkeypatch.setattr(type(transform), "__call__", lambda self, image: pytest.fail("resized"))
    X = _tall_items(tall_png)[kind]
    with pytest.raises(BadImageError, match=r"^row 0: .*1x20000 .*256x5120000"):
        ImageDataset(X, transform=transform, input_size=(3, 224, 224))[0]
    dataset = ImageDataset(X, transform=transform, input_size=(3, 224, 224), on_error="nan")
    image, error = dataset[0]
    assert "256x5120000" in error
    assert image.shape == (3, 224, 224) and not image.any()


def test_resized_size_follows_the_data_config():
    config = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875,
              "crop_mode": "center"}
    assert geometric_transform(config).resized_size((1, 20000)) == (256, 5120000)
    assert geometric_transform(config).resized_size((640, 480)) == (341, 256)
    # Training crops a region first, then resizes it to the input size: never a bomb.
    assert geometric_transform(config, train=True).resized_size((1, 20000)) == (224, 224)
    squash = {**config, "crop_mode": "squash"}
    assert geometric_transform(squash).resized_size((1, 20000)) == (256, 256)


# --- defect 14: EPS named .png must not reach Ghostscript --------------------------------------

EPS = (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
       b"newpath 0 0 moveto 10 10 lineto stroke\nshowpage\n%%EOF\n")


@pytest.fixture
def fake_ghostscript(tmp_path, monkeypatch):
    """A ``gs`` first on PATH that leaves a marker file when anything runs it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "ghostscript_ran"
    script = bin_dir / "gs"
    script.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # look for gs again, on our PATH
    return marker


@pytest.mark.skipif(os.name == "nt", reason="a shell-script gs needs POSIX")
def test_eps_named_png_is_never_handed_to_ghostscript(tmp_path, fake_ghostscript):
    path = tmp_path / "x.png"
    path.write_bytes(EPS)
    dataset = ImageDataset([path, EPS], transform=np.asarray, input_size=(3, 8, 8))
    for row in (0, 1):
        with pytest.raises(BadImageError, match=f"^row {row}: cannot read image"):
            dataset[row]
    with pytest.raises(Image.UnidentifiedImageError):
        decode(path)
    assert not fake_ghostscript.exists()


@pytest.mark.skipif(os.name == "nt", reason="a shell-script gs needs POSIX")
def test_an_eps_pil_image_is_refused_before_loading(tmp_path, fake_ghostscript):
    path = tmp_path / "x.eps"
    path.write_bytes(EPS)
    image = Image.open(path)  # opening only parses the header; load() would run gs
    with pytest.raises(BadImageError, match="EPS"):
        load_item(image)
    assert not fake_ghostscript.exists()


def test_raster_formats_still_open(tmp_path):
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("TIFF", ".tif"), ("BMP", ".bmp"),
                        ("GIF", ".gif"), ("WEBP", ".webp"), ("PPM", ".ppm")):
        path = tmp_path / f"x{suffix}"
        Image.new("RGB", (4, 4), (200, 10, 10)).save(path, fmt)
        assert decode(path).size == (4, 4), fmt


# --- defect 15 (inputs): clear messages for big-endian arrays and closed PIL images ------------


@pytest.mark.parametrize("dtype", [">u2", ">i2", ">f4", "<u2", ">u1"])
def test_non_native_byte_order_is_read_by_value(dtype):
    value = 0.5 if dtype == ">f4" else 100
    native = np.full((2, 8, 8), value, dtype=np.dtype(dtype).newbyteorder("="))
    foreign = native.astype(dtype)
    transform = geometric_transform({"input_size": (3, 8, 8), "interpolation": "bilinear",
                                     "crop_pct": 1.0, "crop_mode": "center"})
    for X_native, X_foreign in ((native, foreign), (list(native), list(foreign))):
        expected = ImageDataset(X_native, transform=transform, input_size=(3, 8, 8))[0][0]
        actual = ImageDataset(X_foreign, transform=transform, input_size=(3, 8, 8))[0][0]
        assert torch.equal(actual, expected)


def test_big_endian_uint16_gives_the_features_of_native_uint16():
    cnn = PretrainedCNNFeatures(weights=None, random_state=0, image_size=32).fit()
    native = np.full((2, 8, 8), 1000, dtype=np.uint16)
    np.testing.assert_array_equal(cnn.transform(native.astype(">u2")), cnn.transform(native))


def test_big_endian_out_of_range_message_is_accurate():
    X = np.full((1, 8, 8), 300, dtype=">i4")
    with pytest.raises(ValueError, match=r"int32 values outside \[0, 255\]"):
        ImageDataset(X, transform=np.asarray, input_size=(3, 8, 8))


@pytest.mark.parametrize("how", ["close", "with"])
def test_a_closed_pil_image_is_named_not_an_assertion_error(tmp_path, how):
    path = _png(tmp_path / "a.png")
    if how == "close":
        image = Image.open(path)
        image.close()
    else:
        with Image.open(path) as image:
            pass
    dataset = ImageDataset([image], transform=np.asarray, input_size=(3, 8, 8))
    with pytest.raises(BadImageError,
                       match=r"^row 0: .*a\.png.*is closed; pass an open image or its path"):
        dataset[0]
    nan_set = ImageDataset([image], transform=np.asarray, input_size=(3, 8, 8), on_error="nan")
    assert "is closed" in nan_set[0][1]


def test_an_image_loaded_before_its_file_was_closed_still_works(tmp_path):
    path = _png(tmp_path / "a.png", value=90)
    with Image.open(path) as image:
        image.load()  # the pixels are in memory: closing the file does not matter
    assert np.asarray(load_item(image))[0, 0].tolist() == [90, 90, 90]


def test_bytes_items_are_unaffected(tmp_path):
    buffer = io.BytesIO()
    Image.new("RGB", (5, 3), (1, 2, 3)).save(buffer, "PNG")
    assert np.asarray(load_item(buffer.getvalue())).shape == (3, 5, 3)
