"""skdeep: pretrained convolutional networks as scikit-learn estimators.

- :class:`PretrainedCNNFeatures` embeds images with a frozen pretrained CNN (DeCAF style).
- :class:`FineTunedCNNClassifier` fine-tunes a pretrained CNN with fit/predict.
- :class:`FeatureCache` stores each image's features once, across folds, grids and sessions.
- :func:`list_backbones` and :func:`list_layers` show what can be used.
"""

from ._inputs import BadImageError, BadImageWarning
from ._weights import WeightsUnavailableError
from .backbones import list_backbones, list_layers, resolve_backbone
from .cache import CacheInfo, FeatureCache
from .classifier import FineTunedCNNClassifier
from .features import PretrainedCNNFeatures

__version__ = "0.1.0.dev0"

__all__ = [
    "BadImageError",
    "BadImageWarning",
    "CacheInfo",
    "FeatureCache",
    "FineTunedCNNClassifier",
    "PretrainedCNNFeatures",
    "WeightsUnavailableError",
    "__version__",
    "list_backbones",
    "list_layers",
    "resolve_backbone",
]
