"""JPEG files decoded a batch at a time on the device (skdeep._jpeg), exercised on the CPU.

On CUDA the decoder is nvJPEG; here the same code runs with torchvision's CPU decoder
(``JpegOnDevice.applies`` patched to say yes for the CPU), so the batched path, its fallback to
Pillow and its errors are checked without a GPU. Its pixels and features must agree with
Pillow's path (today's), and every row that path cannot take must come out exactly as today.
"""

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from sklearn.datasets import load_sample_image

import skdeep._jpeg as jpeg
from skdeep import BadImageError, BadImageWarning, PretrainedCNNFeatures
from skdeep._base import resized_on_device
from skdeep._inputs import ImageDataset
from skdeep._jpeg import JpegOnDevice, JpegRows, decode_jpegs, eval_jpeg_decoder, orient
from skdeep._preprocessing import geometric_transform

CONFIG = {"input_size": (3, 64, 64), "interpolation": "bicubic", "crop_pct": 0.875,
          "crop_mode": "center", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
CPU = torch.device("cpu")


def _cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _jpeg_bytes(pixels, orientation=None, mode="RGB", **options):
    image = Image.fromarray(pixels).convert(mode)
    if orientation is not None:
        exif = image.getexif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Real photos as JPEG files (two sizes, EXIF-rotated, grey, progressive), and files the
    device must leave to Pillow: CMYK, PNG, corrupt, truncated. ``{name: path}``."""
    folder = tmp_path_factory.mktemp("jpeg")
    china, flower = load_sample_image("china.jpg"), load_sample_image("flower.jpg")
    contents = {
        "china": _jpeg_bytes(china, quality=90),
        "flower": _jpeg_bytes(flower, quality=90),
        "crop": _jpeg_bytes(china[:300, 100:350], quality=80, subsampling=0),
        "rotated6": _jpeg_bytes(flower[:, :500], orientation=6),
        "rotated3": _jpeg_bytes(china[50:, :400], orientation=3),
        "rotated5": _jpeg_bytes(flower[::2, ::2], orientation=5),
        "grey": _jpeg_bytes(china, mode="L"),
        "progressive": _jpeg_bytes(flower, progressive=True),
        "cmyk": _jpeg_bytes(china, mode="CMYK"),
    }
    buffer = io.BytesIO()
    Image.fromarray(flower).save(buffer, "PNG")
    contents["png"] = buffer.getvalue()
    contents["corrupt"] = b"\xff\xd8\xff" + bytes(range(256)) * 8 + b"\xff\xd9"
    contents["truncated"] = contents["china"][: len(contents["china"]) // 2]
    paths = {}
    for name, data in contents.items():
        paths[name] = str(folder / f"{name}.{'png' if name == 'png' else 'jpg'}")
        with open(paths[name], "wb") as handle:
            handle.write(data)
    return paths


PLAIN = ["china", "flower", "crop", "rotated6", "rotated3", "rotated5", "grey", "progressive"]


@pytest.fixture
def on_the_cpu(monkeypatch):
    """The device path on the CPU; the rows each decoder call got are recorded."""
    monkeypatch.setattr(JpegOnDevice, "applies", staticmethod(lambda device: True))
    calls = []
    decode = jpeg.decode_jpegs

    def spy(encoded, device):
        calls.append(len(encoded))
        return decode(encoded, device)

    monkeypatch.setattr(jpeg, "decode_jpegs", spy)
    return calls


@pytest.fixture(scope="module")
def cnn():
    return PretrainedCNNFeatures(image_size=64, precision="fp32").fit()


# --- pieces ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(10))
def test_orientation_turns_pixels_as_pillows_exif_transpose(orientation):
    data = _jpeg_bytes(load_sample_image("china.jpg")[:40, :70], orientation=orientation or None)
    with Image.open(io.BytesIO(data)) as image:
        expected = np.asarray(ImageOps.exif_transpose(image))
        stored = torch.from_numpy(np.array(image)).permute(2, 0, 1)
    ours = orient(stored, orientation).permute(1, 2, 0).numpy()
    assert ours.shape == expected.shape and np.array_equal(ours, expected)


def test_the_decoder_takes_a_list_and_names_what_it_refuses():
    good = torch.frombuffer(bytearray(_jpeg_bytes(load_sample_image("flower.jpg"))),
                            dtype=torch.uint8)
    bad = torch.frombuffer(bytearray(b"\xff\xd8\xff" + bytes(300)), dtype=torch.uint8)
    assert decode_jpegs([], CPU) == []
    first, refused, second = decode_jpegs([good, bad, good], CPU)
    assert refused is None and first.shape == (3, 427, 640) and first.dtype == torch.uint8
    assert torch.equal(first, second)


def test_only_cuda_decodes_on_the_device_and_the_cache_key_says_so(files, cnn):
    assert not JpegOnDevice.applies(CPU) and not JpegOnDevice.applies(None)
    assert eval_jpeg_decoder(CONFIG, CPU) == "pillow"
    dataset = ImageDataset([files["china"]], geometric_transform(CONFIG), CONFIG["input_size"])
    assert resized_on_device(dataset, CPU) == (dataset, None)
    assert "decode" not in cnn._layer_specs()[0]  # keys made by Pillow are kept


def test_the_cache_key_names_nvjpeg_on_its_path(cnn, on_the_cpu):
    assert eval_jpeg_decoder(CONFIG, CPU) == "nvjpeg"
    assert cnn._layer_specs()[0]["decode"] == "nvjpeg"
    # Filters the tensor kernels lack keep Pillow's whole path, and its keys.
    assert eval_jpeg_decoder({**CONFIG, "interpolation": "lanczos"}, CPU) == "pillow"


# --- the batch: pixels --------------------------------------------------------------------------


def test_a_batch_reads_pixels_as_pillows_path_does(files, on_the_cpu):
    flower = load_sample_image("flower.jpg")
    with open(files["china"], "rb") as handle:
        china_bytes = handle.read()
    items = [*(files[name] for name in PLAIN), files["cmyk"], files["png"], china_bytes,
             Image.fromarray(flower), flower[:200]]
    dataset = ImageDataset(items, geometric_transform(CONFIG), CONFIG["input_size"])
    view, prepare = resized_on_device(dataset, CPU)
    assert prepare is not None
    rows, messages = view.__getitems__(list(range(len(items))))
    assert isinstance(rows, JpegRows) and messages == [""] * len(items)
    plain = [*range(len(PLAIN)), len(PLAIN) + 2]  # the JPEG files and the JPEG bytes
    assert rows.positions == plain
    assert sorted(rows.read_positions + plain) == list(range(len(items)))
    images, messages = prepare(rows, messages, CPU)
    expected = torch.stack([dataset[i][0] for i in range(len(items))])  # Pillow, one at a time
    assert images.shape == expected.shape == (len(items), 3, 64, 64) and images.is_contiguous()
    difference = (images.int() - expected.int()).abs()
    assert difference.max() <= 3 and difference.float().mean() < 0.05  # libjpeg vs libjpeg
    assert on_the_cpu == [len(plain)]  # one decoder call for the batch


def test_a_batch_of_one_size_is_resized_at_once_and_a_byte_budget_bounds_it(files, on_the_cpu,
                                                                          monkeypatch):
    items = [files["china"], files["flower"], files["china"]]
    dataset = ImageDataset(items, geometric_transform(CONFIG), CONFIG["input_size"])
    view, prepare = resized_on_device(dataset, CPU)
    expected = torch.stack([dataset[i][0] for i in range(3)])
    images, _ = prepare(*view.__getitems__([0, 1, 2]), CPU)
    assert (images.int() - expected.int()).abs().max() <= 3
    monkeypatch.setattr(jpeg, "_BATCH_BYTES", os.path.getsize(files["china"]) + 10)
    rows, messages = view.__getitems__([0, 1, 2])
    assert rows.positions == [0] and rows.read_positions == [1, 2]  # the rest: Pillow
    images, _ = prepare(rows, messages, CPU)
    assert (images.int() - expected.int()).abs().max() <= 3
    assert on_the_cpu == [3, 1]


def test_large_photos_are_decoded_in_parts_of_bounded_size(files, on_the_cpu, monkeypatch):
    items = [files[name] for name in ("china", "crop", "flower", "grey")]  # 427 x 640 but crop
    dataset = ImageDataset(items, geometric_transform(CONFIG), CONFIG["input_size"])
    view, prepare = resized_on_device(dataset, CPU)
    expected = torch.stack([dataset[i][0] for i in range(4)])
    monkeypatch.setattr(jpeg, "_DECODE_BYTES", 3 * 427 * 640 + 3 * 300 * 250)
    rows, messages = view.__getitems__([0, 1, 2, 3])
    assert rows.parts(jpeg._DECODE_BYTES) == [range(0, 2), range(2, 3), range(3, 4)]
    images, _ = prepare(rows, messages, CPU)
    assert on_the_cpu == [2, 1, 1]  # decoded a part at a time
    assert (images.int() - expected.int()).abs().max() <= 3
    assert rows.parts(1) == [range(0, 1), range(1, 2), range(2, 3), range(3, 4)]  # one at least


# --- features ------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_workers", [0, 1])
def test_features_agree_with_pillows_path_on_real_photos(files, cnn, on_the_cpu, monkeypatch,
                                                         num_workers):
    paths = [files[name] for name in [*PLAIN, "cmyk", "png"]]
    cnn.set_params(num_workers=num_workers, batch_size=4)
    try:
        ours = cnn.transform(paths)
        if num_workers == 0:  # a worker's calls are not seen here
            assert sum(on_the_cpu) == len(PLAIN)  # every plain JPEG, and only those
        monkeypatch.setattr(JpegOnDevice, "applies", staticmethod(lambda device: False))
        pillows = cnn.transform(paths)
    finally:
        cnn.set_params(num_workers="auto", batch_size=None)
    assert _cosine(ours, pillows).min() >= 0.999


def test_a_jpeg_the_decoder_refuses_is_read_by_pillow(files, cnn, on_the_cpu, monkeypatch):
    refused = os.path.getsize(files["flower"])
    decode = jpeg.decode_jpeg

    def picky(encoded, **options):  # refuses the flower, as nvJPEG refuses what it cannot read
        if any(len(data) == refused for data in encoded):
            raise RuntimeError("nvjpeg: unsupported bitstream")
        return decode(encoded, **options)

    monkeypatch.setattr(jpeg, "decode_jpeg", picky)
    paths = [files["china"], files["flower"], files["grey"]]
    ours = cnn.transform(paths)
    assert on_the_cpu == [3, 1, 1, 1]  # the batch refused: each image alone, the flower refused
    monkeypatch.setattr(JpegOnDevice, "applies", staticmethod(lambda device: False))
    assert _cosine(ours, cnn.transform(paths)).min() >= 0.999


# --- bad rows: as today --------------------------------------------------------------------------


def _outcome(cnn, paths, on_error):
    """What transform does with ``paths``: the error's (type, message, rows, paths), or the
    rows and the warning's (message, rows, paths)."""
    cnn.set_params(on_error=on_error)
    try:
        if on_error == "raise":
            with pytest.raises(BadImageError) as caught:
                cnn.transform(paths)
            error = caught.value
            return type(error), str(error), error.rows, error.paths
        with pytest.warns(BadImageWarning) as caught:
            rows = cnn.transform(paths)
        warning = caught[0].message
        return rows, str(warning), warning.rows, warning.paths
    finally:
        cnn.set_params(on_error="raise")


@pytest.mark.parametrize("bad", ["corrupt", "truncated"])
@pytest.mark.parametrize("on_error", ["raise", "nan"])
def test_a_bad_jpeg_is_reported_as_pillows_path_reports_it(files, cnn, monkeypatch, bad,
                                                           on_error):
    paths = [files["china"], files["grey"], files[bad], files["flower"]]
    pillows = _outcome(cnn, paths, on_error)
    monkeypatch.setattr(JpegOnDevice, "applies", staticmethod(lambda device: True))
    ours = _outcome(cnn, paths, on_error)
    assert ours[2] == [2] and ours[3] == [files[bad]] and files[bad] in ours[1]
    assert ours[1:] == pillows[1:]  # the same message, naming the row and the path
    if on_error == "raise":
        assert ours[0] is pillows[0]
    else:
        assert np.isnan(ours[0][2]).all() and not np.isnan(ours[0][[0, 1, 3]]).any()
        assert _cosine(ours[0][[0, 1, 3]], pillows[0][[0, 1, 3]]).min() >= 0.999


def test_decompression_bombs_are_refused_as_before(tmp_path, cnn, monkeypatch):
    # A 40 x 40 image, over a limit of 1,000 pixels; and a 2 x 300 strip, under it decoded but
    # not once resized (73 px on its short side: 73 x 10,950).
    big, strip = str(tmp_path / "big.jpg"), str(tmp_path / "strip.jpg")
    with open(big, "wb") as handle:
        handle.write(_jpeg_bytes(np.full((40, 40, 3), 90, np.uint8)))
    with open(strip, "wb") as handle:
        handle.write(_jpeg_bytes(np.full((300, 2, 3), 90, np.uint8)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for path, reason in ((big, "decompression bomb refused"), (strip, "before its centre crop")):
        pillows = _outcome(cnn, [path], "raise")
        monkeypatch.setattr(JpegOnDevice, "applies", staticmethod(lambda device: True))
        ours = _outcome(cnn, [path], "raise")
        monkeypatch.setattr(JpegOnDevice, "applies", staticmethod(lambda device: False))
        assert ours == pillows and reason in ours[1]


def test_cached_misses_take_the_device_path_in_their_rows(files, tmp_path, on_the_cpu):
    paths = [files[name] for name in ("china", "png", "flower", "rotated6", "grey")]
    reference = PretrainedCNNFeatures(image_size=64, precision="fp32").fit().transform(paths)
    cached = PretrainedCNNFeatures(image_size=64, precision="fp32", cache=tmp_path / "c").fit()
    cached.transform(paths[1:3])
    rows = cached.transform(paths)  # misses 0, 3, 4: a Subset of the dataset
    assert cached.cache_info().hits == 2 and on_the_cpu[-1] == 3
    assert _cosine(rows, reference).min() >= 0.999
