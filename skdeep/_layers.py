"""Which activations to read out of a network, and how to turn them into one feature vector.

Layers are named as in ``model.named_modules()`` (``"layer4"``, ``"blocks.5"``, ``"features.30"``),
plus three portable names: ``"penultimate"`` (the input of the final classifier, i.e. the pooled
pre-logits vector), ``"logits"`` (the network's output) and, for AlexNet and VGG, the DeCAF names
``"pool5"``, ``"fc6"`` and ``"fc7"`` (fc6/fc7 read after their ReLU, as in Donahue et al., 2014).

:class:`FeatureExtractor` reads any set of them in ONE forward pass through forward hooks, pools
spatial maps as it goes (so an in-place op later in the network cannot change a captured value),
and stops the forward pass as soon as every requested activation is in hand.
"""

from __future__ import annotations

import contextlib
import difflib
import threading
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from ._defaults import POOLINGS
from ._device import memory_format
from ._preprocessing import Normalize

PENULTIMATE = "penultimate"
LOGITS = "logits"

# DeCAF names for the architectures the paper's layers exist in (torchvision module paths).
_DECAF_ALEXNET = {"pool5": "features", "fc6": "classifier.2", "fc7": "classifier.5"}
_DECAF_VGG = {"pool5": "features", "fc6": "classifier.1", "fc7": "classifier.4"}


def decaf_aliases(model: nn.Module) -> dict[str, str]:
    """DeCAF layer names available for ``model`` (empty for architectures other than AlexNet/VGG)."""
    kind = type(model).__name__
    if kind == "AlexNet":
        return dict(_DECAF_ALEXNET)
    if kind == "VGG":
        return dict(_DECAF_VGG)
    return {}


def classifier_name(model: nn.Module) -> str | None:
    """Module path of the final classifier, whose input is the "penultimate" feature vector."""
    modules = dict(model.named_modules())
    get_classifier = getattr(model, "get_classifier", None)
    if callable(get_classifier):  # timm models say which module is their head
        head = get_classifier()
        if isinstance(head, nn.Module) and not isinstance(head, nn.Identity):
            for name, module in modules.items():
                if module is head and name:
                    return name
    linear = [name for name, module in modules.items() if isinstance(module, nn.Linear)]
    return linear[-1] if linear else None


def layer_vocabulary(model: nn.Module) -> list[str]:
    """Every layer name accepted for ``model``: portable names, DeCAF aliases, module paths."""
    names = [LOGITS]
    if classifier_name(model) is not None:
        names.insert(0, PENULTIMATE)
    names += list(decaf_aliases(model))
    names += [name for name, _ in model.named_modules() if name]
    return names


def normalize_layers(layer: str | Sequence[str]) -> list[str]:
    """``layer`` parameter -> non-empty list of unique names (validated for type only)."""
    layers = [layer] if isinstance(layer, str) else list(layer)
    if not layers or not all(isinstance(name, str) for name in layers):
        raise ValueError(f"layer must be a name or a non-empty list of names; got {layer!r}.")
    duplicated = sorted({name for name in layers if layers.count(name) > 1})
    if duplicated:
        raise ValueError(f"layer lists {duplicated} more than once.")
    return layers


def resolve_layers(model: nn.Module, layers: Sequence[str]) -> list[tuple[str, str]]:
    """Map each requested name to a module path ("" means the network's own output).

    Raises a ValueError that suggests close valid names for an unknown layer.
    """
    modules = dict(model.named_modules())
    aliases = decaf_aliases(model)
    resolved = []
    for name in layers:
        if name == LOGITS:
            resolved.append((name, ""))
        elif name == PENULTIMATE:
            head = classifier_name(model)
            if head is None:
                raise ValueError(
                    f"{type(model).__name__} has no linear classifier, so it has no "
                    "'penultimate' layer; pick a module from skdeep.list_layers()."
                )
            resolved.append((name, head))
        elif name in aliases:
            resolved.append((name, aliases[name]))
        elif name in modules and name:
            resolved.append((name, name))
        else:
            vocabulary = layer_vocabulary(model)
            close = difflib.get_close_matches(name, vocabulary, n=6, cutoff=0.5)
            hint = f" Close names: {close}." if close else ""
            raise ValueError(
                f"Unknown layer {name!r} for {type(model).__name__}.{hint} "
                "skdeep.list_layers(backbone) lists them all."
            )
    return resolved


def pool(activation: torch.Tensor, pooling: str | None) -> torch.Tensor:
    """Reduce one activation to ``(batch, features)`` float32, never aliasing ``activation``.

    A hook's value may be modified in place later in the network (an in-place ReLU), so a
    result that shares its memory is copied. See :func:`pool_values` for the reduction.
    """
    pooled = pool_values(activation, pooling)
    return pooled.clone() if pooled.data_ptr() == activation.data_ptr() else pooled


def pool_values(activation: torch.Tensor, pooling: str | None) -> torch.Tensor:
    """Reduce one activation to ``(batch, features)`` float32 (may alias a float32 input).

    4-D maps ``(B, C, H, W)`` are pooled over H and W; 3-D token sequences ``(B, N, C)`` over
    tokens; ``pooling=None`` flattens instead. 2-D inputs pass through.
    """
    x = activation.float()
    if x.ndim == 2:
        return x
    if pooling is None:
        return x.flatten(1)
    dims = tuple(range(2, x.ndim)) if x.ndim == 4 else (1,)
    if pooling == "avg":
        return x.mean(dim=dims)
    if pooling == "max":
        return x.amax(dim=dims)
    if pooling == "avgmax":  # timm's definition: the mean of average and max pooling
        return 0.5 * (x.mean(dim=dims) + x.amax(dim=dims))
    if pooling == "gem":  # generalised mean (Radenovic et al.), p=3, on non-negative activations
        return x.clamp(min=1e-6).pow(3).mean(dim=dims).pow(1.0 / 3)
    raise ValueError(f"unknown pooling {pooling!r}; expected one of {POOLINGS} or None.")


class _StopForward(Exception):
    """Raised by the last hook needed, to skip the rest of the network."""


class FeatureExtractor(nn.Module):
    """A frozen network that maps a ``uint8`` NCHW batch to concatenated pooled activations.

    Parameters
    ----------
    model : nn.Module
        The backbone, in eval mode.
    layers : list of str
        Requested names, in output order.
    pooling : str or None
        How spatial maps become vectors (see :func:`pool`).
    mean, std : tuple of float
        Normalisation of the weights' data config, applied on the device.
    """

    def __init__(self, model: nn.Module, layers: Sequence[str], pooling: str | None, mean, std):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.model = model
        self.pooling = pooling
        self.layers = list(layers)
        self._targets = resolve_layers(model, self.layers)
        self._captured: dict[str, torch.Tensor] = {}
        # Hooks are registered on the shared model and write into one dict, so two threads in
        # forward() at once would read each other's activations: one forward at a time. The
        # network already uses every core through torch's intra-op threads.
        self._lock = threading.Lock()
        self.stop_early = False  # set by probe(): skip the rest of the network once all is read
        self.widths: list[int] | None = None  # set by probe(): columns contributed by each layer

    @contextlib.contextmanager
    def _hooks(self) -> Iterator[None]:
        """Hooks live only while the extractor runs, so ``model`` stays a plain network."""
        modules = dict(self.model.named_modules())
        handles = []
        try:
            for name, path in self._targets:
                if not path:
                    continue
                if name == PENULTIMATE:
                    handles.append(modules[path].register_forward_pre_hook(self._pre_hook(name)))
                else:
                    handles.append(modules[path].register_forward_hook(self._post_hook(name)))
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _store(self, name: str, value) -> None:
        tensor = value[0] if isinstance(value, (tuple, list)) else value
        self._captured[name] = pool(tensor, self.pooling)
        if self.stop_early and len(self._captured) == len(self.layers):
            raise _StopForward

    def _pre_hook(self, name: str):
        return lambda module, args: self._store(name, args)

    def _post_hook(self, name: str):
        return lambda module, args, output: self._store(name, output)

    def probe(self, input_size: tuple[int, int, int], device: torch.device) -> list[int]:
        """Run one blank image to learn each layer's width and whether early stopping is safe.

        Early stopping is only safe when every hooked module runs once per forward pass (a ReLU
        module reused inside a ResNet block would otherwise be read at its first use).
        """
        calls: dict[str, int] = {}
        counters = [
            dict(self.model.named_modules())[path].register_forward_hook(
                lambda *_, path=path: calls.__setitem__(path, calls.get(path, 0) + 1)
            )
            for _, path in self._targets
            if path
        ]
        self.stop_early = False
        blank = torch.zeros((1, *input_size), dtype=torch.uint8, device=device)
        try:
            with torch.inference_mode():
                features = self._forward_all(blank)
        except RuntimeError as exc:  # typically "Output size is too small"
            raise ValueError(
                f"{type(self.model).__name__} cannot run on {input_size[1]}x{input_size[2]} inputs "
                f"({exc}). Use a larger image_size."
            ) from exc
        finally:
            for handle in counters:
                handle.remove()
        hooked = [path for _, path in self._targets]
        self.stop_early = "" not in hooked and all(calls.get(path) == 1 for path in hooked)
        self.widths = [block.shape[1] for block in features]
        return self.widths

    def _forward_all(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = self.normalize(images).contiguous(memory_format=memory_format(images.device))
        with self._lock:
            self._captured = {}
            try:
                with self._hooks():
                    output = self.model(x)
                if LOGITS in self.layers:
                    self._captured[LOGITS] = pool(output, self.pooling)
            except _StopForward:
                pass
            captured, self._captured = self._captured, {}
        return [captured[name] for name in self.layers]

    # A lock cannot be pickled or deep-copied: copies get a lock of their own.
    def __getstate__(self) -> dict:
        state = dict(super().__getstate__())
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.cat(self._forward_all(images), dim=1)


def feature_names(layers: Sequence[str], widths: Sequence[int]) -> list[str]:
    """Stable, unique output names: ``<layer>_<i>`` for each column of each layer."""
    return [f"{layer}_{i}" for layer, width in zip(layers, widths) for i in range(width)]

