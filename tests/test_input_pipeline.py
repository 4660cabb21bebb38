"""The batched input pipeline: tensor resize kernels, the read-ahead thread, out-of-memory back-off.

Features made through the tensor kernels must agree with timm's PIL transform (the path they
replace), on real photos and on the bundled data; an array of images is resized a batch at a
time and gives the same rows as one image at a time; a device that runs out of memory costs
time, never a row.
"""

import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image
from torch import nn
from torch.utils.data import DataLoader, Subset

from skdeep import PretrainedCNNFeatures
from skdeep._base import resized_on_device
from skdeep._inference import (
    MemoryBackoff,
    Prefetcher,
    iter_row_chunks,
    predict_rows,
    read_batches,
    resolve_num_workers,
)
from skdeep._inputs import ImageDataset, collate_rows
from skdeep._preprocessing import (
    GeometricTransform,
    TensorEvalTransform,
    geometric_transform,
    resize_like_pillow,
)
from skdeep._training import Trainer, make_scaler
from skdeep.cli import build_parser
from skdeep.datasets import load_fashion_sample

CONFIG = {"input_size": (3, 96, 96), "interpolation": "bicubic", "crop_pct": 0.875,
          "crop_mode": "center", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}


def _cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def photos():
    """sklearn's two sample photographs (427 x 640 JPEG), and crops of other shapes."""
    china, flower = load_sample_image("china.jpg"), load_sample_image("flower.jpg")
    return [china, flower, china[:300, 100:350], flower[50:, :333], china[::3, ::2]]


def _features(X, pil, monkeypatch, **params):
    """Features through the tensor kernels, or (``pil``) through timm's PIL eval transform."""
    cnn = PretrainedCNNFeatures(image_size=96, precision="fp32", **params).fit()
    with monkeypatch.context() as patch:
        if pil:
            patch.setattr(TensorEvalTransform, "supports", staticmethod(lambda config: False))
        return cnn.transform(X)


# --- agreement with the PIL path -----------------------------------------------------------------


def test_photos_agree_with_timms_pil_transform(photos, monkeypatch):
    ours = _features(photos, pil=False, monkeypatch=monkeypatch)
    timms = _features(photos, pil=True, monkeypatch=monkeypatch)
    assert _cosine(ours, timms).min() >= 0.999


def test_bundled_data_agrees_with_timms_pil_transform(monkeypatch):
    images, _ = load_fashion_sample(return_X_y=True)
    images = images[::10]  # 100 images, every class
    ours = _features(images, pil=False, monkeypatch=monkeypatch, layer="blocks.5")
    timms = _features(images, pil=True, monkeypatch=monkeypatch, layer="blocks.5")
    assert _cosine(ours, timms).min() >= 0.999


@pytest.mark.parametrize("kernel", ["uint8", "float"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
def test_both_kernels_resize_within_two_levels_of_pillow(photos, kernel, interpolation):
    # "float" is the kernel a GPU runs, checked here on the CPU. The sizes are those the eval
    # transform resizes to (the aspect ratio kept), down and up.
    filters = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}
    small = np.ascontiguousarray(photos[0][::15, ::15])  # 29 x 43: upscaled
    for photo in [*photos, small]:
        for side in (96, 224):
            transform = TensorEvalTransform({**CONFIG, "input_size": (3, side, side)})
            width, height = transform.resized_size((photo.shape[1], photo.shape[0]))
            image = Image.fromarray(photo).resize((width, height), filters[interpolation])
            batch = torch.from_numpy(photo.copy()).permute(2, 0, 1)[None]
            ours = resize_like_pillow(batch, height, width, interpolation, kernel=kernel)
            assert ours.dtype == torch.uint8
            difference = ours[0].permute(1, 2, 0).numpy().astype(int) - np.asarray(image)
            assert np.abs(difference).max() <= 2 and np.abs(difference).mean() < 0.01


def test_the_crop_is_timms_on_every_shape(photos):
    transform = geometric_transform(CONFIG)
    assert isinstance(transform, TensorEvalTransform)
    for photo in photos:
        image = Image.fromarray(photo)
        difference = transform(image).int() - GeometricTransform(CONFIG)(image).int()
        assert difference.abs().max() <= 2  # rounding; a crop one pixel off differs by far more


def test_filters_and_modes_without_a_tensor_kernel_stay_on_pil():
    assert isinstance(geometric_transform({**CONFIG, "interpolation": "lanczos"}),
                      GeometricTransform)
    assert isinstance(geometric_transform({**CONFIG, "crop_mode": "border"}), GeometricTransform)
    assert isinstance(geometric_transform({**CONFIG, "input_size": (3, 96, 128)}),
                      GeometricTransform)
    assert isinstance(geometric_transform({**CONFIG, "crop_mode": "squash"}), TensorEvalTransform)
    assert isinstance(geometric_transform(CONFIG, train=True), GeometricTransform)


# --- an array of images: resized a batch at a time ------------------------------------------------


def test_an_array_is_resized_on_the_device_and_a_list_per_image(rgb_images):
    transform = geometric_transform(CONFIG)
    dataset = ImageDataset(rgb_images, transform, CONFIG["input_size"])
    batched, prepare = resized_on_device(dataset)
    assert prepare is not None and batched[0][0].shape == (24, 24, 3)  # as in memory, not resized
    subset, prepare = resized_on_device(Subset(dataset, [4, 1]))
    assert prepare is not None and subset.indices == [4, 1]
    per_image = ImageDataset(list(rgb_images), transform, CONFIG["input_size"])
    assert resized_on_device(per_image) == (per_image, None)
    images = torch.stack([batched[i][0] for i in range(len(batched))])
    expected = torch.stack([per_image[i][0] for i in range(len(per_image))])
    prepared, messages = prepare(images, ["", "x"], torch.device("cpu"))
    assert torch.equal(prepared, expected) and messages == ["", "x"]


@pytest.mark.parametrize("kind", ["rgb", "gray", "gray1", "float", "uint16", "rgba"])
def test_a_slice_of_an_array_is_read_as_its_rows_are(rgb_images, kind):
    pixels = {"rgb": rgb_images, "gray": rgb_images[..., 0], "gray1": rgb_images[..., :1],
              "float": rgb_images / 255.0, "uint16": rgb_images.astype(np.uint16) * 257,
              "rgba": np.concatenate([rgb_images, rgb_images[..., :1]], axis=-1)}[kind]
    dataset, _ = resized_on_device(ImageDataset(pixels, geometric_transform(CONFIG),
                                                CONFIG["input_size"]))
    loader = DataLoader(Subset(dataset, [5, 0, 3]), batch_size=3,
                        collate_fn=collate_rows)
    images, messages = next(iter(loader))
    expected = torch.stack([dataset[i][0] for i in (5, 0, 3)])  # row by row, through Pillow
    assert images.shape == (3, 24, 24, 3)
    assert torch.equal(images, expected) and list(messages) == ["", "", ""]


def test_an_array_gives_the_rows_of_its_images_one_at_a_time(rgb_images):
    cnn = PretrainedCNNFeatures(image_size=48, precision="fp32", batch_size=4).fit()
    together = cnn.transform(rgb_images)
    one_by_one = np.concatenate([cnn.transform(rgb_images[i:i + 1]) for i in range(6)])
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=3e-5)
    np.testing.assert_allclose(together, cnn.transform(list(rgb_images)), rtol=1e-5, atol=3e-5)


# --- the read-ahead thread ------------------------------------------------------------------------


class _Counting(torch.utils.data.Dataset):
    """Rows 0..n-1 as 1x1 images whose value is the row; ``fail_at`` raises there."""

    def __init__(self, n, fail_at=None):
        self.n, self.fail_at, self.read = n, fail_at, []

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if index == self.fail_at:
            raise ValueError(f"row {index} is unreadable")
        self.read.append(index)
        return torch.full((1, 1, 1), index, dtype=torch.uint8), ""


def test_the_thread_hands_over_every_batch_in_order_then_the_error():
    loader = DataLoader(_Counting(10, fail_at=7), batch_size=2)
    seen = []
    with pytest.raises(ValueError, match="row 7 is unreadable"):
        for images, _ in Prefetcher(loader, torch.device("cpu"),
                                    prepare=lambda x, messages, device: (x * 2, messages)):
            seen.extend((images.flatten() // 2).tolist())
    assert seen == [0, 1, 2, 3, 4, 5]  # every batch before the bad one, each once


def test_closing_early_stops_the_thread():
    dataset = _Counting(1000)
    batches = iter(Prefetcher(DataLoader(dataset, batch_size=1), torch.device("cpu")))
    next(batches)
    batches.close()
    assert not [t for t in threading.enumerate() if t.name == "skdeep-prefetch"]
    assert len(dataset.read) <= 4  # read ahead by a bounded number of batches, not to the end


# --- out of memory --------------------------------------------------------------------------------


class _SmallDevice(nn.Module):
    """Sums each image; raises the out-of-memory error of a device above ``limit`` images."""

    def __init__(self, limit):
        super().__init__()
        self.limit, self.rows_seen = limit, []

    def forward(self, images):
        if len(images) > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        self.rows_seen.extend(images.flatten(1)[:, 0].tolist())
        return images.flatten(1).float().sum(1, keepdim=True)


def test_out_of_memory_halves_the_batch_and_computes_every_row_once():
    dataset = _Counting(37)
    device = _SmallDevice(limit=5)
    with pytest.warns(UserWarning, match="ran out of memory on a batch of 16") as caught:
        rows, _ = predict_rows(device, dataset, device=torch.device("cpu"), precision="fp32",
                               batch_size=16)
    assert len(caught) == 1  # once per job, not per batch
    np.testing.assert_array_equal(rows[:, 0], np.arange(37))
    assert device.rows_seen == list(range(37))  # in order, none twice


def test_out_of_memory_on_one_image_is_raised():
    with pytest.raises(torch.OutOfMemoryError), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predict_rows(_SmallDevice(limit=0), _Counting(3), device=torch.device("cpu"),
                     precision="fp32", batch_size=2)


def test_a_fixed_shape_graph_gets_padded_parts_after_backing_off():
    shapes = []

    def forward(images):
        shapes.append(len(images))
        if len(images) > 4:
            raise torch.OutOfMemoryError("simulated")
        return images.flatten(1).float()

    run = MemoryBackoff(forward, 8, fixed_batch=True)
    with pytest.warns(UserWarning):
        out = run(torch.arange(7, dtype=torch.uint8).view(7, 1, 1, 1))
    assert out.flatten().tolist() == list(range(7))
    assert shapes == [8, 4, 4]  # 7 padded to 8 fails; 4 + 3 padded to 4


def test_a_training_step_that_runs_out_of_memory_takes_the_same_step_in_parts():
    torch.manual_seed(0)
    images = torch.randint(0, 255, (12, 3, 4, 4), dtype=torch.uint8)
    targets = torch.tensor([0, 1, 2] * 4)

    def trained(limit):
        torch.manual_seed(1)
        network = nn.Sequential(nn.Flatten(), nn.Linear(48, 3))
        seen = []

        def logits(batch):
            if len(batch) > limit:
                raise torch.OutOfMemoryError("simulated")
            seen.append(len(batch))
            return network(batch.float() / 255)

        optimizer = torch.optim.SGD(network.parameters(), lr=0.5)
        trainer = Trainer(network=network, logits_from=0, set_modes=network.train,
                          optimizer=optimizer, schedule=_NoSchedule(),
                          scaler=make_scaler(torch.device("cpu"), "fp32"), targets=targets,
                          weights=torch.ones(12), device=torch.device("cpu"), precision="fp32")
        trainer.logits = logits
        loader = [(images[i:i + 6], [""] * 6, torch.arange(i, i + 6)) for i in (0, 6)]
        loss = trainer.train_epoch(loader)
        return network[1].weight.detach().clone(), loss, seen

    weight, loss, seen = trained(limit=100)
    with pytest.warns(UserWarning, match="ran out of memory"):
        parts_weight, parts_loss, parts_seen = trained(limit=2)
    assert seen == [6, 6]
    assert parts_seen == [1] * 12  # 6 failed, then 3: parts of 1, every row once per step
    torch.testing.assert_close(parts_weight, weight)  # the same optimizer steps
    assert parts_loss == pytest.approx(loss, rel=1e-6)


class _NoSchedule:
    def after_step(self):
        pass


# --- num_workers="auto" -------------------------------------------------------------------------


def test_auto_workers_are_zero_on_a_cpu_and_for_arrays(rgb_images, tmp_path):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    arrays = ImageDataset(rgb_images, geometric_transform(CONFIG), CONFIG["input_size"])
    path = tmp_path / "a.png"
    Image.fromarray(rgb_images[0]).save(path)
    files = ImageDataset([str(path)] * 3, geometric_transform(CONFIG), CONFIG["input_size"])
    assert resolve_num_workers("auto", files, cpu) == 0
    assert resolve_num_workers("auto", arrays, cuda) == 0
    assert 0 <= resolve_num_workers("auto", files, cuda) <= 8
    assert resolve_num_workers("auto", Subset(files, [0]), cuda) == resolve_num_workers(
        "auto", files, cuda)
    assert resolve_num_workers("auto", arrays, cuda, train=True) == resolve_num_workers(
        "auto", files, cuda)
    assert resolve_num_workers(3, arrays, cpu) == 3


def test_auto_is_the_default_and_runs(rgb_images):
    cnn = PretrainedCNNFeatures(image_size=32)
    assert cnn.get_params()["num_workers"] == "auto"
    assert cnn.fit().transform(rgb_images).shape[0] == 6
    with pytest.raises(ValueError, match="num_workers"):
        PretrainedCNNFeatures(num_workers="many").fit()


def test_the_cli_takes_auto_or_a_count():
    parser = build_parser()
    assert parser.parse_args(["extract", "x", "-o", "f.npy"]).workers == "auto"
    assert parser.parse_args(["extract", "x", "-o", "f.npy", "--workers", "2"]).workers == 2
    with pytest.raises(SystemExit):
        parser.parse_args(["extract", "x", "-o", "f.npy", "--workers", "-1"])


def test_the_cpu_reads_batches_in_the_callers_thread():
    before = threading.active_count()
    batches = read_batches(DataLoader(_Counting(8), batch_size=2), torch.device("cpu"))
    assert len(list(batches)) == 4 and threading.active_count() == before
    assert not [t for t in threading.enumerate() if t.name == "skdeep-prefetch"]


def test_chunks_still_flush_and_stop_cleanly(rgb_images):
    dataset = _Counting(50)
    chunks = iter_row_chunks(lambda x: x.flatten(1).float(), dataset, device=torch.device("cpu"),
                             precision="fp32", batch_size=4)
    first, _ = next(chunks)
    chunks.close()
    assert len(first) >= 4
    assert not [t for t in threading.enumerate() if t.name == "skdeep-prefetch"]
