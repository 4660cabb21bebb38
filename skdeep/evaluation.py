"""Which way of classifying *these* images works best? Cross-validated, side by side.

:func:`evaluate` answers the first question a data scientist asks of a new image collection, with
stratified k-fold cross-validation on the same folds for every strategy:

- **raw pixels** + logistic regression: the baseline any learned representation must beat;
- **frozen CNN features** + logistic regression, for a sweep of layers from shallow to deep (the
  DeCAF protocol of Donahue et al., 2014): how transferable is each depth of the network?
- optionally, **fine-tuning** (:class:`~skdeep.FineTunedCNNClassifier`) of the new head only,
  of the last units and of the whole network, and of the whole network with the recipe
  :data:`skdeep.recipes.COMPARED_RECIPE` (LP-FT), each fitted model also predicting with
  test-time augmentation (the same fit, predicting again: no second fit).

The folds keep near-duplicate images (the same photo twice, a re-encoded or slightly shifted
copy) in one fold, so that a score measures transfer to unseen images, not memory; the groups come
from :mod:`skdeep.model_selection`, from the images' pixels and the features already computed.

The features of every layer come from ONE forward pass over all images, before the folds are
drawn, and each fold then only fits a scaler and a linear model on its training rows. This is
not a leak: the network is frozen and :meth:`PretrainedCNNFeatures.fit` does not look at the
data, so embedding an image does not depend on which fold it is in; the result is the same as
cross-validating ``make_pipeline(PretrainedCNNFeatures(layer=...), StandardScaler(),
LogisticRegression())`` once per layer, at a fraction of the cost. The fine-tuned network does
learn from its training rows, so it is fitted from scratch on each fold.

Every strategy is also timed, per fold, as a pipeline built from the images would be: the
forward pass that makes its features (the whole pass, over all images, counted for each fold),
its fit and its prediction. The recommendation weighs accuracy against that cost.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sys
import time
import warnings
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
    validate_params,
)
from torch import nn

from ._base import COMMON_PARAMETER_CONSTRAINTS, VIEW_PARAMETER_CONSTRAINTS
from ._defaults import DEFAULT_BACKBONE, DUPLICATES, POOLINGS
from ._inference import predict_rows
from ._inputs import ImageDataset, as_items, auto_image_size, check_labels, take_rows
from ._layers import normalize_layers
from ._report import recommend, recommended_strategy
from ._result import EvaluationResult
from ._strategies import (
    FINETUNE_LAST_K,
    FINETUNE_TTA,
    PIXELS,
    finetune_strategy,
    frozen_layers,
    frozen_strategy,
    is_finetune,
    strategy_label,
)
from ._values import plain
from .backbones import layer_sweep
from .calibration import (
    calibrated_in_fold,
    calibration_scores,
    check_inner_folds,
    probabilities_before_and_after,
)
from .classifier import FineTunedCNNClassifier
from .explain import FoldModels, cross_validated_gallery
from .features import PretrainedCNNFeatures
from .probing import linear_probe
from .model_selection import REASONS, NearDuplicates, find_near_duplicates, image_signatures
from .recipes import COMPARED_RECIPE

# EvaluationResult (skdeep._result) and layer_sweep (skdeep.backbones) are re-exported: their
# home is the module of their concept, their public address stays skdeep.evaluation.
__all__ = ["EvaluationResult", "evaluate", "layer_sweep"]


# --- evaluate ----------------------------------------------------------------------------------


#: ``image_size`` (and each of ``image_sizes``, where ``"native"`` also means None).
_IMAGE_SIZE = [Interval(Integral, 8, None, closed="left"), StrOptions({"auto"}), None]


@validate_params(
    {
        **COMMON_PARAMETER_CONSTRAINTS,
        "X": "no_validation",  # as_items checks every accepted form, with its own messages
        "y": ["array-like"],
        "layers": [str, list, tuple, None],
        "image_size": _IMAGE_SIZE,
        "image_sizes": [list, tuple, None],
        "pairs": ["boolean"],
        "pooling": [StrOptions(set(POOLINGS)), None],
        "cv": [Interval(Integral, 2, None, closed="left")],
        "duplicates": [StrOptions(set(DUPLICATES))],
        "finetune": ["boolean"],
        "finetune_params": [dict, None],
        "calibrate": ["boolean"],
        "max_images": [Interval(Integral, 2, None, closed="left"), None],
        "pixel_size": [Interval(Integral, 1, None, closed="left")],
        "C": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "cache": "no_validation",  # as PretrainedCNNFeatures(cache=...) checks it
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "n_jobs": [Integral, None],
        "verbose": ["verbose"],
    },
    # The estimators evaluate builds check the parameters it passes on (backbone, weights...).
    prefer_skip_nested_validation=False,
)
def evaluate(
    X: Any,
    y: Any,
    *,
    backbone: str | nn.Module = DEFAULT_BACKBONE,
    weights: Any = "DEFAULT",
    layers: str | Sequence[str] | None = None,
    image_size: int | str | None = "auto",
    image_sizes: Sequence[int | str | None] | None = None,
    pairs: bool = True,
    pooling: str | None = "avg",
    cv: int = 5,
    duplicates: str = "group",
    finetune: bool = False,
    finetune_params: dict | None = None,
    calibrate: bool = False,
    max_images: int | None = None,
    pixel_size: int = 32,
    C: float = 1.0,
    max_iter: int = 1000,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "auto",
    num_workers: int = 0,
    on_error: str = "raise",
    cache: Any = None,
    random_state: int = 0,
    n_jobs: int | None = None,
    progress: bool = False,
    verbose: int = 0,
    compile: str | bool = "auto",
    explain: bool = False,
) -> EvaluationResult:
    """Cross-validate raw pixels, CNN features layer by layer, and optionally fine-tuning.

    Every strategy is scored by accuracy on the same stratified folds, which keep near-duplicate
    images together (``duplicates``). CNN features are computed once for all layers and all
    images (see the module docstring for why that is sound), then each fold fits
    ``StandardScaler`` + ``LogisticRegression`` on the training rows of a layer, and of every
    concatenation of two layers (``pairs``), at each input size compared.

    Parameters
    ----------
    X : array-like of images or of image paths
        Anything :class:`~skdeep.PretrainedCNNFeatures` accepts.
    y : array-like of shape (n_samples,)
        Class labels. With a pandas categorical, its categories give the display order.
    backbone, weights, pooling, batch_size, device, precision, num_workers, on_error, cache, compile
        As for :class:`~skdeep.PretrainedCNNFeatures`.
    layers : str or list of str, default=None
        Layers to compare; ``None`` uses :func:`layer_sweep` of the backbone.
    image_size : int, "auto" or None, default="auto"
        Network input side. ``"auto"``: 96 when the images are small (at most 64 pixels on
        their longest side, such as 28x28 Fashion-MNIST), else the weights' own size (``None``).
    image_sizes : list of int, "auto", "native" or None, default=None
        Input sides to compare, each as ``image_size`` takes it (``"native"`` is ``None``,
        the weights' own size); ``["auto", "native"]`` asks "which size" for small images.
        Each size costs one more forward pass over all images (at 224 px about 5 times the
        cost at 96 px), so the default, ``None``, evaluates ``image_size`` alone; when given,
        it replaces ``image_size``. Sizes that resolve to the same input are evaluated once.
        The strategies of the first size keep their plain names (``"blocks.4"``); those of
        the others carry their size (``"blocks.4@224"``).
    pairs : bool, default=True
        Also score every concatenation of two of the layers (``"blocks.4+penultimate"``,
        what ``PretrainedCNNFeatures(layer=["blocks.4", "penultimate"])`` computes): the
        features are already computed, so a pair costs only its logistic regressions.
    cv : int, default=5
        Number of stratified folds (every class needs at least ``cv`` images).
    duplicates : {"group", "ignore"}, default="group"
        ``"group"``: find near-duplicate images (the same pixels, re-encoded or blurred copies,
        small shifts or crops; see :mod:`skdeep.model_selection`) and keep each group in one
        fold, with :class:`~sklearn.model_selection.StratifiedGroupKFold`, so that no test image
        has a copy among the training images. The groups come from the images' pixels (read
        once more, into 16 px thumbnails) and the features of the last of ``layers`` at the
        first size, already computed: no extra forward pass. When none are found, or the folds
        of ``"ignore"`` split none of their groups, the folds are exactly those of ``"ignore"``.
        Otherwise the best strategy (the best frozen one when fine-tuning wins) is also scored
        on the plain folds, to show how much the copies inflate a score. Every class needs
        ``cv`` distinct images once its near-duplicates are grouped; if one has fewer, a
        ``ValueError`` says so (fewer folds, or ``"ignore"``).
        ``"ignore"``: plain :class:`~sklearn.model_selection.StratifiedKFold` folds
        (``shuffle=True``, ``random_state``).
    finetune : bool, default=False
        Also cross-validate :class:`~skdeep.FineTunedCNNClassifier`, four fits per fold (slow
        on a CPU): ``train_layers="head"``, the last 2 units and ``"all"`` (strategies
        ``"finetune-head"``, ``"finetune-last2"``, ``"finetune-all"``), and ``"all"`` with the
        recipe :data:`skdeep.recipes.COMPARED_RECIPE` (``"lp-ft"``, strategy
        ``"finetune-all-lp-ft"``: the head starts from a linear probe, the weights are averaged),
        whose gain depends on the collection. Each fitted model then predicts the fold's test images
        again with test-time augmentation, ``tta="flip"``, set on the fitted model without a
        second fit (``"finetune-head-tta"``...).
    finetune_params : dict, default=None
        Parameters of every fine-tuned classifier, e.g. ``{"epochs": 5}``; a value given here
        wins over the recipe's (``{"max_steps": 100}`` caps the recipe's fits too). Three keys
        choose what is compared: ``train_layers=k`` (an int >= 1) the last units trained,
        ``tta`` the test-time views of the ``-tta`` strategies (``"symmetric"``, an int, or
        ``None`` for no TTA rows), and ``recipe``: given (a recipe or None), it applies to
        every fit and no recipe strategy is added. The fine-tuned classifiers print no epoch
        lines (``verbose=0``) unless ``{"verbose": 1}`` is given: ``verbose`` here reports
        each step.
    calibrate : bool, default=False
        Also calibrate every strategy's probabilities, inside each training fold only (the test
        fold is never seen): a linear model by one temperature learnt from 3 inner folds of the
        training fold (:func:`skdeep.calibration.calibrated_in_fold`, scikit-learn's
        ``CalibratedClassifierCV(method="temperature", ensemble=False)``), a fine-tuned one by
        the temperature fitted on its own validation split (``calibration="auto"``). Temperature
        scaling keeps every prediction, so accuracy is unchanged; the scores gain
        ``log_loss_calibrated``, ``brier_calibrated`` and ``ece_calibrated``. Without it the
        fine-tuned classifiers are fitted with ``calibration=None`` (unless ``finetune_params``
        says otherwise), so every strategy is scored on its model's own probabilities.
    max_images : int, default=None
        Evaluate a stratified random subset of this many images.
    pixel_size : int, default=32
        The raw-pixel baseline uses the pixels as they are when all images share one size of at
        most ``pixel_size``; otherwise each image is resized to ``pixel_size`` x ``pixel_size``
        RGB.
    C, max_iter : float, int
        Of the logistic regression.
    random_state : int, default=0
        Seed of the folds, the subset and any random initialisation.
    n_jobs : int, default=None
        Processes fitting the linear models of different folds at once (joblib; ``-1``: one
        per core). Each fit is single-threaded. Fine-tuning always runs in this process.
    progress : bool, default=False
        Progress bars (tqdm, on stderr).
    verbose : int, default=0
        With ``verbose > 0``, one line per step on stderr.
    explain : bool, default=False
        Also draw the activation maps (:mod:`skdeep.explain`) of the most confident correct
        predictions and the most confident mistakes of each class, out of fold, for the
        recommended frozen strategy (the best single-layer one when the recommendation is not
        one), with the models its folds fitted: no second fit. ``result.gallery`` holds the
        figure, ``save`` writes it to ``activation_maps.png``, and ``config["activation_maps"]``
        (in ``results.json``) says which strategy and images it shows.

    Returns
    -------
    EvaluationResult
        Its ``scores`` give each strategy's accuracy, and ``log_loss``, ``brier`` and ``ece``
        (expected calibration error, 15 bins) of its out-of-fold probabilities (each image
        predicted by the fold that held it out), and ``seconds`` per fold: the forward pass
        of its features, its fit and its prediction. A ``-tta`` strategy's seconds include the
        fit it shares with the strategy without TTA (the same fitted model, predicting with
        TTA): each row is the cost of that strategy alone. The recommendation picks the
        cheapest strategy whose mean accuracy is within one standard deviation of the best.
        With ``duplicates="group"``, its ``duplicate_groups`` and ``duplicate_pairs`` say which
        images are near-duplicates, and its ``config`` how many there are, how many pairs plain
        folds would have split, and the compared strategy's ``plain_cv_accuracy`` and
        ``grouped_cv_accuracy``.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.evaluation import evaluate
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(24, 16, 16), dtype=np.uint8)
    >>> labels = np.repeat(["bright", "dark"], 12)
    >>> images[labels == "bright"] |= 128
    >>> result = evaluate(images, labels, image_size=32, cv=2, layers=["blocks.1", "penultimate"])
    >>> result.scores["strategy"].tolist()
    ['pixels', 'blocks.1', 'penultimate', 'blocks.1+penultimate']
    >>> bool(result.scores["accuracy_mean"].min() > 0.9)
    True
    """
    log = _logger(verbose)
    items = as_items(X)
    labels, classes = _check_labels(y, len(items))
    if max_images is not None and max_images < len(labels):
        keep = _stratified_subset(labels, max_images, random_state)
        items, labels = _take(items, keep), labels[keep]
        log(f"using a stratified subset of {len(keep)} images (max_images={max_images})")
    _check_folds(labels, cv)
    layer_names = normalize_layers(layers) if layers is not None else layer_sweep(backbone)
    sizes = _requested_sizes(image_sizes if image_sizes is not None else [image_size], items)
    if finetune:  # bad fine-tuning parameters fail here, before the forward passes
        tuned, tta = _finetuned_classifiers(
            finetune_params, backbone=backbone, weights=weights, image_size=sizes[0],
            device=device, precision=precision, num_workers=num_workers, progress=progress,
            random_state=random_state, verbose=0,  # one line per step (ours), not per epoch
            calibration="auto" if calibrate else None,
        )

    extractors, features, seconds = [], [], {}
    for size in sizes:
        extractor = PretrainedCNNFeatures(
            backbone=backbone, weights=weights, layer=layer_names, pooling=pooling,
            image_size=size, batch_size=batch_size, device=device, precision=precision,
            num_workers=num_workers, on_error=on_error, cache=cache, progress=progress,
            random_state=random_state, compile=compile,
        ).fit()
        side = int(extractor.data_config_["input_size"][-1])
        if side in seconds:  # "auto" and "native" may be the same input
            log(f"image size {size or 'native'} is {side} px, already evaluated")
            continue
        log(f"embedding {len(labels)} images with {_backbone_name(backbone)} at {side} px, "
            f"layers {', '.join(layer_names)} (one forward pass)")
        start = time.perf_counter()
        features.append(extractor.transform(items))
        seconds[side] = time.perf_counter() - start
        extractors.append(extractor)
    extractor, sides = extractors[0], list(seconds)
    start = time.perf_counter()
    pixels = _pixel_matrix(items, pixel_size, on_error=on_error, batch_size=batch_size,
                           num_workers=num_workers, progress=progress)
    pixel_seconds = time.perf_counter() - start

    readable = ~(np.isnan(pixels).any(axis=1)
                 | np.any([np.isnan(matrix).any(axis=1) for matrix in features], axis=0))
    unreadable = np.flatnonzero(~readable)
    if len(unreadable):
        log(f"{len(unreadable)} unreadable image(s) left out of every strategy")
        items, labels = _take(items, np.flatnonzero(readable)), labels[readable]
        features, pixels = [matrix[readable] for matrix in features], pixels[readable]
        classes = np.asarray([c for c in classes if np.any(labels == c)], dtype=classes.dtype)
        _check_labels(labels, len(labels))
        _check_folds(labels, cv)

    linear = linear_probe(C=C, max_iter=max_iter)
    if calibrate:
        linear = calibrated_in_fold(linear)
    strategies = [_Strategy(PIXELS, strategy_label(PIXELS), None, linear, pixels, None,
                            pixel_seconds)]
    embeddings = {}
    for index, (side, matrix) in enumerate(zip(sides, features)):
        suffix = None if index == 0 else side  # the first size's strategies keep plain names
        columns = np.cumsum([0, *extractor.feature_widths_])
        by_layer = {name: matrix[:, columns[i]:columns[i + 1]]
                    for i, name in enumerate(extractor.layers_)}
        groups = [[name] for name in by_layer]
        groups += [list(pair) for pair in itertools.combinations(by_layer, 2)] if pairs else []
        for group in groups:
            name = frozen_strategy(group, suffix)
            data = (by_layer[group[0]] if len(group) == 1
                    else _Concatenation([by_layer[layer] for layer in group]))
            strategies.append(_Strategy(name, strategy_label(name), frozen_strategy(group),
                                        linear, data, side, seconds[side]))
        embeddings.update({frozen_strategy([name], suffix): by_layer[name] for name in by_layer})
    if finetune:
        strategies += _finetune_strategies(tuned, tta, items, sides[0])

    plain_folds = list(StratifiedKFold(cv, shuffle=True, random_state=random_state)
                 .split(np.zeros(len(labels)), labels))
    splits, found = plain_folds, None
    if duplicates == "group":
        # The last (deepest) layer at the first size: the closest to the penultimate features
        # that near_duplicate_groups, where the rule was tuned, embeds with by default.
        deepest = features[0][:, -extractor.feature_widths_[-1]:]
        found = find_near_duplicates(deepest, signatures=image_signatures(
            items, on_error=on_error, batch_size=batch_size or 256, num_workers=num_workers,
            progress=progress))
        # Plain folds that split no group (always so when every image is its own group) are
        # kept: grouping changes nothing then, and the scores stay those of duplicates="ignore".
        if _straddling(found.pairs, plain_folds).any():
            _check_group_folds(labels, found.groups, cv)
            splits = list(StratifiedGroupKFold(cv, shuffle=True, random_state=random_state)
                          .split(np.zeros(len(labels)), labels, found.groups))
        log(_duplicates_line(found))
    if calibrate:
        check_inner_folds(labels, splits)
    fold_models = {} if explain else None
    fold_rows, predictions, probabilities = _cross_validate(
        strategies, labels, splits, n_jobs=n_jobs, progress=progress, log=log,
        models=fold_models)
    folds = pd.DataFrame(fold_rows)
    scores = _score_table(strategies, folds, labels, probabilities, calibrate=calibrate)
    best = str(scores.loc[scores["accuracy_mean"].idxmax(), "strategy"])
    duplicate_facts, duplicate_pairs = _duplicate_facts(
        found, scores, best, strategies, labels, items, plain_folds,
        rescore=splits is not plain_folds, n_jobs=n_jobs, log=log)
    config = {
        "n_images": int(len(labels)),
        "n_classes": int(len(classes)),
        "classes": [plain(c) for c in classes],
        "cv": int(cv),
        "duplicates": duplicates,
        **duplicate_facts,
        "random_state": random_state,
        "backbone": extractor.backbone_.name,
        "weights_id": extractor.backbone_.weights_id,
        "image_size": sides[0],
        "image_sizes": sides,
        "pooling": pooling,
        "layers": list(extractor.layers_),
        "pairs": bool(pairs),
        "device": str(extractor.device_),
        "precision": extractor.precision_,
        "provenance": extractor.provenance_,
        "embedding_seconds": round(sum(seconds.values()), 3),
        "embedding_seconds_by_size": {str(side): round(s, 3) for side, s in seconds.items()},
        "pixel_features": int(pixels.shape[1]),
        "logistic_regression": {"C": C, "max_iter": max_iter},
        "unreadable_rows": [int(i) for i in unreadable],
        "finetune": bool(finetune),
        "finetune_params": dict(finetune_params or {}),
        "calibrate": bool(calibrate),
        **({"finetune_train_layers": [layers for layers, recipe in tuned if recipe is None],
            "finetune_recipe": next((recipe for _, recipe in tuned if recipe), None),
            "finetune_tta": tta} if finetune else {}),
    }
    recommendation = recommend(scores, best, config)
    gallery = None
    if explain:  # the recommended probe's fold models, already fitted: no second fit
        log("drawing activation maps of the most confident predictions")
        gallery = cross_validated_gallery(
            items, labels, classes, splits, _probe_folds(strategies, fold_models, scores, best),
            dict(zip(sides, extractors)), on_error=on_error)
        config["activation_maps"] = gallery.facts
    return EvaluationResult(scores=scores, folds=folds, y=labels, predictions=predictions,
                            probabilities={name: pair[0] for name, pair in probabilities.items()},
                            calibrated_probabilities={name: pair[1] for name, pair
                                                      in probabilities.items()} if calibrate
                            else None, recommended=recommended_strategy(scores, best),
                            classes=classes, embeddings=embeddings, best=best,
                            recommendation=recommendation, config=config,
                            test_fold=_test_fold(splits),
                            duplicate_groups=None if found is None else found.groups,
                            duplicate_pairs=duplicate_pairs,
                            gallery=None if gallery is None else gallery.figure)


# --- steps -------------------------------------------------------------------------------------


def _cross_validate(strategies, labels, splits, *, n_jobs, progress, log, models=None):
    """Fit and score every strategy on every fold; returns (fold rows, out-of-fold predictions,
    out-of-fold probabilities before and after calibration, columns in sorted class order).

    ``models``, a dict, receives each fitted linear model by (strategy index, fold).

    The linear models are small, so each fits single-threaded (a BLAS thread pool only adds
    overhead there, and spins badly on a busy machine) and ``n_jobs`` processes share the
    folds. Fine-tuning runs in this process with all of torch's threads.
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    index_of = {strategy.name: index for index, strategy in enumerate(strategies)}
    again = {}  # fitted strategy -> the strategies that are it predicting again: [(index, params)]
    for index, strategy in enumerate(strategies):
        if isinstance(strategy.estimator, _Repredict):
            again.setdefault(index_of[strategy.estimator.fitted], []).append(
                (index, strategy.estimator.params))
    fitted = [index for index, strategy in enumerate(strategies)
              if not isinstance(strategy.estimator, _Repredict)]
    tasks = [(index, fold) for index in fitted for fold in range(len(splits))]
    linear = [task for task in tasks if not is_finetune(strategies[task[0]].name)]
    heavy = [task for task in tasks if is_finetune(strategies[task[0]].name)]

    shown = set()  # where the fine-tuning fits' plain UserWarnings came from: each said once

    def call(task, single_thread):
        strategy = strategies[task[0]]
        train, test = splits[task[1]]
        return delayed(_fit_fold)(strategy.estimator, strategy.data, labels, train, test,
                                  single_thread=single_thread,
                                  again=[params for _, params in again.get(task[0], [])],
                                  shown=None if single_thread else shown)

    outcomes = {}  # (strategy index, fold) -> (predictions, proba, fit s, predict s, converged)

    def keep(task, outcome):
        predicted, proba, fit_seconds, predict_seconds, converged, repredicted, model = outcome
        outcomes[task] = (predicted, proba, fit_seconds, predict_seconds, converged)
        if models is not None and not is_finetune(strategies[task[0]].name):
            models[task] = model
        for (index, _), (predicted, proba, seconds) in zip(again.get(task[0], []), repredicted):
            outcomes[(index, task[1])] = (predicted, proba, fit_seconds, seconds,
                                          converged)  # same fit
    with tqdm(total=len(tasks), desc="cross-validating", unit="fit", disable=not progress,
              leave=True) as bar:
        parallel = Parallel(n_jobs=n_jobs, return_as="generator")
        for task, outcome in zip(linear, parallel(call(task, True) for task in linear)):
            keep(task, outcome)
            bar.update()
        for task in heavy:
            function, args, kwargs = call(task, False)
            keep(task, function(*args, **kwargs))
            bar.update()

    rows, predictions, probabilities = [], {}, {}
    n_classes = len(np.unique(labels))
    for index, name in enumerate(strategy.name for strategy in strategies):
        predicted = np.empty(len(labels), dtype=labels.dtype)
        pooled = np.empty((2, len(labels), n_classes))
        for fold, (train, test) in enumerate(splits):
            test_predictions, proba, fit_seconds, predict_seconds, converged = outcomes[
                (index, fold)]
            predicted[test] = test_predictions
            pooled[:, test] = proba
            rows.append({
                "strategy": name, "fold": fold,
                "accuracy": float(np.mean(test_predictions == labels[test])),
                "fit_seconds": fit_seconds, "predict_seconds": predict_seconds,
                "n_train": len(train), "n_test": len(test), "converged": converged,
            })
        predictions[name] = predicted
        probabilities[name] = (pooled[0], pooled[1])
        accuracy = [row["accuracy"] for row in rows if row["strategy"] == name]
        log(f"  {name}: accuracy {np.mean(accuracy):.3f} +- {np.std(accuracy):.3f}")
    return rows, predictions, probabilities


def _probe_folds(strategies, fold_models: dict, scores: pd.DataFrame, best: str) -> FoldModels:
    """The recommended strategy's fitted fold models when it is one frozen layer, else those of
    the most accurate single frozen layer (the maps need one layer's features)."""
    chosen = recommended_strategy(scores, best)
    single = {index: strategy for index, strategy in enumerate(strategies)
              if strategy.layer is not None and len(frozen_layers(strategy.name)) == 1}
    index = next((index for index, strategy in single.items() if strategy.name == chosen), None)
    note = "the recommended strategy"
    if index is None:
        index = max(single, key=lambda i: float(
            scores.set_index("strategy").loc[single[i].name, "accuracy_mean"]))
        note = f"the best single frozen layer (the recommendation, {chosen}, has no maps)"
    strategy = single[index]
    return FoldModels(strategy.name, strategy.layer, strategy.side, strategy.data,
                      [fold_models[(index, fold)] for fold in range(len(
                          [key for key in fold_models if key[0] == index]))], note)


def _check_group_folds(labels: np.ndarray, groups: np.ndarray, cv: int) -> None:
    """Every class needs ``cv`` distinct images (groups) to have one in each test fold.

    Falling back to plain folds would report the inflated score the grouping exists to avoid,
    so this is an error that says how to proceed, and the user chooses.
    """
    values = np.unique(labels)
    distinct = np.array([len(np.unique(groups[labels == value])) for value in values])
    worst = int(np.argmin(distinct))
    if distinct[worst] < cv:
        count = int(np.sum(labels == values[worst]))
        raise ValueError(
            f"class {plain(values[worst])!r} has {count} image(s) but only {distinct[worst]} "
            f"once near-duplicates are grouped, and {cv}-fold cross-validation keeping each group "
            f"in one fold needs at least {cv} per class; use fewer folds (cv / --folds), add "
            "images, or score on plain folds with duplicates='ignore' (scores inflated by the "
            "near-duplicates)."
        )


def _test_fold(splits: list) -> np.ndarray:
    """The fold in which each row is a test row (what PredefinedSplit takes)."""
    fold_of = np.empty(sum(len(test) for _, test in splits), dtype=np.int64)
    for fold, (_, test) in enumerate(splits):
        fold_of[test] = fold
    return fold_of


def _straddling(pairs: pd.DataFrame, splits: list) -> np.ndarray:
    """Whether each pair's two images are in different test folds of ``splits``."""
    fold_of = _test_fold(splits)
    return fold_of[pairs["first"].to_numpy()] != fold_of[pairs["second"].to_numpy()]


def _duplicates_line(found: NearDuplicates) -> str:
    sizes = np.bincount(found.groups)
    if not (sizes > 1).any():
        return "no near-duplicate images found: plain stratified folds"
    return (f"{int((sizes > 1).sum())} group(s) of near-duplicate images "
            f"({int(sizes[sizes > 1].sum())} images), each kept in one fold")


def _duplicate_facts(found: NearDuplicates | None, scores: pd.DataFrame, best: str, strategies,
                     labels: np.ndarray, items, plain_folds: list, *, rescore: bool, n_jobs, log
                     ) -> tuple[dict, pd.DataFrame | None]:
    """The config entries on near-duplicates and the table of their pairs (``({}, None)`` when
    they were not looked for).

    The plain folds' score is that of the best strategy, or of the best frozen one when
    fine-tuning won: one more round of logistic regressions, never of fine-tuning. When nothing
    was grouped the folds are the plain ones, so the grouped score is the plain score.
    """
    if found is None:
        return {}, None
    sizes = np.bincount(found.groups)
    first, second = found.pairs["first"].to_numpy(), found.pairs["second"].to_numpy()
    straddles = _straddling(found.pairs, plain_folds)
    by_name = scores.set_index("strategy")
    frozen = by_name[by_name["layer"].notna()]
    compared = str(frozen["accuracy_mean"].idxmax()) if is_finetune(best) else best
    grouped = float(by_name.loc[compared, "accuracy_mean"])
    plain_accuracy = grouped
    if rescore:
        strategy = next(strategy for strategy in strategies if strategy.name == compared)
        rows, _, _ = _cross_validate([strategy], labels, plain_folds, n_jobs=n_jobs,
                                  progress=False, log=lambda message: None)
        plain_accuracy = float(np.mean([row["accuracy"] for row in rows]))
        log(f"  {compared} on plain folds, near-duplicates not grouped: accuracy "
            f"{plain_accuracy:.3f} (grouped: {grouped:.3f})")
    facts = {
        "n_duplicate_groups": int((sizes > 1).sum()),
        "n_images_in_duplicate_groups": int(sizes[sizes > 1].sum()),
        "n_duplicate_pairs": int(len(first)),
        "duplicate_pairs_by_reason": {reason: int((found.pairs["reason"] == reason).sum())
                                      for reason in REASONS},
        "n_straddling_pairs": int(straddles.sum()),
        "duplicate_thresholds": dict(found.thresholds),
        "duplicates_compared": compared,
        "plain_cv_accuracy": plain_accuracy,
        "grouped_cv_accuracy": grouped,
    }
    table = found.pairs.assign(group=found.groups[first], first_label=labels[first],
                               second_label=labels[second], straddles_plain_folds=straddles)
    if isinstance(items, list) and all(isinstance(item, (str, os.PathLike)) for item in items):
        table["first_path"] = [os.fspath(items[row]) for row in first]
        table["second_path"] = [os.fspath(items[row]) for row in second]
    return facts, table


def _fit_fold(estimator, data, labels, train, test, *, single_thread: bool, again=(),
              shown: set | None = None):
    """Fit a clone on ``train``, predict ``test``: (predictions, probabilities, fit s, predict s,
    converged, repredicted, the fitted model), where ``repredicted`` holds (predictions,
    probabilities, s) of the fitted model predicting ``test`` again with each parameter set of
    ``again`` (set after the fit: no refit). Probabilities are (before, after calibration),
    columns in the order of ``np.unique(labels)``; the predictions are their most probable class.

    Warnings are passed on. With ``shown`` (the places warned from so far), a plain
    ``UserWarning`` from a place already in it is not repeated: the same advice (a validation
    split too small to stratify) came once per fold and strategy, six times for one command.
    Subclasses (:class:`~skdeep.BadImageWarning` naming other rows) are always passed on.
    """
    from threadpoolctl import threadpool_limits

    model = clone(estimator)
    limits = threadpool_limits(1) if single_thread else contextlib.nullcontext()
    with limits, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        model.fit(_take(data, train), labels[train])
        fit_seconds = time.perf_counter() - start
        test_data = _take(data, test)
        start = time.perf_counter()
        predicted, proba = _predicted(model, test_data, labels)
        predict_seconds = time.perf_counter() - start
        repredicted = []
        for params in again:
            model.set_params(**params)
            start = time.perf_counter()
            repredicted.append((*_predicted(model, test_data, labels),
                                time.perf_counter() - start))
    converged = True
    for caught_warning in caught:  # count convergence notices, pass everything else on
        if issubclass(caught_warning.category, ConvergenceWarning):
            converged = False
            continue
        place = (caught_warning.filename, caught_warning.lineno)
        if shown is not None and caught_warning.category is UserWarning:
            if place in shown:
                continue
            shown.add(place)
        warnings.warn_explicit(caught_warning.message, caught_warning.category,
                               caught_warning.filename, caught_warning.lineno)
    return predicted, proba, fit_seconds, predict_seconds, converged, repredicted, model


def _predicted(model, data, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fitted ``model``'s predictions of ``data`` and its probabilities before and after
    calibration, stacked, columns reordered from ``model.classes_`` to ``np.unique(labels)``."""
    before, after = probabilities_before_and_after(model, data)
    columns = np.searchsorted(model.classes_, np.unique(labels))
    proba = np.stack([before, after])[:, :, columns]
    return model.classes_[after.argmax(axis=1)], proba


def _score_table(strategies, folds: pd.DataFrame, labels: np.ndarray, probabilities: dict, *,
                 calibrate: bool) -> pd.DataFrame:
    records = []
    classes = np.unique(labels)
    for strategy in strategies:
        before, after = probabilities[strategy.name]
        scores = calibration_scores(labels, before, labels=classes)
        if calibrate:
            scores.update({f"{name}_calibrated": value for name, value in
                           calibration_scores(labels, after, labels=classes).items()})
        part = folds[folds["strategy"] == strategy.name]
        data = strategy.data
        tabular = not is_finetune(strategy.name) and isinstance(data, (np.ndarray, _Concatenation))
        n_features = data.shape[1] if tabular and data.ndim == 2 else None
        fit_seconds = float(part["fit_seconds"].mean())
        predict_seconds = float(part["predict_seconds"].mean())
        records.append({
            "strategy": strategy.name,
            "model": strategy.model,
            "layer": strategy.layer,
            "n_features": n_features,
            "accuracy_mean": float(part["accuracy"].mean()),
            "accuracy_std": float(part["accuracy"].std(ddof=0)),
            **scores,
            "fit_seconds": fit_seconds,
            "predict_seconds": predict_seconds,
            "seconds": strategy.feature_seconds + fit_seconds + predict_seconds,
            "converged": bool(part["converged"].all()),
            "image_size": strategy.side,
        })
    table = pd.DataFrame(records)
    table["n_features"] = table["n_features"].astype("Int64")
    table["image_size"] = table["image_size"].astype("Int64")
    return table


def _pixel_matrix(items, pixel_size: int, *, on_error: str, batch_size: int | None, num_workers: int,
                  progress: bool) -> np.ndarray:
    """Raw pixels as float32 rows: as they are when small enough, else resized RGB grids.

    ``items`` is what :func:`~skdeep._inputs.as_items` returns: a channel-last array or a list.
    """
    if isinstance(items, np.ndarray) and max(items.shape[1:3]) <= pixel_size:
        return items.reshape(len(items), -1).astype(np.float32)
    dataset = ImageDataset(items, transform=_PixelGrid(pixel_size),
                           input_size=(3, pixel_size, pixel_size), on_error=on_error)
    rows, _ = predict_rows(
        lambda batch: batch.flatten(1), dataset, device=torch.device("cpu"), precision="fp32",
        batch_size=batch_size or 256, num_workers=num_workers, progress=progress, desc="pixels",
    )
    return rows


class _PixelGrid:
    """RGB PIL image -> ``(3, size, size)`` uint8 tensor (aspect ratio not kept): raw pixels."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, image: Image.Image) -> torch.Tensor:
        grid = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.array(grid, dtype=np.uint8)).permute(2, 0, 1)


class _Strategy(NamedTuple):
    """One row of the scores: a model fitted on ``data`` for each fold."""

    name: str
    model: str  # what it is, in words
    layer: str | None  # the frozen layer(s) it reads
    estimator: Any  # an estimator, cloned and fitted per fold, or a _Repredict
    data: Any  # a feature matrix, a _Concatenation or the images
    side: int | None  # the network's input side
    feature_seconds: float = 0.0  # the computation of ``data``, over all images


class _Repredict:
    """A strategy that is another's fitted model (``fitted``, its name) predicting again with
    ``params`` set: test-time augmentation costs a prediction, not a second fit."""

    def __init__(self, fitted: str, params: dict) -> None:
        self.fitted = fitted
        self.params = params


def _finetuned_classifiers(params: dict | None, **defaults: Any) -> tuple[dict, Any]:
    """The classifiers fine-tuning the head, the last k units and all layers, and all layers
    with the compared recipe, by (``train_layers``, the recipe added or None), and the
    ``tta`` they predict with again (None: no TTA rows).

    A recipe in ``params`` applies to every fit, like any other parameter: then no fit adds
    one (it would be the ``"all"`` fit again)."""
    params = dict(params or {})
    last = params.pop("train_layers", FINETUNE_LAST_K)
    if isinstance(last, bool) or not isinstance(last, Integral) or last < 1:
        raise ValueError(
            f"finetune_params has train_layers={last!r}; evaluate compares 'head', the last k "
            "units and 'all', and train_layers=k, an int >= 1, chooses k."
        )
    tta = params.pop("tta", FINETUNE_TTA)
    validate_parameter_constraints({"tta": VIEW_PARAMETER_CONSTRAINTS["tta"]}, {"tta": tta},
                                   caller_name="evaluate's finetune_params")
    fits = [("head", None), (int(last), None), ("all", None)]
    if "recipe" not in params:
        fits.append(("all", COMPARED_RECIPE))
    models = {(train_layers, recipe): _finetuned_classifier(
        {**params, "train_layers": train_layers, **({"recipe": recipe} if recipe else {})},
        **defaults) for train_layers, recipe in fits}
    return models, tta


def _finetune_strategies(models: dict, tta: Any, items, side: int | None) -> list[_Strategy]:
    """A strategy per fine-tuned classifier, each followed by the same fitted model predicting
    with ``tta`` (unless None)."""
    strategies = []
    for (train_layers, recipe), model in models.items():
        name = finetune_strategy(train_layers, recipe=recipe)
        strategies.append(_Strategy(name, strategy_label(name), None, model, items, side))
        if tta is not None:
            again = finetune_strategy(train_layers, tta=True, recipe=recipe)
            strategies.append(_Strategy(again, strategy_label(again), None,
                                        _Repredict(name, {"tta": tta}), items, side))
    return strategies


def _finetuned_classifier(params: dict, **defaults: Any) -> FineTunedCNNClassifier:
    settings = {**defaults, **params}
    known = FineTunedCNNClassifier().get_params()
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ValueError(
            f"unknown fine-tuning parameter(s) {unknown}; FineTunedCNNClassifier takes "
            f"{sorted(known)}."
        )
    return FineTunedCNNClassifier(**settings)


def _requested_sizes(sizes: Sequence[int | str | None], items) -> list[int | None]:
    """``image_sizes`` (or ``[image_size]``) as the ``image_size`` of each extractor."""
    sizes = list(sizes)
    if not sizes:
        raise ValueError("image_sizes is empty; give at least one size (or None for image_size).")
    resolved = []
    for size in sizes:
        size = None if size == "native" else size
        validate_parameter_constraints({"image_sizes": _IMAGE_SIZE}, {"image_sizes": size},
                                       caller_name="evaluate")  # "native" is also accepted
        resolved.append(auto_image_size(items) if size == "auto"
                        else None if size is None else int(size))
    return resolved


# --- validation --------------------------------------------------------------------------------


def _check_labels(y: Any, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """y -> (labels ndarray, classes in display order), with clear errors."""
    categories = None
    if isinstance(getattr(y, "dtype", None), pd.CategoricalDtype):
        categories = list(y.cat.categories if hasattr(y, "cat") else y.categories)
    labels = check_labels(y, n_items)
    present = pd.unique(labels)
    if categories is not None:
        classes = np.asarray([c for c in categories if c in set(present)], dtype=object)
    else:
        classes = np.sort(present)
    if len(classes) < 2:
        raise ValueError(f"y has a single class ({plain(classes[0])!r}); evaluate needs at least 2.")
    return labels, classes


def _check_folds(labels: np.ndarray, cv: int) -> None:
    values, counts = np.unique(labels, return_counts=True)
    small = counts < cv
    if small.any():
        worst = int(np.argmin(counts))
        raise ValueError(
            f"class {plain(values[worst])!r} has only {counts[worst]} image(s), but {cv}-fold "
            f"cross-validation needs at least {cv} per class; use fewer folds (cv / --folds) "
            "or add images."
        )


def _stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    rows = np.arange(len(labels))
    try:
        keep, _ = train_test_split(rows, train_size=size, stratify=labels, random_state=seed)
    except ValueError:  # a class too small to stratify: a plain random subset
        keep = np.random.default_rng(seed).choice(rows, size=size, replace=False)
    return np.sort(keep)


def _take(data, rows: np.ndarray):
    if isinstance(data, _Concatenation):
        return np.hstack([part[rows] for part in data.parts])
    return take_rows(data, rows)


class _Concatenation:
    """Layers' features side by side, joined only for the rows a fold takes: every pair of
    layers need not be held in memory at once."""

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = parts
        self.ndim = 2
        self.shape = (len(parts[0]), sum(part.shape[1] for part in parts))


def _backbone_name(backbone: Any) -> str:
    return backbone if isinstance(backbone, str) else type(backbone).__name__


def _logger(verbose: int):
    if not verbose:
        return lambda message: None
    return lambda message: print(message, file=sys.stderr, flush=True)

