"""Conformal prediction sets: "one of these classes, 9 times out of 10", with MAPIE.

The story
---------
A probability says how sure a model is; a *prediction set* says which classes a user must still
consider to be right 90 % of the time. Split-conformal prediction (MAPIE's
``SplitConformalClassifier``) builds such sets around any fitted scikit-learn classifier from a
held-out *conformalization* set: on new images drawn like it, the set holds the true class with
probability at least 90 % (the coverage guarantee), whatever the model. A good model earns small
sets (one class for the easy images); a poor one needs large sets for the same coverage.

Here both of skdeep's estimator kinds get sets at 90 % on the Fashion-MNIST sample that ships
with skdeep: a linear probe (``PretrainedCNNFeatures`` + ``LogisticRegression`` in one
``Pipeline``) and a fine-tuned network (``FineTunedCNNClassifier``, calibrated by temperature on
its validation split: ``calibration="auto"``). Conformal sets need no calibrated probabilities
for their guarantee, but better-ranked probabilities give smaller sets. The 1,000 images are split into training, conformalization
and test thirds; the example prints each model's accuracy, the empirical coverage on the test
third (close to 0.90, within sampling noise of a few hundred images) and the mean set size.

MAPIE is an optional dependency: ``pip install 'skdeep[conformal]'``. The fine-tuning takes a
few minutes on a CPU.

Set SKDEEP_EXAMPLE_SMALL=1 to run on 300 images at 32 px with one epoch (used by the tests).
"""

import os

import numpy as np
from mapie.classification import SplitConformalClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skdeep import FineTunedCNNClassifier, PretrainedCNNFeatures
from skdeep.datasets import load_fashion_sample

SMALL = os.environ.get("SKDEEP_EXAMPLE_SMALL", "0") != "0"
SIZE, EPOCHS = (32, 1) if SMALL else (64, 4)

sample = load_fashion_sample()
images, labels = sample.images, sample.target
if SMALL:
    images, _, labels, _ = train_test_split(images, labels, train_size=300, stratify=labels,
                                            random_state=0)
X_train, X_rest, y_train, y_rest = train_test_split(images, labels, train_size=1 / 3,
                                                    stratify=labels, random_state=0)
X_conf, X_test, y_conf, y_test = train_test_split(X_rest, y_rest, train_size=0.5,
                                                  stratify=y_rest, random_state=0)

models = {
    "linear probe": Pipeline([
        ("cnn", PretrainedCNNFeatures(image_size=SIZE)),
        ("scale", StandardScaler()),
        ("classify", LogisticRegression(max_iter=1000)),
    ]),
    "fine-tuned network": FineTunedCNNClassifier(image_size=SIZE, epochs=EPOCHS,
                                                 max_steps=None,  # quick: EPOCHS epochs
                                                 calibration="auto", random_state=0),
}
for name, model in models.items():
    model.fit(X_train, y_train)
    # prefit=True: the model is fitted already; conformalize() only reads its probabilities
    conformal = SplitConformalClassifier(model, confidence_level=0.9, prefit=True)
    conformal.conformalize(X_conf, y_conf)
    predicted, sets = conformal.predict_set(X_test)
    sets = sets[:, :, 0]  # (images, classes): whether each class is in each image's set
    covered = sets[np.arange(len(y_test)), np.searchsorted(model.classes_, y_test)]
    sizes = sets.sum(axis=1)
    print(f"{name}: accuracy {np.mean(predicted == y_test):.3f}; sets at 90 %: coverage "
          f"{covered.mean():.3f}, mean size {sizes.mean():.2f} classes, "
          f"{np.mean(sizes == 1):.0%} of the images get a single class")
    first = sample.target_names[sets[0]].tolist()
    print(f"  first test image ({sample.target_names[y_test[0]]}): the set {first}")
