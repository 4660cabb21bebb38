"""Probabilities a user can act on: temperature scaling, calibration scores, reliability diagrams.

A fine-tuned network's probabilities are often over-confident (Guo et al., 2017, "On Calibration
of Modern Neural Networks"). One temperature ``T`` fitted on held-out images, ``softmax(logits /
T)``, brings their expected calibration error down without changing any prediction (the argmax of
``logits / T`` is that of ``logits``).

- :func:`fit_temperature` finds ``T`` by minimising the negative log-likelihood of held-out logits:
  :class:`~skdeep.FineTunedCNNClassifier` calls it on its validation split
  (``calibration="auto"``, the default, or ``"temperature"``).
- :func:`calibration_scores` gives log loss, Brier score and expected calibration error (ECE, from
  :mod:`skdeep.metrics`) of probabilities; :func:`skdeep.evaluate` reports them per strategy.
- :func:`calibrated_in_fold` and :func:`probabilities_before_and_after` are what ``evaluate(...,
  calibrate=True)`` uses: a linear probe is wrapped in scikit-learn's
  :class:`~sklearn.calibration.CalibratedClassifierCV` (temperature, inner folds of the training
  fold only), and both the raw and the calibrated probabilities of a test fold come from one fit.
- :func:`plot_reliability_diagram` draws accuracy against confidence, before and after.

:func:`fit_temperature` is written here (a one-dimensional minimisation with SciPy) rather than
taken from scikit-learn: scikit-learn's ``method="temperature"`` (>= 1.8) exists only inside
``CalibratedClassifierCV``, which would have to run the network again over the validation images
through ``predict``; the classifier already holds their logits. For any fitted model and a
calibration set of your own, use ``CalibratedClassifierCV(FrozenEstimator(model),
method="temperature")`` (see the user guide, "Calibrated probabilities").
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.metrics import brier_score_loss, log_loss

from ._values import plain
from .metrics import expected_calibration_error, top_label_bins

__all__ = [
    "CALIBRATIONS",
    "INNER_FOLDS",
    "calibrated_in_fold",
    "calibration_scores",
    "check_calibration",
    "check_inner_folds",
    "fit_temperature",
    "plot_reliability_diagram",
    "probabilities_before_and_after",
]

#: ``FineTunedCNNClassifier(calibration=...)``: besides None (no calibration), ``"auto"``
#: calibrates when there is a validation split and warns when there is none; ``"temperature"``
#: always calibrates and refuses to fit without a validation split.
CALIBRATIONS = ("auto", "temperature")
#: Inner folds of a training fold in which ``evaluate(calibrate=True)`` calibrates a linear probe.
INNER_FOLDS = 3
#: The temperatures searched: far wider than any network needs (Guo et al. find 1.1 to 2.9).
_LOG_T_BOUNDS = (np.log(1e-2), np.log(1e2))


def check_calibration(calibration: str | None, has_validation: bool,
                      validation_fraction: float) -> bool:
    """Whether a fit calibrates; refuses, or warns, when it cannot.

    Parameters
    ----------
    calibration : {"auto", "temperature"} or None
        The classifier's ``calibration``.
    has_validation : bool
        Whether the fit holds out a validation split.
    validation_fraction : float
        The classifier's ``validation_fraction`` (for the messages).

    Returns
    -------
    bool
        True when a temperature is to be fitted.

    Examples
    --------
    >>> from skdeep.calibration import check_calibration
    >>> check_calibration("auto", True, 0.1)
    True
    >>> check_calibration(None, True, 0.1)
    False
    """
    if calibration is None:
        return False
    if has_validation:
        return True
    why = ("validation_fraction=0" if validation_fraction == 0
           else f"the images are too few for a validation split at validation_fraction="
                f"{validation_fraction}")
    if calibration == "temperature":
        raise ValueError(f"calibration='temperature' fits the temperature on the validation split, "
                         f"and there is none ({why}). Set validation_fraction > 0 (0.1 holds out "
                         "a tenth), or calibration=None for the network's own probabilities.")
    warnings.warn(f"calibration='auto' cannot calibrate without a validation split ({why}): the "
                  "probabilities are the network's own (temperature_ = 1.0). Set "
                  "calibration=None to say so, or validation_fraction > 0 to calibrate.",
                  UserWarning, stacklevel=4)
    return False


def fit_temperature(logits: Any, y: Any, sample_weight: Any = None) -> float:
    """The temperature ``T`` that minimises the negative log-likelihood of ``softmax(logits / T)``.

    Parameters
    ----------
    logits : array-like of shape (n_samples, n_classes)
        Held-out logits (never those of the training images, on which a network is confident
        and right).
    y : array-like of int of shape (n_samples,)
        The true class of each row, as a column index.
    sample_weight : array-like of shape (n_samples,), default=None
        Weight of each row in the log-likelihood.

    Returns
    -------
    float
        ``T > 0``: above 1 softens over-confident probabilities, below 1 sharpens under-confident
        ones. Searched in [0.01, 100].

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.calibration import fit_temperature
    >>> from scipy.special import softmax
    >>> rng = np.random.default_rng(0)
    >>> logits = 2.0 * rng.normal(size=(5000, 3))
    >>> cumulative = softmax(logits, axis=1).cumsum(axis=1)
    >>> y = (rng.random((5000, 1)) > cumulative).sum(axis=1)  # drawn from softmax(logits)
    >>> round(fit_temperature(logits, y), 1)
    1.0
    >>> round(fit_temperature(4 * logits, y))  # over-confident logits: T near 4
    4
    """
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(y) or len(y) == 0:
        raise ValueError(f"logits of shape {logits.shape} and {len(y)} labels: expected "
                         "(n_samples, n_classes) logits, one row per label, n_samples > 0.")
    weights = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, float)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:  # convex in 1 / T, so one minimum in log T
        return -float(np.average(log_softmax(logits / np.exp(log_t), axis=1)[rows, y],
                                 weights=weights))

    found = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded",
                            options={"xatol": 1e-5})
    return float(np.exp(found.x))


def calibration_scores(y_true: Any, proba: Any, *, labels: Any) -> dict[str, float]:
    """Log loss, Brier score and expected calibration error of predicted probabilities.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    proba : array-like of shape (n_samples, n_classes)
        Columns in the order of ``labels``.
    labels : array-like of shape (n_classes,)

    Returns
    -------
    dict
        ``log_loss`` (:func:`sklearn.metrics.log_loss`), ``brier``
        (:func:`sklearn.metrics.brier_score_loss`: the mean over images of the squared distance
        between the probabilities and the one-hot truth, halved for two classes as scikit-learn
        does), ``ece`` (:func:`skdeep.metrics.expected_calibration_error`, 15 bins).

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.calibration import calibration_scores
    >>> scores = calibration_scores([0, 1, 1], np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]]),
    ...                             labels=[0, 1])
    >>> sorted(scores)
    ['brier', 'ece', 'log_loss']
    """
    labels = np.asarray(labels)
    proba = np.asarray(proba, dtype=np.float64)
    # float32 probabilities (a model fitted on float32 features) sum to 1 only to 1e-7, which
    # scikit-learn's float64 check of log_loss warns about: renormalise the rounding away
    proba = proba / proba.sum(axis=1, keepdims=True)
    return {
        "log_loss": float(log_loss(y_true, proba, labels=labels)),
        "brier": float(brier_score_loss(y_true, proba, labels=labels)),
        "ece": expected_calibration_error(y_true, proba, labels=labels),
    }


def check_inner_folds(labels: Any, splits: Sequence) -> None:
    """Refuse folds whose training part has a class of fewer than ``INNER_FOLDS`` images.

    :func:`calibrated_in_fold` splits each training fold into ``INNER_FOLDS`` stratified inner
    folds; scikit-learn's own error would not say which class or what to do.

    Parameters
    ----------
    labels : array-like of shape (n_samples,)
    splits : list of (train, test) index arrays

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.calibration import check_inner_folds
    >>> check_inner_folds(np.repeat([0, 1], 6), [(np.arange(12), np.arange(0))])
    """
    labels = np.asarray(labels)
    for fold, (train, _) in enumerate(splits):
        values, counts = np.unique(labels[train], return_counts=True)
        if counts.min() < INNER_FOLDS:
            worst = int(np.argmin(counts))
            raise ValueError(
                f"calibrate=True calibrates inside each training fold with {INNER_FOLDS} inner "
                f"folds, but the training part of fold {fold} has {counts[worst]} image(s) of "
                f"class {plain(values[worst])!r}; "
                f"add images of that class, or evaluate without calibrate (--calibrate).")


def calibrated_in_fold(estimator: Any) -> CalibratedClassifierCV:
    """``estimator`` wrapped to calibrate itself by temperature inside the data it is fitted on.

    Fitting the wrapper fits ``estimator`` on ``INNER_FOLDS - 1`` thirds of its training data
    ``INNER_FOLDS`` times, learns one temperature from the out-of-fold decision values, then fits
    ``estimator`` once more on all of it (``ensemble=False``): predictions are those of that last
    fit, the probabilities are calibrated, and nothing outside the training data is seen.

    Parameters
    ----------
    estimator : classifier with ``decision_function``

    Returns
    -------
    sklearn.calibration.CalibratedClassifierCV
        Unfitted.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skdeep.calibration import calibrated_in_fold
    >>> calibrated_in_fold(LogisticRegression()).method
    'temperature'
    """
    return CalibratedClassifierCV(clone(estimator), method="temperature", cv=INNER_FOLDS,
                                  ensemble=False)


def probabilities_before_and_after(model: Any, X: Any) -> tuple[np.ndarray, np.ndarray]:
    """The probabilities of a fitted model on ``X`` without and with its calibration.

    Parameters
    ----------
    model : fitted classifier
        A :func:`calibrated_in_fold` wrapper (its raw model's probabilities, then its own), a
        :class:`~skdeep.FineTunedCNNClassifier` (``softmax`` of its logits at temperature 1,
        then at ``temperature_``), or any other classifier (its probabilities twice).
    X : what ``model`` predicts on

    Returns
    -------
    before, after : ndarrays of shape (n_samples, n_classes)

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from skdeep.calibration import calibrated_in_fold, probabilities_before_and_after
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(60, 2)), np.repeat([0, 1], 30)
    >>> before, after = probabilities_before_and_after(calibrated_in_fold(
    ...     LogisticRegression()).fit(X, y), X)
    >>> bool((before.argmax(1) == after.argmax(1)).all())
    True
    """
    if isinstance(model, CalibratedClassifierCV):
        raw = model.calibrated_classifiers_[0].estimator  # ensemble=False: the one full fit
        return raw.predict_proba(X), model.predict_proba(X)
    temperature = getattr(model, "temperature_", None)
    if temperature is not None:
        log_proba = model.predict_log_proba(X)  # log softmax(logits / T), up to a constant a row
        return softmax(temperature * log_proba, axis=1), np.exp(log_proba)
    proba = model.predict_proba(X)
    return proba, proba


def plot_reliability_diagram(y_true: Any, probas: Mapping[str, Any], *, labels: Sequence,
                             n_bins: int = 15, title: str | None = None):
    """Reliability diagram: accuracy against confidence, one line per set of probabilities.

    A calibrated model's points lie on the diagonal (of the predictions made with 80 %
    confidence, 80 % are right); points below it are over-confidence. Bars at the bottom show
    how many predictions of the first set fall in each bin; the legend gives each set's ECE.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
    probas : dict of str to array-like of shape (n_samples, n_classes)
        Named probabilities of the same images, e.g. ``{"before": p, "after": q}``.
    labels : sequence
        The class of each column.
    n_bins : int, default=15
    title : str, default=None

    Returns
    -------
    matplotlib.figure.Figure
        Rendered by the Agg canvas (``figure.savefig(path)``); no pyplot state is touched.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.calibration import plot_reliability_diagram
    >>> y = np.array([0, 1, 1, 0])
    >>> p = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.7, 0.3]])
    >>> figure = plot_reliability_diagram(y, {"model": p}, labels=[0, 1])
    >>> len(figure.axes)
    2
    """
    from matplotlib.figure import Figure

    y_true = np.asarray(y_true)
    labels = np.asarray(labels)
    figure = Figure(figsize=(6.0, 6.4), layout="constrained")
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    top.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="perfectly calibrated")
    centres = (np.arange(n_bins) + 0.5) / n_bins
    markers = ["o", "s", "^", "D", "v"]
    for i, (name, proba) in enumerate(probas.items()):
        proba = np.asarray(proba, dtype=np.float64)
        top_class = proba.argmax(axis=1)
        confidence = proba[np.arange(len(proba)), top_class]
        counts, mean_confidence, accuracy = top_label_bins(
            confidence, labels[top_class] == y_true, n_bins)
        ece = expected_calibration_error(y_true, proba, n_bins, labels=labels)
        filled = counts > 0
        top.plot(mean_confidence[filled], accuracy[filled], marker=markers[i % len(markers)],
                 linewidth=1.5, label=f"{name} (ECE {100 * ece:.1f} %)")
        if i == 0:
            bottom.bar(centres, counts, width=1 / n_bins, color="0.75", edgecolor="0.4")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy (share of predictions that are right)")
    top.legend(loc="lower right", fontsize=9, framealpha=0.9)
    top.grid(alpha=0.3)
    if title:
        top.set_title(title, fontsize=10)
    bottom.set_xlabel("confidence (probability of the predicted class)")
    bottom.set_ylabel(f"predictions\n({next(iter(probas))})" if len(probas) > 1
                      else "predictions")
    bottom.grid(alpha=0.3)
    return figure
