"""skdeep on a CUDA GPU: the paths written to be right by construction, checked on a real card.

Each test compares the GPU against the CPU, or a GPU path against another, on the bundled
EfficientNet-Lite0 weights and the bundled Fashion-MNIST sample (offline).
"""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from skdeep import FineTunedCNNClassifier, PretrainedCNNFeatures
from skdeep._inference import resolve_num_workers
from skdeep._preprocessing import TensorEvalTransform
from skdeep.datasets import load_fashion_sample

pytestmark = pytest.mark.cuda


def _cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def sample():
    images, labels = load_fashion_sample(return_X_y=True)
    return images[::5], labels[::5]  # 200 images, every class


def test_cuda_features_match_the_cpu(sample):
    images, _ = sample
    cpu = PretrainedCNNFeatures(image_size=96, device="cpu", precision="fp32").fit()
    fp32 = PretrainedCNNFeatures(image_size=96, device="cuda", precision="fp32").fit()
    auto = PretrainedCNNFeatures(image_size=96, device="cuda").fit()
    assert auto.precision_ == "bf16" and auto.device_.type == "cuda"
    reference = cpu.transform(images)
    assert _cosine(fp32.transform(images), reference).min() >= 0.999
    assert _cosine(auto.transform(images), reference).min() >= 0.99


def test_an_array_is_resized_on_the_gpu(sample, monkeypatch):
    images, _ = sample
    devices = []
    batch = TensorEvalTransform.batch

    def spy(self, tensor):
        devices.append(tensor.device.type)
        return batch(self, tensor)

    monkeypatch.setattr(TensorEvalTransform, "batch", spy)
    gpu = PretrainedCNNFeatures(image_size=96, device="cuda", precision="fp32").fit()
    on_gpu = gpu.transform(images)
    assert set(devices) == {"cuda"}
    cpu = PretrainedCNNFeatures(image_size=96, device="cpu", precision="fp32").fit()
    per_image = cpu.transform(list(images))  # one image at a time, on the CPU
    assert _cosine(on_gpu, per_image).min() >= 0.999


def test_compiled_on_cuda_equals_eager_and_threads_get_their_own_rows(sample):
    images, _ = sample
    eager = PretrainedCNNFeatures(image_size=96, device="cuda", compile=False).fit()
    compiled = PretrainedCNNFeatures(image_size=96, device="cuda", compile=True,
                                     batch_size=32).fit()
    expected = eager.transform(images)
    assert _cosine(compiled.transform(images), expected).min() >= 0.99
    parts = np.array_split(np.arange(len(images)), 4)
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(k):
        try:
            for _ in range(3):  # overlapping calls: CUDA graphs replay into shared memory
                results[k] = compiled.transform(images[parts[k]])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for k, rows in enumerate(parts):
        assert _cosine(results[k], expected[rows]).min() >= 0.99  # no other thread's rows


def test_fit_on_cuda_then_load_and_unpickle_on_the_cpu(sample, tmp_path, monkeypatch):
    images, labels = sample
    clf = FineTunedCNNClassifier(image_size=64, epochs=1, device="cuda", validation_fraction=0,
                                 random_state=0, verbose=0).fit(images, labels)
    proba = clf.predict_proba(images[:40])
    clf.save(tmp_path / "model")
    data = pickle.dumps(clf)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only machine
    loaded = FineTunedCNNClassifier.load(tmp_path / "model")
    unpickled = pickle.loads(data)
    for model in (loaded, unpickled):
        assert model.device_.type == "cpu"
        np.testing.assert_allclose(model.predict_proba(images[:40]), proba, atol=0.05)


class _FullCard:
    """Takes the card's free memory but ``leave`` bytes, in plain allocations; frees it after."""

    def __init__(self, leave: int) -> None:
        self.leave, self.blocks = leave, []

    def __enter__(self):
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info()
        while free > self.leave + 2**26:
            size = min(2**30, free - self.leave)
            self.blocks.append(torch.empty(size, dtype=torch.uint8, device="cuda"))
            free, _ = torch.cuda.mem_get_info()
        return self

    def __exit__(self, *exc):
        self.blocks.clear()
        torch.cuda.empty_cache()


def _peak_bytes(run) -> int:
    """What ``run`` allocates at its peak beyond what is allocated now."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def test_out_of_memory_backs_off_on_a_full_card():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, (160, 448, 448, 3), dtype=np.uint8)
    cnn = PretrainedCNNFeatures(image_size=448, device="cuda", precision="fp32").fit()
    assert cnn._inference_batch_size() == 64
    peak = _peak_bytes(lambda: cnn.transform(images[:64]))
    reference = cnn.set_params(batch_size=8).transform(images)
    cnn.set_params(batch_size=None)
    with _FullCard(leave=int(0.4 * peak)), pytest.warns(UserWarning, match="ran out of memory"):
        rows = cnn.transform(images)
    assert _cosine(rows, reference).min() >= 0.999  # every row, computed once, in order


def test_training_backs_off_on_a_full_card(sample):
    images, labels = sample
    big = np.repeat(np.repeat(images[:128], 8, axis=1), 8, axis=2)  # 224 px
    params = dict(image_size=224, epochs=1, batch_size=128, device="cuda", validation_fraction=0,
                  random_state=0, verbose=0)
    peak = _peak_bytes(lambda: FineTunedCNNClassifier(**params).fit(big, labels[:128]))
    with _FullCard(leave=int(0.5 * peak)), pytest.warns(UserWarning, match="ran out of memory"):
        clf = FineTunedCNNClassifier(**params).fit(big, labels[:128])
    assert clf.predict(big[:8]).shape == (8,)


def test_files_are_read_by_workers_on_cuda(sample, tmp_path):
    images, _ = sample
    paths = []
    for i, image in enumerate(images[:64]):
        paths.append(str(tmp_path / f"{i}.jpg"))
        Image.fromarray(image).convert("RGB").resize((300, 200)).save(paths[-1])
    auto = PretrainedCNNFeatures(image_size=96, device="cuda", precision="fp32").fit()
    in_process = PretrainedCNNFeatures(image_size=96, device="cuda", precision="fp32",
                                       num_workers=0).fit()
    assert resolve_num_workers("auto", auto._dataset(paths), auto.device_) > 0  # workers used
    rows = auto.transform(paths)
    assert _cosine(rows, in_process.transform(paths)).min() >= 0.9999
