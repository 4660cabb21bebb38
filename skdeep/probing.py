"""The linear probe: a linear classifier on frozen features, and the same model as one affine map.

Two things use it. :func:`~skdeep.evaluation.evaluate` scores each layer with
:func:`linear_probe` (``StandardScaler`` then ``LogisticRegression``), and
:class:`~skdeep.FineTunedCNNClassifier` with ``head_init="probe"`` fits the same probe on the
penultimate features and starts fine-tuning from it (linear probing then fine-tuning, LP-FT;
Kumar et al., 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution"). :func:`affine_scores` reads a fitted probe, scaler and all, as one
``features @ weight.T + bias``: the network's new head takes it as its weights, and
:mod:`skdeep.explain` spreads it over the feature map as an exact class activation map.

Why written here rather than imported: scikit-learn has no function that composes a pipeline's
affine steps into one matrix, and the composition must be exact (it is checked on random points,
not assumed from the step's type), so that a head initialised from the probe decides as the probe
does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted


class NotAffineError(ValueError):
    """A step or classifier cannot be read as an affine map of the features."""


def linear_probe(C: float = 1.0, max_iter: int = 1000) -> Pipeline:
    """The linear probe: ``StandardScaler`` then ``LogisticRegression(C=C)``.

    Parameters
    ----------
    C : float, default=1.0
        Inverse of the L2 regularisation strength of the logistic regression.
    max_iter : int, default=1000
        Iterations of its solver (lbfgs).

    Returns
    -------
    Pipeline
        Unfitted.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.probing import linear_probe
    >>> rng = np.random.default_rng(0)
    >>> features, labels = rng.normal(size=(40, 8)), np.repeat([0, 1], 20)
    >>> linear_probe().fit(features, labels).predict(features[:2]).shape
    (2,)
    """
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))


def is_linear(classifier: Any) -> bool:
    """Whether ``classifier`` scores with ``coef_`` and ``intercept_`` (a linear model).

    An ``SVC`` with another kernel than ``"linear"`` has no ``coef_``.

    Examples
    --------
    >>> from sklearn.svm import SVC
    >>> from skdeep.probing import is_linear
    >>> is_linear(SVC().fit([[0.0], [1.0]], [0, 1]))
    False
    """
    try:
        return (hasattr(classifier, "decision_function") and classifier.coef_ is not None
                and classifier.intercept_ is not None)
    except (AttributeError, ValueError):
        return False


def affine_scores(steps: Sequence[tuple[str, Any]], classifier: Any, width: int, *,
                  describe: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """The fitted ``steps`` then the linear ``classifier``, as ``features @ weight.T + bias``.

    Parameters
    ----------
    steps : sequence of (name, transformer)
        Fitted affine transformers applied to the features in order (``StandardScaler``,
        ``MaxAbsScaler``, ``PCA``...; ``None`` and ``"passthrough"`` are skipped). Each is read
        off its transform of 0 and of the unit vectors, then checked on random points.
    classifier : fitted linear classifier
        Anything with ``coef_`` and ``intercept_`` (``LogisticRegression``, ``LinearSVC``...).
    width : int
        Number of features.
    describe : callable, default=None
        Names a step in error messages (``type(step).__name__`` by default).

    Returns
    -------
    weight : ndarray of shape (n_scores, width)
    bias : ndarray of shape (n_scores,)
        One row per column of ``classifier.decision_function``: for two classes, one row (the
        score of ``classes_[1]``).

    Raises
    ------
    NotAffineError
        When a step is not affine or the classifier is not linear, naming it.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.probing import affine_scores, linear_probe
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.normal(size=(60, 5)), np.repeat([0, 1, 2], 20)
    >>> probe = linear_probe().fit(X, y)
    >>> weight, bias = affine_scores(probe.steps[:-1], probe[-1], width=5)
    >>> bool(np.allclose(X @ weight.T + bias, probe.decision_function(X)))
    True
    """
    describe = describe or (lambda step: type(step).__name__)
    if not is_linear(classifier):
        raise NotAffineError(f"the classifier ({describe(classifier)}) is not linear in the "
                             "features")
    matrix, offset = np.eye(width), np.zeros(width)
    for name, step in steps:  # fold each affine step: x -> x @ M + c
        if step is None or step == "passthrough":
            continue
        matrix, offset = _fold(name, step, matrix, offset, describe)
    coef = np.atleast_2d(classifier.coef_)
    intercept = np.broadcast_to(np.asarray(classifier.intercept_, dtype=float), len(coef))
    return coef @ matrix.T, coef @ offset + intercept


def _fold(name: str, step: Any, matrix: np.ndarray, offset: np.ndarray, describe: Any
          ) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix, offset)`` followed by ``step`` when ``step`` is affine: read off its transform
    of 0 and of the unit vectors, and checked on random points (else a clear error)."""
    check_is_fitted(step)
    width = matrix.shape[1]
    try:
        constant = np.asarray(step.transform(np.zeros((1, width))), dtype=float)[0]
        linear = np.asarray(step.transform(np.eye(width)), dtype=float) - constant
        points = np.random.default_rng(0).normal(size=(3, width)) * 3
        expected = points @ linear + constant
        got = np.asarray(step.transform(points), dtype=float)
        affine = got.shape == expected.shape and np.allclose(got, expected, rtol=1e-5,
                                                             atol=1e-6 * np.abs(got).max())
    except Exception as exc:  # a step that cannot even transform such rows is not affine
        raise NotAffineError(f"step {name!r} ({describe(step)}) cannot be folded into a linear "
                             f"map: {exc}") from exc
    if not affine:
        raise NotAffineError(f"step {name!r} ({describe(step)}) is not an affine map of the "
                             "features")
    return matrix @ linear, offset @ linear + constant
