"""skdeep: pretrained convolutional networks as scikit-learn estimators.

- :class:`PretrainedCNNFeatures` embeds images with a frozen pretrained CNN (DeCAF style).
- :class:`FeatureCache` stores each image's features once, across folds, grids and sessions.
- :func:`list_backbones` and :func:`list_layers` show what can be used.
"""

from ._inputs import BadImageError, BadImageWarning
from ._weights import WeightsUnavailableError
from .backbones import list_backbones, list_layers, resolve_backbone
from .cache import CacheInfo, FeatureCache
from .features import PretrainedCNNFeatures

__version__ = "0.1.0.dev0"

__all__ = [
    "BadImageError",
    "BadImageWarning",
    "CacheInfo",
    "FeatureCache",
    "PretrainedCNNFeatures",
    "WeightsUnavailableError",
    "__version__",
    "list_backbones",
    "list_layers",
    "resolve_backbone",
]
