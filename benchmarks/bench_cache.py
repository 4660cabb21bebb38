"""What the feature cache saves in a grid search: no cache, a cold cache, a warm cache.

GridSearchCV(Pipeline([("cnn", PretrainedCNNFeatures()), ("svm", SVC())]),
{"svm__C": [0.1, 1, 10, 100]}, cv=5) on the first 1,000 Fashion-MNIST test images, run three
times in one benchmark: without a cache (every fit and score runs the network: 21 passes over
the images), with an empty cache directory (one pass), and with that cache warm, in a second
Python process (no pass; the network is not even built).
Goals: cold cache >= 10x faster than no cache; warm cache in seconds; identical best_score_.

    python benchmarks/bench_cache.py            # 1,000 images
    python benchmarks/bench_cache.py --quick    # 200 images
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from _data import load_fashion_mnist
from skdeep import FeatureCache, PretrainedCNNFeatures

GRID = {"svm__C": [0.1, 1, 10, 100]}


def grid_search(n: int, cache: str | None) -> dict:
    images, labels = load_fashion_mnist("test", n)
    pipe = Pipeline([("cnn", PretrainedCNNFeatures(cache=cache)), ("svm", SVC())])
    start = time.perf_counter()
    search = GridSearchCV(pipe, GRID, cv=5).fit(images, labels)
    seconds = time.perf_counter() - start
    info = FeatureCache(cache).info() if cache else None
    return {"seconds": seconds, "best_score": float(search.best_score_),
            "best_params": search.best_params_,
            "entries": info.entries if info else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="200 images instead of 1,000")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: one run in a new process
    parser.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(grid_search(args.n, args.child)))
        return

    n = 200 if args.quick else 1000
    warm_up, _ = load_fashion_mnist("test", 64)  # oneDNN builds its kernels on first use
    PretrainedCNNFeatures().fit().transform(warm_up)
    with tempfile.TemporaryDirectory() as folder:
        cache = str(Path(folder) / "cache")
        runs = {
            "no cache": grid_search(n, None),
            "cold cache": grid_search(n, cache),
        }
        child = subprocess.run(
            [sys.executable, __file__, "--child", cache, "--n", str(n)],
            check=True, capture_output=True, text=True, cwd=Path(__file__).parent,
        )
        runs["warm cache (new process)"] = json.loads(child.stdout.strip().splitlines()[-1])

    print(f"GridSearchCV over {GRID} with cv=5 on {n} Fashion-MNIST images "
          "(default PretrainedCNNFeatures: EfficientNet-Lite0 at 224 px; then SVC)")
    base = runs["no cache"]["seconds"]
    for name, run in runs.items():
        print(f"  {name:<26} {run['seconds']:8.1f} s   x{base / run['seconds']:6.1f}   "
              f"best_score_={run['best_score']:.4f}  best_params_={run['best_params']}")
    scores = {run["best_score"] for run in runs.values()}
    print(f"  identical best_score_ in all three: {len(scores) == 1}")
    print(f"  cold-cache speed-up {base / runs['cold cache']['seconds']:.1f}x (goal >= 10x)")


if __name__ == "__main__":
    main()
