"""What the model looks at: class activation maps of probe pipelines and fine-tuned classifiers.

Two kinds of map, one function, :func:`activation_maps`:

- **exact CAM** (Zhou et al., 2016), no gradients. With average pooling, a linear head on pooled
  features scores class ``c`` as the spatial mean of ``sum_k w_ck A_k(x, y)`` plus ``b_c``, where
  ``A_k`` is channel ``k`` of the layer's map. So ``M_c = sum_k w_ck A_k`` *is* the score,
  spread over the image: the spatial mean of the map plus the intercept equals the
  ``decision_function`` (checked on every image as the maps are made). This covers a fitted
  ``Pipeline`` of :class:`~skdeep.PretrainedCNNFeatures` (one spatial layer, ``pooling="avg"``;
  ``"penultimate"`` is the mean of the last feature map in the networks skdeep knows), affine
  transformers (``StandardScaler``, ``MaxAbsScaler``, ``MinMaxScaler``, ``PCA``, ...: folded
  into the weights) and a linear classifier (``LogisticRegression``, ``LinearSVC``,
  ``RidgeClassifier``, ``SGDClassifier``, any ``LinearClassifierMixin``), and the head of a
  fitted :class:`~skdeep.FineTunedCNNClassifier`.
- **gradient methods** through the torch network, from `grad-cam
  <https://github.com/jacobgil/pytorch-grad-cam>`_ (MIT; ``pip install skdeep[explain]``):
  Grad-CAM and its relatives at any ``layer=`` of a fine-tuned classifier, and for pipelines
  whose CAM would not be exact (several layers, max or GeM pooling) as long as the head is
  linear. They show where the score is sensitive, not a decomposition of it.

Anything else (an RBF ``SVC``, a ``Normalizer``, a tree) is refused with a message naming what
is supported: never a silently wrong map.

Why by hand: grad-cam computes a map from the gradients of a torch model's output; a
scikit-learn head is not a torch model, and the exact CAM needs no gradient at all (one forward
pass, as cheap as ``transform``). The maps are therefore computed here with a forward hook; the
gradient methods are grad-cam's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._defaults import ACTIVATION_MAPS_FILE
from ._device import auto_batch_size, autocast
from ._inference import make_loader
from ._inputs import encoded_size, take_rows, warn_bad_rows
from ._layers import PENULTIMATE, FeatureExtractor, classifier_name, resolve_layers
from ._preprocessing import Normalize
from ._values import plain
from .classifier import FineTunedCNNClassifier
from .features import PretrainedCNNFeatures
from .probing import NotAffineError, affine_scores, is_linear

#: method= values: the exact CAM, and grad-cam's classes by the names users know them by.
GRADIENT_METHODS = {"gradcam": "GradCAM", "gradcam++": "GradCAMPlusPlus", "hirescam": "HiResCAM",
                    "xgradcam": "XGradCAM", "layercam": "LayerCAM", "eigencam": "EigenCAM",
                    "scorecam": "ScoreCAM"}
METHODS = ("auto", "cam", *GRADIENT_METHODS)
OUTPUT_SIZES = ("network", "input", None)
TARGETS = ("predicted", "true")

_SUPPORTED = (
    "a fitted Pipeline of PretrainedCNNFeatures (one spatial layer, pooling='avg'), affine "
    "transformers (StandardScaler, MaxAbsScaler, MinMaxScaler, PCA...) and a linear classifier "
    "(LogisticRegression, LinearSVC, RidgeClassifier, SGDClassifier), or a fitted "
    "FineTunedCNNClassifier"
)
# Relative tolerance of the per-image check that a map's mean + intercept is the decision: float
# rounding in fp32; in bf16/fp16, the network's own pooling rounds its mean to ~3 digits.
_EXACT_RTOL = {"fp32": 1e-3, "half": 3e-2}


class _Stop(Exception):
    """Raised by the last hook needed, to skip the rest of the network."""


# --- what is explained ---------------------------------------------------------------------------


@dataclass
class _Explainer:
    """A fitted estimator seen as: network (``cnn``) -> linear scores of ``classes``."""

    cnn: Any  # the estimator holding the network (image_dataset, model_, data_config_...)
    classes: np.ndarray
    weight: torch.Tensor  # (n_scores, n_features): score k = weight[k] . features + bias[k]
    bias: torch.Tensor
    layers: list[str]  # the layer(s) the features are read at
    pooling: str | None
    tail: Pipeline | None  # the sklearn steps after the features (a pipeline), for the check
    binary: bool  # sklearn's one-column decision_function: scores are (-d, d)


def _explainer(estimator: Any) -> _Explainer:
    if isinstance(estimator, FineTunedCNNClassifier):
        check_is_fitted(estimator, "classes_")
        fc = estimator.model_.get_submodule(estimator.head_).fc
        return _Explainer(estimator, np.asarray(estimator.classes_),
                          fc.weight.detach().float(), fc.bias.detach().float(), [PENULTIMATE],
                          "avg", None, binary=False)
    if not isinstance(estimator, Pipeline) or not isinstance(estimator.steps[0][1],
                                                             PretrainedCNNFeatures):
        raise TypeError(f"activation maps need {_SUPPORTED}; got {_describe(estimator)}.")
    cnn, tail = estimator.steps[0][1], Pipeline(estimator.steps[1:])
    check_is_fitted(cnn)
    classifier = estimator.steps[-1][1]
    check_is_fitted(classifier)
    if not is_linear(classifier):
        raise ValueError(
            f"the classifier {estimator.steps[-1][0]!r} ({_describe(classifier)}) is not linear in "
            "the features, so no map adds up to its score (an RBF SVC, a tree, a k-NN...); "
            f"activation maps need {_SUPPORTED}."
        )
    try:
        weight, bias = affine_scores(estimator.steps[1:-1], classifier, cnn.n_features_out_,
                                     describe=_describe)
    except NotAffineError as exc:
        raise ValueError(f"{exc}, so a linear head after it gives no exact map; activation maps "
                         f"need {_SUPPORTED}.") from exc
    binary = len(weight) == 1
    if binary:  # decision_function is the score of classes_[1]; classes_[0]'s is its negative
        weight, bias = np.vstack([-weight, weight]), np.concatenate([-bias, bias])
    return _Explainer(cnn, np.asarray(classifier.classes_), torch.as_tensor(weight).float(),
                      torch.as_tensor(bias).float(), list(cnn.layers_), cnn.pooling_, tail,
                      binary)


def _describe(estimator: Any) -> str:
    if isinstance(estimator, Pipeline):
        return "Pipeline(" + ", ".join(type(step).__name__ for _, step in estimator.steps) + ")"
    params = getattr(estimator, "get_params", None)
    kernel = params(deep=False).get("kernel") if callable(params) else None
    return type(estimator).__name__ + (f"(kernel={kernel!r})" if isinstance(kernel, str) else "")


# --- the exact CAM -------------------------------------------------------------------------------


def _spatial_path(model: nn.Module, layer: str, input_size: tuple[int, int, int]) -> str:
    """Module path whose output is the map that ``layer``'s features average.

    For a named module, itself. For ``"penultimate"``, the module that feeds the network's
    global average pool (timm's ``global_pool``, torchvision's ``avgpool``), found by one blank
    forward pass: the module whose output *is* the pool's input tensor.
    """
    (name, path), = resolve_layers(model, [layer])
    if name != PENULTIMATE:
        return path
    modules = dict(model.named_modules())
    pool = next((n for n in ("global_pool", "avgpool") if n in modules), None)
    if pool is None:
        raise ValueError(
            f"{type(model).__name__}'s 'penultimate' features are not a global pool of a feature "
            "map skdeep can find; pass a spatial layer (skdeep.list_layers) with pooling='avg'."
        )
    outputs: dict[str, int] = {}
    seen: list[int] = []
    handles = [module.register_forward_hook(
        lambda m, a, out, n=n: outputs.__setitem__(n, id(out))) for n, module in modules.items()
        if n and not n.startswith(pool)]
    handles.append(modules[pool].register_forward_pre_hook(lambda m, a: seen.append(id(a[0]))))
    try:
        with torch.inference_mode():
            model(torch.zeros((1, *input_size), device=next(model.parameters()).device))
    finally:
        for handle in handles:
            handle.remove()
    found = [n for n, identity in outputs.items() if seen and identity == seen[0]]
    if not found:
        raise ValueError(f"cannot find the feature map that {type(model).__name__}'s {pool!r} "
                         "averages; pass a spatial layer (skdeep.list_layers) with pooling='avg'.")
    return found[-1]


class _CAMNetwork(nn.Module):
    """``uint8`` batch -> (class maps (B, K, h, w), scores (B, K), pooled features (B, C)).

    ``check`` is the path of the classifier whose input must be the spatial mean of the map
    (``"penultimate"``): compared on every batch, so a network that pools otherwise raises.
    """

    def __init__(self, model: nn.Module, path: str, check: str | None, weight: torch.Tensor,
                 bias: torch.Tensor, mean, std, rtol: float) -> None:
        super().__init__()
        self.rtol = rtol
        self.normalize = Normalize(mean, std)
        self.model, self.path, self.check = model, path, check
        self.register_buffer("weight", weight, persistent=False)
        self.register_buffer("bias", bias, persistent=False)

    def forward(self, images: torch.Tensor):
        captured: dict[str, torch.Tensor] = {}

        def keep(name: str, value: Any) -> None:
            tensor = value[0] if isinstance(value, (tuple, list)) else value
            copy = tensor.float()  # a copy before any in-place op later in the network
            captured[name] = copy.clone() if copy.data_ptr() == tensor.data_ptr() else copy
            if len(captured) == (2 if self.check else 1):
                raise _Stop

        modules = dict(self.model.named_modules())
        handles = [modules[self.path].register_forward_hook(lambda m, a, out: keep("map", out))]
        if self.check:
            handles.append(modules[self.check].register_forward_pre_hook(
                lambda m, a: keep("vector", a)))
        try:
            self.model(self.normalize(images))
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        if "map" not in captured or captured["map"].ndim != 4:
            shape = None if "map" not in captured else tuple(captured["map"].shape)
            raise ValueError(f"layer {self.path!r} gives no spatial map (output shape {shape}); "
                             "an activation map needs a 4-D (N, C, H, W) layer.")
        activation = captured["map"]
        pooled = activation.mean(dim=(2, 3))
        if self.check:
            vector = captured["vector"].flatten(1)
            if vector.shape != pooled.shape or not torch.allclose(
                    vector.float(), pooled, rtol=self.rtol,
                    atol=self.rtol * float(vector.abs().max()) + 1e-6):
                raise ValueError(
                    f"the 'penultimate' features of {type(self.model).__name__} are not the "
                    f"spatial mean of {self.path!r}'s map, so its CAM would be wrong; pass a "
                    "spatial layer with pooling='avg'.")
        # The head in float32 even under autocast: a bf16 product would miss the score by 1%.
        with torch.autocast(device_type=activation.device.type, enabled=False):
            maps = torch.einsum("bchw,kc->bkhw", activation, self.weight.float())
            return maps, maps.mean(dim=(2, 3)) + self.bias.float(), pooled


def _check_exact(explainer: _Explainer, scores: np.ndarray, pooled: np.ndarray,
                 rtol: float) -> None:
    """The map-derived scores are the pipeline's own decision_function on these features."""
    if explainer.tail is None:
        return
    decision = np.asarray(explainer.tail.decision_function(pooled), dtype=float)
    mine = scores[:, 1] if explainer.binary else scores
    scale = 1.0 + np.abs(decision).max(initial=0.0)
    if decision.shape != mine.shape or not np.allclose(mine, decision, rtol=rtol,
                                                       atol=rtol * scale):
        raise ValueError(
            "the activation maps would not add up to the pipeline's decision_function (a step "
            "between the features and the classifier is not affine on these features); "
            f"activation maps need {_SUPPORTED}.")


# --- the gradient methods ------------------------------------------------------------------------


class _Scores(nn.Module):
    """``[0, 255]`` float batch -> class scores, differentiable (for grad-cam)."""

    def __init__(self, network: nn.Module, head: nn.Module | None) -> None:
        super().__init__()
        self.network, self.head = network, head

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.network(images)
        return out if self.head is None else self.head(out)


def _gradient_cam(explainer: _Explainer, method: str, layer: str | None):
    try:
        import pytorch_grad_cam
    except ImportError as exc:
        raise ImportError(
            f"method={method!r} uses grad-cam: pip install 'skdeep[explain]' (or grad-cam)."
        ) from exc
    cnn = explainer.cnn
    model, config = cnn.model_, cnn.data_config_
    if isinstance(cnn, FineTunedCNNClassifier):
        network, head = nn.Sequential(Normalize(config["mean"], config["std"]), model), None
    else:
        network = FeatureExtractor(model, explainer.layers, explainer.pooling, config["mean"],
                                   config["std"])
        head = nn.Linear(explainer.weight.shape[1], explainer.weight.shape[0])
        head.weight.data, head.bias.data = explainer.weight.clone(), explainer.bias.clone()
    scores = _Scores(network, head).to(cnn.device_).eval()
    target = layer if layer is not None else (
        explainer.layers[0] if len(explainer.layers) == 1 else explainer.layers[-1])
    path = _spatial_path(model, target, config["input_size"])
    cam = getattr(pytorch_grad_cam, GRADIENT_METHODS[method])(
        model=scores, target_layers=[model.get_submodule(path)])
    return cam, pytorch_grad_cam.utils.model_targets.ClassifierOutputTarget


# --- the public API ------------------------------------------------------------------------------


def activation_maps(estimator: Any, X: Any, *, y: Any = None, target: Any = "predicted",
                    layer: str | None = None, method: str = "auto",
                    output_size: str | None = "network",
                    batch_size: int | None = None) -> np.ndarray | list[np.ndarray]:
    """Where in each image the fitted ``estimator`` finds the evidence for a class.

    Parameters
    ----------
    estimator : Pipeline or FineTunedCNNClassifier
        Fitted. A ``Pipeline`` of :class:`~skdeep.PretrainedCNNFeatures` (one spatial layer,
        ``pooling="avg"``, ``tta=None``), affine transformers (``StandardScaler``,
        ``MaxAbsScaler``, ``MinMaxScaler``, ``PCA``, ``"passthrough"``...) and a linear
        classifier (``LogisticRegression``, ``LinearSVC``, ``RidgeClassifier``,
        ``SGDClassifier``); or a :class:`~skdeep.FineTunedCNNClassifier`. Others raise an
        error that names what is supported.
    X : array-like of images or of image paths
        Anything the estimator accepts (arrays, tensors, paths, a pandas Series or one-column
        DataFrame...).
    y : array-like of shape (n_samples,), default=None
        The true labels, for ``target="true"``.
    target : "predicted", "true" or a class label, default="predicted"
        Whose evidence: the predicted class, the true class (needs ``y``), or one class of
        ``classes_`` for every image.
    layer : str, default=None
        For the gradient methods, the layer whose map is weighted (any name of
        :func:`skdeep.list_layers`); ``None``: the features' own layer, the last feature map
        for ``"penultimate"``. The exact CAM reads the features' layer and takes no other.
    method : {"auto", "cam", "gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", \
"eigencam", "scorecam"}, default="auto"
        ``"cam"``: the exact class activation map (no gradients). The others are grad-cam's
        (``pip install skdeep[explain]``). ``"auto"``: ``"cam"``, or ``"gradcam"`` when
        ``layer`` is given or the pipeline's features are not one average-pooled map.
    output_size : {"network", "input"} or None, default="network"
        ``"network"``: upsampled (bilinear) to the network's input, i.e. to the resized and
        centre-cropped image of :func:`input_images`. ``"input"``: to each image's own size,
        NaN where the centre crop cut the image (the network never saw those pixels); a list
        when sizes differ. ``None``: the exact CAM at the layer's own resolution, unscaled, so
        that its spatial mean plus the intercept is the decision (not for gradient methods,
        whose maps grad-cam returns at the input's size, scaled to [0, 1]).
    batch_size : int, default=None
        Images per forward pass; ``None`` as the estimator's ``batch_size`` (or its automatic
        choice).

    Returns
    -------
    maps : ndarray of shape (n_samples, H, W), float32, or list of arrays
        One map per image, larger where the image raises the target class's score. The exact
        CAM keeps the score's units (negative where the image speaks against the class); for
        two classes the maps of ``classes_[0]`` are those of ``classes_[1]`` negated, as
        ``decision_function`` scores ``classes_[1]``. Unreadable images (``on_error="nan"``)
        get NaN maps (of the network's size under ``"input"``) and a warning.

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from skdeep import PretrainedCNNFeatures
    >>> from skdeep.explain import activation_maps
    >>> rng = np.random.default_rng(0)
    >>> images = rng.integers(0, 256, size=(8, 32, 32, 3), dtype=np.uint8)
    >>> y = np.repeat(["a", "b"], 4)
    >>> pipe = make_pipeline(PretrainedCNNFeatures(image_size=64, layer="blocks.5"),
    ...                      StandardScaler(), LogisticRegression()).fit(images, y)
    >>> activation_maps(pipe, images).shape
    (8, 64, 64)
    >>> activation_maps(pipe, images, output_size=None).shape
    (8, 4, 4)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
    if output_size not in OUTPUT_SIZES:
        raise ValueError(f"output_size must be one of {OUTPUT_SIZES}; got {output_size!r}.")
    explainer = _explainer(estimator)
    method = _resolve_method(explainer, method, layer)
    if method != "cam" and output_size is None:
        raise ValueError("output_size=None (the layer's own resolution) is for method='cam'; "
                         "grad-cam returns its maps at the network's input size.")
    cnn = explainer.cnn
    dataset = cnn.image_dataset(X)
    n = len(dataset)
    wanted = _target_indices(target, y, explainer.classes, n)
    if batch_size is None:
        batch_size = cnn.batch_size or auto_batch_size(cnn.device_, cnn.data_config_["input_size"])
    if method == "cam":
        maps, errors = _cam_maps(explainer, dataset, wanted, batch_size)
    else:
        maps, errors = _gradient_maps(explainer, dataset, wanted, batch_size, method, layer)
    warn_bad_rows(errors, dataset)
    if output_size is None:
        return maps
    side = cnn.data_config_["input_size"][1:]
    network = _resize(maps, side) if maps.shape[1:] != tuple(side) else maps
    if output_size == "network":
        return network
    return _to_input_frames(network, dataset, errors)


def _resolve_method(explainer: _Explainer, method: str, layer: str | None) -> str:
    tta = getattr(explainer.cnn, "tta_", getattr(explainer.cnn, "tta", None))
    if tta is not None:
        raise ValueError(
            f"the estimator averages its scores over test-time views (tta={tta!r}); a map of "
            "the image alone would not explain them. Set tta=None (refit the "
            "PretrainedCNNFeatures; set_params on a FineTunedCNNClassifier) to explain it.")
    spatial_avg = len(explainer.layers) == 1 and explainer.pooling == "avg"
    if method == "auto":
        return "cam" if spatial_avg and layer is None else "gradcam"
    if method == "cam":
        if layer is not None:
            raise ValueError("method='cam' reads the layer the features come from; layer= is for "
                             "the gradient methods (method='gradcam'...).")
        if len(explainer.layers) != 1:
            raise ValueError(
                f"the features concatenate several layers {explainer.layers}, so no single map "
                "adds up to the score; the exact CAM needs one spatial layer. Use "
                "method='gradcam' (grad-cam) for a gradient map, or one layer.")
        if explainer.pooling != "avg":
            raise ValueError(
                f"pooling={explainer.pooling!r} is not a spatial mean, so the exact CAM does not "
                "apply (it needs pooling='avg'); use method='gradcam' (grad-cam).")
    return method


def _target_indices(target: Any, y: Any, classes: np.ndarray, n: int) -> np.ndarray | None:
    """The class column explained for each image (None: the predicted one)."""
    index = pd.Index(classes)
    if isinstance(target, str) and target == "predicted":
        return None
    if isinstance(target, str) and target == "true":
        if y is None:
            raise ValueError("target='true' needs the true labels: activation_maps(..., y=y).")
        labels = np.asarray(y, dtype=object if pd.api.types.is_object_dtype(
            getattr(y, "dtype", None)) else None).ravel()
        if len(labels) != n:
            raise ValueError(f"y has {len(labels)} labels for {n} images.")
        found = index.get_indexer(labels)
        unknown = pd.unique(labels[found < 0])
        if len(unknown):
            raise ValueError(f"y has labels {unknown[:5].tolist()} that are not among the "
                             f"classes {classes.tolist()}.")
        return found
    try:
        found = index.get_indexer([target])[0]
    except (TypeError, ValueError):
        found = -1
    if found < 0:
        raise ValueError(f"target must be 'predicted', 'true' or one of the classes "
                         f"{classes.tolist()}; got {target!r}.")
    return np.full(n, found)


def _batches(explainer: _Explainer, dataset, batch_size: int):
    cnn = explainer.cnn
    loader = make_loader(dataset, batch_size=batch_size, device=cnn.device_,
                         num_workers=cnn.num_workers)
    start = 0
    for images, messages in loader:
        rows = np.arange(start, start + len(messages))
        start += len(messages)
        yield images.to(cnn.device_), rows, messages


def _cam_maps(explainer: _Explainer, dataset, wanted: np.ndarray | None, batch_size: int
              ) -> tuple[np.ndarray, dict[int, str]]:
    cnn = explainer.cnn
    model, config = cnn.model_, cnn.data_config_
    (name, _), = resolve_layers(model, explainer.layers)
    path = _spatial_path(model, explainer.layers[0], config["input_size"])
    check = classifier_name(model) if name == PENULTIMATE else None
    rtol = _EXACT_RTOL["fp32" if cnn.precision_ == "fp32" else "half"]
    network = _CAMNetwork(model, path, check, explainer.weight, explainer.bias, config["mean"],
                          config["std"], rtol).to(cnn.device_)
    maps: list[np.ndarray] = []
    errors: dict[int, str] = {}
    for images, rows, messages in _batches(explainer, dataset, batch_size):
        with torch.inference_mode(), autocast(cnn.device_, cnn.precision_):
            class_maps, scores, pooled = network(images)
        class_maps, scores = class_maps.float(), scores.float().cpu().numpy()
        good = np.asarray([not message for message in messages])
        if good.any():
            _check_exact(explainer, scores[good], pooled.float().cpu().numpy()[good], rtol)
        columns = scores.argmax(axis=1) if wanted is None else wanted[rows]
        chosen = class_maps[torch.arange(len(rows)), torch.as_tensor(columns)].cpu().numpy()
        chosen[~good] = np.nan
        errors.update({int(row): message for row, message in zip(rows, messages) if message})
        maps.append(chosen)
    return np.concatenate(maps).astype(np.float32), errors


def _gradient_maps(explainer: _Explainer, dataset, wanted: np.ndarray | None, batch_size: int,
                   method: str, layer: str | None) -> tuple[np.ndarray, dict[int, str]]:
    cam, output_target = _gradient_cam(explainer, method, layer)
    maps: list[np.ndarray] = []
    errors: dict[int, str] = {}
    with cam:
        for images, rows, messages in _batches(explainer, dataset, batch_size):
            batch = images.float().requires_grad_(True)  # the network's weights are frozen
            targets = None if wanted is None else [output_target(int(c)) for c in wanted[rows]]
            chosen = np.asarray(cam(input_tensor=batch, targets=targets), dtype=np.float32)
            good = np.asarray([not message for message in messages])
            chosen[~good] = np.nan
            errors.update({int(row): message for row, message in zip(rows, messages) if message})
            maps.append(chosen)
    return np.concatenate(maps), errors


def _resize(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of (N, h, w) maps to ``size`` = (H, W)."""
    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    out = F.interpolate(tensor, size=tuple(int(s) for s in size), mode="bilinear",
                        align_corners=False)
    return out[:, 0].numpy()


def _to_input_frames(maps: np.ndarray, dataset, errors: dict[int, str]
                     ) -> np.ndarray | list[np.ndarray]:
    """Network-size maps placed back on each original image: the crop box gets the map, the
    margin the centre crop cut away is NaN."""
    _, crop_h, crop_w = dataset.input_size
    mode = dataset.transform.data_config.get("crop_mode") or "center"
    if mode not in ("center", "squash"):
        raise ValueError(f"output_size='input' needs a resize and centre crop; crop_mode={mode!r}.")
    frames = []
    for row, network_map in enumerate(maps):
        if row in errors:
            frames.append(network_map)
            continue
        width, height = _image_size(dataset.items[row])
        resized_w, resized_h = dataset.transform.resized_size((width, height))
        sx, sy = width / resized_w, height / resized_h
        left, top = round((resized_w - crop_w) / 2.0) * sx, round((resized_h - crop_h) / 2.0) * sy
        x0, y0 = int(round(left)), int(round(top))
        x1, y1 = min(width, int(round(left + crop_w * sx))), min(height, int(round(top + crop_h * sy)))
        frame = np.full((height, width), np.nan, dtype=np.float32)
        frame[y0:y1, x0:x1] = _resize(network_map[None], (y1 - y0, x1 - x0))[0]
        frames.append(frame)
    if len({frame.shape for frame in frames}) == 1:
        return np.stack(frames)
    return frames


def _image_size(item: Any) -> tuple[int, int]:
    """``(width, height)`` of one item of X, from its header when it is a file."""
    if isinstance(item, np.ndarray):
        return int(item.shape[1]), int(item.shape[0])
    size = getattr(item, "size", None)  # a PIL image
    if isinstance(size, tuple):
        return size
    return encoded_size(item)


def input_images(estimator: Any, X: Any) -> np.ndarray:
    """The images as the fitted network sees them: decoded, resized and centre-cropped.

    These are the pictures the ``output_size="network"`` maps of :func:`activation_maps` lie
    on. Unreadable rows (``on_error="nan"``) are black.

    Parameters
    ----------
    estimator : Pipeline or FineTunedCNNClassifier
        As for :func:`activation_maps`.
    X : array-like of images or of image paths

    Returns
    -------
    images : ndarray of shape (n_samples, H, W, 3), uint8

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep import PretrainedCNNFeatures
    >>> from skdeep.explain import input_images
    >>> from sklearn.pipeline import make_pipeline
    >>> pipe = make_pipeline(PretrainedCNNFeatures(image_size=48))
    >>> input_images(pipe.fit(np.zeros((2, 20, 20), np.uint8)), np.zeros((2, 20, 20), np.uint8)).shape
    (2, 48, 48, 3)
    """
    cnn = estimator.steps[0][1] if isinstance(estimator, Pipeline) else estimator
    check_is_fitted(cnn, "data_config_")
    dataset = cnn.image_dataset(X)
    return np.stack([dataset[row][0].permute(1, 2, 0).numpy() for row in range(len(dataset))])


def overlay(images: Any, maps: Any, *, alpha: float = 0.5, cmap: str = "jet") -> np.ndarray:
    """Activation maps drawn over their images, as RGB pictures.

    Each map is scaled to [0, 1] by its own minimum and maximum, coloured with ``cmap`` and
    blended with its image; NaN pixels (cut away by the crop, or an unreadable image) show the
    image alone. A map of another size than its image is resized (bilinear) first.

    Parameters
    ----------
    images : array-like of shape (n, H, W) or (n, H, W, 3), or a list of such images
        ``uint8`` (or floats in [0, 1]).
    maps : array-like of shape (n, h, w), or a list of maps
    alpha : float, default=0.5
        Weight of the coloured map.
    cmap : str, default="jet"
        A matplotlib colormap name.

    Returns
    -------
    pictures : ndarray of shape (n, H, W, 3), uint8 (a list when image sizes differ)

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep.explain import overlay
    >>> overlay(np.zeros((2, 8, 8), np.uint8), np.random.default_rng(0).random((2, 4, 4))).shape
    (2, 8, 8, 3)
    """
    import matplotlib

    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must be in [0, 1]; got {alpha!r}.")
    colormap = matplotlib.colormaps[cmap]
    if len(images) != len(maps):
        raise ValueError(f"{len(images)} images but {len(maps)} maps.")
    pictures = []
    for image, heat in zip(images, maps):
        rgb = np.asarray(image)
        if rgb.dtype != np.uint8:
            rgb = (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        rgb = rgb[..., :3].astype(np.float32)
        heat = np.asarray(heat, dtype=np.float32)
        if heat.shape != rgb.shape[:2]:
            heat = _resize(heat[None], rgb.shape[:2])[0]
        valid = np.isfinite(heat)
        low = np.nanmin(heat) if valid.any() else 0.0
        span = (np.nanmax(heat) - low) if valid.any() else 1.0
        scaled = np.where(valid, (heat - low) / (span if span > 0 else 1.0), 0.0)
        colour = colormap(scaled)[..., :3] * 255
        weight = np.where(valid, alpha, 0.0)[..., None]
        pictures.append(((1 - weight) * rgb + weight * colour).round().astype(np.uint8))
    if len({picture.shape for picture in pictures}) == 1:
        return np.stack(pictures) if pictures else np.empty((0, 0, 0, 3), np.uint8)
    return pictures


def plot_activation_maps(estimator: Any, X: Any, y: Any = None, *, n: int = 16,
                         path: Any = None, target: Any = "predicted", method: str = "auto"):
    """A grid of the first ``n`` images, each with its activation map drawn over it.

    Each image is titled with its true label (when ``y`` is given), the predicted label and its
    probability (when the estimator gives probabilities), in red for a mistake.

    Parameters
    ----------
    estimator : Pipeline or FineTunedCNNClassifier
        As for :func:`activation_maps`.
    X : array-like of images or of image paths
    y : array-like, default=None
        True labels, shown in the titles.
    n : int, default=16
        How many images (the first ``n``).
    path : str or Path, default=None
        Where to save the figure as PNG.
    target, method
        As for :func:`activation_maps`.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from sklearn.linear_model import LogisticRegression
    >>> from sklearn.pipeline import make_pipeline
    >>> from skdeep import PretrainedCNNFeatures
    >>> from skdeep.explain import plot_activation_maps
    >>> images = np.random.default_rng(0).integers(0, 256, size=(6, 32, 32), dtype=np.uint8)
    >>> y = np.array([0, 1] * 3)
    >>> pipe = make_pipeline(PretrainedCNNFeatures(image_size=48, layer="blocks.5"),
    ...                      LogisticRegression()).fit(images, y)
    >>> len(plot_activation_maps(pipe, images, y, n=4).axes)
    4
    """
    rows = np.arange(min(int(n), len(X)))
    subset = take_rows(X, rows)
    truth = None if y is None else np.asarray(y, dtype=object)[rows]
    maps = activation_maps(estimator, subset, y=truth, target=target, method=method)
    proba = estimator.predict_proba(subset) if hasattr(estimator, "predict_proba") else None
    predicted = np.asarray(estimator.predict(subset), dtype=object)
    titles, wrong = [], []
    for i in range(len(rows)):
        confidence = "" if proba is None else f" ({np.nanmax(proba[i]):.2f})"
        title = f"pred {predicted[i]}{confidence}"
        if truth is not None:
            title = f"true {truth[i]}\n{title}"
        titles.append(title)
        wrong.append(truth is not None and truth[i] != predicted[i])
    figure = plot_overlays(input_images(estimator, subset), maps, titles, wrong=wrong)
    if path is not None:
        figure.savefig(path, dpi=120, format="png")
    return figure


def plot_overlays(images: Any, maps: Any, titles: Sequence[str], *,
                  wrong: Sequence[bool] = (), columns: int | None = None,
                  title: str | None = None, row_labels: Sequence[str] = ()):
    """A grid of :func:`overlay` pictures with their titles (red where ``wrong``).

    Parameters
    ----------
    images, maps : as for :func:`overlay`
    titles : list of str
        One per picture (an empty string leaves a cell without a picture blank).
    wrong : list of bool, default=()
        Titles drawn in red.
    columns : int, default=None
        Pictures per row (``None``: about a square grid).
    title : str, default=None
        The figure's title.
    row_labels : list of str, default=()
        A label at the left of each row.

    Returns
    -------
    figure : matplotlib.figure.Figure

    Examples
    --------
    >>> from skdeep.explain import plot_overlays
    >>> import numpy as np
    >>> figure = plot_overlays(np.zeros((2, 8, 8), np.uint8), np.ones((2, 4, 4)), ["a", "b"])
    >>> len(figure.axes)
    2
    """
    from matplotlib.figure import Figure

    pictures = overlay(images, maps)
    count = len(titles)
    columns = columns or max(1, int(np.ceil(np.sqrt(count))))
    lines = max([len(str(text).splitlines()) for text in titles] or [1])
    n_rows = max(1, int(np.ceil(count / columns)))
    cell = 1.9
    figure = Figure(figsize=(cell * columns + (1.2 if row_labels else 0),
                             (cell + 0.22 * lines) * n_rows + (0.5 if title else 0)),
                    layout="constrained")
    axes = figure.subplots(n_rows, columns, squeeze=False)
    for index, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        row, column = divmod(index, columns)
        if column == 0 and row < len(row_labels):
            ax.set_ylabel(row_labels[row], fontsize=10, rotation=0, ha="right", va="center")
        if index >= count or not titles[index]:
            for spine in ax.spines.values():
                spine.set_visible(False)
            continue
        ax.imshow(pictures[index])
        red = index < len(wrong) and wrong[index]
        ax.set_title(titles[index], fontsize=8, color="tab:red" if red else "black")
    if title:
        figure.suptitle(title, fontsize=11)
    return figure


# --- the gallery of skdeep evaluate --explain ----------------------------------------------------


@dataclass
class FoldModels:
    """A frozen strategy of :func:`~skdeep.evaluation.evaluate` as its folds fitted it.

    Attributes
    ----------
    strategy : str
        Its name (a single layer, perhaps with ``@size``).
    layer : str
        The layer it reads.
    side : int
        The network's input side.
    features : ndarray of shape (n_samples, n_features)
        That layer's features of every image.
    models : list of estimators
        The model each fold fitted on ``features`` (scaler and classifier), by fold.
    note : str
        Why this strategy (for the figure and ``results.json``).
    """

    strategy: str
    layer: str
    side: int
    features: np.ndarray
    models: list
    note: str


@dataclass
class Gallery:
    """A figure of activation maps and what it shows (plain JSON types)."""

    figure: Any
    facts: dict


def cross_validated_gallery(items: Any, labels: np.ndarray, classes: np.ndarray, splits: list,
                            folds: FoldModels, extractors: dict, *, per_class: int = 2,
                            on_error: str = "raise") -> Gallery:
    """The most confident correct predictions and mistakes of each class, with their maps.

    Each image is explained by the model of the fold in which it was a test image (so the
    predictions are the out-of-fold ones, and nothing is fitted again): the pipeline
    ``PretrainedCNNFeatures(layer) -> that fold's model``, whose maps are exact CAMs.

    Parameters
    ----------
    items : images as evaluate read them
    labels, classes : ndarray
        True label of each image; the classes in display order.
    splits : list of (train, test)
        The folds.
    folds : FoldModels
        The strategy explained.
    extractors : dict of int to PretrainedCNNFeatures
        evaluate's fitted extractor of each input side (its settings are reused, one layer).
    per_class : int, default=2
        Correct predictions and mistakes shown per class (each).
    on_error : {"raise", "nan"}

    Returns
    -------
    Gallery
        One row per class: its most confident correct predictions, then its most confident
        mistakes (titles in red).

    Examples
    --------
    >>> from skdeep.datasets import make_patch_images
    >>> from skdeep.evaluation import evaluate
    >>> images, labels, _ = make_patch_images(16, random_state=0)
    >>> result = evaluate(images, labels, image_size=64, cv=2, layers=["blocks.5"],
    ...                   duplicates="ignore", explain=True)
    >>> result.config["activation_maps"]["strategy"]
    'blocks.5'
    """
    cnn = clone(extractors[folds.side]).set_params(layer=folds.layer, cache=None,
                                                   cache_layers=None, on_error=on_error).fit()
    predicted = np.empty(len(labels), dtype=object)
    confidence = np.zeros(len(labels))
    fold_of = np.zeros(len(labels), dtype=int)
    for fold, (_, test) in enumerate(splits):
        model = folds.models[fold]
        proba = model.predict_proba(folds.features[test])
        predicted[test] = model.classes_[proba.argmax(axis=1)]
        confidence[test] = proba.max(axis=1)
        fold_of[test] = fold
    cells: list[int | None] = []
    for label in classes:
        rows = np.flatnonzero(labels == label)
        for kind in (predicted[rows] == label, predicted[rows] != label):
            chosen = rows[kind][np.argsort(-confidence[rows[kind]], kind="stable")][:per_class]
            cells += [int(row) for row in chosen] + [None] * (per_class - len(chosen))
    shown = [row for row in cells if row is not None]
    side = cnn.data_config_["input_size"][1:]
    images = {row: np.zeros((*side, 3), np.uint8) for row in shown}
    maps = {row: np.full(side, np.nan, np.float32) for row in shown}
    for fold in sorted({fold_of[row] for row in shown}):
        rows = np.asarray([row for row in shown if fold_of[row] == fold])
        pipe = Pipeline([("features", cnn), *_steps(folds.models[fold])])
        subset = take_rows(items, rows)
        for row, image, heat in zip(rows, input_images(pipe, subset),
                                    activation_maps(pipe, subset)):
            images[row], maps[row] = image, heat
    blank_image, blank_map = np.zeros((*side, 3), np.uint8), np.full(side, np.nan, np.float32)
    titles = [("" if row is None else
               f"true {labels[row]}\npred {predicted[row]} ({confidence[row]:.2f})")
              for row in cells]
    figure = plot_overlays(
        [blank_image if row is None else images[row] for row in cells],
        [blank_map if row is None else maps[row] for row in cells], titles,
        wrong=[row is not None and predicted[row] != labels[row] for row in cells],
        columns=2 * per_class, row_labels=[str(label) for label in classes],
        title=(f"Activation maps of {folds.strategy} ({folds.note}), out of fold\n"
               f"per class: the {per_class} most confident correct predictions, then the "
               f"{per_class} most confident mistakes (red)"))
    facts = {
        "file": ACTIVATION_MAPS_FILE, "strategy": folds.strategy, "why": folds.note,
        "method": "exact CAM of each image's fold model", "per_class": per_class,
        "images": [{"row": row, "label": plain(labels[row]), "predicted": plain(predicted[row]),
                    "probability": round(float(confidence[row]), 4),
                    "correct": bool(predicted[row] == labels[row])} for row in shown],
    }
    return Gallery(figure, facts)


def _steps(model: Any) -> list:
    """A fitted model's steps, to follow the features in a Pipeline.

    A model calibrated in its fold (``evaluate(calibrate=True)``: one calibrated classifier,
    ``ensemble=False``) is explained by the model it calibrates: calibration maps that model's
    scores to probabilities, so the evidence, and where it lies, is that model's.
    """
    if isinstance(model, CalibratedClassifierCV) and len(model.calibrated_classifiers_) == 1:
        model = model.calibrated_classifiers_[0].estimator
    return list(model.steps) if isinstance(model, Pipeline) else [("classifier", model)]
