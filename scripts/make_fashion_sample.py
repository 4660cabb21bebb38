"""Regenerate skdeep/data/fashion_sample.npz from Debian's Fashion-MNIST package.

The bundled sample is the first 100 images of each class of the Fashion-MNIST test set
(1,000 images of 28x28 uint8, labels 0-9), kept in their original order.
Requires `apt-get install dataset-fashion-mnist`.
"""

import gzip
from pathlib import Path

import numpy as np

SOURCE = Path("/usr/share/datasets/fashion-mnist")
TARGET = Path(__file__).resolve().parents[1] / "skdeep" / "data" / "fashion_sample.npz"
PER_CLASS = 100


def read_idx(path: Path, offset: int) -> np.ndarray:
    with gzip.open(path) as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=offset)


images = read_idx(SOURCE / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
labels = read_idx(SOURCE / "t10k-labels-idx1-ubyte.gz", 8)
index = np.sort(np.concatenate([np.flatnonzero(labels == c)[:PER_CLASS] for c in range(10)]))
np.savez_compressed(TARGET, images=images[index], labels=labels[index],
                    source_index=index.astype(np.int32))
print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes, {len(index)} images)")
