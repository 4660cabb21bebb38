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
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf


# The filters both Pillow and torchvision's antialiased tensor kernels have (with PIL's
# coefficients): the eval resize of these runs on tensors (TensorEvalTransform).
_TENSOR_INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC,
                         "bilinear": InterpolationMode.BILINEAR}
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
                        exact_centre: bool = False) -> GeometricTransform | TensorEvalTransform:
    """PIL image -> ``uint8`` CHW tensor of the network's input size.

    At eval time: resize then centre crop, as the weights were evaluated (``exact_centre``: with
    the crop exactly centred, for the group TTA policies; see :class:`GeometricTransform`), on
    tensors (:class:`TensorEvalTransform`) wherever that reproduces timm's PIL transform. At
    train time: timm's random-resized-crop and horizontal flip, with the same interpolation and
    size (the ``"natural"`` policy of :mod:`skdeep._augment`, which defines the others).
    """
    if not train and TensorEvalTransform.supports(data_config):
        return TensorEvalTransform(data_config, exact_centre=exact_centre)
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
        return pil_to_tensor(cropped).contiguous()

    def _symmetric_crop(self) -> bool:
        return self.exact_centre and (self.data_config.get("crop_mode") or "center") == "center"

    def resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` an image of ``size`` = ``(width, height)`` is resized to (see
        :func:`resized_size`; training resizes a random crop to the input size)."""
        if self.train:
            _, height, width = self.data_config["input_size"]
            return width, height
        return resized_size(self.data_config, size, exact_centre=self.exact_centre)


def eval_resize_kernels(data_config: dict[str, Any]) -> str:
    """Whose kernels resize images for ``data_config`` at eval time: ``"torchvision"`` (the
    tensor kernels of :class:`TensorEvalTransform`) or ``"pillow"`` (timm's PIL transform).

    Their pixels differ by up to 2 levels, so the feature cache's keys say which made a vector.
    """
    return "torchvision" if TensorEvalTransform.supports(data_config) else "pillow"


def resized_size(data_config: dict[str, Any], size: tuple[int, int], *,
                 exact_centre: bool = False) -> tuple[int, int]:
    """``(width, height)`` the eval transform resizes an image of ``size`` = ``(width, height)`` to.

    Mirrors timm's ``transforms_imagenet_eval``: the scale size is ``input / crop_pct``
    (floored); ``"center"`` scales the shorter side to it (keeping the aspect ratio, so an
    elongated image grows along its long side; the long side truncated, as torchvision's
    ``Resize`` does), ``"border"`` the longer side, ``"squash"`` both sides.

    With ``exact_centre``, in ``"center"`` mode, a side whose margin around the centre crop
    would be odd is resized one pixel larger (see :class:`GeometricTransform`).
    """
    _, height, width = data_config["input_size"]
    crop_pct = data_config.get("crop_pct") or DEFAULT_CROP_PCT
    scale_w, scale_h = math.floor(width / crop_pct), math.floor(height / crop_pct)
    mode = data_config.get("crop_mode") or "center"
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
    if not exact_centre:
        return new_w, new_h
    return new_w + (new_w - width) % 2, new_h + (new_h - height) % 2


class TensorEvalTransform:
    """The eval resize and centre crop on ``uint8`` tensors: one image, or a batch on any device.

    timm's eval transform resizes one PIL image at a time. This does the same arithmetic
    (:func:`resized_size`, torchvision's centre crop) with torchvision's antialiased tensor
    kernels, which use Pillow's filter coefficients: on the CPU their ``uint8`` kernel, which
    rounds between the horizontal and the vertical pass as Pillow does; on other devices a float
    kernel in the same two passes, rounded between them. Every pixel is within 1 of Pillow's
    (max |difference| 1, mean 0.0003, measured on 28->109, 300->256, 500x537->292 px), so the
    features agree with timm's PIL transform (cosine >= 0.999, tested). A float kernel in one
    pass would not: without the rounding between passes, overshoot at edges differs by up to 19.

    Per image it runs in the dataset (so in DataLoader workers); on a batch of images of one
    size (an array of images) it runs once, on the network's device (:meth:`batch`): about 4x
    the rate of one PIL call per image on a CPU (3,522 vs 898 img/s, 224 -> 256 px).

    Parameters
    ----------
    data_config : dict
        timm data config whose ``interpolation`` is bicubic or bilinear and whose crop mode is
        ``"center"`` (square input) or ``"squash"`` (see :meth:`supports`).
    exact_centre : bool, default=False
        Resize a side with an odd margin one pixel larger (see :class:`GeometricTransform`).
    """

    def __init__(self, data_config: dict[str, Any], *, exact_centre: bool = False) -> None:
        self.data_config = dict(data_config)
        self.exact_centre = exact_centre

    @staticmethod
    def supports(data_config: dict[str, Any]) -> bool:
        """Whether this transform reproduces timm's eval transform for ``data_config``.

        Other filters (lanczos, box, hamming, nearest), the ``"border"`` mode (it pads) and
        non-square inputs in ``"center"`` mode (timm keeps the ratio differently) stay on PIL.
        """
        _, height, width = data_config["input_size"]
        mode = data_config.get("crop_mode") or "center"
        return (data_config.get("interpolation") in _TENSOR_INTERPOLATION
                and (mode == "squash" or (mode == "center" and height == width)))

    def resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """``(width, height)`` an image of ``size`` is resized to (see :func:`resized_size`)."""
        return resized_size(self.data_config, size, exact_centre=self.exact_centre)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        """RGB PIL image -> ``uint8`` CHW tensor of the input size."""
        return self.batch(pil_to_tensor(image)[None])[0].contiguous()

    def batch(self, images: torch.Tensor) -> torch.Tensor:
        """``uint8`` NCHW batch of one size -> NCHW batch of the input size, on its device."""
        _, _, height, width = images.shape
        new_w, new_h = self.resized_size((width, height))
        if (new_h, new_w) != (height, width):
            images = resize_like_pillow(images, new_h, new_w, self.data_config["interpolation"])
        _, crop_h, crop_w = self.data_config["input_size"]
        return tvf.center_crop(images, [crop_h, crop_w])


class DeferredResize:
    """An eval transform whose resize and crop are left to the device, a batch at a time.

    RGB PIL image -> ``uint8`` HWC tensor at its own size. For a dataset whose images all have
    one size (an array of images): the inference loop copies each batch to the network's
    device as it is laid out in memory (NHWC: pinning and copying a transposed view would cost
    a transposing copy on the host) and resizes it there in one call (:meth:`batch`) instead of
    one call per image. ``resized_size`` still says what the images will become, for the
    dataset's check against decompression bombs.
    """

    def __init__(self, then: TensorEvalTransform) -> None:
        self.then = then

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(image, dtype=np.uint8))

    @staticmethod
    def from_arrays(pixels: np.ndarray) -> torch.Tensor:
        """``(N, H, W, 3)`` uint8 array -> NHWC tensor sharing its memory."""
        return torch.from_numpy(pixels)

    def resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """What :attr:`then` resizes an image of ``size`` to."""
        return self.then.resized_size(size)

    def batch(self, images: torch.Tensor, messages: list[str],
              device: torch.device) -> tuple[torch.Tensor, list[str]]:
        """NHWC uint8 batch -> NCHW batch of the input size on ``device`` (the loop's
        ``prepare``)."""
        images = images.to(device, non_blocking=True).permute(0, 3, 1, 2)
        # Contiguous, as collated batches are: a compiled graph is specialised on strides.
        return self.then.batch(images).contiguous(), messages


def pil_to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``uint8`` CHW tensor (channels-last in memory, as the kernels like)."""
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)


def resize_like_pillow(images: torch.Tensor, height: int, width: int, interpolation: str, *,
                       kernel: str = "auto") -> torch.Tensor:
    """Resize a ``uint8`` NCHW batch as Pillow resizes each image (within 2 levels per pixel).

    ``kernel="uint8"``: torchvision's SIMD ``uint8`` kernel (CPU only), which rounds between
    its horizontal and vertical passes as Pillow does. ``"float"``: the float kernel (any
    device), run as those two passes, rounded between them. ``"auto"``: ``uint8`` on the CPU,
    ``float`` elsewhere. ``interpolation`` is ``"bicubic"`` or ``"bilinear"``.
    """
    mode = _TENSOR_INTERPOLATION[interpolation]
    if kernel == "uint8" or (kernel == "auto" and images.device.type == "cpu"):
        return tvf.resize(images, [height, width], interpolation=mode, antialias=True)
    images = images.float()
    for size in ([images.shape[-2], width], [height, width]):
        images = tvf.resize(images, size, interpolation=mode, antialias=True)
        images = images.round_().clamp_(0, 255)
    return images.to(torch.uint8)


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
