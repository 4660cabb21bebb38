"""What does the model look at? Activation maps of a probe pipeline, and their sanity checks.

The story
---------
A linear classifier on pretrained CNN features scores 0.85 on your images. Before anyone trusts
it, look at *where* in each image it finds its evidence: on the garment, or on the background?
With average pooling, a linear head on pooled features is a class activation map (Zhou et al.,
2016): the score of a class is the spatial mean of a map plus the intercept, so the map is not
an approximation but the score itself, spread over the image. :func:`skdeep.explain.activation_maps`
computes it for a fitted ``Pipeline`` in one forward pass, no gradients.

A map is only worth showing if it passes two checks, both printed here:

- exactness: the spatial mean of the map plus the intercept equals ``decision_function``;
- model randomisation (Adebayo et al., 2018): a head with its weights shuffled must give
  different maps (a low rank correlation); a "map" that does not change is an edge detector,
  not an explanation.

The picture, ``activation_maps.png``, shows 16 held-out images with their maps; the user guide's
page "What the model looks at" shows one made the same way.

Set SKDEEP_EXAMPLE_SMALL=1 to run on 200 images at a smaller input size (used by the tests).
"""

import os

import numpy as np
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdeep import PretrainedCNNFeatures
from skdeep.datasets import load_fashion_sample
from skdeep.explain import activation_maps, plot_activation_maps

small = os.environ.get("SKDEEP_EXAMPLE_SMALL") == "1"
data = load_fashion_sample()
X, y = data.images, np.asarray(data.target_names)[data.target]
if small:
    X, y = X[:200], y[:200]
train_X, test_X, train_y, test_y = train_test_split(X, y, test_size=0.25, stratify=y,
                                                    random_state=0)

# blocks.5, the last stage: a 3 x 3 map at 96 px (2 x 2 at 64 px), still well localised
pipe = make_pipeline(
    PretrainedCNNFeatures(layer="blocks.5", image_size=64 if small else 96, precision="fp32"),
    StandardScaler(), LogisticRegression(max_iter=1000),
).fit(train_X, train_y)
print(f"held-out accuracy: {pipe.score(test_X, test_y):.3f}")

# 1. exactness: map mean + intercept = decision_function, for the predicted class
maps = activation_maps(pipe, test_X, output_size=None)  # the layer's own 3 x 3 resolution
decision = pipe.decision_function(test_X)
intercept = pipe[1:].decision_function(np.zeros((1, pipe[0].n_features_out_)))[0]
column = decision.argmax(axis=1)
error = np.abs(maps.mean(axis=(1, 2)) + intercept[column]
               - decision[np.arange(len(column)), column]).max()
print(f"exactness: largest |map mean + intercept - decision_function| = {error:.1e}")

# 2. model randomisation: shuffle the head's weights, the maps must change
shuffled = clone(pipe).fit(train_X, train_y)
shuffled[-1].coef_ = shuffled[-1].coef_[:, np.random.default_rng(0).permutation(
    shuffled[-1].coef_.shape[1])]
target = pipe.predict(test_X)
original = activation_maps(pipe, test_X, target="true", y=target, output_size=None)
randomised = activation_maps(shuffled, test_X, target="true", y=target, output_size=None)
rho = np.nanmedian([spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(original, randomised)])
print(f"randomisation: median rank correlation with shuffled weights = {rho:.2f} (want < 0.5)")

plot_activation_maps(pipe, test_X, test_y, n=16, path="activation_maps.png")
print("saved activation_maps.png: 16 held-out images with their maps")
