"""What :func:`~skdeep.evaluation.evaluate` returns: the scores, the predictions and the advice."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import _report


@dataclass
class EvaluationResult:
    """What :func:`evaluate` found. ``str(result)`` is the summary table.

    Attributes
    ----------
    scores : DataFrame
        One row per strategy, in the order evaluated (raw pixels, layers shallow to deep,
        fine-tuning): ``strategy``, ``model``, ``layer``, ``n_features``, ``accuracy_mean``,
        ``accuracy_std`` (over folds), ``log_loss``, ``brier`` and ``ece`` of the out-of-fold
        probabilities (and ``log_loss_calibrated``, ``brier_calibrated``, ``ece_calibrated``
        with ``calibrate=True``), ``fit_seconds`` and ``predict_seconds`` (means per fold;
        for CNN features, the classifier only: the shared forward pass is in
        ``config["embedding_seconds"]``), and ``seconds``, the cost of the strategy per fold:
        its features' forward pass (or the raw pixels' reading) + fit + prediction. A
        fine-tuning ``-tta`` row is the fit of the row before it predicting again with
        test-time augmentation: its ``fit_seconds`` are that fit's, its ``predict_seconds``
        the TTA prediction's, so its ``seconds`` include the fit.
    folds : DataFrame
        One row per strategy and fold: ``accuracy``, ``fit_seconds``, ``predict_seconds``,
        ``n_train``, ``n_test``, ``converged``.
    y : ndarray
        The labels of the images evaluated (unreadable images dropped).
    predictions : dict of str to ndarray
        Out-of-fold predictions of each strategy, aligned with ``y``.
    probabilities : dict of str to ndarray or None
        Out-of-fold probabilities of each strategy, shape ``(n_samples, n_classes)``, columns in
        sorted class order (``np.unique(y)``), as its model gives them (uncalibrated): what
        ``log_loss``, ``brier`` and ``ece`` of ``scores`` measure.
    calibrated_probabilities : dict of str to ndarray or None
        The same after calibration inside each training fold (``calibrate=True``); else None.
    recommended : str or None
        The recommended strategy (see ``recommendation``).
    classes : ndarray
        The class labels, in display order.
    embeddings : dict of str to ndarray
        The CNN features of each layer, aligned with ``y``.
    best : str
        The strategy with the highest mean accuracy.
    recommendation : str
        What to use, in words and code: the cheapest strategy (``seconds``) whose mean accuracy
        is within one standard deviation of ``best``'s.
    config : dict
        The settings and facts of the run (backbone, weights id, image size, folds, timings...),
        and under ``"provenance"`` the ``provenance_`` of the feature extractor (versions,
        weights SHA-256, preprocessing, device, precision, time): ``results.json`` keeps it.
        With ``duplicates="group"`` it also holds what the near-duplicate search found:
        ``n_duplicate_groups`` (groups of more than one image), ``n_images_in_duplicate_groups``,
        ``n_duplicate_pairs`` and ``duplicate_pairs_by_reason`` (``exact``, ``pixels``,
        ``embedding``), ``n_straddling_pairs`` (pairs that plain stratified folds would have
        put in different test folds), ``duplicate_thresholds``, and ``plain_cv_accuracy`` and
        ``grouped_cv_accuracy`` of the strategy ``duplicates_compared`` (``best``, or the best
        frozen strategy when fine-tuning won) on plain and on grouped folds.
    test_fold : ndarray of shape (n_samples,)
        The fold in which each image was a test image, aligned with ``y``:
        ``PredefinedSplit(result.test_fold)`` gives the same folds to scikit-learn.
    duplicate_groups : ndarray of shape (n_samples,) or None
        The near-duplicate group of each image, aligned with ``y`` (an image with no
        near-duplicate has a group of its own); None with ``duplicates="ignore"``.
    duplicate_pairs : DataFrame or None
        One row per near-duplicate pair (see :class:`skdeep.model_selection.NearDuplicates`):
        ``first``, ``second`` (rows of ``y``), ``reason``, ``distance``, ``group``,
        ``first_label``, ``second_label``, ``straddles_plain_folds``, and ``first_path``,
        ``second_path`` when the images were given as paths; None with
        ``duplicates="ignore"``. ``save`` writes it to ``duplicates.csv`` when it has rows.
    gallery : matplotlib.figure.Figure or None
        With ``evaluate(explain=True)``: the activation maps of the most confident correct
        predictions and mistakes of each class (see ``config["activation_maps"]``); ``save``
        writes it to ``activation_maps.png``.
    """

    scores: pd.DataFrame
    folds: pd.DataFrame
    y: np.ndarray
    predictions: dict[str, np.ndarray]
    classes: np.ndarray
    embeddings: dict[str, np.ndarray] = field(repr=False)
    best: str
    recommendation: str
    config: dict
    test_fold: np.ndarray | None = field(default=None, repr=False)
    duplicate_groups: np.ndarray | None = field(default=None, repr=False)
    duplicate_pairs: pd.DataFrame | None = field(default=None, repr=False)
    probabilities: dict[str, np.ndarray] | None = field(default=None, repr=False)
    calibrated_probabilities: dict[str, np.ndarray] | None = field(default=None, repr=False)
    recommended: str | None = None
    gallery: object | None = field(default=None, repr=False)

    def summary(self) -> str:
        """The table of results and the recommendation, as printed by ``skdeep evaluate``."""
        return _report.format_summary(self)

    def __str__(self) -> str:
        return self.summary()

    def to_dict(self) -> dict:
        """A JSON-serialisable dict: config, scores, per-fold results, best and recommendation."""
        return _report.to_jsonable(self)

    def save(self, folder: str | Path, *, embedding_map: str = "pca") -> list[Path]:
        """Write the report: results as CSV and JSON, a summary, and PNG plots.

        ``duplicates.csv`` (:attr:`duplicate_pairs`) is written when near-duplicates were found;
        otherwise one left there by an earlier report is removed, as it describes other data.

        Parameters
        ----------
        folder : str or Path
            Created if needed; files of an earlier report there are replaced.
        embedding_map : {"pca", "tsne"}, default="pca"
            How the 2-D map of the embeddings is computed.

        Returns
        -------
        list of Path
            The files written.
        """
        return _report.write_report(self, folder, embedding_map=embedding_map)
