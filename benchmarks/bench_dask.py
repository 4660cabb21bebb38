"""Throughput of skdeep.dask.transform with 1 and 2 Dask workers, next to the in-process transform.

The same images (PNG files on disk, so decoding is part of the work, as on a real cluster) are
embedded three ways, side by side in one run:

- in process: ``PretrainedCNNFeatures.transform(paths)``, torch using every core;
- a LocalCluster of 1 worker process x 1 thread;
- a LocalCluster of 2 worker processes x 1 thread each.

Each cluster is warmed up first (worker imports and the one network build per worker are not
timed: they are paid once per worker, not per image). The goal on a quiet 2-core machine is a
2-worker / 1-worker speed-up of at least 1.6x.

Images: the full Fashion-MNIST training set when installed (``apt-get install
dataset-fashion-mnist``), else the 1,000-image sample bundled with skdeep, repeated as needed.

Usage::

    python benchmarks/bench_dask.py            # 2,000 images at 64 px (the lead's numbers)
    python benchmarks/bench_dask.py --quick    # a few seconds: proves the script works
"""

from __future__ import annotations

import argparse
import gzip
import os
import tempfile
import time
from pathlib import Path

import numpy as np

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
SAMPLE = Path(__file__).resolve().parents[1] / "skdeep" / "data" / "fashion_sample.npz"


def load_images(n: int) -> np.ndarray:
    """``n`` 28x28 uint8 images: Fashion-MNIST if installed, else the bundled sample, tiled."""
    if FASHION.exists():
        with gzip.open(FASHION, "rb") as stream:
            images = np.frombuffer(stream.read(), dtype=np.uint8, offset=16).reshape(-1, 28, 28)
    else:
        images = np.load(SAMPLE)["images"]
    return images[np.arange(n) % len(images)]


def write_pngs(images: np.ndarray, folder: Path) -> list[str]:
    from PIL import Image

    paths = []
    for i, image in enumerate(images):
        path = folder / f"{i:06d}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    return paths


def timed(function) -> tuple[float, object]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def run_cluster(n_workers: int, estimator, paths: list[str], partitions: int, repeats: int):
    """Seconds for the best of ``repeats`` computations on a fresh LocalCluster, and the result."""
    import dask.dataframe as dd
    import pandas as pd
    from distributed import Client, LocalCluster

    from skdeep.dask import build_counts, transform

    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    with cluster, Client(cluster) as client:
        client.wait_for_workers(n_workers)
        # The paths live in the graph (not persisted on one worker), so that no worker is
        # favoured by data locality: the scheduler spreads the partitions.
        X = dd.from_pandas(pd.Series(paths, name="path"), npartitions=partitions)
        warm = dd.from_pandas(pd.Series(paths[: 2 * n_workers]), npartitions=n_workers)
        transform(estimator, warm).compute()  # imports and one network build on each worker
        best, result = float("inf"), None
        for _ in range(repeats):
            seconds, result = timed(lambda: transform(estimator, X).compute())
            best = min(best, seconds)
        builds = build_counts(client)
    return best, result, builds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small run, to check the script")
    parser.add_argument("--n-images", type=int, default=None)
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--partitions", type=int, default=None,
                        help="partitions of the input (default: 16, or 8 with --quick)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n_images = args.n_images or (192 if args.quick else 2000)
    image_size = args.image_size or (32 if args.quick else 64)
    partitions = args.partitions or (8 if args.quick else 16)
    repeats = args.repeats or (1 if args.quick else 3)

    import torch

    from skdeep import PretrainedCNNFeatures

    estimator = PretrainedCNNFeatures(image_size=image_size, batch_size=args.batch_size).fit()
    print(f"{n_images} PNG images ({'Fashion-MNIST' if FASHION.exists() else 'bundled sample'}), "
          f"{estimator.backbone_.name} at {image_size} px, batch_size={args.batch_size}, "
          f"{partitions} partitions, precision={estimator.precision_}, "
          f"{os.cpu_count()} CPUs, best of {repeats}")

    with tempfile.TemporaryDirectory(prefix="skdeep-bench-dask-") as folder:
        paths = write_pngs(load_images(n_images), Path(folder))
        estimator.transform(paths[:8])  # warm-up
        local = min(timed(lambda: estimator.transform(paths))[0] for _ in range(repeats))
        expected = estimator.transform(paths)
        print(f"  in process ({torch.get_num_threads()} torch threads): "
              f"{n_images / local:8.1f} images/s")

        rates = {}
        for n_workers in (1, 2):
            seconds, result, builds = run_cluster(n_workers, estimator, paths, partitions, repeats)
            rates[n_workers] = n_images / seconds
            error = float(np.nanmax(np.abs(result.to_numpy() - expected)))
            print(f"  dask, {n_workers} worker(s) x 1 thread:   {rates[n_workers]:8.1f} images/s"
                  f"   (networks built per worker: {sorted(builds.values())}, "
                  f"max |difference| to in process: {error:.2g})")

    print(f"2 workers / 1 worker:  {rates[2] / rates[1]:.2f}x  (goal >= 1.6x on 2 cores)")
    print(f"2 workers / in process: {rates[2] / (n_images / local):.2f}x")


if __name__ == "__main__":
    main()
