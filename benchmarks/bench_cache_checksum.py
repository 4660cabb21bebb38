"""What the feature cache's per-vector checksum costs a warm-cache grid search (issue 20, item 6).

Each stored vector carries a CRC32 of its bytes, checked on every read, so that a flipped bit is
recomputed instead of served. This script fills a cache with the bundled 1,000 Fashion-MNIST
images once, then times GridSearchCV(Pipeline([PretrainedCNNFeatures(cache=...), SVC()]),
{"svm__C": [0.1, 1, 10, 100]}, cv=5) on the warm cache, alternately with the check and with a
reader that skips it (the same bytes, the same rows), in interleaved rounds; it prints the
median of each and their ratio, and the read alone (``FeatureCache.get`` of every vector).
Goal: <= 2 % on the grid search.

    python benchmarks/bench_cache_checksum.py            # 3 rounds
    python benchmarks/bench_cache_checksum.py --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

import skdeep.cache
from skdeep import FeatureCache, PretrainedCNNFeatures
from skdeep.datasets import load_fashion_sample

GRID = {"svm__C": [0.1, 1, 10, 100]}


def _unchecked(blob: bytes, width: int) -> np.ndarray | None:
    """The reader without the checksum: the baseline."""
    if len(blob) != 4 * width + 4:
        return None
    return np.frombuffer(blob, dtype=np.float32, count=width)


def _timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    images, labels = load_fashion_sample(return_X_y=True)
    checked = skdeep.cache._checked_vector
    with tempfile.TemporaryDirectory() as folder:
        cache = FeatureCache(Path(folder) / "cache")
        cnn = PretrainedCNNFeatures(image_size=96, cache=cache)
        cnn.fit().transform(images)  # fills the cache: every later pass is warm
        keys = skdeep.cache.image_keys(images)
        layer_key, width = cnn._layer_keys()[0], cnn.feature_widths_[0]
        pipe = Pipeline([("cnn", cnn), ("svm", SVC())])

        def search():
            GridSearchCV(pipe, GRID, cv=5).fit(images, labels)

        def read():
            for _ in range(20):  # a grid search of 4 x 5 fits reads every vector about 20 times
                cache.get(layer_key, keys, width)

        results = {name: {"search": [], "read": []} for name in ("checked", "unchecked")}
        for _ in range(args.rounds):
            for name, reader in (("checked", checked), ("unchecked", _unchecked)):
                skdeep.cache._checked_vector = reader
                try:
                    results[name]["search"].append(_timed(search))
                    results[name]["read"].append(_timed(read))
                finally:
                    skdeep.cache._checked_vector = checked
    medians = {name: {what: statistics.median(times) for what, times in parts.items()}
               for name, parts in results.items()}
    print(f"{len(images)} images, width {width}, {args.rounds} interleaved rounds (medians)")
    for what, label in (("search", "warm GridSearchCV (4 C x 5 folds)"),
                        ("read", "FeatureCache.get of every vector, 20 times")):
        a, b = medians["checked"][what], medians["unchecked"][what]
        print(f"{label:45s} checked {a:7.3f} s  unchecked {b:7.3f} s  ratio {a / b:.3f}")


if __name__ == "__main__":
    main()
