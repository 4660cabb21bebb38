"""GridSearchCV over the CNN layer and the classifier's C, with a feature cache.

The story
---------
Which layer of a pretrained network should you read features from? The last one (the
"penultimate" vector the ImageNet classifier sees) is the usual default, but it is the most
specialised to ImageNet's categories; earlier layers are more generic. For photographs of
clothes, which ImageNet barely has, an earlier layer may transfer better. Do not guess: the layer
is a hyper-parameter like any other, so cross-validate it together with the regularisation of the
linear model on top.

A naive grid search would embed every image once per (layer, C, fold) candidate: 4 layers x 3
values of C x 3 folds = 36 passes over the images through the network, the expensive part. A
:class:`skdeep.FeatureCache` stores each image's features on disk, keyed by the weights, the
preprocessing, the layer, the pooling and the image's content, and ``cache_layers`` fills every
candidate layer in the same forward pass. The whole grid then costs ONE forward pass per image;
every other candidate reads its features from the cache. ``cache_info()`` shows the hits.

The cache directory outlives the process: run the script twice with a fixed ``CACHE_DIR`` and the
second run builds no network at all.

Runs offline on a CPU in about a minute. SKDEEP_EXAMPLE_SMALL=1 runs a smaller grid on fewer
images.
"""

import os
import tempfile

import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skdeep import FeatureCache, PretrainedCNNFeatures
from skdeep.datasets import load_fashion_sample

SMALL = os.environ.get("SKDEEP_EXAMPLE_SMALL", "0") != "0"

images, labels = load_fashion_sample(return_X_y=True)
if SMALL:
    images, _, labels, _ = train_test_split(
        images, labels, train_size=150, stratify=labels, random_state=0
    )
    LAYERS = ["blocks.4", "penultimate"]
    C_VALUES = [0.01, 1.0]
else:
    # From shallow to deep; skdeep.list_layers("efficientnet_lite0") lists every name.
    LAYERS = ["blocks.3", "blocks.4", "blocks.5", "penultimate"]
    C_VALUES = [0.01, 0.1, 1.0]

with tempfile.TemporaryDirectory() as cache_dir:
    cache = FeatureCache(cache_dir)
    pipeline = Pipeline([
        ("cnn", PretrainedCNNFeatures(
            image_size=64 if SMALL else 96,
            cache=cache,
            cache_layers=LAYERS,  # one forward pass fills the cache for every candidate layer
        )),
        ("scale", StandardScaler()),
        ("clf", LogisticRegression(max_iter=1000)),
    ])
    search = GridSearchCV(
        pipeline,
        param_grid={"cnn__layer": LAYERS, "clf__C": C_VALUES},
        cv=StratifiedKFold(n_splits=3, shuffle=True, random_state=0),
    )
    search.fit(images, labels)
    info = cache.info()

results = pd.DataFrame(search.cv_results_)
table = results.pivot(index="param_cnn__layer", columns="param_clf__C", values="mean_test_score")
table = table.loc[LAYERS]  # shallow to deep
table.index.name, table.columns.name = "layer", "C"
print(f"{len(images)} images, 3-fold accuracy by layer (rows) and C (columns):")
print(table.round(3).to_string(), "\n")
print(f"best: {search.best_params_} with accuracy {search.best_score_:.3f}")

n_candidates = len(LAYERS) * len(C_VALUES)
print(
    f"feature cache: {info.misses} images went through the network, {info.hits} were read from "
    f"the cache ({n_candidates} candidates x 3 folds + refit, one forward pass per image)"
)
