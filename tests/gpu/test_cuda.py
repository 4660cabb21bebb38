"""skdeep on a CUDA GPU: the paths written to be right by construction, checked on a real card.

Each test compares the GPU against the CPU, or a GPU path against another, on the bundled
EfficientNet-Lite0 weights, the bundled Fashion-MNIST sample and scikit-learn's two sample
photographs saved as JPEG files (offline).
"""

from __future__ import annotations

import pickle
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

import skdeep._jpeg as jpeg
from skdeep import BadImageWarning, FineTunedCNNClassifier, PretrainedCNNFeatures
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


def _photos(folder) -> dict[str, str]:
    """sklearn's two photographs as JPEG files, plus a crop, an EXIF-rotated, a grey, a
    progressive and a CMYK one (which nvJPEG is not given)."""
    china, flower = load_sample_image("china.jpg"), load_sample_image("flower.jpg")
    images = {"china": Image.fromarray(china), "flower": Image.fromarray(flower),
              "crop": Image.fromarray(china[:300, 100:350]),
              "rotated": Image.fromarray(flower[:, :500]),
              "grey": Image.fromarray(china).convert("L"),
              "progressive": Image.fromarray(flower[::2, ::2]),
              "cmyk": Image.fromarray(china).convert("CMYK")}
    paths = {}
    for name, image in images.items():
        paths[name] = str(folder / f"{name}.jpg")
        options = {"progressive": True} if name == "progressive" else {}
        if name == "rotated":
            exif = image.getexif()
            exif[0x0112] = 6
            options["exif"] = exif.tobytes()
        image.save(paths[name], quality=90, **options)
    return paths


def _spy_on_the_decoder(monkeypatch) -> list[tuple[int, str, int]]:
    """(images, device type, images refused) of each decoder call, recorded as it returns."""
    jpeg.JpegOnDevice.applies(torch.device("cuda"))  # the one-off probe: before, not recorded
    calls = []
    decode = jpeg.decode_jpegs

    def spy(encoded, device):
        decoded = decode(encoded, device)
        calls.append((len(encoded), torch.device(device).type,
                      sum(image is None for image in decoded)))
        return decoded

    monkeypatch.setattr(jpeg, "decode_jpegs", spy)
    return calls


def test_jpeg_files_are_decoded_by_nvjpeg_and_agree_with_the_cpu(tmp_path, monkeypatch):
    paths = list(_photos(tmp_path).values())
    calls = _spy_on_the_decoder(monkeypatch)
    gpu = PretrainedCNNFeatures(image_size=96, device="cuda", precision="fp32").fit()
    cpu = PretrainedCNNFeatures(image_size=96, device="cpu", precision="fp32").fit()
    assert gpu._layer_specs()[0]["decode"] == "nvjpeg" and "decode" not in cpu._layer_specs()[0]
    on_gpu = gpu.transform(paths)  # with workers ("auto"): they read bytes, the GPU decodes
    assert calls[-1] == (len(paths) - 1, "cuda", 0)  # every JPEG but the CMYK one, none refused
    assert _cosine(on_gpu, cpu.transform(paths)).min() >= 0.99


def test_cmyk_and_corrupt_files_fall_back_to_pillow_on_cuda(tmp_path, monkeypatch):
    photos = _photos(tmp_path)
    corrupt = str(tmp_path / "corrupt.jpg")
    with open(corrupt, "wb") as handle:
        handle.write(b"\xff\xd8\xff" + bytes(range(256)) * 8 + b"\xff\xd9")
    paths = [photos["cmyk"], photos["china"], corrupt]
    calls = _spy_on_the_decoder(monkeypatch)
    gpu = PretrainedCNNFeatures(image_size=96, device="cuda", precision="fp32",
                                on_error="nan").fit()
    with pytest.warns(BadImageWarning) as caught:
        rows = gpu.transform(paths)
    assert caught[0].message.rows == [2] and caught[0].message.paths == [corrupt]
    assert calls == [(1, "cuda", 0)]  # the china photo alone went to nvJPEG
    assert np.isnan(rows[2]).all()
    cpu = PretrainedCNNFeatures(image_size=96, device="cpu", precision="fp32").fit()
    assert _cosine(rows[:2], cpu.transform(paths[:2])).min() >= 0.99
