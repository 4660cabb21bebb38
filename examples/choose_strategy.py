"""Choosing a transfer-learning strategy with the scenario table, tested on the bundled sample.

The story
---------
How should a pretrained network be used on *your* images? The transfer-learning literature
(Yosinski et al., 2014; the CS231n notes on transfer learning) answers with two questions: how
much labelled data do you have, and how close are your images to the ones the network was
trained on (ImageNet: colour photographs of objects, animals and scenes)?

=====================  ============================================================
your situation         what usually works best
=====================  ============================================================
small, similar data    linear classifier on top-layer features (``layer="penultimate"``)
small, different data  linear classifier on features of an earlier layer
large, similar data    fine-tune: the last few blocks, or all, with a small learning rate
large, different data  fine-tune the whole network (or train from scratch)
=====================  ============================================================

Why: the top layers of a network are specialised to the task it was trained on, the early ones
compute generic edges, textures and parts. With few images, fine-tuning millions of weights
overfits, so a linear model on frozen features is safer; when the domain differs, the generic
earlier layers transfer better than the specialised top ones. With many images, fine-tuning can
adapt every layer to the new domain.

The bundled Fashion-MNIST sample is *different* from ImageNet (28x28 grayscale product shots on
a black background) and *small* (100 images per class). The table predicts that features of an
earlier layer beat the top layer here. This script checks that prediction with a held-out test
set, and then asks the next question: with all the labelled images the sample has, does
fine-tuning the whole network (the "large, different" row) already pay off, and at what cost?

Runs in about two minutes on a CPU (the fine-tuning is most of it). SKDEEP_EXAMPLE_SMALL=1 runs a
tiny version. Rankings between close strategies on a few hundred images are noisy; use
cross-validation (``grid_search_layers.py``) before committing to one.
"""

import os
import time

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdeep import FineTunedCNNClassifier, PretrainedCNNFeatures
from skdeep.datasets import load_fashion_sample

SMALL = os.environ.get("SKDEEP_EXAMPLE_SMALL", "0") != "0"
IMAGE_SIZE = 32 if SMALL else 96
PER_CLASS_SMALL = 5 if SMALL else 20  # "small data": a handful of labelled images per class
PER_CLASS_MORE = 10 if SMALL else 70  # all the sample has, once 30 per class are held out

images, labels = load_fashion_sample(return_X_y=True)
X_pool, X_test, y_pool, y_test = train_test_split(
    images, labels, test_size=100 if SMALL else 300, stratify=labels, random_state=0
)


def first_per_class(per_class: int) -> np.ndarray:
    """Rows of the pool holding the first ``per_class`` images of each class."""
    return np.concatenate([np.flatnonzero(y_pool == c)[:per_class] for c in np.unique(y_pool)])


def linear() -> object:
    return make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=1000))


# --- 1. Small and different: which layer? ------------------------------------------------------
# One forward pass reads three depths of the network. The network is frozen, so embedding the
# test images with it leaks nothing about them.
layers = ["blocks.3", "blocks.4", "penultimate"]
cnn = PretrainedCNNFeatures(layer=layers, image_size=IMAGE_SIZE).fit()
start = time.perf_counter()
pool_features, test_features = cnn.transform(X_pool), cnn.transform(X_test)
embed_seconds = time.perf_counter() - start
edges = np.cumsum([0, *cnn.feature_widths_])
columns = {name: slice(lo, hi) for name, lo, hi in zip(layers, edges[:-1], edges[1:])}

small = first_per_class(PER_CLASS_SMALL)
print(f"1. small data ({PER_CLASS_SMALL} images per class), different domain:")
print(f"   linear classifier on frozen EfficientNet-Lite0 features, accuracy on {len(y_test)} "
      "held-out images")
scores = {}
for name in layers:
    model = linear().fit(pool_features[small][:, columns[name]], y_pool[small])
    scores[name] = model.score(test_features[:, columns[name]], y_test)
    width = cnn.feature_widths_[layers.index(name)]
    print(f"   {name:<12} ({width:>4} features)  {scores[name]:.3f}")
best_layer = max(scores, key=scores.get)
verdict = "as" if best_layer != "penultimate" else "unlike what"
print(f"   -> best: {best_layer}, {verdict} the table predicts for a different domain\n")

# --- 2. More data: does fine-tuning pay off yet? -----------------------------------------------
more = first_per_class(PER_CLASS_MORE)
print(f"2. more data ({PER_CLASS_MORE} images per class):")
probe = linear().fit(pool_features[more][:, columns[best_layer]], y_pool[more])
probe_accuracy = probe.score(test_features[:, columns[best_layer]], y_test)
label = f"linear classifier on {best_layer}"
print(f"   {label:<40} {probe_accuracy:.3f}  "
      f"(embedding all {len(images)} images took {embed_seconds:.0f} s)")

finetune = FineTunedCNNClassifier(
    train_layers="all",  # the "different domain" rows: every layer adapts
    image_size=64 if not SMALL else 32,
    epochs=1 if SMALL else 4,
    max_steps=None,  # those epochs, not the step budget: the example stays quick
    random_state=0,
    verbose=0,  # no epoch lines between this script's own
)
start = time.perf_counter()
finetune.fit(X_pool[more], y_pool[more])
finetune_seconds = time.perf_counter() - start
finetune_accuracy = finetune.score(X_test, y_test)
label = f"whole network fine-tuned, {finetune.n_iter_} epoch(s)"
print(f"   {label:<40} {finetune_accuracy:.3f}  (training took {finetune_seconds:.0f} s)")
winner = "fine-tuning" if finetune_accuracy > probe_accuracy else "the linear classifier"
print(f"   -> {winner} wins at {PER_CLASS_MORE} images per class.")
print("      Fine-tuning earns its cost with thousands of images per class, more epochs and a GPU;")
print("      below that, frozen features and a linear model are the strong, cheap default.")
