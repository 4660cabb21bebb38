"""Every form of image collection a data scientist holds -> a torch Dataset of RGB images.

Accepted ``X``:

- a numeric array or tensor of images: ``(N, H, W)``, ``(N, H, W, C)`` with C in {1, 3, 4}, or a
  channel-first torch tensor ``(N, C, H, W)``. ``uint8`` as is; 16-bit integers scaled by their
  range; other integers if they lie in [0, 255]; floats in [0, 1].
- a sequence (list, tuple, object ndarray, pandas Series, one-column DataFrame) whose items are
  file paths (``str`` or ``pathlib.Path``), ``bytes`` of an encoded image, PIL images, or single
  image arrays/tensors of any size. Items may be mixed.

Whole-array problems (wrong ndim, a channel count other than 1/3/4, floats outside [0, 1], NaN or
inf pixels, an empty X) always raise a ValueError. Per-item problems (a missing path, a directory,
a file that is not an image or is truncated, a decompression bomb) follow ``on_error``: "raise"
names the row and the path; "nan" gives that row NaN features and a warning listing the bad rows.
Cheap checks (types, existence of files) run before any model work.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

ON_ERROR = ("raise", "nan")
_PATH_TYPES = (str, os.PathLike)


class BadImageError(ValueError):
    """One item of X cannot be turned into an image. The message names its row (and path)."""


# --- X as a whole ------------------------------------------------------------------------------


def as_items(X: Any) -> np.ndarray | torch.Tensor | list:
    """Validate the container ``X`` and return either a numeric image batch or a list of items."""
    if isinstance(X, (str, os.PathLike)):
        kind = "a directory" if os.path.isdir(X) else "a single path"
        raise ValueError(
            f"X is {kind} ({str(X)!r}), not a collection of images. Pass a list or pandas Series "
            "of paths; for a folder of images use skdeep.datasets.load_image_folder(path)."
        )
    if isinstance(X, (bytes, Image.Image)):
        raise ValueError(f"X is a single {type(X).__name__} image; wrap it in a list: [image].")
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # pandas DataFrame
        if X.shape[1] != 1:
            raise ValueError(
                f"X is a DataFrame with {X.shape[1]} columns {list(X.columns)[:10]}; pass the one "
                "column that holds the images, e.g. X['path'], or route it with ColumnTransformer."
            )
        X = X.iloc[:, 0]
    if hasattr(X, "iloc"):  # pandas Series
        X = X.to_numpy()
    if isinstance(X, torch.Tensor) and X.dtype != torch.uint8 and not X.is_floating_point():
        X = X.numpy(force=True)
    if isinstance(X, np.ndarray) and X.dtype != object:
        return _validate_batch(X)
    if isinstance(X, torch.Tensor):
        return _validate_batch(X)
    if isinstance(X, np.ndarray):
        X = list(X)
    if not isinstance(X, Sequence):
        raise ValueError(f"X of type {type(X).__name__} is not a supported collection of images.")
    if len(X) == 0:
        raise ValueError("X is empty: there are no images to transform.")
    return list(X)


def _validate_batch(X: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Checks on a numeric image batch that are cheap enough to run on the whole array at once."""
    channel_first = isinstance(X, torch.Tensor)
    shape = tuple(X.shape)
    if len(shape) == 0 or shape[0] == 0:
        raise ValueError("X is empty: there are no images to transform.")
    if len(shape) not in (3, 4):
        raise ValueError(
            f"X has shape {shape}: expected a batch of images (N, H, W) or "
            + ("(N, C, H, W) for a tensor." if channel_first else "(N, H, W, C) for an array.")
        )
    if len(shape) == 4:
        channels = shape[1] if channel_first else shape[3]
        if channels not in (1, 3, 4):
            hint = ""
            if not channel_first and shape[1] in (1, 3, 4):
                hint = " It looks channel-first: use np.moveaxis(X, 1, -1) or a torch tensor."
            raise ValueError(
                f"X has shape {shape}: {channels} channels, expected 1 (gray), 3 (RGB) or 4 (RGBA).{hint}"
            )
    dtype = X.dtype
    if isinstance(X, np.ndarray) and X.dtype == bool:
        raise ValueError("X is a boolean array; convert it to uint8 (0 and 255) first.")
    floating = X.is_floating_point() if isinstance(X, torch.Tensor) else np.issubdtype(dtype, np.floating)
    if floating:
        _check_float_range(X)
    elif isinstance(X, np.ndarray) and dtype not in (np.uint8, np.uint16, np.int16):
        low, high = X.min(), X.max()
        if low < 0 or high > 255:
            raise ValueError(
                f"X is {dtype} with values in [{low}, {high}]: integer images must be uint8, "
                "uint16 or int16 (scaled by their range), or lie in [0, 255]."
            )
    return X


def _check_float_range(X: np.ndarray | torch.Tensor) -> None:
    flat = X.reshape(X.shape[0], -1)
    if isinstance(flat, torch.Tensor):
        finite = torch.isfinite(flat).all(dim=1).cpu().numpy()
        low, high = flat.amin(dim=1).cpu().numpy(), flat.amax(dim=1).cpu().numpy()
    else:
        finite = np.isfinite(flat).all(axis=1)
        with np.errstate(invalid="ignore"):
            low, high = flat.min(axis=1), flat.max(axis=1)
    if not finite.all():
        rows = np.flatnonzero(~finite)
        raise ValueError(f"X has NaN or infinite pixels in rows {_preview(rows)}.")
    outside = (low < 0) | (high > 1)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"X is a float array with values outside [0, 1] (row {row} spans "
            f"[{float(low[row]):g}, {float(high[row]):g}]). Float images must be scaled to [0, 1]: "
            "divide 0-255 data by 255, or pass it as uint8."
        )


def check_files(items: list, on_error: str) -> dict[int, str]:
    """Stat every path up front. Returns ``{row: reason}`` for bad ones (raises under "raise")."""
    bad: dict[int, str] = {}
    for index, item in enumerate(items):
        if isinstance(item, _PATH_TYPES):
            path = os.fspath(item)
            if os.path.isdir(path):
                reason = f"row {index}: {path!r} is a directory, not an image file"
                exc: type[Exception] = IsADirectoryError
            elif not os.path.exists(path):
                reason = f"row {index}: image file not found: {path!r}"
                exc = FileNotFoundError
            else:
                continue
        elif not isinstance(item, (bytes, bytearray, Image.Image, np.ndarray, torch.Tensor)):
            reason = f"row {index}: {type(item).__name__} is not an image, path or bytes ({item!r:.60})"
            exc = BadImageError
        else:
            continue
        if on_error == "raise":
            raise exc(reason)
        bad[index] = reason
    return bad


# --- one item -> RGB PIL image -----------------------------------------------------------------


def decode(data: str | os.PathLike | bytes) -> Image.Image:
    """Open an encoded image fully (truncation is seen), apply EXIF orientation, return RGB.

    Pillow's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) is enforced as an error.
    """
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(source) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB, compositing transparency on white and rescaling deep images."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        # 16-bit (and 32-bit integer) gray: scale the 16-bit range to 8 bits instead of clamping.
        values = np.asarray(image).astype(np.float64)
        scaled = np.clip(values / 65535.0 * 255.0, 0, 255)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        values = np.asarray(image)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 1:
            raise BadImageError("a float ('F' mode) image must hold values in [0, 1]")
        return Image.fromarray(np.rint(values * 255).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def array_to_image(array: np.ndarray | torch.Tensor, channel_first: bool) -> Image.Image:
    """One image array (H, W), (H, W, C) or, channel-first, (C, H, W) -> RGB PIL image."""
    if isinstance(array, torch.Tensor):
        array = array.numpy(force=True)
    array = np.asarray(array)
    if array.ndim == 3 and channel_first:
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise BadImageError(f"an image array must be (H, W) or (H, W, 1|3|4); got {array.shape}")
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype in (np.uint16, np.int16):
        info = np.iinfo(array.dtype)
        pixels = np.rint((array.astype(np.float64) - info.min) / (info.max - info.min) * 255)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise BadImageError("the image has NaN or infinite pixels")
        if array.min() < 0 or array.max() > 1:
            raise BadImageError(
                f"float pixels must lie in [0, 1]; got [{array.min():g}, {array.max():g}] "
                "(divide 0-255 data by 255)"
            )
        pixels = np.rint(array * 255.0)
    elif np.issubdtype(array.dtype, np.integer) and array.min() >= 0 and array.max() <= 255:
        pixels = array
    else:
        raise BadImageError(f"unsupported image dtype {array.dtype} or values outside [0, 255]")
    pixels = np.ascontiguousarray(pixels.astype(np.uint8, copy=False))
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[pixels.ndim if pixels.ndim == 2 else pixels.shape[-1]]
    return to_rgb(Image.fromarray(pixels, mode))


def load_item(item: Any) -> Image.Image:
    """Any accepted single item -> RGB PIL image."""
    if isinstance(item, (str, os.PathLike, bytes, bytearray)):
        return decode(item)
    if isinstance(item, Image.Image):
        item.load()
        return to_rgb(ImageOps.exif_transpose(item))
    if isinstance(item, torch.Tensor):
        return array_to_image(item, channel_first=item.ndim == 3 and item.shape[0] in (1, 3, 4))
    if isinstance(item, np.ndarray):
        return array_to_image(item, channel_first=False)
    raise BadImageError(f"{type(item).__name__} is not an image, path or bytes")


def describe(item: Any) -> str:
    """How an item is named in error messages: the path, or its type and shape."""
    if isinstance(item, _PATH_TYPES):
        return repr(os.fspath(item))
    if isinstance(item, (np.ndarray, torch.Tensor)):
        return f"{type(item).__name__} of shape {tuple(item.shape)}"
    if isinstance(item, (bytes, bytearray)):
        return f"{len(item)} bytes"
    return type(item).__name__


# --- the Dataset -------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """Row ``i`` of X -> ``(uint8 CHW tensor, error message or "")``, transformed for the network.

    Under ``on_error="nan"`` a bad row yields a blank tensor and its error message, and the
    caller fills its output row with NaN. Picklable, so decoding can run in DataLoader workers.

    Parameters
    ----------
    X : any accepted form (see the module docstring)
    transform : callable
        PIL image -> uint8 CHW tensor of ``input_size``.
    input_size : tuple of int
        ``(C, H, W)`` of the transform's output, for blank rows.
    on_error : {"raise", "nan"}
    targets : array-like, optional
        Returned as a third element, for training.
    """

    def __init__(self, X: Any, transform: Callable, input_size: tuple[int, int, int],
                 on_error: str = "raise", targets: Any = None) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}; got {on_error!r}.")
        self.items = as_items(X)
        self.transform = transform
        self.input_size = tuple(input_size)
        self.on_error = on_error
        self.targets = targets
        self.channel_first = isinstance(self.items, torch.Tensor)
        self.bad = check_files(self.items, on_error) if isinstance(self.items, list) else {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int):
        error = self.bad.get(index, "")
        image = None
        if not error:
            try:
                image = self.transform(self._image(index))
            except FileNotFoundError as exc:
                error = f"row {index}: image file not found: {describe(self.items[index])} ({exc})"
                if self.on_error == "raise":
                    raise FileNotFoundError(error) from exc
            except Exception as exc:  # Pillow raises many types for corrupt files
                error = f"row {index}: cannot read image {describe(self.items[index])}: {exc}"
                if self.on_error == "raise":
                    raise BadImageError(error) from exc
        if image is None:
            image = torch.zeros(self.input_size, dtype=torch.uint8)
        if self.targets is None:
            return image, error
        return image, error, self.targets[index]

    def _image(self, index: int) -> Image.Image:
        item = self.items[index]
        if isinstance(self.items, list):
            return load_item(item)
        return array_to_image(item, channel_first=self.channel_first)


def warn_bad_rows(errors: dict[int, str]) -> None:
    """One warning that lists the rows that became NaN and why."""
    if not errors:
        return
    listing = "; ".join(errors[index] for index in sorted(errors)[:10])
    more = f" (and {len(errors) - 10} more)" if len(errors) > 10 else ""
    warnings.warn(
        f"{len(errors)} image(s) could not be read and their rows are NaN: {listing}{more}",
        BadImageWarning,
        stacklevel=3,
    )


class BadImageWarning(UserWarning):
    """Some rows could not be read and were returned as NaN (``on_error="nan"``)."""


def _preview(rows: np.ndarray) -> str:
    shown = ", ".join(str(int(r)) for r in rows[:10])
    return f"[{shown}{', ...' if len(rows) > 10 else ''}]"

