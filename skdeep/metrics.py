"""Metrics of predicted probabilities that scikit-learn does not have: calibration error.

:func:`expected_calibration_error` is the one definition of ECE in skdeep: :func:`skdeep.evaluate`,
``benchmarks/bench_calibration.py`` and the documentation all use it. It is written here by hand
(a dozen lines of NumPy) because scikit-learn has no ECE: :func:`sklearn.calibration.calibration_curve`
bins one class's probability of a binary problem, while ECE as Guo et al. (2017) measure it bins
the *top-label* confidence of any number of classes.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval, validate_params

from ._values import plain

__all__ = ["expected_calibration_error", "top_label_bins"]


@validate_params(
    {"y_true": ["array-like"], "proba": ["array-like"],
     "n_bins": [Interval(Integral, 1, None, closed="left")], "labels": ["array-like", None]},
    prefer_skip_nested_validation=True,
)
def expected_calibration_error(y_true: Any, proba: Any, n_bins: int = 15, *,
                               labels: Any = None) -> float:
    """Top-label expected calibration error (ECE) of predicted probabilities.

    Each prediction's confidence (its highest probability) falls in one of ``n_bins``
    equal-width bins of [0, 1]; in each bin the gap between the mean confidence and the accuracy
    (how often the most probable class is the true one) is weighted by the bin's share of the
    predictions, and the gaps are summed (Guo et al., 2017, "On Calibration of Modern Neural
    Networks", eq. 3). 0 is perfectly calibrated; an over-confident network that is right 80 %
    of the time while saying 95 % has an ECE near 0.15.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    proba : array-like of shape (n_samples, n_classes) or (n_samples,)
        Predicted probabilities, columns in the order of ``labels`` (as ``predict_proba`` gives
        them, in the order of ``classes_``). A 1-D array is the probability of the second class
        of two.
    n_bins : int, default=15
        Number of equal-width confidence bins (15, as Guo et al.).
    labels : array-like of shape (n_classes,), default=None
        The class of each column; ``None`` takes the sorted distinct values of ``y_true``, which
        must then be as many as the columns (as :func:`sklearn.metrics.log_loss`).

    Returns
    -------
    float
        The ECE, between 0 and 1.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.metrics import expected_calibration_error
    >>> y = np.array([0, 0, 1, 1])
    >>> proba = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.55, 0.45]])
    >>> round(expected_calibration_error(y, proba), 3)
    0.112
    >>> expected_calibration_error(y, np.eye(2)[y])  # certain and right: perfectly calibrated
    0.0
    """
    confidence, correct = _top_label(y_true, proba, labels)
    counts, mean_confidence, accuracy = top_label_bins(confidence, correct, n_bins)
    filled = counts > 0
    weights = counts[filled] / counts.sum()
    return float(np.sum(weights * np.abs(mean_confidence[filled] - accuracy[filled])))


def top_label_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = 15
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts, mean confidence and accuracy of ``n_bins`` equal-width confidence bins.

    The bins are ``(0, 1/n], (1/n, 2/n], ..., ((n-1)/n, 1]`` (a confidence of exactly 0, which
    no top label has, goes to the first). Empty bins have NaN means. What
    :func:`expected_calibration_error` sums and a reliability diagram draws.

    Parameters
    ----------
    confidence : ndarray of shape (n_samples,)
        Each prediction's probability of its most probable class.
    correct : ndarray of shape (n_samples,)
        Whether that class is the true one.
    n_bins : int, default=15

    Returns
    -------
    counts, mean_confidence, accuracy : ndarrays of shape (n_bins,)

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.metrics import top_label_bins
    >>> counts, confidence, accuracy = top_label_bins(np.array([0.3, 0.9, 0.6]),
    ...                                               np.array([True, False, True]), n_bins=2)
    >>> counts.tolist(), accuracy.tolist()
    ([1, 2], [1.0, 0.5])
    """
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct, dtype=np.float64)
    bins = np.clip(np.ceil(confidence * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_confidence = np.bincount(bins, confidence, minlength=n_bins) / counts
        accuracy = np.bincount(bins, correct, minlength=n_bins) / counts
    return counts, mean_confidence, accuracy


def _top_label(y_true: Any, proba: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, correct) of each prediction, with clear errors for mismatched inputs."""
    y_true = np.asarray(y_true)
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim == 1:
        proba = np.column_stack([1.0 - proba, proba])
    if proba.ndim != 2 or len(proba) != len(y_true):
        raise ValueError(f"proba has shape {proba.shape}; expected ({len(y_true)}, n_classes), "
                         "one row per label of y_true.")
    if not np.isfinite(proba).all():
        row = int(np.flatnonzero(~np.isfinite(proba).all(axis=1))[0])
        raise ValueError(f"proba has NaN or infinite values (first at row {row}): drop the rows "
                         "of unreadable images (bad_rows_) first.")
    labels = np.unique(y_true) if labels is None else np.asarray(labels)
    if len(labels) != proba.shape[1]:
        raise ValueError(f"proba has {proba.shape[1]} columns but there are {len(labels)} "
                         f"labels {labels.tolist()[:10]}; give labels= (the classifier's "
                         "classes_) when y_true lacks some classes.")
    unknown = ~np.isin(y_true, labels)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise ValueError(f"y_true has the label {plain(y_true[row])!r} (row {row}), which is not one of "
                         f"labels {labels.tolist()[:10]}.")
    top = proba.argmax(axis=1)
    return proba[np.arange(len(proba)), top], labels[top] == y_true
