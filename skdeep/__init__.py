"""skdeep: pretrained convolutional networks as scikit-learn estimators.

- :class:`PretrainedCNNFeatures` embeds images with a frozen pretrained CNN (DeCAF style).
- :class:`FineTunedCNNClassifier` fine-tunes a pretrained CNN with fit/predict; its training
  :mod:`~skdeep.callbacks` (:class:`Checkpoint`, :class:`CSVLogger`) save, resume and log fits.
- :class:`FeatureCache` stores each image's features once, across folds, grids and sessions.
- :func:`evaluate` compares transfer-learning strategies on your images (``skdeep evaluate``).
- :func:`list_backbones` and :func:`list_layers` show what can be used; :func:`layer_sweep` picks
  a few layers, shallow to deep, to compare.
- :func:`compile_cache_dir` is where compiled networks (``compile=``) are cached on disk.
"""

from . import datasets
from ._compiled import compile_cache_dir
from ._inputs import BadImageError, BadImageWarning, ImageNotFoundError
from ._weights import WeightsUnavailableError
from .backbones import layer_sweep, list_backbones, list_layers, resolve_backbone
from .callbacks import Callback, Checkpoint, CSVLogger
from .cache import CacheInfo, DamagedCacheWarning, FeatureCache, IncompatibleCacheError
from .classifier import FineTunedCNNClassifier
from .evaluation import EvaluationResult, evaluate
from .features import PretrainedCNNFeatures

__version__ = "0.1.0.dev0"

__all__ = [
    "BadImageError",
    "BadImageWarning",
    "CSVLogger",
    "CacheInfo",
    "DamagedCacheWarning",
    "Callback",
    "Checkpoint",
    "EvaluationResult",
    "FeatureCache",
    "FineTunedCNNClassifier",
    "ImageNotFoundError",
    "IncompatibleCacheError",
    "PretrainedCNNFeatures",
    "WeightsUnavailableError",
    "__version__",
    "compile_cache_dir",
    "datasets",
    "evaluate",
    "layer_sweep",
    "list_backbones",
    "list_layers",
    "resolve_backbone",
]
