"""skdeep: pretrained convolutional networks as scikit-learn estimators.

- :class:`PretrainedCNNFeatures` embeds images with a frozen pretrained CNN (DeCAF style).
- :class:`FineTunedCNNClassifier` fine-tunes a pretrained CNN with fit/predict; its training
  :mod:`~skdeep.callbacks` (:class:`Checkpoint`, :class:`CSVLogger`) save, resume and log fits.
- :class:`FeatureCache` stores each image's features once, across folds, grids and sessions.
- :func:`near_duplicate_groups` and :class:`NearDuplicateGroupKFold` (:mod:`~skdeep.model_selection`)
  keep near-duplicate images on one side of every split.
- :func:`audit` (:mod:`~skdeep.data_audit`, ``skdeep audit``) lists exact and near-duplicates,
  label conflicts, outliers and likely label errors, most certain first, with galleries.
- :mod:`~skdeep.calibration`: ``FineTunedCNNClassifier(calibration=...)`` fits a temperature on
  its validation split; :func:`expected_calibration_error` (:mod:`~skdeep.metrics`) measures it.
- :func:`activation_maps` (:mod:`~skdeep.explain`) shows where a fitted pipeline or classifier
  finds its evidence in each image: exact class activation maps, or grad-cam's gradient maps.
- :mod:`~skdeep.recipes` names tested fine-tuning recipes (``FineTunedCNNClassifier(recipe=...)``);
  :func:`linear_probe` (:mod:`~skdeep.probing`) is the probe ``evaluate`` scores layers with
  and LP-FT (``head_init="probe"``) starts the fine-tuned head from.
- :func:`evaluate` compares transfer-learning strategies on your images (``skdeep evaluate``).
- :func:`list_backbones` and :func:`list_layers` show what can be used; :func:`layer_sweep` picks
  a few layers, shallow to deep, to compare.
- :func:`compile_cache_dir` is where compiled networks (``compile=``) are cached on disk.
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__

# Public name -> the module that defines it. The names are imported on first use (PEP 562), not
# by ``import skdeep``: the ``skdeep`` command then starts (``--help``, argument errors) without
# the seconds torch, timm and scikit-learn take to import.
_HOMES = {
    "AuditReport": "data_audit",
    "BadImageError": "_inputs",
    "BadImageWarning": "_inputs",
    "CSVLogger": "callbacks",
    "CacheInfo": "cache",
    "Callback": "callbacks",
    "Checkpoint": "callbacks",
    "DamagedCacheWarning": "cache",
    "EvaluationResult": "evaluation",
    "FeatureCache": "cache",
    "FineTunedCNNClassifier": "classifier",
    "ImageNotFoundError": "_inputs",
    "IncompatibleCacheError": "cache",
    "NearDuplicateGroupKFold": "model_selection",
    "PretrainedCNNFeatures": "features",
    "WeightsUnavailableError": "_weights",
    "activation_maps": "explain",
    "audit": "data_audit",
    "compile_cache_dir": "_compiled",
    "evaluate": "evaluation",
    "expected_calibration_error": "metrics",
    "layer_sweep": "backbones",
    "linear_probe": "probing",
    "list_backbones": "backbones",
    "list_layers": "backbones",
    "near_duplicate_groups": "model_selection",
    "recipe_params": "recipes",
    "resolve_backbone": "backbones",
}
# Public modules, also imported on first use (``skdeep.backbones.Backbone`` after ``import
# skdeep``, as when the package imported them all).
_SUBMODULES = ("backbones", "cache", "calibration", "callbacks", "classifier", "cli", "dask",
               "data_audit", "datasets", "evaluation", "explain", "features", "probing",
               "metrics", "model_selection", "recipes")

__all__ = sorted([*_HOMES, "datasets", "__version__"])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

