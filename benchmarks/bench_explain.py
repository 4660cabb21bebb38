"""Issue 23: what do activation maps cost, and do they find what decides the class?

Data (offline, fixed seeds): the 1,000 Fashion-MNIST images bundled with skdeep, and the
synthetic patch images of skdeep.datasets.make_patch_images (32 px grey noise, the class is the
colour of one small patch in a random quadrant).

Sections:

  1. exact CAM     activation_maps of make_pipeline(PretrainedCNNFeatures(image_size=96),
                   StandardScaler(), LogisticRegression()) for the 1,000 images, against one
                   transform of the same images; both eager (compile=False: compiling costs
                   ~50 s on this CPU, and the maps do not use a compiled graph), best of 2.
                   Goal: <= 1.5x.
  2. Grad-CAM      activation_maps(clf, X, method="gradcam") of a FineTunedCNNClassifier
                   (head trained 1 epoch on 200 images, 96 px) against one predict, on 300
                   images (not 1,000: a backward pass per batch, kept affordable on 2 cores).
  3. localisation  share of 200 test images whose exact-CAM maximum lies in the patch's
                   quadrant, probe pipeline (PretrainedCNNFeatures(image_size=128) +
                   StandardScaler + LogisticRegression, 200 training images) at patch sides 4,
                   6 and 8 px.

Run: cd benchmarks && python bench_explain.py  (about 9 minutes on a 2-core CPU shared with two
other benchmarks)
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdeep import FineTunedCNNClassifier, PretrainedCNNFeatures
from skdeep.datasets import load_fashion_sample, make_patch_images
from skdeep.explain import activation_maps

from bench_extract import best_of  # best wall time of n runs


def quadrant_rate(maps: np.ndarray, quadrants: np.ndarray) -> float:
    height, width = maps.shape[1:]
    rows, columns = np.unravel_index(np.nanargmax(maps.reshape(len(maps), -1), axis=1),
                                     (height, width))
    return float(np.mean((rows >= height / 2) * 2 + (columns >= width / 2) == quadrants))


def main() -> None:
    warnings.simplefilter("ignore")
    X, y = load_fashion_sample(return_X_y=True)
    print("1. exact CAM vs transform, 1,000 Fashion-MNIST images at 96 px (eager, best of 2)")
    pipe = make_pipeline(PretrainedCNNFeatures(image_size=96, compile=False), StandardScaler(),
                         LogisticRegression(max_iter=1000)).fit(X, y)
    transform = best_of(2, lambda: pipe[0].transform(X))
    cam = best_of(2, lambda: activation_maps(pipe, X))
    print(f"   transform {transform:.1f} s, activation_maps {cam:.1f} s: "
          f"{cam / transform:.2f}x (goal <= 1.5x)")

    print("2. Grad-CAM on a fine-tuned classifier vs predict, 300 images at 96 px")
    clf = FineTunedCNNClassifier(image_size=96, epochs=1, max_steps=None, train_layers="head",
                                 validation_fraction=0, random_state=0, compile=False)
    clf.fit(X[:200], y[:200])
    subset = X[:300]
    predict = best_of(1, lambda: clf.predict(subset))
    grad = best_of(1, lambda: activation_maps(clf, subset, method="gradcam"))
    head = best_of(1, lambda: activation_maps(clf, subset))
    print(f"   predict {predict:.1f} s, Grad-CAM {grad:.1f} s ({grad / predict:.1f}x), "
          f"exact CAM of the head {head:.1f} s ({head / predict:.1f}x)")

    print("3. localisation: exact-CAM maximum in the patch's quadrant, 200 test images")
    for patch in (4, 6, 8):
        images, labels, quadrants = make_patch_images(400, size=32, patch=patch, random_state=0)
        probe = make_pipeline(PretrainedCNNFeatures(image_size=128, compile=False),
                              StandardScaler(), LogisticRegression(max_iter=1000))
        probe.fit(images[:200], labels[:200])
        accuracy = probe.score(images[200:], labels[200:])
        rate = quadrant_rate(activation_maps(probe, images[200:]), quadrants[200:])
        print(f"   patch {patch} px: accuracy {accuracy:.3f}, localised {rate:.3f}")


if __name__ == "__main__":
    main()
