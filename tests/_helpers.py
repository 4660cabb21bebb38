"""Small test data shared by several test modules (one owner for what they all use)."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

TINY = "timm/test_efficientnet"  # 356k parameters: a real timm network that trains in a blink


def make_images(n: int = 24, n_classes: int = 2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class sets the brightness of the top rows, plus labels 0..n_classes-1."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    images = rng.integers(0, 100, size=(n, 16, 16, 3), dtype=np.uint8)
    for k in range(n_classes):
        images[labels == k, : 2 + k] += 120
    return images, labels


class FineTunedStandIn(ClassifierMixin, BaseEstimator):
    """The parameters evaluate gives FineTunedCNNClassifier, stored: the base of the test
    doubles that stand in for it (they add fit and predict)."""

    def __init__(self, backbone="efficientnet_lite0", weights="DEFAULT", image_size=None,
                 train_layers="all", epochs=10, tta=None, device="auto", precision="auto",
                 num_workers=0, progress=False, verbose=1, random_state=None,
                 calibration=None, recipe=None):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.train_layers = train_layers
        self.epochs = epochs
        self.tta = tta
        self.device = device
        self.precision = precision
        self.num_workers = num_workers
        self.progress = progress
        self.verbose = verbose
        self.random_state = random_state
        self.calibration = calibration
        self.recipe = recipe

    def predict_proba(self, X):
        """Certain of what ``predict`` says (evaluate scores the probabilities too)."""
        return (np.asarray(self.predict(X))[:, None] == self.classes_).astype(float)
