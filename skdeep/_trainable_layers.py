"""A network seen as stem -> stages -> neck -> head: replacing the head and choosing what trains.

``train_layers=k`` ("the last k layers") needs a definition of a layer that works for every
backbone. skdeep splits a network into ordered *trainable layers*, shallow to deep:

- **stages**: the children of the network's stage container, the first of ``blocks`` (timm
  EfficientNet, MobileNet, ViT), ``stages`` (timm ConvNeXt, RegNet...), ``features``
  (torchvision VGG, AlexNet, EfficientNet, MobileNet, DenseNet: one layer per child that has
  parameters, i.e. per convolution for VGG/AlexNet) or ``layers``. A network without such a
  container uses its top-level children that are themselves containers (ResNet's
  ``layer1``..``layer4``); a plain ``nn.Sequential`` uses each child that has parameters.
- **stem**: everything with parameters before the first stage (ResNet's ``conv1``/``bn1``, timm's
  ``conv_stem``/``bn1``, ViT's patch embedding and position embeddings), one layer.
- **neck**: everything with parameters between the last stage and the head (timm EfficientNet's
  ``conv_head``/``bn2``, VGG's fc6 and fc7, ConvNeXt's head norm), one layer.
- **head**: the final linear classifier, which fine-tuning replaces.

``train_layers=k`` trains the last ``k`` layers plus the head: ``k=1`` is the neck when the
network has one (else the last stage), ``k=2`` adds the last stage, and so on.
:func:`trainable_layers` lists the layers of a network.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ._layers import classifier_name

STAGE_CONTAINERS = ("blocks", "stages", "features", "layers")
RESOLVED_BN_MODES = ("train", "frozen")  # what "auto" becomes
BN_MODES = ("auto", *RESOLVED_BN_MODES)
HEAD = "head"


@dataclass(frozen=True)
class TrainableLayer:
    """One layer that ``train_layers`` counts: a display name and the module paths it covers."""

    name: str
    paths: tuple[str, ...]


def find_head(model: nn.Module) -> str:
    """Module path of ``model``'s final linear classifier, or a clear error."""
    name = classifier_name(model)
    if name is None:
        raise ValueError(
            f"{type(model).__name__} has no linear classifier to replace; fine-tuning needs a "
            "network whose last layer is an nn.Linear."
        )
    return name


def replace_head(model: nn.Module, head: str, n_classes: int, dropout: float) -> nn.Module:
    """Swap the module at ``head`` for ``Sequential(dropout, fc)`` with ``n_classes`` outputs.

    The input of ``fc`` is the "penultimate" feature vector, so :class:`FeatureExtractor` reads
    embeddings of the fine-tuned network there. The new layer is initialised by PyTorch's default
    (seeded by the caller).
    """
    old = model.get_submodule(head)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"the classifier {head!r} of {type(model).__name__} is not an nn.Linear.")
    new = nn.Sequential(OrderedDict(
        dropout=nn.Dropout(dropout),
        fc=nn.Linear(old.in_features, n_classes),
    ))
    parent, _, attribute = head.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, new)
    if hasattr(model, "num_classes"):  # timm models describe themselves with it
        model.num_classes = n_classes
    return model


def trainable_layers(model: nn.Module, head: str) -> list[TrainableLayer]:
    """The layers of ``model`` (stem, stages, neck), shallow to deep, without the head.

    Layers without parameters are left out. See the module docstring for the definition.
    """
    children = [(name, module) for name, module in model.named_children()]
    container = _stage_container(model, head)
    if container is not None:
        stages = [
            f"{container}.{name}" for name, module in model.get_submodule(container).named_children()
            if _has_parameters(module)
        ]
        index = [name for name, _ in children].index(container)
        before, after = children[:index], children[index + 1:]
    else:
        nested = [name for name, module in children
                  if _has_parameters(module) and any(True for _ in module.children())
                  and not _covers(name, head)]
        if nested:
            names = [name for name, _ in children]
            first, last = names.index(nested[0]), names.index(nested[-1])
            before, after = children[:first], children[last + 1:]
            inside = {name for name, _ in children[first:last + 1]} - set(nested)
            stages = [name for name in names[first:last + 1] if name in nested or
                      (name in inside and _has_parameters(model.get_submodule(name)))]
        else:  # a flat Sequential: each child with parameters is a layer
            stages = [name for name, module in children
                      if _has_parameters(module) and not _covers(name, head)]
            before, after = [], []
    layers = []
    stem = [name for name, module in before if _has_parameters(module)]
    if stem or any(True for _ in model.parameters(recurse=False)):
        layers.append(TrainableLayer("stem", tuple(stem)))
    layers += [TrainableLayer(name, (name,)) for name in stages]
    neck = _neck_paths(model, after, head)
    if neck:
        layers.append(TrainableLayer("neck", tuple(neck)))
    return layers


def trained_layers(layers: list[TrainableLayer], train_layers: str | int) -> list[TrainableLayer]:
    """The layers that train for ``train_layers`` ("all", "head" or an int k: the last k layers)."""
    if train_layers == "all":
        return list(layers)
    if train_layers == "head":
        return []
    k = int(train_layers)
    return list(layers[len(layers) - k:]) if k > 0 else []


def parameter_owner(name: str, layers: list[TrainableLayer], head: str) -> str | None:
    """The layer that a parameter, buffer or module path belongs to: its name, "head" or None.

    None means no layer covers the path: parameters registered directly on the network (such as
    ViT's position embeddings) count as stem, and stateless modules (a ReLU or a pooling layer
    between stages) keep their training mode.
    """
    if _covers(head, name):
        return HEAD
    for layer in layers:
        if any(_covers(path, name) for path in layer.paths):
            return layer.name
    return None


def set_trainable(model: nn.Module, layers: list[TrainableLayer], head: str,
                  trained: Iterable[str]) -> None:
    """``requires_grad`` on for the head and the ``trained`` layers, off everywhere else."""
    trained = set(trained) | {HEAD}
    for name, parameter in model.named_parameters():
        owner = parameter_owner(name, layers, head) or "stem"
        parameter.requires_grad_(owner in trained)


def set_train_modes(model: nn.Module, layers: list[TrainableLayer], head: str,
                    trained: Iterable[str], bn_mode: str) -> None:
    """Put ``model`` in training mode, except what must not change while fitting.

    Frozen layers run in eval mode (BatchNorm keeps its running statistics, dropout and drop-path
    are off): a frozen part is a fixed feature extractor. With ``bn_mode="frozen"`` the BatchNorm
    layers of the trained layers also keep their running statistics (their scale and shift still
    learn), which helps with small batches.
    """
    trained = set(trained) | {HEAD}
    model.train()
    for name, module in model.named_modules():
        owner = parameter_owner(name, layers, head) if name else None
        if owner is None:  # the network itself, containers of layers, stateless glue
            continue
        # Not module.eval(): that would recurse into children, which set their own mode here.
        if owner not in trained or (bn_mode == "frozen" and isinstance(module, _BatchNorm)):
            module.training = False


def has_learned_bn_stats(model: nn.Module) -> bool:
    """Whether any BatchNorm layer of ``model`` holds running statistics learnt from data.

    A randomly initialised network has running means of 0 and variances of 1 everywhere; a
    pretrained one has learnt values, which fine-tuning on a few hundred images should keep.
    """
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            mean, var = module.running_mean, module.running_var
            if mean is not None and (bool(mean.any()) or not bool((var == 1).all())):
                return True
    return False


def resolve_bn_mode(bn_mode: str, model: nn.Module) -> str:
    """``"auto"`` -> ``"frozen"`` for a network with learnt BatchNorm statistics, else ``"train"``."""
    if bn_mode != "auto":
        return bn_mode
    return "frozen" if has_learned_bn_stats(model) else "train"


def _stage_container(model: nn.Module, head: str) -> str | None:
    for name in STAGE_CONTAINERS:
        module = getattr(model, name, None)
        if (isinstance(module, nn.Module) and name in model._modules and not _covers(name, head)
                and sum(_has_parameters(child) for child in module.children()) >= 2):
            return name
    return None


def _neck_paths(model: nn.Module, after: list[tuple[str, nn.Module]], head: str) -> list[str]:
    """Paths with parameters after the stages and outside the head (descending into the head's
    ancestors, such as VGG's ``classifier`` whose last layer is the head)."""
    paths = []
    for name, module in after:
        if _covers(name, head) and name != head:
            paths += _neck_paths(model, [(f"{name}.{child}", sub) for child, sub in
                                         module.named_children()], head)
        elif not _covers(name, head) and _has_parameters(module):
            paths.append(name)
    return paths


def _covers(path: str, name: str) -> bool:
    """Whether module ``path`` is ``name`` or one of its ancestors."""
    return name == path or name.startswith(path + ".")


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())
