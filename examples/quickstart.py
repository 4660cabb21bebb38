"""Quickstart: pretrained CNN features + a linear classifier, cross-validated, in one Pipeline.

Runs offline on CPU in well under a minute: the default backbone (EfficientNet-Lite0, ImageNet
weights bundled with skdeep) embeds scikit-learn's 8x8 handwritten digits, and a logistic
regression is cross-validated on the embeddings next to the same model on raw pixels.

Set SKDEEP_EXAMPLE_SMALL=1 to run on fewer images (used by the test suite).
"""

import os

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdeep import PretrainedCNNFeatures

n_images = 150 if os.environ.get("SKDEEP_EXAMPLE_SMALL") else 600
digits = load_digits()
images = (digits.images[:n_images] / 16.0).astype(np.float32)  # floats must lie in [0, 1]
labels = digits.target[:n_images]

pixels = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
cnn = make_pipeline(
    PretrainedCNNFeatures(image_size=96),  # small images: a small input is fast and works well
    StandardScaler(),
    LogisticRegression(max_iter=2000),
)
pixel_scores = cross_val_score(pixels, images.reshape(len(images), -1), labels, cv=3)
cnn_scores = cross_val_score(cnn, images, labels, cv=3)
print(f"{len(images)} digits, 3-fold accuracy")
print(f"  raw pixels + logistic regression:         {pixel_scores.mean():.3f}")
print(f"  EfficientNet-Lite0 features + logistic:   {cnn_scores.mean():.3f}")
