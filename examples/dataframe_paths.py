"""A pandas DataFrame of image paths next to tabular columns, through one ColumnTransformer.

The story
---------
Real image data rarely arrives as a NumPy array. It arrives as a table: one row per item, a
column with the path of its photo, and other columns that are ordinary numbers or categories.
Here, a small product catalogue: each row is a garment with the path of its photo (a PNG file on
disk), its label, and the size of the photo file in kilobytes (a cheap proxy for how much texture
the garment has).

:class:`skdeep.PretrainedCNNFeatures` accepts a column of paths as it accepts an array, so
``ColumnTransformer`` routes the ``path`` column to the CNN and the numeric column to a
``StandardScaler``, and one ``Pipeline`` learns from both. ``get_feature_names_out`` keeps track
of which column came from where (``cnn__penultimate_0``, ..., ``num__file_kb``).

The second part shows what happens when a photo is missing at prediction time, as happens in
every real catalogue: with ``on_error="nan"`` its row of CNN features is NaN (and a
``BadImageWarning`` names the row and the path), a ``SimpleImputer`` fills it, and the pipeline
still returns one prediction per row, in order. The default, ``on_error="raise"``, stops with an
error that names the row and the file instead.

Runs offline in well under a minute on a CPU. SKDEEP_EXAMPLE_SMALL=1 uses fewer images.
"""

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdeep import BadImageWarning, PretrainedCNNFeatures
from skdeep.datasets import load_fashion_sample

SMALL = os.environ.get("SKDEEP_EXAMPLE_SMALL", "0") != "0"
N_IMAGES = 150 if SMALL else 600


def write_catalogue(folder: Path) -> pd.DataFrame:
    """Write the sample's images as PNG files and return the catalogue table that lists them."""
    sample = load_fashion_sample()
    rows = np.random.default_rng(0).permutation(len(sample.images))[:N_IMAGES]
    records = []
    for i in rows:
        path = folder / f"item_{i:04d}.png"
        Image.fromarray(sample.images[i]).save(path)
        records.append({
            "path": str(path),
            "label": sample.target_names[sample.target[i]],
            "file_kb": path.stat().st_size / 1024,
        })
    return pd.DataFrame.from_records(records)


with tempfile.TemporaryDirectory() as tmp:
    catalogue = write_catalogue(Path(tmp))
    print(catalogue.head(3).to_string(index=False), "\n")

    X = catalogue[["path", "file_kb"]]
    y = catalogue["label"]
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.25, stratify=y, random_state=0
    )

    features = ColumnTransformer([
        # A string column name (not a list) hands the CNN a 1-D Series of paths.
        ("cnn", make_pipeline(
            PretrainedCNNFeatures(image_size=64 if SMALL else 128, on_error="nan"),
            SimpleImputer(strategy="mean"),  # NaN rows of unreadable photos -> column means
        ), "path"),
        ("num", StandardScaler(), ["file_kb"]),
    ])
    model = make_pipeline(features, StandardScaler(), LogisticRegression(C=0.01, max_iter=1000))
    model.fit(X_train, y_train)

    names = model[0].get_feature_names_out()
    print(f"{len(names)} features: {names[0]}, {names[1]}, ..., {names[-1]}")
    print(f"held-out accuracy: {model.score(X_test, y_test):.3f}\n")

    # A photo goes missing between training and prediction.
    lost = X_test["path"].iloc[0]
    os.remove(lost)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BadImageWarning)
        predictions = model.predict(X_test)
    print(f"{len(predictions)} predictions for {len(X_test)} rows, "
          f"although {Path(lost).name} is gone;")
    for warning in caught:
        if issubclass(warning.category, BadImageWarning):
            print("  warning:", str(warning.message).replace(tmp, "<tmp>"))
    print(f"  the row without a photo was predicted from its other columns: {predictions[0]!r}")
