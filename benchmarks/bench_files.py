"""Files -> embeddings: is decoding hidden behind the forward pass when num_workers > 0?

Writes N PNG and N JPEG files to a temporary directory, then measures in one run, on the same
images, for each format:

- model-only limit: the images already decoded and resized, as uint8 tensors in memory, through
  the same batched inference loop (``skdeep._inference.predict_rows``) the transformer uses;
- decode-only rate: the transformer's own Dataset over the files (open, EXIF, mode -> RGB,
  resize/crop) in a DataLoader with num_workers = 0, 1, 2, and no model;
- files -> embeddings: ``PretrainedCNNFeatures(num_workers=w).transform(paths)``, w = 0, 1, 2.

and prints images/s with the ratio of files -> embeddings to min(model limit, decode rate with
the same workers). Goal: >= 0.8 with workers. Run on a quiet machine for numbers worth quoting.

Usage::

    python benchmarks/bench_files.py                # 2,000 PNG + 2,000 JPEG at 256 px, 224 px net
    python benchmarks/bench_files.py --n 500 --image-size 160
    python benchmarks/bench_files.py --quick        # seconds: proves the script works, no figures
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from skdeep import PretrainedCNNFeatures
from skdeep._inference import make_loader, predict_rows

WORKERS = (0, 1, 2)


def write_images(folder: str, n: int, side: int, fmt: str, seed: int = 0) -> list[str]:
    """``n`` photo-like images (smooth colour fields, edges and noise) saved as ``fmt``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    paths = []
    for i in range(n):
        a, b, c = rng.uniform(0.5, 6.0, 3)
        channels = [np.sin(a * xx * 6 + i), np.cos(b * yy * 6), np.sin(c * (xx + yy) * 4)]
        field = np.stack(channels, axis=-1)
        field[yy > rng.uniform(0.2, 0.8)] *= -1  # a hard edge
        pixels = (field * 100 + 128 + rng.normal(0, 12, field.shape)).clip(0, 255).astype(np.uint8)
        path = os.path.join(folder, f"{i:05d}.{fmt}")
        if fmt == "jpg":
            Image.fromarray(pixels).save(path, quality=90)
        else:
            Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


class InMemory(Dataset):
    """Already transformed uint8 tensors, yielded the way ImageDataset yields them."""

    def __init__(self, tensors: list[torch.Tensor]) -> None:
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def __getitem__(self, index: int):
        return self.tensors[index], ""


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def bench_format(cnn: PretrainedCNNFeatures, paths: list[str], repeat: int) -> list[tuple]:
    n = len(paths)
    dataset = cnn._dataset(paths)

    # Decode-only, in the main process; keeps the decoded images for the model-only limit.
    seconds, tensors = timed(lambda: [dataset[i][0] for i in range(n)])
    decode = {0: rate(n, seconds)}
    for _ in range(repeat - 1):
        decode[0] = max(decode[0], rate(n, timed(lambda: [dataset[i][0] for i in range(n)])[0]))
    for workers in WORKERS[1:]:
        def drain(w=workers):
            loader = make_loader(dataset, batch_size=cnn.batch_size, device=cnn.device_,
                                 num_workers=w)
            for _ in loader:
                pass
        decode[workers] = max(rate(n, timed(drain)[0]) for _ in range(repeat))

    # Model-only limit: same images, same loop, nothing to decode.
    memory = InMemory(tensors)

    def model_only():
        return predict_rows(cnn._get_extractor(), memory, device=cnn.device_,
                            precision=cnn.precision_, batch_size=cnn.batch_size)

    model = max(rate(n, timed(model_only)[0]) for _ in range(repeat))

    rows = [("model-only (in memory)", "-", model, None)]
    for workers in WORKERS:
        rows.append(("decode-only", workers, decode[workers], None))
    for workers in WORKERS:
        cnn.set_params(num_workers=workers)
        end_to_end = max(rate(n, timed(lambda: cnn.transform(paths))[0]) for _ in range(repeat))
        rows.append(("files -> embeddings", workers, end_to_end,
                     end_to_end / min(model, decode[workers])))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="images per format (default 2000)")
    parser.add_argument("--side", type=int, default=256, help="image side in pixels (default 256)")
    parser.add_argument("--image-size", type=int, default=None,
                        help="network input side (default: the weights' own, 224)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=1, help="best of this many timings")
    parser.add_argument("--quick", action="store_true",
                        help="64 images per format at 96 px, 64 px network input: a smoke run")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.side, args.image_size, args.batch_size = 64, 96, 64, 16

    cnn = PretrainedCNNFeatures(image_size=args.image_size, batch_size=args.batch_size).fit()
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, device {cnn.device_}, "
          f"precision {cnn.precision_}, network input {cnn.data_config_['input_size'][1:]}, "
          f"{args.n} images per format at {args.side} px")
    cnn.transform(np.zeros((args.batch_size, 32, 32, 3), np.uint8))  # warm-up (kernel selection)

    with tempfile.TemporaryDirectory(prefix="skdeep-bench-files-") as folder:
        header = f"{'format':6}  {'stage':24}  {'workers':>7}  {'images/s':>9}  ratio*"
        print(header + "\n" + "-" * len(header))
        for fmt in ("png", "jpg"):
            subfolder = os.path.join(folder, fmt)
            os.mkdir(subfolder)
            paths = write_images(subfolder, args.n, args.side, fmt)
            for stage, workers, images_per_s, ratio in bench_format(cnn, paths, args.repeat):
                shown = "" if ratio is None else f"{ratio:.2f}"
                print(f"{fmt:6}  {stage:24}  {workers!s:>7}  {images_per_s:9.1f}  {shown}")
    print("* ratio = files -> embeddings / min(model-only limit, decode-only rate with the same "
          "workers); goal >= 0.8 with workers.")


if __name__ == "__main__":
    main()
