"""Every form of image collection a data scientist holds -> a torch Dataset of RGB images.

Accepted ``X``
--------------
- A numeric batch of images: a NumPy array ``(N, H, W)`` or ``(N, H, W, C)``, or a torch tensor
  ``(N, H, W)`` or channel-first ``(N, C, H, W)``, with C in {1 (gray), 3 (RGB), 4 (RGBA)}.
- A sequence (list, tuple, 1-D object or string ndarray, pandas Series, one-column DataFrame)
  whose items are any mix of: file paths (``str``, ``pathlib.Path``), ``bytes`` of an encoded
  image, PIL images, and single image arrays ``(H, W)`` / ``(H, W, C)`` or tensors ``(H, W)`` /
  ``(C, H, W)`` of any size.

Pixel values of arrays and tensors
----------------------------------
``uint8`` is used as is. ``uint16`` is scaled by its range (``v / 257``, 65535 -> 255); ``int16``
must be non-negative and is scaled by 32767 -> 255 (the scikit-image convention); other integer
dtypes must lie in [0, 255]. Floats must be finite and lie in [0, 1] (``x * 255``, rounded), so a
uint8 image and the same image divided by 255 give the same features. Alpha is composited on white.
Non-native byte order (big-endian ``>u2``, as FITS and some TIFF readers return) is read by value:
``>u2`` follows the uint16 rule, ``>i2`` the int16 rule.

Decoding
--------
On CUDA, plain JPEG files and bytes are decoded on the GPU instead (:mod:`skdeep._jpeg`: the
same checks, orientation and errors; anything unusual comes back here). Otherwise
Pillow, raster formats only: EPS (which Pillow hands to Ghostscript, an external program) and WMF
(rendered by Windows) are never opened, whatever the file is named, and a PIL image of those
formats is refused. The file is opened in a context manager and ``load()`` forced inside it, so
truncation is seen (unless the process set ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES``, which is
respected). A path is opened without blocking, and read only if it is a regular file: a FIFO may
wait forever for a writer, and a device such as /dev/zero never ends. Of an animated or
multi-frame file (GIF, TIFF, WebP, APNG), the first frame is read. EXIF orientation is applied.
Modes map to RGB as follows: L, 1, P, CMYK, YCbCr, LAB, HSV by Pillow's conversion; RGBA, LA,
PA, RGBa and any image with a ``transparency`` key (P, L or RGB with tRNS) composited on white;
16-bit ``I;16*`` rescaled (``v / 257``) instead of Pillow's clamping; ``I`` (32-bit integer, how
Pillow opens 16-bit PGM and some 16-bit TIFF) read as 16-bit data, values outside [0, 65535]
refused; ``F`` (32-bit float) must lie in [0, 1], like float arrays. Images above
``PIL.Image.MAX_IMAGE_PIXELS`` are refused as decompression bombs, and so is any item (file,
bytes, PIL image or array) that the network's preprocessing would *resize* to more than that
many pixels before its centre crop: the shorter side is scaled to ``input_size / crop_pct``, so
a 100-byte PNG of 1 x 20,000 px would become 256 x 5,120,000 px.

Bad input
---------
Two kinds, kept apart on purpose:

- *Wrong data* -- what the caller computed: floats outside [0, 1] (0-255 floats), NaN/inf pixels,
  a wrong ndim, a channel count other than 1/3/4, an unsupported dtype or item type, an empty X,
  a single path or directory given as X, X/y length mismatch. Always a ``ValueError`` naming the
  row (and its pandas index label), whatever ``on_error`` says, raised while building the dataset,
  before any model work.
- *Messy data* -- what the caller collected: a missing path, a directory, FIFO, device or socket
  in place of a file, a symbolic-link loop, a file that is not an image (or is EPS/WMF), a
  truncated file, a decompression bomb (decoded or once resized), an unsupported or out-of-range
  image mode, a closed PIL image, a missing value (None/NaN/pd.NA) in a column of paths. These
  follow ``on_error``: ``"raise"`` raises :class:`BadImageError` (:class:`ImageNotFoundError`,
  also a ``FileNotFoundError``, for missing files) naming the row and the path; ``"nan"`` makes
  that row's output NaN and :func:`warn_bad_rows` lists the rows with their paths. Missing paths,
  directories, special files, link loops and missing values are found by one ``stat`` per path
  before the model runs (special files again when the file is opened, in case the path was
  replaced since); the rest when the file is decoded (in a DataLoader worker when
  ``num_workers > 0``; the message survives the worker re-raise).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import io
import json
import math
import os
import stat
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image, ImageFile, ImageOps
from torch.utils.data import Dataset, default_collate, get_worker_info

from ._defaults import ON_ERROR, SMALL_IMAGE_INPUT, SMALL_IMAGE_SIDE

_PATH_TYPES = (str, os.PathLike)
_BYTES_TYPES = (bytes, bytearray, memoryview)
_ARRAY_TYPES = (np.ndarray, torch.Tensor)
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa")
_CHANNELS = (1, 3, 4)
_SHOWN = 10  # bad rows spelled out in one message
_NAN_HINT = " (on_error='nan' gives such rows NaN instead)"
# Starts the note that carries an error's rows and paths out of a DataLoader worker (as JSON).
_WORKER_NOTE = "skdeep: rows and paths of this error: "
# Formats Pillow does not decode itself: EPS runs Ghostscript (an external program, on untrusted
# bytes), WMF needs the Windows GDI. Both are vector formats; the other plugins decode rasters.
_NOT_RASTER = frozenset({"EPS", "WMF"})


class _RowsAndPaths:
    """The ``rows`` and ``paths`` of a :class:`BadImageError` or a :class:`BadImageWarning`."""

    def __init__(self, *args: Any, rows: Sequence[int] = (),
                 paths: Sequence[str | None] = ()) -> None:
        super().__init__(*args)
        self.rows = [int(row) for row in rows]
        self.paths = list(paths)

    def __reduce__(self):
        # The arguments, then the attributes as state. Defined, not inherited: Dask pickles
        # exceptions through tblib, which rebuilds a class that has its own __init__ but no
        # __reduce__ by calling __new__ alone, and that fails for ImageNotFoundError (a
        # ValueError and an OSError).
        return type(self), self.args, self.__dict__


class BadImageError(_RowsAndPaths, ValueError):
    """An item of X cannot be turned into an image. The message names its row and path.

    Attributes
    ----------
    rows : list of int
        The rows of X that cannot be read (positions, as the message names them), ascending.
        Empty for an image read on its own, outside a collection.
    paths : list of str or None
        The path of each of those rows as given, or None for an item that is not a path (an
        array, bytes, a PIL image, a missing value).

    Raised inside a DataLoader worker, it is re-raised in the main process by PyTorch, which
    rebuilds it from a traceback dump; the original message is then put back in front, and the
    attributes are restored. It also pickles with its attributes (Dask, loky).
    """

    def __init__(self, *args: Any, rows: Sequence[int] = (),
                 paths: Sequence[str | None] = ()) -> None:
        if len(args) == 1 and isinstance(args[0], str):
            message, carried = _unwrap_worker_message(args[0], type(self))
            args = (message,)
            rows, paths = carried.get("rows", rows), carried.get("paths", paths)
        super().__init__(*args, rows=rows, paths=paths)


class ImageNotFoundError(BadImageError, FileNotFoundError):
    """An image path does not exist (both a :class:`BadImageError` and a ``FileNotFoundError``)."""


class BadImageWarning(_RowsAndPaths, UserWarning):
    """Some rows could not be read and were returned as NaN (``on_error="nan"``).

    Attributes
    ----------
    rows : list of int
        Those rows, ascending.
    paths : list of str or None
        The path of each of those rows as given, or None for an item that is not a path (or
        when the warning's caller did not know the items).
    reasons : list of str
        Why each of those rows could not be read: its message, naming the row and the path.
        The warning's text spells out the first few; ``skdeep extract`` and ``evaluate`` print
        every one, a line each.
    """

    def __init__(self, *args: Any, rows: Sequence[int] = (), paths: Sequence[str | None] = (),
                 reasons: Sequence[str] = ()) -> None:
        super().__init__(*args, rows=rows, paths=paths)
        self.reasons = list(reasons)


def _unwrap_worker_message(message: str, cls: type) -> tuple[str, dict]:
    """``torch.utils.data`` re-raises worker errors as ``cls("Caught ... Original Traceback ...")``.

    Returns the message with the original one-line message first and the worker traceback after
    it, and the attributes the worker attached in a note (:func:`_carry_out_of_worker`), as a dict
    (empty for any other message).
    """
    if not (message.startswith(f"Caught {cls.__name__} ") and "Traceback" in message):
        return message, {}
    prefix = f"{cls.__module__}.{cls.__qualname__}: "
    lines = message.splitlines()
    notes = [line for line in lines if line.startswith(_WORKER_NOTE)]
    carried = json.loads(notes[-1][len(_WORKER_NOTE):]) if notes else {}
    dump = "\n".join(line for line in lines if not line.startswith(_WORKER_NOTE))
    for line in reversed(lines):
        if line.startswith(prefix):
            where = message.split("\n", 1)[0].removeprefix(f"Caught {cls.__name__} ").rstrip(".")
            return f"{line[len(prefix):]} (raised {where})\n\n{dump}", carried
    return dump, carried


def _carry_out_of_worker(error: BadImageError) -> BadImageError:
    """In a DataLoader worker, write ``error``'s attributes into a note of its traceback.

    The DataLoader sends the main process the type and the formatted traceback of a worker's
    error, never the error itself; the note is how ``rows`` and ``paths`` get across (JSON, one
    line, any path). The main process reads it back and leaves it out of the message.
    """
    if get_worker_info() is not None:
        error.add_note(_WORKER_NOTE + json.dumps({"rows": error.rows, "paths": error.paths}))
    return error


# --- X as a whole ------------------------------------------------------------------------------


def as_items(X: Any) -> np.ndarray | list:
    """Validate ``X`` as a whole and return its images.

    Returns
    -------
    items : ndarray or list
        A validated numeric batch, channel-last ``(N, H, W)`` or ``(N, H, W, C)`` (a view of a
        channel-first tensor), or a list of single items (paths, bytes, PIL images, arrays).

    Raises
    ------
    ValueError
        For every problem of X as a whole (see the module docstring); per-item problems are
        left to :class:`ImageDataset`.
    """
    return _collect(X)[0]


def take_rows(X: Any, rows: Sequence[int] | np.ndarray) -> Any:
    """Rows ``rows`` of ``X``, in the form X came in (pandas, array, tensor or list)."""
    if hasattr(X, "iloc"):
        return X.iloc[rows]
    if isinstance(X, (np.ndarray, torch.Tensor)):
        return X[rows]
    return [X[int(row)] for row in rows]


def _collect(X: Any) -> tuple[np.ndarray | list, np.ndarray | None]:
    """``as_items`` plus the pandas index labels of the rows (None for a default RangeIndex)."""
    if isinstance(X, _PATH_TYPES):
        path = os.fspath(X)
        if os.path.isdir(path):
            raise ValueError(
                f"X is a directory ({path!r}), not a collection of images. Pass a list or pandas "
                "Series of its image files: skdeep.datasets.find_images(folder), or "
                "skdeep.datasets.load_image_folder(folder) for one sub-folder per class."
            )
        raise ValueError(
            f"X is a single path ({path!r}); wrap it in a list: [path]. For a glob pattern, "
            "pass sorted(glob.glob(pattern))."
        )
    if isinstance(X, (*_BYTES_TYPES, Image.Image)):
        raise ValueError(f"X is a single {type(X).__name__} image; wrap it in a list: [image].")
    labels = None
    if hasattr(X, "iloc") and hasattr(X, "columns"):  # pandas DataFrame
        if X.shape[1] != 1:
            raise ValueError(
                f"X is a DataFrame with {X.shape[1]} columns {list(X.columns)[:10]}; pass the one "
                "column that holds the images, e.g. X['path'], or route it with ColumnTransformer."
            )
        X = X.iloc[:, 0]
    if hasattr(X, "iloc") and hasattr(X, "index"):  # pandas Series
        index = X.index
        if not index.equals(_range_index(len(index))):
            labels = index.tolist()  # Python scalars: messages read 9, not np.int64(9)
        X = X.to_numpy()
    if isinstance(X, torch.Tensor):
        return _validate_batch(_tensor_to_numpy(X), channel_first=True), labels
    if isinstance(X, np.ndarray):
        if X.dtype.kind in "OUS":
            X = _sequence_array(X)
        else:
            return _validate_batch(X, channel_first=False), labels
    if not isinstance(X, Sequence):
        raise ValueError(
            f"X of type {type(X).__name__} is not a supported collection of images: pass an "
            "array or tensor of images, or a list / Series of paths, bytes, PIL images or arrays."
        )
    if len(X) == 0:
        raise ValueError("X is empty: there are no images to transform.")
    return list(X), labels


def _range_index(n: int) -> Any:
    import pandas as pd

    return pd.RangeIndex(n)


def _sequence_array(X: np.ndarray) -> list:
    """A 1-D (or one-column) array of paths / bytes / images -> list of items."""
    if X.dtype.kind == "S":
        raise ValueError(
            "X is a NumPy byte-string array (dtype 'S'), which drops trailing zero bytes: pass "
            "paths as str, or encoded images as a list of bytes objects."
        )
    if X.ndim == 2 and X.shape[1] == 1:
        X = X[:, 0]
    if X.ndim != 1:
        raise ValueError(
            f"X is a {X.dtype} array of shape {X.shape}: a sequence of images must be 1-D. For a "
            "batch of images stored as objects, build a numeric array with np.stack(images)."
        )
    return X.tolist() if X.dtype.kind == "U" else list(X)


def _tensor_to_numpy(X: torch.Tensor) -> np.ndarray:
    if X.dtype in (torch.bfloat16, torch.float16):
        X = X.float()
    if X.dtype == torch.bool:
        raise ValueError("X is a boolean tensor; convert it to uint8 (0 and 255) first.")
    return X.numpy(force=True)


def _native(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` in native byte order, same values (``>u2`` must follow the uint16 rule)."""
    return pixels if pixels.dtype.isnative else pixels.astype(pixels.dtype.newbyteorder("="))


def _validate_batch(X: np.ndarray, channel_first: bool) -> np.ndarray:
    """Whole-array checks of a numeric batch (cheap); returns it channel-last, in native order."""
    X = _native(X)
    shape = X.shape
    layout = "(N, C, H, W) tensor" if channel_first else "(N, H, W, C) array"
    if len(shape) == 0 or shape[0] == 0:
        raise ValueError("X is empty: there are no images to transform.")
    if len(shape) == 2:
        raise ValueError(
            f"X has shape {shape}: 2-D input is not a batch of images. {_reshape_hint(shape)} "
            "A single gray image is X[None]; a table of numbers is not images."
        )
    if len(shape) not in (3, 4):
        raise ValueError(f"X has shape {shape}: expected (N, H, W) or an {layout}.")
    if len(shape) == 3 and not channel_first and shape[-1] in (3, 4) and shape[-2] > 4:
        raise ValueError(
            f"X has shape {shape}: this looks like one color image (H, W, C), not a batch of gray "
            "images (N, H, W) that are only 3 or 4 pixels wide; pass X[None]."
        )
    if len(shape) == 4:
        channels = shape[1] if channel_first else shape[3]
        if channels not in _CHANNELS:
            other = shape[3] if channel_first else shape[1]
            hint = ""
            if other in _CHANNELS:
                hint = (" It looks channel-last: use X.permute(0, 3, 1, 2)." if channel_first
                        else " It looks channel-first: use np.moveaxis(X, 1, -1).")
            raise ValueError(
                f"X has shape {shape}: {channels} channels in an {layout}; expected 1 (gray), "
                f"3 (RGB) or 4 (RGBA).{hint}"
            )
    if 0 in shape[1:]:
        raise ValueError(f"X has shape {shape}: images must not be empty.")
    _check_values(X, "X", rows=True)
    return np.moveaxis(X, 1, -1) if channel_first and X.ndim == 4 else X


def _reshape_hint(shape: tuple[int, ...]) -> str:
    """How to turn rows of flattened images (``(N, 784)``, MNIST's layout) back into images."""
    width = shape[1]
    side = math.isqrt(width)
    if side * side == width:
        return f"If each row is a flattened {side}x{side} gray image, pass X.reshape(-1, {side}, {side})."
    color = math.isqrt(width // 3)
    if width % 3 == 0 and color * color * 3 == width:
        return (f"If each row is a flattened {color}x{color} RGB image, pass "
                f"X.reshape(-1, {color}, {color}, 3) (pixel by pixel) or "
                f"np.moveaxis(X.reshape(-1, 3, {color}, {color}), 1, -1) (plane by plane, as CIFAR).")
    return ("If each row is a flattened image, pass X.reshape(-1, H, W) (gray) or "
            f"X.reshape(-1, H, W, 3) (RGB), with H * W (* 3) = {width}.")


# How messages and error attributes number the rows of X: (first row's number, words after each
# number). (0, "") is X's own positions; skdeep.dask embeds a slice of a larger collection and
# names rows within the whole of it (see numbered_rows).
_ROW_NUMBERING: contextvars.ContextVar[tuple[int, str]] = contextvars.ContextVar(
    "skdeep_row_numbering", default=(0, ""))


@contextlib.contextmanager
def numbered_rows(first: int = 0, suffix: str = "") -> Iterator[None]:
    """Inside the block, rows of X are named ``first + position`` followed by ``suffix``.

    For code that embeds one slice of a larger collection (a Dask block starting at row
    ``first``; a DataFrame partition, ``suffix=" of partition 3"``): the messages, the ``rows``
    of :class:`BadImageError` and :class:`BadImageWarning` and the datasets built inside the
    block (also in DataLoader workers, which receive them pickled) then name the rows as the
    caller knows them, with no rewriting of messages afterwards.

    Examples
    --------
    >>> import numpy as np
    >>> with numbered_rows(100):
    ...     try:
    ...         as_items(np.full((3, 4, 4), 2.0))
    ...     except ValueError as exc:
    ...         print(str(exc)[:31])
    X has, in rows [100, 101, 102],
    """
    token = _ROW_NUMBERING.set((int(first), suffix))
    try:
        yield
    finally:
        _ROW_NUMBERING.reset(token)


def _numbered(positions: Sequence[int] | np.ndarray, numbering: tuple[int, str],
              limit: int = _SHOWN) -> str:
    """``"[100, 101]"`` (plus the suffix) for positions 0 and 1 under ``numbering``."""
    first, suffix = numbering
    return f"{preview([first + int(p) for p in positions], limit)}{suffix}"


def _check_values(pixels: np.ndarray, where: str, rows: bool) -> None:
    """Refuse pixel values that cannot be mapped to 8 bits without guessing.

    ``rows=True``: ``pixels`` has a leading batch axis, and messages name the offending rows.
    """
    kind, dtype = pixels.dtype.kind, pixels.dtype
    if kind == "b":
        raise ValueError(f"{where} is a boolean array; convert it to uint8 (0 and 255) first.")
    if kind not in "uif":
        raise ValueError(f"{where} has dtype {dtype}; images must be integers or floats.")
    if dtype in (np.uint8, np.uint16):
        return
    flat = pixels.reshape(len(pixels), -1) if rows else pixels.reshape(1, -1)
    if kind == "f":
        finite = np.isfinite(flat).all(axis=1)
        if not finite.all():
            raise ValueError(f"{_where(where, rows, ~finite)} NaN or infinite pixels.")
    low, high = flat.min(axis=1), flat.max(axis=1)
    if kind == "f":
        bad, allowed = (low < 0) | (high > 1), "[0, 1]"
        hint = _float_scale_hint(float(low.min()), float(high.max()))
    elif dtype == np.int16:
        bad, allowed = low < 0, "[0, 32767]"
        hint = "int16 images are scaled by 32767 and must not be negative."
    else:
        bad, allowed = (low < 0) | (high > 255), "[0, 255]"
        hint = (f"{dtype} images must lie in [0, 255]; for 16-bit data use "
                ".astype(np.uint16) (scaled by 65535).")
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        start, suffix = _ROW_NUMBERING.get()
        raise ValueError(
            f"{_where(where, rows, bad)} {dtype} values outside {allowed} (row {start + first}"
            f"{suffix} spans "
            f"[{low[first]:g}, {high[first]:g}]). {hint}" if rows else
            f"{where} has {dtype} values in [{low[0]:g}, {high[0]:g}], outside {allowed}. {hint}"
        )


# The tops of the usual pixel scales: 4-bit (sklearn's load_digits: 0-16), 8, 12 and 16 bits.
_SCALE_TOPS = (16, 255, 4095, 65535)


def _float_scale_hint(low: float, high: float) -> str:
    """How to bring floats spanning [low, high] to [0, 1], from that range (not always 255)."""
    if low < 0:
        if low >= -1 and high <= 1:
            return "Float images must be in [0, 1]: for data in [-1, 1], use (X + 1) / 2."
        return ("Float images must be in [0, 1]: negative values look normalised (mean "
                "subtracted); pass the images before normalisation, as skdeep normalises for the "
                "network itself, or rescale with (X - X.min()) / (X.max() - X.min()).")
    top = next((top for top in _SCALE_TOPS if high <= top), None)
    if top is None:
        return f"Float images must be in [0, 1]: the largest value is {high:g}; divide by X.max()."
    known = {16: " (the scale of sklearn's load_digits)", 255: " (8-bit data; or pass it as "
             "uint8)"}.get(top, f" ({top.bit_length()}-bit data)")
    return (f"Float images must be in [0, 1]: the largest value is {high:g}, so divide by {top} "
            f"if 0-{top} is the scale{known}, or by X.max().")


def _where(where: str, rows: bool, mask: np.ndarray) -> str:
    if not rows:
        return f"{where} has"
    return f"{where} has, in rows {_numbered(np.flatnonzero(mask), _ROW_NUMBERING.get())},"


# --- X/y ---------------------------------------------------------------------------------------


def _check_length(n_images: int, n_targets: int) -> None:
    if n_images != n_targets:
        raise ValueError(
            f"X has {n_images} images but y has {n_targets} targets; they must match one to one."
        )


# --- one item -> RGB PIL image -----------------------------------------------------------------


def check_labels(y: Any, n_items: int) -> np.ndarray:
    """``y`` as a 1-D array of one label per image, or a clear error (shape, length, missing).

    The one check of ``evaluate`` and ``audit``, before any image is read.

    Examples
    --------
    >>> check_labels(["cat", "dog"], 2).tolist()
    ['cat', 'dog']
    """
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise ValueError(f"y must be one label per image (1-D); got shape {labels.shape}.")
    if len(labels) != n_items:
        raise ValueError(f"X has {n_items} images but y has {len(labels)} labels; they must match.")
    missing = pd.isna(labels)
    if missing.any():
        raise ValueError(f"y has missing labels in rows {preview(np.flatnonzero(missing))}.")
    return labels


def decode(data: str | os.PathLike | bytes) -> Image.Image:
    """Open an encoded image (a path or bytes) fully, apply EXIF orientation, return it as RGB.

    Only raster formats are tried (never EPS, which Pillow renders by running Ghostscript, nor
    WMF), so an EPS file, whatever its name, raises ``PIL.UnidentifiedImageError``. The file is
    opened in a context manager with ``load()`` forced inside it, so a truncated file raises
    here, and images above ``PIL.Image.MAX_IMAGE_PIXELS`` are refused. A path is opened by
    :func:`open_regular` (:class:`BadImageError` for a FIFO, a device or a socket). Of an
    animated or multi-frame image (GIF, TIFF, WebP...), the first frame is read.
    """
    if isinstance(data, _BYTES_TYPES):
        return _decode(io.BytesIO(bytes(data)))
    path = os.fspath(data)
    with open_regular(path) as handle:
        try:
            return _decode(handle)
        except Image.UnidentifiedImageError:
            # Pillow names the file object it was given; name the path instead.
            raise Image.UnidentifiedImageError(f"cannot identify image file {path!r}") from None


def encoded_size(data: str | os.PathLike | bytes) -> tuple[int, int]:
    """``(width, height)`` of an encoded image (a path or bytes), from its header only.

    Opened as :func:`decode` opens it (raster formats only, never blocking on a special file),
    without decoding the pixels.

    Raises
    ------
    BadImageError, OSError, PIL.UnidentifiedImageError
        As :func:`decode`.
    """
    if isinstance(data, _BYTES_TYPES):
        with Image.open(io.BytesIO(bytes(data)), formats=_raster_formats()) as image:
            return image.size
    with open_regular(data) as handle, Image.open(handle, formats=_raster_formats()) as image:
        return image.size


def auto_image_size(items: np.ndarray | list) -> int | None:
    """The network input side for ``image_size="auto"``: one rule for every command.

    Small images (at most :data:`SMALL_IMAGE_SIDE` pixels on their longest side, such as 28x28
    digits) are fed to the network at :data:`SMALL_IMAGE_INPUT` pixels, much faster than at the
    weights' own size and rarely less accurate; larger images at the weights' own size (``None``).
    For a list, every item is looked at, files by their header only (a FIFO or an EPS file is
    refused, never opened), until one larger than :data:`SMALL_IMAGE_SIDE` is found: the answer
    depends on the images, never on their order (looking at the first 16 alone embedded a
    folder of photos at 96 px when its first 16 names were thumbnails). A collection of photos
    stops at its first photo; only an all-small collection has every header read, at about
    30 us a file. Unreadable items are skipped, and left to the embedding's own checks.

    Parameters
    ----------
    items : ndarray or list
        What :func:`as_items` returns: a channel-last batch, or a list of single items.

    Returns
    -------
    int or None
        :data:`SMALL_IMAGE_INPUT`, or ``None`` for the weights' own input size.

    Examples
    --------
    >>> import numpy as np
    >>> from skdeep._inputs import auto_image_size
    >>> auto_image_size(np.zeros((2, 28, 28), np.uint8))
    96
    >>> auto_image_size(np.zeros((2, 300, 200, 3), np.uint8)) is None
    True
    """
    if isinstance(items, np.ndarray):
        side = max(items.shape[1:3])
    else:
        side = None
        for item in items:
            found = _longest_side(item)
            if found is not None and found > SMALL_IMAGE_SIDE:
                return None  # one large image decides: the weights' own size
            side = found if side is None or (found or 0) > side else side
        if side is None:  # nothing readable: the embedding reports it
            return None
    return SMALL_IMAGE_INPUT if side <= SMALL_IMAGE_SIDE else None


def _longest_side(item: Any) -> int | None:
    """The longest side of one item, reading only the header of a file (None if unreadable)."""
    try:
        if isinstance(item, _ARRAY_TYPES):
            shape = tuple(item.shape)
            channel_first = isinstance(item, torch.Tensor) and len(shape) == 3
            return max(shape[1:3]) if channel_first else max(shape[:2])
        if isinstance(item, Image.Image):
            return max(item.size)
        return max(encoded_size(item))  # a FIFO or an EPS is refused here, never opened
    except Exception:  # an unreadable image is reported (or skipped) by the embedding step
        return None


def open_regular(path: str | os.PathLike) -> io.BufferedReader:
    """Open ``path`` for binary reading if it is a regular file, without ever blocking.

    ``ImageDataset`` stats every path first, but a path may be replaced (by a FIFO, say) before it
    is opened. Opening a FIFO waits for a writer, possibly forever, unless ``O_NONBLOCK`` is given,
    and a device such as ``/dev/zero`` never ends; so the file is opened with ``O_NONBLOCK`` and
    the open file itself is checked (``fstat``) before anything is read.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    file object
        Opened in ``"rb"`` mode; the caller closes it (``with open_regular(path) as f:``).

    Raises
    ------
    BadImageError
        If ``path`` is a FIFO, a character or block device, a socket or another special file.
    OSError
        If it cannot be opened (``FileNotFoundError``, ``IsADirectoryError``, ...).
    """
    path = os.fspath(path)
    nonblocking = getattr(os, "O_NONBLOCK", 0)  # POSIX; Windows has no FIFOs to open
    handle = open(path, "rb", opener=lambda name, flags: os.open(name, flags | nonblocking))
    try:
        problem = _special_file(path, os.fstat(handle.fileno()).st_mode)
        if problem:
            raise BadImageError(problem)
    except BaseException:
        handle.close()
        raise
    return handle


def _decode(source: io.BufferedIOBase) -> Image.Image:
    """The first frame of the encoded image in ``source`` (an open binary file), as RGB."""
    with warnings.catch_warnings():
        # Refused below with a clearer message; Pillow itself raises above twice the limit.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        opened = Image.open(source, formats=_raster_formats())
    with opened as image:
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and image.width * image.height > limit:
            raise BadImageError(
                f"decompression bomb refused: {image.width}x{image.height} = "
                f"{image.width * image.height:,} pixels exceeds PIL.Image.MAX_IMAGE_PIXELS "
                f"({limit:,}); raise that limit if you trust the file"
            )
        image.load()
        rgb = to_rgb(ImageOps.exif_transpose(image))
        return rgb.copy() if rgb is image else rgb  # closing `image` must not invalidate it


def _raster_formats() -> list[str]:
    """Every format Pillow can open, except those it does not decode itself (``_NOT_RASTER``).

    Listed at each call, after ``Image.init()``, so plugins registered later (pillow-heif...)
    are included.
    """
    Image.init()
    return [name for name in Image.ID if name not in _NOT_RASTER]


def load_pil(image: Image.Image) -> Image.Image:
    """A caller's PIL image with its pixels read; a closed or non-raster image is refused.

    Whatever reads the pixels of a PIL image it was given (decoding, the feature cache's key)
    loads it through here: an EPS image is refused before Pillow could run Ghostscript on it.

    Raises
    ------
    BadImageError
        For an EPS or WMF image (rendered by an external program), or a closed one.
    """
    if image.format in _NOT_RASTER:
        raise BadImageError(
            f"it is a {image.format} image, which Pillow renders by running an external program; "
            "skdeep reads raster images only. Rasterize it first if you trust it "
            "(image.convert('RGB'))"
        )
    # A file image closed before its pixels were read has lost its file (Pillow would fail an
    # assertion); one closed after has lost its pixels (Pillow raises "Operation on closed image").
    closed = isinstance(image, ImageFile.ImageFile) and bool(image.tile) and image.fp is None
    if not closed:
        try:
            image.load()
        except ValueError as exc:
            if "closed" not in str(exc):
                raise
            closed = True
    if closed:
        raise BadImageError("it is closed; pass an open image or its path")
    return image


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB: transparency on white, deep images rescaled (never clamped)."""
    if image.mode in ("I", "F") or image.mode.startswith("I;16"):
        image = _deep_to_gray(image)
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "RGB":
        return image
    return image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX


def _deep_to_gray(image: Image.Image) -> Image.Image:
    """16-bit (I;16*), 32-bit integer (I, read as 16-bit data) and float (F) gray -> 8-bit L."""
    values = np.asarray(image)
    if image.mode == "F":
        if not np.isfinite(values).all():
            raise BadImageError("a float ('F' mode) image has NaN or infinite pixels")
        low, high, top = float(values.min()), float(values.max()), 1.0
    else:
        low, high, top = int(values.min()), int(values.max()), 65535
    if low < 0 or high > top:
        raise BadImageError(
            f"a mode {image.mode!r} image has values in [{low:g}, {high:g}]; skdeep reads "
            + ("float images as [0, 1]" if top == 1.0 else "32-bit integer images as 16-bit data "
               "[0, 65535]")
            + ", and does not clip"
        )
    # Scaled by the rule of arrays of that dtype: a file and its pixels give the same features.
    pixels = values.astype(np.float32 if image.mode == "F" else np.uint16)
    return Image.fromarray(_to_uint8(pixels), "L")


def array_to_image(array: np.ndarray | torch.Tensor, channel_first: bool = False,
                   where: str = "the image") -> Image.Image:
    """One image array ``(H, W)`` / ``(H, W, C)`` (``(C, H, W)`` if channel-first) -> RGB PIL image.

    Raises a ``ValueError`` naming ``where`` for a wrong shape or pixel values (see
    :func:`_check_values`).
    """
    pixels = _image_array(array, channel_first, where)
    _check_values(pixels, where, rows=False)
    return _pixels_to_rgb(pixels)


def _image_array(array: np.ndarray | torch.Tensor, channel_first: bool, where: str) -> np.ndarray:
    """Shape checks of one image; returns it channel-last, as NumPy in native byte order."""
    array = _tensor_to_numpy(array) if isinstance(array, torch.Tensor) else _native(array)
    shape = array.shape
    layout = "(H, W) or (C, H, W)" if channel_first else "(H, W) or (H, W, C)"
    if array.ndim not in (2, 3):
        raise ValueError(f"{where} has shape {shape}; an image must be {layout}.")
    if array.ndim == 3:
        channels, other = (shape[0], shape[-1]) if channel_first else (shape[-1], shape[0])
        if channels not in _CHANNELS:
            hint = ""
            if other in _CHANNELS:
                hint = (" It looks channel-last: use .permute(2, 0, 1)." if channel_first
                        else " It looks channel-first: use np.moveaxis(image, 0, -1).")
            raise ValueError(
                f"{where} has shape {shape}: {channels} channels, expected 1 (gray), 3 (RGB) or "
                f"4 (RGBA) in {layout} layout.{hint}"
            )
        if channel_first:
            array = np.moveaxis(array, 0, -1)
    if 0 in array.shape:
        raise ValueError(f"{where} has shape {shape}: an image must not be empty.")
    return array


def _pixels_to_rgb(pixels: np.ndarray) -> Image.Image:
    """A validated (H, W) / (H, W, 1|3|4) array -> RGB PIL image (8 bits, alpha on white)."""
    if pixels.ndim == 3 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    pixels = np.ascontiguousarray(_to_uint8(pixels))
    mode = "L" if pixels.ndim == 2 else ("RGB" if pixels.shape[-1] == 3 else "RGBA")
    return to_rgb(Image.fromarray(pixels, mode))


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    dtype = pixels.dtype
    if dtype == np.uint8:
        return pixels
    if dtype == np.uint16:
        scaled = pixels / 257.0
    elif dtype == np.int16:
        scaled = pixels * (255.0 / 32767.0)
    elif dtype.kind == "f":  # in float64: 0.3 (float32) * 255 is 76.500003, not 76.5 -> 76
        scaled = pixels.astype(np.float64) * 255.0
    else:  # other integers, already checked to lie in [0, 255]
        return pixels.astype(np.uint8)
    return np.rint(scaled).astype(np.uint8)


# --- one item: what it is, how it is named --------------------------------------------------


def _is_missing(item: Any) -> bool:
    """None, NaN, pandas NA/NaT: a hole in a column of paths."""
    if item is None or (isinstance(item, (float, np.floating)) and math.isnan(item)):
        return True
    pandas = sys.modules.get("pandas")
    return pandas is not None and (item is pandas.NA or item is pandas.NaT)


def _is_encoded(item: Any) -> bool:
    """Items read by decoding (paths, bytes, PIL images): their failures follow ``on_error``."""
    return isinstance(item, (*_PATH_TYPES, *_BYTES_TYPES, Image.Image))


def describe(item: Any) -> str:
    """How an item is named in messages: its path, or its kind and shape."""
    if isinstance(item, _PATH_TYPES):
        return repr(os.fspath(item))
    if isinstance(item, _ARRAY_TYPES):
        return f"{type(item).__name__} of shape {tuple(item.shape)}"
    if isinstance(item, _BYTES_TYPES):
        return f"bytes item ({len(item)} bytes)"
    if isinstance(item, Image.Image):
        name = getattr(item, "filename", "")
        return f"PIL image {name!r}" if name else f"PIL {item.mode} image {item.size}"
    return repr(item)[:60]


# --- the Dataset -------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """Row ``i`` of X -> ``(uint8 CHW tensor, error message or "")``, transformed for the network.

    Building it validates X (wrong data raises) and stats every path (missing files, directories
    and missing values are found before any model work). Under ``on_error="nan"`` a bad row
    yields a blank tensor and its error message, and the caller fills its output row with NaN.
    Picklable, so decoding and resizing can run in DataLoader workers.

    Parameters
    ----------
    X : any accepted form (see the module docstring)
    transform : callable
        RGB PIL image -> uint8 CHW tensor of ``input_size``. If it has a
        ``resized_size((width, height)) -> (width, height)`` method (as
        :func:`~skdeep._preprocessing.geometric_transform` has), an image it would resize to
        more than ``PIL.Image.MAX_IMAGE_PIXELS`` is a bad row, found before transforming it.
    input_size : tuple of int
        ``(C, H, W)`` of the transform's output, for blank rows.
    on_error : {"raise", "nan"}
    targets : array-like, optional
        One per row (checked), returned as a third element, for training.
    """

    def __init__(self, X: Any, transform: Callable, input_size: tuple[int, int, int],
                 on_error: str = "raise", targets: Any = None) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}; got {on_error!r}.")
        self.items, self.labels = _collect(X)
        self.transform = transform
        self.input_size = tuple(input_size)
        self.on_error = on_error
        self.numbering = _ROW_NUMBERING.get()  # kept: DataLoader workers name rows the same way
        self.targets = None
        if targets is not None:
            self.targets = np.asarray(targets)
            _check_length(len(self.items), len(self.targets))
        self.bad = self._inspect() if isinstance(self.items, list) else {}

    def __len__(self) -> int:
        return len(self.items)

    def view(self, transform: Callable, *, targets: bool = True,
             input_size: tuple[int, int, int] | None = None) -> ImageDataset:
        """The same rows through another ``transform`` (and without targets if ``targets=False``).

        Items and the checks already made are shared, not repeated: training reads the
        validation rows of its dataset through the evaluation transform this way.
        ``input_size`` is the new transform's output size, when it differs (for blank rows).
        """
        view = copy.copy(self)
        view.transform = transform
        if input_size is not None:
            view.input_size = tuple(input_size)
        if not targets:
            view.targets = None
        return view

    @property
    def has_encoded(self) -> bool:
        """Whether some rows are files or bytes to decode (the work DataLoader workers share)."""
        return isinstance(self.items, list) and any(
            isinstance(item, (*_PATH_TYPES, *_BYTES_TYPES)) for item in self.items)

    def row_number(self, index: int) -> int:
        """The number messages give row ``index`` (its position, unless :func:`numbered_rows`)."""
        return self.numbering[0] + index

    def row_name(self, index: int) -> str:
        """``"row 3"``, or ``"row 3 (index 'cat_017')"`` when X had a pandas index."""
        name = f"row {self.row_number(index)}{self.numbering[1]}"
        if self.labels is None:
            return name
        return f"{name} (index {self.labels[index]!r})"

    def path(self, index: int) -> str | None:
        """Row ``index``'s path as given, or None when its item is not a path."""
        item = self.items[index]
        return os.fspath(item) if isinstance(item, _PATH_TYPES) else None

    def _inspect(self) -> dict[int, str]:
        """Cheap per-item checks, before any model work.

        Wrong data raises at once; a missing value, a missing path or a directory is recorded as
        a bad row (all raised together under "raise").
        """
        bad: dict[int, str] = {}
        not_found: set[int] = set()
        for index, item in enumerate(self.items):
            name = self.row_name(index)
            if _is_missing(item):
                bad[index] = f"{name}: missing value ({item!r}) instead of an image"
            elif isinstance(item, _PATH_TYPES):
                reason = _path_problem(os.fspath(item))
                if reason:
                    bad[index] = f"{name}: {reason}"
                    if reason.startswith("image file not found"):
                        not_found.add(index)
            elif isinstance(item, _ARRAY_TYPES):
                self.items[index] = _checked_array(item, name)
            elif not _is_encoded(item):
                raise ValueError(
                    f"{name}: {type(item).__name__} {describe(item)} is not an image; items must "
                    "be paths, bytes, PIL images, or image arrays/tensors."
                )
        if bad and self.on_error == "raise":
            rows = sorted(bad)
            listing = "; ".join(bad[index] for index in rows[:_SHOWN])
            more = f"; and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else ""
            heading = "" if len(rows) == 1 else f"{len(rows)} images cannot be read: "
            error = ImageNotFoundError if not_found == set(rows) else BadImageError
            raise error(heading + listing + more + _NAN_HINT,
                        rows=[self.row_number(index) for index in rows],
                        paths=[self.path(index) for index in rows])
        return bad

    def __getitem__(self, index: int):
        error = self.bad.get(index, "")
        image = None
        if not error:
            try:
                rgb = self._read(index)
            except MemoryError:
                raise
            except Exception as exc:  # Pillow raises many types for corrupt files
                error, kind = self._read_error(index, exc)
                if self.on_error == "raise":
                    raise _carry_out_of_worker(
                        kind(error + _NAN_HINT, rows=[self.row_number(index)],
                             paths=[self.path(index)])) from exc
            else:  # outside the try: a failing transform is a bug, not a bad file
                image = self.transform(rgb)
        if image is None:
            image = torch.zeros(self.input_size, dtype=torch.uint8)
        if self.targets is None:
            return image, error
        return image, error, self.targets[index]

    def __getitems__(self, indices: list[int]) -> list | StackedRows:
        """Rows ``indices`` at once (the DataLoader asks for a batch this way).

        An array of images read through a transform that takes arrays (the deferred resize:
        ``transform.from_arrays``, NHWC uint8 -> NCHW tensor) is converted as one slice, with
        the rules each row would follow (:func:`rgb_arrays`), and handed over already collated
        (:func:`collate_rows`): no per-row Python work, which caps a fast GPU otherwise. Any
        other case, or one needing per-row care (alpha, a size refused), reads row by row.

        A transform that reads batches itself (``transform.read_rows(dataset, indices) ->
        (batch, messages)``: the JPEG decoding on the device, :mod:`skdeep._jpeg`) is handed
        the rows at inference, and its batch is handed over as it is.
        """
        read_rows = getattr(self.transform, "read_rows", None)
        if read_rows is not None and self.targets is None:
            return StackedRows(read_rows(self, indices))
        from_arrays = getattr(self.transform, "from_arrays", None)
        if from_arrays is None or self.targets is not None or not isinstance(self.items, np.ndarray):
            return [self[index] for index in indices]
        first = indices[0] if len(indices) else 0
        consecutive = list(indices) == list(range(first, first + len(indices)))
        # Consecutive rows (inference reads in order) are a view: no copy before pinning.
        pixels = rgb_arrays(self.items[first:first + len(indices)] if consecutive
                            else self.items[indices])
        if pixels is None:
            return [self[index] for index in indices]
        resized_size = getattr(self.transform, "resized_size", None)
        if resized_size is not None:
            size = (pixels.shape[2], pixels.shape[1])
            try:
                _check_resized(size, resized_size(size))
            except BadImageError:  # every row is refused: each says so, under on_error
                return [self[index] for index in indices]
        return StackedRows((from_arrays(pixels), [""] * len(indices)))

    def _read(self, index: int) -> Image.Image:
        """Row ``index`` as an RGB PIL image, refused if the transform would resize it to a bomb.

        Checked here, not in ``__init__``: the transform may be swapped after building (the
        classifier evaluates its validation rows with the eval transform).
        """
        item = self.items[index]
        # Arrays were validated in __init__ (wrong data already raised): conversion cannot fail.
        rgb = _pixels_to_rgb(item) if isinstance(item, np.ndarray) else load_item(item)
        resized_size = getattr(self.transform, "resized_size", None)
        if resized_size is not None:
            _check_resized(rgb.size, resized_size(rgb.size))
        return rgb

    def _read_error(self, index: int, exc: Exception) -> tuple[str, type[BadImageError]]:
        name, item = self.row_name(index), describe(self.items[index])
        if isinstance(exc, FileNotFoundError):
            return f"{name}: image file not found: {item}", ImageNotFoundError
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if not isinstance(exc, BadImageError):
            reason = f"{type(exc).__name__}: {reason}"
        return f"{name}: cannot read image {item}: {reason}", BadImageError



class StackedRows(tuple):
    """A batch already collated by :meth:`ImageDataset.__getitems__`: ``(images, messages)``."""


def collate_rows(data: list | StackedRows) -> Any:
    """The DataLoader's ``collate_fn``: a :class:`StackedRows` as it is, else torch's default."""
    return tuple(data) if isinstance(data, StackedRows) else default_collate(data)


def rgb_arrays(pixels: np.ndarray) -> np.ndarray | None:
    """A validated ``(N, H, W[, C])`` batch -> ``(N, H, W, 3)`` uint8, as each row is converted.

    The rules of :func:`array_to_image` for a whole slice: the dtype's scaling, gray repeated
    to RGB. None for RGBA, whose compositing on white is left to Pillow row by row.
    """
    if pixels.ndim == 4 and pixels.shape[-1] == 4:
        return None
    if pixels.ndim == 4 and pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    pixels = _to_uint8(pixels)
    if pixels.ndim == 3:
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    return np.ascontiguousarray(pixels)


def _check_resized(size: tuple[int, int], resized: tuple[int, int]) -> None:
    """Refuse an image the network's preprocessing would resize above ``MAX_IMAGE_PIXELS``.

    The decoded-size check cannot see it: 1 x 20,000 px is tiny, but scaling its shorter side to
    256 makes it 256 x 5,120,000 px (GBs and seconds, or a MemoryError) before the crop.
    """
    limit = Image.MAX_IMAGE_PIXELS
    pixels = resized[0] * resized[1]
    if limit is None or pixels <= limit:
        return
    (width, height), (new_width, new_height) = size, resized
    aspect = f"{width / height:g}:1" if width >= height else f"1:{height / width:g}"
    raise BadImageError(
        f"a {width}x{height} image (aspect ratio {aspect}) would be resized to "
        f"{new_width}x{new_height} = {pixels:,} pixels before its centre crop, above "
        f"PIL.Image.MAX_IMAGE_PIXELS ({limit:,}): refused as a decompression bomb. Crop it to "
        "a less elongated region first, or raise that limit if you trust it"
    )


def _path_problem(path: str) -> str:
    """Why a path cannot be an image file (one stat), or "" if it may be one."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        where = "" if os.path.isabs(path) else f" (relative to {os.getcwd()!r})"
        return f"image file not found: {path!r}{where}"
    except (OSError, ValueError) as exc:  # permission, name too long, NUL byte, symlink loop
        return f"cannot access {path!r}: {exc}"
    if stat.S_ISDIR(status.st_mode):
        return f"{path!r} is a directory, not an image file"
    return _special_file(path, status.st_mode)


_SPECIAL_FILES = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _special_file(path: str, mode: int) -> str:
    """Why a file of ``mode`` is not read (anything but a regular file), or ""."""
    if stat.S_ISREG(mode):
        return ""
    kind = next((name for test, name in _SPECIAL_FILES if test(mode)), "a special file")
    # A FIFO or a terminal may never send anything; /dev/zero never ends.
    return (f"{path!r} is {kind}, not an image file: skdeep reads regular files only, "
            "since reading this one could wait or run forever")


def _checked_array(item: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """A single image array of a list, validated (wrong data raises) and made channel-last."""
    pixels = _image_array(item, isinstance(item, torch.Tensor), name)
    _check_values(pixels, name, rows=False)
    return pixels


def load_item(item: Any) -> Image.Image:
    """Any accepted single item -> RGB PIL image."""
    if isinstance(item, (*_PATH_TYPES, *_BYTES_TYPES)):
        return decode(item)
    if isinstance(item, Image.Image):
        return to_rgb(ImageOps.exif_transpose(load_pil(item)))
    if isinstance(item, _ARRAY_TYPES):
        return array_to_image(item, channel_first=isinstance(item, torch.Tensor))
    raise BadImageError(f"{type(item).__name__} is not an image, path or bytes")


def warn_bad_rows(errors: dict[int, str], dataset: ImageDataset | None = None, *,
                  outcome: str = "their rows are NaN") -> None:
    """One :class:`BadImageWarning` that lists the unreadable rows, with their paths.

    Parameters
    ----------
    errors : dict of int to str
        ``{row: message}`` of the unreadable rows.
    dataset : ImageDataset, optional
        The rows' dataset: the warning's ``paths`` come from it (all None without it).
    outcome : str, default="their rows are NaN"
        What became of those rows, said after "could not be read; ".
    """
    if not errors:
        return
    positions = sorted(errors)
    numbering = dataset.numbering if dataset is not None else _ROW_NUMBERING.get()
    listing = "\n".join(f"  {errors[index]}" for index in positions[:_SHOWN])
    more = ""
    if len(positions) > _SHOWN:
        more = (f"\n  ... and {len(positions) - _SHOWN} more, rows "
                f"{_numbered(positions[_SHOWN:], numbering, 50)}")
    paths = [dataset.path(row) if dataset is not None else None for row in positions]
    warnings.warn(
        BadImageWarning(f"{len(positions)} image(s) could not be read; {outcome}:\n"
                        f"{listing}{more}", rows=[numbering[0] + row for row in positions],
                        paths=paths, reasons=[errors[index] for index in positions]),
        stacklevel=3,
    )


def preview(values: Sequence | np.ndarray, limit: int = _SHOWN) -> str:
    """``"[3, 7, ...]"``: the first ``limit`` of ``values`` for a message (``repr`` of each)."""
    shown = values[:limit]
    shown = shown.tolist() if isinstance(shown, np.ndarray) else list(shown)  # 3, not np.int64(3)
    return f"[{', '.join(map(repr, shown))}{', ...' if len(values) > limit else ''}]"
