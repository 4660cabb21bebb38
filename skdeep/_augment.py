"""Augmentation policies and test-time augmentation (TTA) views: the one place that defines them.

A *policy* says which transformations leave an image's class unchanged, so that training may
apply them at random:

``"natural"``
    Photos of objects (ImageNet-like): timm's random-resized-crop (8 % to 100 % of the area,
    aspect ratio 3/4 to 4/3) and a horizontal flip. ``augment=True`` means this policy.
``"symmetric"``
    Images without an up direction (microscopy, satellite and aerial tiles, textures, wafers):
    both flips and the four 90-degree rotations, with a mild crop (60 % to 100 % of the area).
``"light"``
    Images whose orientation matters (digits, text, documents, X-rays, charts): the mild crop
    only, no flip.

Each is derived from the weights' data config (input size, interpolation), as the evaluation
transform is. At train time a policy runs on the decoded PIL image in the DataLoader (timm's
transform, then the 90-degree rotation on the ``uint8`` tensor); a callable (for example a
torchvision v2 transform) runs on the ``uint8`` tensor of the evaluation transform instead.

*TTA views* are functions ``uint8 NCHW batch -> uint8 NCHW batch of the same shape`` applied on
the device to a batch that is already decoded: the flips and rotations of ``"flip"`` and
``"symmetric"`` are ``torch.flip`` and ``torch.rot90``; the random views of an int ``tta`` draw
a crop, flip and rotation per image from the policy and resample with one ``grid_sample``.
Keeping shape and dtype lets a compiled network (``compile=``) run every view.
:class:`AveragedViews` runs a network on each view of a batch and averages the outputs.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch
import torch.nn.functional as F

from ._defaults import POLICY_NAMES, TTA_NAMES
from ._preprocessing import GeometricTransform, geometric_transform


View = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Policy:
    """A named augmentation policy: the random geometry that keeps an image's class.

    ``scale`` and ``ratio`` are the ranges of the random crop's area (fraction of the image) and
    aspect ratio; ``hflip`` and ``vflip`` the probabilities of each flip; ``rot90`` adds a
    uniformly random multiple of 90 degrees.
    """

    name: str
    scale: tuple[float, float]
    ratio: tuple[float, float]
    hflip: float
    vflip: float
    rot90: bool


_MILD_SCALE = (0.6, 1.0)  # "mild crop": never less than 60 % of the image, a 22 px window of 28
_MILD_RATIO = (0.8, 1.25)

POLICIES: dict[str, Policy] = {
    "natural": Policy("natural", (0.08, 1.0), (3 / 4, 4 / 3), hflip=0.5, vflip=0.0, rot90=False),
    "symmetric": Policy("symmetric", _MILD_SCALE, _MILD_RATIO, hflip=0.5, vflip=0.5, rot90=True),
    "light": Policy("light", _MILD_SCALE, _MILD_RATIO, hflip=0.0, vflip=0.0, rot90=False),
}


def resolve_policy(augment: Any) -> Policy | Callable | None:
    """``augment`` -> a :class:`Policy`, the user's callable, or None (no augmentation).

    ``True`` is ``"natural"`` (what ``augment=True`` always meant), ``False`` is None.
    """
    if augment is True:
        return POLICIES["natural"]
    if augment is False:
        return None
    if isinstance(augment, str):
        try:
            return POLICIES[augment]
        except KeyError:
            raise ValueError(f"augment={augment!r} is not a policy; use one of "
                             f"{list(POLICY_NAMES)}, a bool or a callable.") from None
    if callable(augment):
        return augment
    raise TypeError(f"augment={augment!r} is not a policy name, a bool or a callable.")


def describe(augment: Any) -> Any:
    """``augment`` in JSON types: itself, or for a callable ``{"callable": repr}``.

    Memory addresses are left out of the repr (``<function <lambda>>``), so that the same code
    gives the same description in another process.
    """
    if isinstance(augment, (bool, str)):
        return augment
    return {"callable": re.sub(r" at 0x[0-9a-fA-F]+", "", repr(augment))[:500]}


def train_transform(data_config: dict[str, Any], augment: Any, *, exact_centre: bool = False):
    """The train-time transform of ``augment`` (PIL image -> ``uint8`` CHW tensor).

    Parameters
    ----------
    data_config : dict
        The weights' data config (input size, interpolation, crop_pct).
    augment : {"natural", "symmetric", "light"}, bool or callable
        ``False`` is the evaluation transform (resize, centre crop). A callable receives the
        evaluation transform's ``uint8`` (C, H, W) tensor and returns an image of that shape.

    exact_centre : bool, default=False
        For the evaluation transform: an exactly centred crop (the group TTA policies need it;
        see :class:`~skdeep._preprocessing.GeometricTransform`).

    Returns
    -------
    transform
        Callable with a ``resized_size`` method, as :class:`~skdeep._inputs.ImageDataset` needs.
    """
    policy = resolve_policy(augment)
    if policy is None:
        return geometric_transform(data_config, exact_centre=exact_centre)
    if not isinstance(policy, Policy):
        return AugmentTransform(geometric_transform(data_config), CheckedAugment(policy))
    base = GeometricTransform(data_config, train=True, scale=policy.scale, ratio=policy.ratio,
                              hflip=policy.hflip, vflip=policy.vflip)
    return AugmentTransform(base, RandomRot90()) if policy.rot90 else base


class AugmentTransform:
    """A geometric transform (PIL -> ``uint8`` tensor), then ``then`` on that tensor."""

    def __init__(self, base: GeometricTransform, then: View) -> None:
        self.base = base
        self.then = then

    def __call__(self, image: Any) -> torch.Tensor:
        return self.then(self.base(image))

    def resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """What the base transform resizes an image of ``size`` to (see GeometricTransform)."""
        return self.base.resized_size(size)


class RandomRot90:
    """Rotate a (C, H, W) tensor by a random multiple of 90 degrees (of 180 when not square).

    Draws from torch's global generator, which ``fit`` seeds and checkpoints.
    """

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        square = image.shape[-1] == image.shape[-2]
        k = int(torch.randint(4, ())) if square else 2 * int(torch.randint(2, ()))
        return torch.rot90(image, k, dims=(-2, -1)).contiguous() if k else image


#: How far beyond its range an augmented image may go (bicubic overshoot) before it is refused.
_OVERSHOOT = 0.05


class CheckedAugment:
    """The user's augmentation callable, its output checked to be an image of the input's shape."""

    def __init__(self, function: Callable) -> None:
        self.function = function

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        out = self.function(image)
        if not isinstance(out, torch.Tensor):
            from PIL import Image

            if not isinstance(out, Image.Image):
                raise TypeError(f"augment={self.function!r} returned a {type(out).__name__}; it "
                                "receives a uint8 tensor (C, H, W) and must return a tensor (or "
                                "PIL image) of the same shape.")
            from torchvision.transforms.functional import pil_to_tensor

            out = pil_to_tensor(out.convert("RGB"))
        if tuple(out.shape) != tuple(image.shape):
            raise ValueError(f"augment={self.function!r} returned an image of shape "
                             f"{tuple(out.shape)} for one of shape {tuple(image.shape)}: keep the "
                             f"network's input size (for example RandomResizedCrop(size="
                             f"{image.shape[-1]})).")
        if out.dtype != torch.uint8:
            out = self._to_uint8(out, image)
        return out.contiguous()

    def _to_uint8(self, out: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """A float or integer result as ``uint8``, read on the scale it is on, never guessed.

        Floats in [0, 255] (v2 transforms keep the input's range) are rounded. Floats within
        [0, 1.5] from an input that was not nearly black (``v2.ToDtype(torch.float32,
        scale=True)``) are scaled back by 255: rounding them as 0-255 values made the view
        black. An overshoot of up to ``_OVERSHOOT`` of the range (bicubic interpolation rings)
        is clamped. Anything else (bool, complex, NaN, a normalised image with negative values,
        values far above 255) is refused: no rule could say which image was meant.
        """
        name = f"augment={self.function!r}"
        if out.dtype == torch.bool or out.is_complex():
            raise TypeError(f"{name} returned a {out.dtype} tensor; return the image as uint8 "
                            "(0-255) or as floats in [0, 255] or [0, 1].")
        values = out.float()
        low, high = float(values.min()), float(values.max())
        if out.is_floating_point() and high <= 1.5 and int(image.max()) > 1:
            values, low, high = values * 255, low * 255, high * 255  # ToDtype(scale=True)
        margin = _OVERSHOOT * 255
        normalised = low < -1 and high < 16  # mean/std-normalised: about [-2.1, 2.6]
        if (not (math.isfinite(low) and math.isfinite(high)) or normalised or low < -margin
                or high > 255 + margin):
            raise ValueError(
                f"{name} returned values in [{low:.3g}, {high:.3g}]; return the image as uint8 "
                "(0-255) or as floats in [0, 255] or [0, 1]. skdeep normalises the image "
                "itself, from the weights' data config: leave v2.Normalize out.")
        return values.round().clamp(0, 255).to(torch.uint8)


# --- test-time augmentation ---------------------------------------------------------------------


class Dihedral:
    """One of the 8 symmetries of a square: ``k`` quarter turns, then a horizontal flip or not."""

    def __init__(self, k: int, flip: bool) -> None:
        self.k, self.flip = k, flip

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        out = torch.rot90(images, self.k, dims=(-2, -1)) if self.k else images
        out = out.flip(-1) if self.flip else out
        return out if out is images else out.contiguous()  # compiled graphs guard on strides

    def __repr__(self) -> str:
        return f"Dihedral(k={self.k}, flip={self.flip})"


class RandomView:
    """A random view of each image of a batch under ``policy``: crop, flip, rotation, resample.

    One affine transform per image, drawn from ``generator`` (a CPU ``torch.Generator``, so that
    the draws do not depend on the device), resampled with one ``grid_sample`` with the data
    config's interpolation. The crop is taken from the evaluation view (already at the input
    size), with the policy's ranges of area and aspect ratio.
    """

    def __init__(self, policy: Policy, interpolation: str, generator: torch.Generator) -> None:
        self.policy = policy
        self.mode = interpolation if interpolation in ("bicubic", "nearest") else "bilinear"
        self.generator = generator

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        n, _, height, width = images.shape
        theta = self.affine(n, square=height == width).to(images.device)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(images.float(), grid, mode=self.mode, padding_mode="reflection",
                            align_corners=False)
        return out.round().clamp(0, 255).to(torch.uint8).contiguous()

    def affine(self, n: int, *, square: bool) -> torch.Tensor:
        """``n`` random 2x3 matrices mapping output coordinates to input ones, in [-1, 1]."""
        policy, g = self.policy, self.generator
        u = torch.rand(n, 7, generator=g, dtype=torch.float64)
        low, high = policy.scale
        area = low + (high - low) * u[:, 0]
        log_low, log_high = math.log(policy.ratio[0]), math.log(policy.ratio[1])
        ratio = torch.exp(log_low + (log_high - log_low) * u[:, 1])
        half_w = torch.sqrt(area * ratio).clamp(max=1.0)  # crop half-sizes, as fractions of 1
        half_h = torch.sqrt(area / ratio).clamp(max=1.0)
        shift_x = (2 * u[:, 2] - 1) * (1 - half_w)
        shift_y = (2 * u[:, 3] - 1) * (1 - half_h)
        flip_x = torch.where(u[:, 4] < policy.hflip, -1.0, 1.0)
        flip_y = torch.where(u[:, 5] < policy.vflip, -1.0, 1.0)
        turns = 4 if square else 2
        quarter = torch.floor(u[:, 6] * turns) * (4 // turns) if policy.rot90 else torch.zeros(n)
        angle = quarter * (math.pi / 2)
        cos, sin = torch.cos(angle).round(), torch.sin(angle).round()
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        # input = diag(half sizes) @ flips @ rotation @ output + shift
        theta[:, 0, 0] = half_w * flip_x * cos
        theta[:, 0, 1] = -half_w * flip_x * sin
        theta[:, 1, 0] = half_h * flip_y * sin
        theta[:, 1, 1] = half_h * flip_y * cos
        theta[:, 0, 2], theta[:, 1, 2] = shift_x, shift_y
        return theta.float()


class CallableView:
    """The user's augmentation callable applied to each image of a batch, its random draws
    taken from a stream of its own (seeded), so that TTA is reproducible and leaves torch's
    global generator as it was."""

    def __init__(self, function: Callable, seed: int) -> None:
        self.augment = CheckedAugment(function)
        self.state = torch.Generator().manual_seed(seed).get_state()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(self.state)
            out = torch.stack([self.augment(image) for image in images])
            self.state = torch.get_rng_state()
        return out


def tta_views(tta: Any, data_config: dict[str, Any], *, augment: Any = True,
              seed: int | None = None) -> list[View]:
    """The test-time views of ``tta``, the first always the unchanged image.

    Parameters
    ----------
    tta : None, "flip", "symmetric" or int >= 2
        ``None``: the image alone. ``"flip"``: it and its mirror image. ``"symmetric"``: the 8
        symmetries of the square (4 rotations by 90 degrees, each mirrored or not; needs a square
        input). An int ``n``: the image and ``n - 1`` random views drawn from ``augment``.
    data_config : dict
        The weights' data config: input size and interpolation.
    augment : {"natural", "symmetric", "light"}, True or callable, default=True
        The policy of the random views of an int ``tta``.
    seed : int, default=None
        Seeds the random views (view ``i`` from ``seed + i``); None draws a fresh seed.

    Returns
    -------
    views : list of callable
        Each maps a ``uint8`` (N, C, H, W) batch to one of the same shape and dtype.
    """
    if tta is None:
        return [Dihedral(0, False)]
    if isinstance(tta, str):
        if tta == "flip":
            return [Dihedral(0, False), Dihedral(0, True)]
        if tta == "symmetric":
            _, height, width = data_config["input_size"]
            if height != width:
                raise ValueError(f"tta='symmetric' rotates by 90 degrees, which needs a square "
                                 f"input; the input size is {height}x{width}: set image_size.")
            return [Dihedral(k, flip) for flip in (False, True) for k in range(4)]
        raise ValueError(f"tta={tta!r} is not one of {list(TTA_NAMES)}, None or an int >= 2.")
    if not isinstance(tta, Integral) or isinstance(tta, bool) or tta < 2:
        raise ValueError(f"tta={tta!r}: give None, {' or '.join(map(repr, TTA_NAMES))}, or an int "
                         ">= 2 (the number of views, the unchanged image included).")
    policy = resolve_policy(augment)
    if policy is None:
        raise ValueError(f"tta={tta} draws random views from the augment policy, but "
                         "augment=False: set augment to a policy (the random views follow it), or "
                         "use tta='flip' or 'symmetric'.")
    if seed is None:  # not reproducible, as asked; torch's global stream is left alone
        seed = secrets.randbits(31)
    views: list[View] = [Dihedral(0, False)]
    for i in range(1, int(tta)):
        if isinstance(policy, Policy):
            generator = torch.Generator().manual_seed(seed + i)
            views.append(RandomView(policy, data_config["interpolation"], generator))
        else:
            views.append(CallableView(policy, seed + i))
    return views


class AveragedViews:
    """A network's rows averaged over test-time views: one batched forward pass per view.

    Parameters
    ----------
    forward : callable
        ``uint8`` batch -> rows (eager or compiled; it runs under the caller's autocast).
    views : sequence of callable
        From :func:`tta_views`.
    log_proba_from : int, default=None
        Columns from this index on are logits: they are averaged as probabilities (softmax) and
        returned as the logarithm of the mean probability, so that a softmax of them gives the
        mean probability. Columns before it (embeddings) are averaged as they are.
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], views: Sequence[View], *,
                 log_proba_from: int | None = None) -> None:
        self.forward = forward
        self.views = list(views)
        self.log_proba_from = log_proba_from

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        device_type = images.device.type
        total = log_total = None  # sums over the views; probabilities summed in log space
        for view in self.views:
            with torch.autocast(device_type, enabled=False):
                viewed = view(images)
            rows = self.forward(viewed)
            with torch.autocast(device_type, enabled=False):
                rows = rows.float()
                cut = rows.shape[1] if self.log_proba_from is None else self.log_proba_from
                total = rows[:, :cut] if total is None else total + rows[:, :cut]
                if cut < rows.shape[1]:
                    log_proba = torch.log_softmax(rows[:, cut:], dim=1)
                    log_total = (log_proba if log_total is None
                                 else torch.logaddexp(log_total, log_proba))
        with torch.autocast(device_type, enabled=False):
            n = len(self.views)
            out = total / n
            if log_total is not None:
                out = torch.cat([out, log_total - math.log(n)], dim=1)
        return out
