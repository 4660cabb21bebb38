"""Near-duplicates inflate a cross-validated score; grouped folds and an audit show the truth.

The story
---------
A collection of product photos was assembled from several exports: some images were saved
twice, re-encoded as JPEG, or brightened by an editing step, and a few labels were typed wrong.
Plain stratified cross-validation scatters the copies over the folds, so a test image often has
its twin among the training images, and the score rewards memory, not transfer.

We plant exactly that in the bundled Fashion-MNIST sample: copies of 30 % of the development
images (exact copies, JPEG at quality 40, +-15 % brightness, a slight blur) and 3 % wrong labels,
and keep other images aside as a clean test set. Then we compare three numbers for the same
pipeline: plain 5-fold CV, 5-fold CV with :class:`skdeep.NearDuplicateGroupKFold` (which finds
the copies itself and keeps each group in one fold), and the accuracy on the clean test set.
The grouped score is the one that predicts the test score.

Finally :func:`skdeep.audit` lists what a person should look at: the duplicates, the copies that
carry different labels, outliers, and the likely label errors, with galleries of thumbnails.

Runs offline on a CPU in about a minute. SKDEEP_EXAMPLE_SMALL=1 uses fewer images and smaller
inputs.
"""

import io
import os
import tempfile

import numpy as np
from PIL import Image, ImageFilter
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from skdeep import FeatureCache, NearDuplicateGroupKFold, PretrainedCNNFeatures, audit
from skdeep.datasets import load_fashion_sample

SMALL = os.environ.get("SKDEEP_EXAMPLE_SMALL", "0") != "0"
rng = np.random.default_rng(0)


def copy_of(image: np.ndarray, kind: str) -> np.ndarray:
    """A near-duplicate of a 28x28 grey image, as an export or an editing step makes one."""
    if kind == "exact":
        return image.copy()
    if kind == "jpeg":
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=40)
        return np.asarray(Image.open(buffer).convert("L"))
    if kind == "brightness":
        return np.clip(image * rng.choice([0.85, 1.15]), 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.6)))  # blur


images, labels = load_fashion_sample(return_X_y=True)
development, test, y_development, y_test = train_test_split(
    images, labels, train_size=200 if SMALL else 600, test_size=200 if SMALL else 400,
    stratify=labels, random_state=0)

# Copies of 30 % of the development images, with their source's label.
sources = rng.choice(len(development), size=int(0.3 * len(development)), replace=False)
kinds = ["exact", "jpeg", "brightness", "blur"]
copies = np.stack([copy_of(development[i], kinds[k % 4]) for k, i in enumerate(sources)])
X = np.concatenate([development, copies])
y = np.concatenate([y_development, y_development[sources]])
# 3 % of the original images get a wrong label.
flipped = rng.choice(len(development), size=int(0.03 * len(development)), replace=False)
for row in flipped:
    y[row] = rng.choice(np.setdiff1d(np.unique(labels), [y[row]]))
print(f"development set: {len(X)} images, {len(copies)} of them near-duplicates, "
      f"{len(flipped)} wrong labels; clean test set: {len(test)} other images")

with tempfile.TemporaryDirectory() as folder:
    cnn = PretrainedCNNFeatures(image_size=64 if SMALL else 96, cache=FeatureCache(folder))
    pipe = Pipeline([("cnn", cnn), ("scale", StandardScaler()),
                     ("clf", LogisticRegression(max_iter=2000))])
    plain = cross_val_score(pipe, X, y, cv=StratifiedKFold(5, shuffle=True, random_state=0))
    grouped_cv = NearDuplicateGroupKFold(5, shuffle=True, random_state=0, estimator=cnn)
    grouped = cross_val_score(pipe, X, y, cv=grouped_cv)
    held_out = pipe.fit(X, y).score(test, y_test)
    found = int((np.bincount(grouped_cv.groups_) > 1).sum())
    caught = sum(grouped_cv.groups_[i] == grouped_cv.groups_[len(development) + k]
                 for k, i in enumerate(sources))
    print(f"near-duplicate groups found: {found}; planted copies grouped with their source: "
          f"{caught} of {len(sources)}")
    print(f"plain 5-fold CV:     {plain.mean():.3f}  (copies on both sides of the splits)")
    print(f"grouped 5-fold CV:   {grouped.mean():.3f}  (each group in one fold)")
    print(f"clean held-out test: {held_out:.3f}")

    # The audit reuses the cached embeddings: no second forward pass.
    report = audit(X, y, estimator=cnn, random_state=0)
    print(report.describe(top=5))
    errors = report.issues[report.issues["issue"] == "label_error"]
    hits = len(set(errors["row"]) & set(flipped.tolist()))
    print(f"label errors flagged: {len(errors)}, of which planted: {hits} of {len(flipped)}")
    written = report.plot(os.path.join(folder, "audit"))
    print(f"audit galleries: {', '.join(path.name for path in written if path.suffix == '.png')}")
