"""Honest cross-validation over images: near-duplicates never straddle a train/test split.

Cross-validation assumes independent rows. Image collections hold burst photos, the same object
shot twice, augmented copies saved as files, one file under two names. When such near-duplicates
fall on both sides of a split, the score measures memory, not transfer (Barz & Denzler, "Do we
train on test data?", 2020: near-duplicates of 3.3 % of CIFAR-10's and 10 % of CIFAR-100's test
images are in the training set). This module finds them and keeps each group in one fold:

- :func:`near_duplicate_groups`: one group label per image; images in one group are
  near-duplicates of each other (directly, or through a chain of near-duplicates).
- :class:`NearDuplicateGroupKFold`: a scikit-learn splitter computing those groups from ``X``
  itself, so ``cross_val_score(pipe, X, y, cv=NearDuplicateGroupKFold())`` and
  ``GridSearchCV(..., cv=NearDuplicateGroupKFold())`` need no ``groups=``.
- :func:`image_signatures` and :func:`find_near_duplicates`: the two steps, for callers that
  already hold the embeddings (:func:`skdeep.evaluate`, :func:`skdeep.audit`).

The rule (see the user guide, "Honest scores", for the measurements that chose it). Two images
are near-duplicates when any of these holds:

1. **exact**: their decoded pixels are identical (a 64-bit BLAKE2 digest of the RGB pixels):
   the same file under two names, or a PNG re-saved as BMP;
2. **pixels**: their 16 x 16 grey thumbnails, each centred on its mean, have a cosine distance
   at most ``PIXEL_FACTOR`` times the median nearest-neighbour distance of the thumbnails. This
   catches re-encoding, blur, noise and brightness changes, which move a copy far less than any
   two distinct images are apart;
3. **embedding**: their CNN embeddings have a cosine distance at most ``EMBEDDING_FACTOR``
   times the median nearest-neighbour distance of the embeddings (cleanlab's rule for
   near-duplicates is also a fraction of that median). This catches what the thumbnails
   cannot: small shifts, crops and rotations of larger images.

Both cuts are relative to the data, so one rule serves 28 px digits and 1,000 px photos. A float
``threshold`` replaces the rule by one absolute cosine distance in the embedding (exact
duplicates are still grouped). Groups are the connected components of the near-duplicate graph
(:class:`~sklearn.neighbors.NearestNeighbors` and
:func:`scipy.sparse.csgraph.connected_components`; each image is compared with its
``N_NEIGHBORS`` nearest neighbours in each representation, which bounds memory by the data, not
its square).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from numbers import Real
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GroupKFold, StratifiedGroupKFold
from sklearn.model_selection._split import BaseCrossValidator
from sklearn.neighbors import NearestNeighbors
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
    validate_params,
)
from sklearn.utils.validation import check_is_fitted

from ._inference import predict_rows
from ._inputs import ImageDataset, as_items, auto_image_size
from .features import PretrainedCNNFeatures

__all__ = [
    "EMBEDDING_FACTOR",
    "Embedded",
    "N_NEIGHBORS",
    "NearDuplicateGroupKFold",
    "NearDuplicates",
    "Neighbours",
    "PIXEL_FACTOR",
    "THUMBNAIL_SIZE",
    "ImageSignatures",
    "embed_images",
    "find_near_duplicates",
    "image_signatures",
    "is_embedding_matrix",
    "near_duplicate_groups",
    "nearest_neighbours",
]

#: Side of the grey thumbnails compared by the pixel rule.
THUMBNAIL_SIZE = 16
#: The pixel rule's cut, as a fraction of the median nearest-neighbour thumbnail distance.
PIXEL_FACTOR = 0.08
#: The embedding rule's cut, as a fraction of the median nearest-neighbour embedding distance.
EMBEDDING_FACTOR = 0.25
#: Neighbours each image is compared with, per representation.
N_NEIGHBORS = 10

_DIGEST_BYTES = 8
#: The reasons a pair is a near-duplicate, strongest first (the ``reason`` column of pairs).
REASONS = ("exact", "pixels", "embedding")

_THRESHOLD = [Interval(Real, 0, 2, closed="both"), StrOptions({"auto"})]


# --- the images' signatures --------------------------------------------------------------------


class ImageSignatures(NamedTuple):
    """What the rule reads from the pixels, one row per image (NaN rows for unreadable images).

    Attributes
    ----------
    digests : ndarray of shape (n_samples,), dtype object
        Hex digest of each image's decoded RGB pixels and size (None for an unreadable image).
    thumbnails : ndarray of shape (n_samples, THUMBNAIL_SIZE ** 2), float32
        Grey thumbnails, rows of 0-255 values (NaN for an unreadable image).
    """

    digests: np.ndarray
    thumbnails: np.ndarray


class _Signature:
    """RGB PIL image -> uint8 ``(1, 1, 8 + 256)``: the pixels' digest, then the thumbnail."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        digest = hashlib.blake2b(image.tobytes(), digest_size=_DIGEST_BYTES,
                                 person=f"{image.size}".encode()[:16])
        thumbnail = image.convert("L").resize((THUMBNAIL_SIZE, THUMBNAIL_SIZE),
                                              Image.Resampling.BILINEAR)
        row = np.concatenate([np.frombuffer(digest.digest(), dtype=np.uint8),
                              np.asarray(thumbnail, dtype=np.uint8).ravel()])
        return torch.from_numpy(row).view(1, 1, -1)


@validate_params({"X": "no_validation", "on_error": [StrOptions({"raise", "nan"})],
                  "batch_size": [Interval(Real, 1, None, closed="left")],
                  "num_workers": [Interval(Real, 0, None, closed="left"), StrOptions({"auto"})],
                  "progress": ["boolean"]},
                 prefer_skip_nested_validation=True)
def image_signatures(X: Any, *, on_error: str = "raise", batch_size: int = 256,
                     num_workers: int = 0, progress: bool = False) -> ImageSignatures:
    """Decode every image once and return its pixel digest and grey thumbnail.

    Parameters
    ----------
    X : array-like of images or of image paths
        Anything :class:`~skdeep.PretrainedCNNFeatures` accepts.
    on_error : {"raise", "nan"}, default="raise"
        An unreadable image raises an error naming its row and path, or gives a None digest and
        a NaN thumbnail (it is then a group of its own).
    batch_size, num_workers, progress
        As for :class:`~skdeep.PretrainedCNNFeatures`.

    Returns
    -------
    ImageSignatures

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.model_selection import image_signatures
    >>> images = np.zeros((3, 20, 20), dtype=np.uint8)
    >>> images[2, :10] = 255
    >>> signatures = image_signatures(images)
    >>> same, other = signatures.digests[0], signatures.digests[2]
    >>> signatures.digests[1] == same, other == same
    (True, False)
    >>> signatures.thumbnails.shape
    (3, 256)
    """
    width = _DIGEST_BYTES + THUMBNAIL_SIZE**2
    dataset = ImageDataset(as_items(X), transform=_Signature(), input_size=(1, 1, width),
                           on_error=on_error)
    rows, errors = predict_rows(
        lambda batch: batch.flatten(1), dataset, device=torch.device("cpu"), precision="fp32",
        batch_size=int(batch_size),
        num_workers=num_workers if num_workers == "auto" else int(num_workers), progress=progress,
        desc="signatures",
    )
    if len(dataset) == 0:
        return ImageSignatures(np.empty(0, dtype=object),
                               np.empty((0, THUMBNAIL_SIZE**2), dtype=np.float32))
    digest_bytes = rows[:, :_DIGEST_BYTES]
    digests = np.array([None if np.isnan(row).any() else bytes(row.astype(np.uint8)).hex()
                        for row in digest_bytes], dtype=object)
    return ImageSignatures(digests, np.ascontiguousarray(rows[:, _DIGEST_BYTES:]))


# --- the rule ----------------------------------------------------------------------------------


class NearDuplicates(NamedTuple):
    """What :func:`find_near_duplicates` found.

    Attributes
    ----------
    groups : ndarray of shape (n_samples,), int
        Group label of each image, ``0 .. n_groups - 1``, numbered by first appearance.
    pairs : pandas.DataFrame
        One row per near-duplicate pair found directly (a group of three may hold two pairs
        and a chain): ``first``, ``second`` (row positions, ``first < second``), ``reason``
        (``"exact"``, ``"pixels"`` or ``"embedding"``: the strongest rule that holds) and
        ``distance`` (the cosine distance under that rule, 0 for exact duplicates), sorted
        most similar first.
    thresholds : dict
        The absolute cuts used: ``{"pixels": float or None, "embedding": float or None}``.
    neighbours : Neighbours or None
        Each image's :data:`N_NEIGHBORS` nearest images in the embedding (None without
        embeddings): the search the embedding rule made, for other uses (the audit's).
    """

    groups: np.ndarray
    pairs: pd.DataFrame
    thresholds: dict
    neighbours: Neighbours | None = None


@validate_params({"embeddings": ["array-like", None], "signatures": [ImageSignatures, None],
                  "threshold": _THRESHOLD},
                 prefer_skip_nested_validation=True)
def find_near_duplicates(embeddings: Any = None, *, signatures: ImageSignatures | None = None,
                         threshold: float | str = "auto") -> NearDuplicates:
    """Near-duplicate pairs and groups from embeddings and/or pixel signatures.

    Parameters
    ----------
    embeddings : array-like of shape (n_samples, n_features), default=None
        CNN embeddings, one row per image; NaN rows (unreadable images) are groups of their own.
    signatures : ImageSignatures, default=None
        From :func:`image_signatures` of the same images: adds the exact and pixel rules.
    threshold : "auto" or float, default="auto"
        ``"auto"``: the module's rule, relative to the data. A float: an absolute cosine
        distance in the embedding (the pixel rule is then off; exact duplicates still count).

    Returns
    -------
    NearDuplicates

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.model_selection import find_near_duplicates
    >>> rng = np.random.default_rng(0)
    >>> embeddings = rng.normal(size=(50, 16))
    >>> embeddings[7] = embeddings[3] + 0.001  # a near-copy of row 3
    >>> found = find_near_duplicates(embeddings)
    >>> found.pairs[["first", "second", "reason"]].values.tolist()
    [[3, 7, 'embedding']]
    >>> bool(found.groups[3] == found.groups[7]), len(np.unique(found.groups))
    (True, 49)
    """
    if embeddings is None and signatures is None:
        raise ValueError("find_near_duplicates needs embeddings, signatures or both")
    if embeddings is not None:
        embeddings = np.asarray(embeddings, dtype=np.float64)
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be a 2-D array (one row per image); got shape "
                             f"{embeddings.shape}")
    n = len(embeddings) if embeddings is not None else len(signatures.digests)
    if signatures is not None and len(signatures.digests) != n:
        raise ValueError(f"signatures has {len(signatures.digests)} rows but embeddings {n}")
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]] = []
    thresholds: dict[str, float | None] = {"pixels": None, "embedding": None}
    neighbours = None
    if signatures is not None:
        found.append((*_exact_pairs(signatures.digests), "exact"))
        if threshold == "auto":
            thumbnails = signatures.thumbnails - signatures.thumbnails.mean(axis=1,
                                                                            keepdims=True)
            *pairs, thresholds["pixels"], _ = _close_pairs(thumbnails, factor=PIXEL_FACTOR)
            found.append((*pairs, "pixels"))
    if embeddings is not None:
        relative = threshold == "auto"
        *pairs, thresholds["embedding"], neighbours = _close_pairs(
            embeddings, factor=EMBEDDING_FACTOR if relative else None,
            absolute=None if relative else float(threshold))
        found.append((*pairs, "embedding"))
    table = _pair_table(found)
    return NearDuplicates(_components(table, n), table, thresholds, neighbours)


def _exact_pairs(digests: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each image with identical pixels paired with the first such image (a star per group)."""
    first_of: dict[str, int] = {}
    firsts, seconds = [], []
    for row, digest in enumerate(digests):
        if digest is None:
            continue
        first = first_of.setdefault(digest, row)
        if first != row:
            firsts.append(first)
            seconds.append(row)
    return (np.asarray(firsts, dtype=np.intp), np.asarray(seconds, dtype=np.intp),
            np.zeros(len(firsts)))


class Neighbours(NamedTuple):
    """Each row's nearest other rows by cosine distance (:func:`nearest_neighbours`).

    Attributes
    ----------
    indices : ndarray of shape (n_samples, k), int
        The neighbours' rows, nearest first; -1 throughout for a row that took no part (NaN,
        or all zeros: no direction).
    distances : ndarray of shape (n_samples, k), float
        Their cosine distances; NaN where ``indices`` is -1.
    """

    indices: np.ndarray
    distances: np.ndarray


def nearest_neighbours(vectors: np.ndarray, k: int = N_NEIGHBORS) -> Neighbours:
    """Each row's ``k`` nearest other rows by cosine distance (fewer when there are fewer rows).

    Brute force on unit vectors (exact; scikit-learn chunks it to bounded memory). Rows with NaN
    (unreadable images) and all-zero rows (a blank thumbnail) take no part. The near-duplicate
    rule and the audit's outliers and label vote share one search.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.model_selection import nearest_neighbours
    >>> found = nearest_neighbours(np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0]]), k=1)
    >>> found.indices.ravel().tolist()
    [1, 0, 1]
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    usable = np.flatnonzero(np.isfinite(norms) & (norms > 0))
    k = max(0, min(k, len(usable) - 1))
    indices = np.full((len(vectors), k), -1, dtype=np.intp)
    distances = np.full((len(vectors), k), np.nan)
    if k == 0:
        return Neighbours(indices, distances)
    unit = vectors[usable] / norms[usable, None]
    found_d, found_i = (NearestNeighbors(n_neighbors=k + 1, metric="cosine", algorithm="brute")
                        .fit(unit).kneighbors(unit))
    # Drop each row itself: column 0, except when an identical row ties with it (then it may
    # be later, or pushed out: the last column goes instead).
    own = found_i == np.arange(len(usable))[:, None]
    own[~own.any(axis=1), -1] = True
    indices[usable] = usable[found_i[~own].reshape(len(usable), k)]
    distances[usable] = np.clip(found_d[~own].reshape(len(usable), k), 0.0, None)
    return Neighbours(indices, distances)


def _close_pairs(vectors: np.ndarray, *, factor: float | None = None,
                 absolute: float | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, Neighbours]:
    """Pairs among each row's nearest neighbours whose cosine distance is within the cut, the
    cut, and the neighbours.

    The cut is ``absolute``, or ``factor`` x the median nearest-neighbour distance.
    """
    neighbours = nearest_neighbours(vectors)
    searched = (neighbours.indices >= 0).any(axis=1)
    if not searched.any():
        empty = np.empty(0, dtype=np.intp)
        return empty, empty, np.empty(0), float(absolute or 0.0), neighbours
    nearest = neighbours.distances[searched, 0]
    cut = absolute if absolute is not None else factor * float(np.median(nearest))
    rows, columns = np.nonzero(neighbours.distances <= cut)  # NaN compares False
    a, b = rows, neighbours.indices[rows, columns]
    return (np.minimum(a, b), np.maximum(a, b), neighbours.distances[rows, columns], float(cut),
            neighbours)


def _pair_table(found) -> pd.DataFrame:
    """One row per pair, under the strongest rule that found it, most similar first."""
    parts = [pd.DataFrame({"first": first, "second": second, "reason": reason,
                           "distance": distance})
             for first, second, distance, reason in found]
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["first", "second", "reason", "distance"])
    table["reason"] = pd.Categorical(table["reason"], categories=list(REASONS))
    table = (table.sort_values(["reason", "distance", "first", "second"], kind="stable")
             .drop_duplicates(["first", "second"]).sort_values(
                 ["reason", "distance", "first", "second"], kind="stable")
             .reset_index(drop=True))
    table["first"] = table["first"].astype(np.int64)
    table["second"] = table["second"].astype(np.int64)
    table["distance"] = table["distance"].astype(np.float64)
    table["reason"] = table["reason"].astype(str)
    return table


def _components(pairs: pd.DataFrame, n: int) -> np.ndarray:
    """Connected components of the pair graph, numbered by first appearance."""
    graph = coo_matrix((np.ones(len(pairs)), (pairs["first"], pairs["second"])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return _by_first_appearance(labels)


def _by_first_appearance(labels: np.ndarray) -> np.ndarray:
    """``labels`` renumbered ``0, 1, ...`` in the order their first row appears."""
    _, first_seen, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first_seen))[inverse].astype(np.int64)


# --- the public entry points -------------------------------------------------------------------


class Embedded(NamedTuple):
    """What :func:`embed_images` made of ``X``.

    Attributes
    ----------
    items : ndarray, list or None
        The images as :class:`~skdeep.PretrainedCNNFeatures` reads them (None when X was an
        embedding matrix).
    embeddings : ndarray of shape (n_samples, n_features), float64
        One row per image; NaN rows for unreadable images under ``on_error="nan"``.
    signatures : ImageSignatures or None
        The images' pixel digests and thumbnails (None for an embedding matrix).
    provenance : dict or None
        The estimator's ``provenance_``, when it has one.
    """

    items: Any
    embeddings: np.ndarray
    signatures: ImageSignatures | None
    provenance: dict | None


def is_embedding_matrix(X: Any) -> bool:
    """Whether ``X`` is a 2-D floating-point array (embeddings), not images (3 or 4 axes).

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.model_selection import is_embedding_matrix
    >>> is_embedding_matrix(np.zeros((5, 8))), is_embedding_matrix(np.zeros((5, 8, 8), np.uint8))
    (True, False)
    """
    if isinstance(X, torch.Tensor):
        return X.ndim == 2 and X.dtype.is_floating_point
    return isinstance(X, np.ndarray) and X.ndim == 2 and np.issubdtype(X.dtype, np.floating)


def embed_images(X: Any, estimator: Any = None, *, on_error: str = "raise",
                 progress: bool = False) -> Embedded:
    """The one embedding step of :func:`near_duplicate_groups`, the splitter and ``audit``.

    Each image is decoded once for its signature (an unreadable image under ``"raise"`` stops
    here, named, before the network runs) and embedded once by ``estimator``.

    Parameters
    ----------
    X : images, image paths, or array of shape (n_samples, n_features) of embeddings
        An embedding matrix is returned as it is, with no signatures.
    estimator : transformer, default=None
        Default: ``PretrainedCNNFeatures`` at the input size of ``image_size="auto"`` (96 px
        for images of at most 64 px, else the weights' own), the rule of ``evaluate`` and
        ``extract``. Fitted here if it is not yet. One whose ``on_error`` differs from
        ``on_error`` is used as a clone with ``on_error`` set.
    on_error : {"raise", "nan"}, default="raise"
    progress : bool, default=False

    Returns
    -------
    Embedded

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep import PretrainedCNNFeatures
    >>> from skdeep.model_selection import embed_images
    >>> images = np.zeros((3, 16, 16), dtype=np.uint8)
    >>> cnn = PretrainedCNNFeatures(image_size=32, precision="fp32", layer="blocks.1")
    >>> embedded = embed_images(images, cnn)
    >>> embedded.embeddings.shape, embedded.signatures.thumbnails.shape
    ((3, 24), (3, 256))
    """
    if is_embedding_matrix(X):
        embeddings = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else X
        return Embedded(None, np.asarray(embeddings, dtype=np.float64), None, None)
    items = as_items(X)
    signatures = image_signatures(items, on_error=on_error, progress=progress)
    if estimator is None:
        estimator = PretrainedCNNFeatures(image_size=auto_image_size(items), on_error=on_error,
                                          progress=progress)
    elif (hasattr(estimator, "get_params")
          and estimator.get_params(deep=False).get("on_error", on_error) != on_error):
        estimator = clone(estimator).set_params(on_error=on_error)
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        estimator = estimator.fit(items)  # PretrainedCNNFeatures.fit does not read the images
    embeddings = np.asarray(estimator.transform(items), dtype=np.float64)
    if embeddings.ndim != 2 or len(embeddings) != len(items):
        raise ValueError(f"the estimator's transform returned shape {embeddings.shape}; one row "
                         f"per image ({len(items)}) is needed.")
    return Embedded(items, embeddings, signatures, getattr(estimator, "provenance_", None))


@validate_params({"X": "no_validation", "threshold": _THRESHOLD,
                  "estimator": "no_validation"},
                 prefer_skip_nested_validation=True)
def near_duplicate_groups(X: Any, *, threshold: float | str = "auto",
                          estimator: Any = None) -> np.ndarray:
    """One group label per image: near-duplicates share a label, every other image has its own.

    Parameters
    ----------
    X : array-like of images or of image paths, or array of shape (n_samples, n_features)
        Anything :class:`~skdeep.PretrainedCNNFeatures` accepts, embedded with ``estimator``
        (its cache is used), or a 2-D floating-point array of embeddings (then only the
        embedding rule applies: pixels are not known).
    threshold : "auto" or float, default="auto"
        ``"auto"``: exact, pixel and embedding rules relative to the data (see the module
        docstring). A float: an absolute cosine distance in the embedding.
    estimator : transformer, default=None
        Makes the embeddings of images, as :func:`embed_images` says (default: the penultimate
        layer of EfficientNet-Lite0 at the ``image_size="auto"`` input size). Fitted here if it
        is not yet.

    Returns
    -------
    groups : ndarray of shape (n_samples,), int
        Labels ``0 .. n_groups - 1``, numbered by first appearance, to pass as ``groups=`` to
        any scikit-learn group splitter.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep import PretrainedCNNFeatures
    >>> from skdeep.model_selection import near_duplicate_groups
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(6, 32, 32), dtype=np.uint8)
    >>> images[4] = images[1]  # the same image twice
    >>> cnn = PretrainedCNNFeatures(image_size=32, precision="fp32")
    >>> near_duplicate_groups(images, estimator=cnn).tolist()
    [0, 1, 2, 3, 1, 4]
    """
    embedded = embed_images(X, estimator, on_error=getattr(estimator, "on_error", "raise"))
    return find_near_duplicates(embedded.embeddings, signatures=embedded.signatures,
                                threshold=threshold).groups


class NearDuplicateGroupKFold(BaseCrossValidator):
    """K-fold cross-validation that keeps near-duplicate images in the same fold.

    ``split(X, y)`` computes the groups with :func:`near_duplicate_groups` from ``X`` itself,
    then splits like :class:`~sklearn.model_selection.StratifiedGroupKFold` (or
    :class:`~sklearn.model_selection.GroupKFold` with ``stratified=False`` or no ``y``): no group
    ever straddles a train/test split. With no near-duplicates, every image is its own group.
    Groups given to ``split`` (a patient, a camera, a session) are kept together too.

    Parameters
    ----------
    n_splits : int, default=5
        Number of folds, at least 2.
    stratified : bool, default=True
        Keep each class's share about the same in every fold (needs ``y``).
    shuffle : bool, default=False
        Shuffle the groups before splitting (as the scikit-learn splitters do).
    random_state : int, RandomState instance or None, default=None
        Seed of the shuffle.
    threshold : "auto" or float, default="auto"
        As for :func:`near_duplicate_groups`.
    estimator : transformer, default=None
        Makes the embeddings (see :func:`embed_images`). Give the one of your pipeline (with
        ``cache=``) and the images are embedded once for the groups and the models.

    Attributes
    ----------
    groups_ : ndarray of shape (n_samples,)
        The groups of the last ``split``.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.model_selection import NearDuplicateGroupKFold
    >>> rng = np.random.default_rng(0)
    >>> embeddings = rng.normal(size=(40, 8))
    >>> embeddings[30:] = embeddings[:10] + 1e-4  # rows 30-39 copy rows 0-9
    >>> y = np.tile([0, 1], 20)
    >>> cv = NearDuplicateGroupKFold(n_splits=4)
    >>> fold = np.empty(40, dtype=int)
    >>> for k, (train, test) in enumerate(cv.split(embeddings, y)):
    ...     fold[test] = k
    >>> bool((fold[30:] == fold[:10]).all())  # each copy is in its source's test fold
    True
    """

    _parameter_constraints: dict = {
        "n_splits": [Interval(Real, 2, None, closed="left")],
        "stratified": ["boolean"],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "threshold": _THRESHOLD,
        "estimator": "no_validation",
    }

    def __init__(self, n_splits: int = 5, *, stratified: bool = True, shuffle: bool = False,
                 random_state: Any = None, threshold: float | str = "auto",
                 estimator: Any = None) -> None:
        self.n_splits = n_splits
        self.stratified = stratified
        self.shuffle = shuffle
        self.random_state = random_state
        self.threshold = threshold
        self.estimator = estimator

    def get_n_splits(self, X: Any = None, y: Any = None, groups: Any = None) -> int:
        """The number of folds, ``n_splits``."""
        return int(self.n_splits)

    def split(self, X: Any, y: Any = None, groups: Any = None
              ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Train and test row positions of each fold; no near-duplicate group is split.

        Parameters
        ----------
        X : images, image paths, or array of shape (n_samples, n_features) of embeddings
        y : array-like of shape (n_samples,), default=None
            Class labels, for stratification.
        groups : array-like of shape (n_samples,), default=None
            Your own groups, kept together as well as the near-duplicate groups.
        """
        params = {name: getattr(self, name) for name in self._parameter_constraints}
        validate_parameter_constraints(self._parameter_constraints, params,
                                       caller_name=type(self).__name__)
        found = near_duplicate_groups(X, threshold=self.threshold, estimator=self.estimator)
        if groups is not None:
            found = _joined(found, np.asarray(groups))
        self.groups_ = found
        if self.stratified and y is not None:
            splitter = StratifiedGroupKFold(int(self.n_splits), shuffle=self.shuffle,
                                            random_state=self.random_state)
        else:
            splitter = GroupKFold(int(self.n_splits), shuffle=self.shuffle,
                                  random_state=self.random_state)
        yield from splitter.split(np.zeros((len(found), 1)), y, found)

    def _iter_test_indices(self, X=None, y=None, groups=None):  # pragma: no cover - split is ours
        raise NotImplementedError


def _joined(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Groups that keep together what either labelling keeps together."""
    if len(first) != len(second):
        raise ValueError(f"groups has {len(second)} rows but X has {len(first)}")
    _, codes = np.unique(second, return_inverse=True)
    n = len(first)
    rows = np.arange(n)
    # rows linked to their near-duplicate group's node and to their own group's node
    graph = coo_matrix((np.ones(2 * n), (np.concatenate([rows, rows]),
                                         np.concatenate([n + first, 2 * n + codes]))),
                       shape=(3 * n, 3 * n))
    _, labels = connected_components(graph, directed=False)
    return _by_first_appearance(labels[:n])
