"""Preprocessing derived from the weights' own data config: one source of truth, never hard-coded.

A *data config* is timm's dictionary (``input_size``, ``interpolation``, ``mean``, ``std``,
``crop_pct``, ``crop_mode``). timm models carry it in ``pretrained_cfg``; for torchvision weights
it is read off ``weights.transforms()``. From it, timm's ``create_transform`` builds the geometric
part (resize, crop, and at train time random-resized-crop and flips) that runs on PIL images in
DataLoader workers and yields ``uint8`` CHW tensors (timm's "prefetcher" layout). Scaling to
[0, 1] and mean/std normalisation happen on the device, inside :class:`Normalize`, so a CUDA
host copies a quarter of the bytes and the CPU never materialises float images twice.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from PIL import Image
from timm.data import DEFAULT_CROP_PCT, create_transform, resolve_data_config
from torch import nn


_PIL_INTERPOLATION = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                      "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS,
                      "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}


def torchvision_data_config(weights: Any) -> dict[str, Any]:
    """The data config of a torchvision ``WeightsEnum`` member, read off ``weights.transforms()``."""
    preset = weights.transforms()
    crop = _first(preset.crop_size)
    resize = _first(preset.resize_size)
    return {
        "input_size": (3, crop, crop),
        "interpolation": preset.interpolation.value,
        "mean": tuple(float(m) for m in preset.mean),
        "std": tuple(float(s) for s in preset.std),
        "crop_pct": crop / resize,
        "crop_mode": "center",
    }


def model_data_config(model: nn.Module) -> dict[str, Any]:
    """The data config timm resolves for ``model`` (from its ``pretrained_cfg`` when it has one)."""
    return dict(resolve_data_config(model=model))


def with_image_size(data_config: dict[str, Any], image_size: int | None) -> dict[str, Any]:
    """A copy of ``data_config`` whose input size is ``image_size`` (square); crop_pct is kept."""
    config = dict(data_config)
    if image_size is not None:
        channels = config["input_size"][0]
        config["input_size"] = (channels, int(image_size), int(image_size))
    return config


def geometric_transform(data_config: dict[str, Any], *, train: bool = False,
                        exact_centre: bool = False) -> GeometricTransform:
    """PIL image -> ``uint8`` CHW tensor of the network's input size.

    At eval time: resize then centre crop, as the weights were evaluated (``exact_centre``: with
    the crop exactly centred, for the group TTA policies; see :class:`GeometricTransform`). At
    train time: timm's random-resized-crop and horizontal flip, with the same interpolation and
    size (the ``"natural"`` policy of :mod:`skdeep._augment`, which defines the others).
    """
    return GeometricTransform(data_config, train=train, exact_centre=exact_centre)


class GeometricTransform:
    """The timm transform of a data config, which also says how large it resizes an image.

    :class:`~skdeep._inputs.ImageDataset` asks :meth:`resized_size` before transforming, so that
    an image of extreme aspect ratio (1 x 20,000 px: a 100-byte PNG) is refused instead of being
    resized to billions of pixels before the centre crop.

    Parameters
    ----------
    data_config : dict
        timm data config: ``input_size``, ``interpolation``, ``crop_pct``, ``crop_mode``.
    train : bool, default=False
        Random-resized-crop and flip (training) instead of resize and centre crop.
    scale, ratio : tuple of float, default=None
        At train time, the range of the crop's area (a fraction of the image's) and of its aspect
        ratio; None is timm's ImageNet default, (0.08, 1) and (3/4, 4/3).
    hflip, vflip : float, default=0.5 and 0.0
        At train time, the probability of a horizontal and of a vertical flip.
    exact_centre : bool, default=False
        At eval time in ``"center"`` mode, resize a side whose margin around the centre crop
        would be odd one pixel larger, so that the crop is exactly centred. timm's crop is then
        one pixel off centre, so a mirrored or rotated image is not a permutation of the views
        of ``tta="flip"`` / ``"symmetric"`` (cosine 0.98 on fine textures); with even margins it
        is, and such an image gets its original's features. Used for those policies only: the
        other paths keep the crop the weights were evaluated with.
    """

    def __init__(self, data_config: dict[str, Any], *, train: bool = False,
                 scale: tuple[float, float] | None = None,
                 ratio: tuple[float, float] | None = None,
                 hflip: float = 0.5, vflip: float = 0.0, exact_centre: bool = False) -> None:
        self.data_config = dict(data_config)
        self.train = train
        self.exact_centre = exact_centre
        kwargs = {
            "input_size": data_config["input_size"],
            "interpolation": data_config["interpolation"],
            "crop_pct": data_config.get("crop_pct"),
            "crop_mode": data_config.get("crop_mode", "center"),
            "use_prefetcher": True,
            "is_training": train,
        }
        if train:
            kwargs.update(color_jitter=None, auto_augment=None, re_prob=0.0, scale=scale,
                          ratio=ratio, hflip=hflip, vflip=vflip)
        self.transform = create_transform(**kwargs)

    def __call__(self, image: Any) -> torch.Tensor:
        if self.train or not self._symmetric_crop():
            return self.transform(image)
        width, height = self.resized_size(image.size)
        _, crop_h, crop_w = self.data_config["input_size"]
        resized = image.resize((width, height), _PIL_INTERPOLATION.get(
            self.data_config["interpolation"], Image.Resampling.BICUBIC))
        left, top = (width - crop_w) // 2, (height - crop_h) // 2  # even margins: exact
        cropped = resized.crop((left, top, left + crop_w, top + crop_h))
        return torch.from_numpy(np.array(cropped, dtype=np.uint8)).permute(2, 0, 1).contiguous()

    def _symmetric_crop(self) -> bool:
        return self.exact_centre and (self.data_config.get("crop_mode") or "center") == "center"

    def resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` an image of ``size`` = ``(width, height)`` is resized to.

        Mirrors timm's ``transforms_imagenet_eval``: the scale size is ``input / crop_pct``
        (floored); ``"center"`` scales the shorter side to it (keeping the aspect ratio, so an
        elongated image grows along its long side; the long side truncated, as torchvision's
        ``Resize`` does), ``"border"`` the longer side, ``"squash"`` both sides. Training
        resizes a random crop to the input size.

        With ``exact_centre``, in ``"center"`` mode, a side whose margin around the centre crop
        would be odd is resized one pixel larger (see the class docstring).
        """
        _, height, width = self.data_config["input_size"]
        if self.train:
            return width, height
        crop_pct = self.data_config.get("crop_pct") or DEFAULT_CROP_PCT
        scale_w, scale_h = math.floor(width / crop_pct), math.floor(height / crop_pct)
        mode = self.data_config.get("crop_mode") or "center"
        if mode == "squash":
            return scale_w, scale_h
        if mode == "border":
            ratio = min(scale_w / size[0], scale_h / size[1])
            return round(size[0] * ratio), round(size[1] * ratio)
        # torchvision's Resize(int): the shorter side to the scale size, the longer truncated
        short, long = sorted(size)
        scale = scale_w if size[0] <= size[1] else scale_h
        sides = (scale, int(scale * long / short))
        new_w, new_h = sides if size[0] <= size[1] else sides[::-1]
        if not self.exact_centre:
            return new_w, new_h
        return new_w + (new_w - width) % 2, new_h + (new_h - height) % 2


class Normalize(nn.Module):
    """``uint8`` (or [0, 255] float) NCHW batch -> normalised float batch, on the batch's device.

    Holds mean and std as buffers so they move with the model and pickle with it.
    """

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        scale = 255.0
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * scale, persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * scale, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def _first(size: Any) -> int:
    return int(size[0] if isinstance(size, (list, tuple)) else size)
