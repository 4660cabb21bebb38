"""PretrainedCNNFeatures: a frozen pretrained CNN as a scikit-learn transformer (DeCAF style)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._base import (
    COMMON_PARAMETER_CONSTRAINTS,
    CNNEstimatorMixin,
    seed_of,
    state_dict_from_bytes,
    state_dict_to_bytes,
)
from ._layers import POOLINGS, FeatureExtractor, feature_names, normalize_layers
from .backbones import DEFAULT_BACKBONE, freeze, resolve_backbone


class PretrainedCNNFeatures(CNNEstimatorMixin, TransformerMixin, BaseEstimator):
    """Embed images with a frozen pretrained CNN, one row of features per image.

    The network runs in batches on the best device available (CUDA, then Apple MPS, then the
    CPU), in half precision where the hardware computes it natively, and returns the activations
    of the chosen layer(s) pooled to a vector: the DeCAF recipe of Donahue et al. (2014) as a
    scikit-learn transformer, ready for ``Pipeline``, ``GridSearchCV`` and ``ColumnTransformer``.

    Parameters
    ----------
    backbone : str or torch.nn.Module, default="efficientnet_lite0"
        Network to use: a name from :func:`skdeep.list_backbones` (torchvision names such as
        ``"resnet50"`` or ``"vgg16"``, timm models as ``"timm/<name>"``), or a module instance.
        The default's ImageNet weights ship with skdeep and work offline.
    weights : "DEFAULT", str, torchvision WeightsEnum, path or None, default="DEFAULT"
        ``"DEFAULT"`` for the architecture's recommended pretrained weights (downloaded once into
        the torch or Hugging Face cache), a torchvision weights name (``"IMAGENET1K_V1"``) or enum,
        a timm pretrained tag, a local ``.pth``/``.safetensors`` state_dict, or ``None`` for a
        randomly initialised network (seeded by ``random_state``).
    layer : str or list of str, default="penultimate"
        Where to read features: ``"penultimate"`` (the pooled vector the classifier sees),
        ``"logits"``, the DeCAF names ``"pool5"``, ``"fc6"``, ``"fc7"`` for AlexNet/VGG, or any
        module path from :func:`skdeep.list_layers`. A list concatenates several layers, all read
        in one forward pass.
    pooling : {"avg", "max", "gem", "avgmax"} or None, default="avg"
        How a spatial feature map becomes a vector: global average, max, generalised-mean (p=3)
        pooling, the mean of avg and max, or ``None`` to flatten the map.
    image_size : int, default=None
        Side of the square network input. ``None`` uses the weights' own size (224 for most);
        smaller values are much faster and suit small images such as 28x28 digits.
    batch_size : int, default=64
        Images per forward pass.
    device : str or torch.device, default="auto"
        ``"auto"`` picks CUDA, then MPS, then the CPU.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        Compute precision. ``"auto"`` uses bf16 (or fp16) autocast on CUDA and bf16 on CPUs with
        native bf16 (AVX512-BF16/AMX), fp32 elsewhere. The output is always float32.
    num_workers : int, default=0
        DataLoader worker processes that decode and resize images in parallel with the network.
    on_error : {"raise", "nan"}, default="raise"
        What an unreadable image does: raise an error naming its row and path, or give a row of
        NaN (with a warning listing the bad rows) so that rows stay aligned with the input.
    progress : bool, default=False
        Show a progress bar.
    random_state : int, RandomState instance or None, default=None
        Seed of the random initialisation when ``weights=None``.

    Attributes
    ----------
    backbone_ : skdeep.backbones.Backbone
        The resolved backbone: name, weights identity and data config.
    model_ : torch.nn.Module
        The frozen network (eval mode, no gradients) on ``device_``. After unpickling it is
        rebuilt on first use.
    data_config_ : dict
        Preprocessing derived from the weights: input size, interpolation, crop, mean and std.
    layers_ : list of str
        The layers read, in output order.
    feature_widths_ : list of int
        Number of output columns contributed by each layer.
    n_features_out_ : int
        Total number of output columns.
    device_ : torch.device
        Where the network runs.
    precision_ : str
        The resolved precision.

    See Also
    --------
    FineTunedCNNClassifier : fine-tune the network instead of freezing it.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep import PretrainedCNNFeatures
    >>> images = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    >>> cnn = PretrainedCNNFeatures(image_size=64).fit(images)
    >>> cnn.transform(images).shape
    (4, 1280)
    >>> cnn.get_feature_names_out()[:2].tolist()
    ['penultimate_0', 'penultimate_1']
    """

    _parameter_constraints: dict = {
        **COMMON_PARAMETER_CONSTRAINTS,
        "layer": [str, list, tuple],
        "pooling": [StrOptions(set(POOLINGS)), None],
    }

    def __init__(
        self,
        backbone: str | nn.Module = DEFAULT_BACKBONE,
        weights: Any = "DEFAULT",
        layer: str | list[str] = "penultimate",
        pooling: str | None = "avg",
        image_size: int | None = None,
        batch_size: int = 64,
        device: str = "auto",
        precision: str = "auto",
        num_workers: int = 0,
        on_error: str = "raise",
        progress: bool = False,
        random_state: Any = None,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.image_size = image_size
        self.batch_size = batch_size
        self.device = device
        self.precision = precision
        self.num_workers = num_workers
        self.on_error = on_error
        self.progress = progress
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any = None, y: Any = None) -> PretrainedCNNFeatures:
        """Resolve the backbone, build the frozen network and learn its output width.

        The images are not needed (the network is pretrained, nothing is learned from X); X and
        y are accepted for Pipeline compatibility.

        Parameters
        ----------
        X : ignored
        y : ignored

        Returns
        -------
        self : PretrainedCNNFeatures
        """
        self.layers_ = normalize_layers(self.layer)
        self.backbone_ = resolve_backbone(
            self.backbone, self.weights, random_state=seed_of(self.random_state),
            image_size=self.image_size,
        )
        self.data_config_ = self.backbone_.data_config
        self._resolve_runtime()
        self._model = None
        self._extractor = None
        self.feature_widths_ = self._get_extractor().probe(self.data_config_["input_size"], self.device_)
        self.n_features_out_ = int(sum(self.feature_widths_))
        return self

    @property
    def model_(self) -> nn.Module:
        """The frozen backbone on ``device_`` (built lazily after unpickling)."""
        if getattr(self, "_model", None) is None:
            check_is_fitted(self, "backbone_")
            model = self.backbone_.build(progress=self.progress)
            state = self.__dict__.pop("_model_state", None)
            if state is not None:
                model.load_state_dict(state_dict_from_bytes(state))
            self._model = freeze(model).to(self.device_)
        return self._model

    def _get_extractor(self) -> FeatureExtractor:
        if getattr(self, "_extractor", None) is None:
            config = self.data_config_
            self._extractor = FeatureExtractor(
                self.model_, self.layers_, self.pooling, config["mean"], config["std"]
            ).to(self.device_)
        return self._extractor

    def transform(self, X: Any) -> np.ndarray:
        """Embed each image of ``X``.

        Parameters
        ----------
        X : array-like of images or of image paths
            ``(N, H, W)`` / ``(N, H, W, C)`` uint8 or [0, 1] float arrays, a ``(N, C, H, W)``
            tensor, or a list / ndarray / Series / one-column DataFrame of file paths, bytes,
            PIL images or single image arrays.

        Returns
        -------
        features : ndarray of shape (n_samples, n_features_out_), float32
            One row per input row, in order (NaN rows for unreadable images under
            ``on_error="nan"``).
        """
        check_is_fitted(self)
        return self._predict_rows(self._get_extractor(), X, desc="embedding")

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """Output column names: ``<layer>_<i>`` for each column of each layer.

        Parameters
        ----------
        input_features : ignored
            Present for API compatibility (images have no input feature names).

        Returns
        -------
        feature_names_out : ndarray of str
        """
        check_is_fitted(self)
        return np.asarray(feature_names(self.layers_, self.feature_widths_), dtype=object)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_extractor", None)
        model = state.pop("_model", None)
        backbone = state.get("backbone_")
        if model is not None and backbone is not None and not backbone.reproducible:
            state["_model_state"] = state_dict_to_bytes(model)
        return state
