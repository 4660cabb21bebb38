"""JPEG files and bytes decoded a batch at a time on the network's device (nvJPEG on CUDA).

On a GPU, Pillow decoding in DataLoader workers bounds JPEG files far below the network: on an
H200 with 16 cores, 1,780 img/s through Pillow in 8 workers, against 22,977 img/s for torchvision's
batched ``decode_jpeg(..., device="cuda")`` in the same run (``benchmarks/bench_gpu.py``). So on
CUDA the workers only *read* each JPEG (its bytes, and from its header its size, mode and EXIF
orientation, as Pillow reads them without decoding), and the inference loop's prepare step, a
batch ahead of the network, decodes the batch's bytes in one call on the device, applies each
orientation, and resizes and crops them there as arrays are (:class:`JpegOnDevice`).

Only the plain case goes that way: a file or bytes item that starts with the JPEG SOI marker
(``FF D8 FF``, whatever its name), ends with the EOI marker (``FF D9``, so that a truncated file
is left to Pillow, which refuses it), is a baseline or progressive JPEG that Pillow reads as
``RGB`` (YCbCr) or ``L``, and is within ``PIL.Image.MAX_IMAGE_PIXELS`` decoded and once resized.
Everything else (CMYK, an Adobe RGB JPEG, a PNG, a corrupt or unreadable file, a row already
known bad) is read by Pillow, exactly as without a GPU, in the worker; a JPEG that the device's
decoder refuses all the same is read by Pillow in the prepare step. So ``on_error`` and the
messages, naming the row and the path, are today's.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from ._device import CUDA_GRAPH_LOCK
from ._inputs import ImageDataset, open_regular
from ._preprocessing import TensorEvalTransform

try:  # torchvision 0.29 deprecates its decoders for TorchCodec's; absent, Pillow does it all
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # pragma: no cover - a future torchvision
    decode_jpeg = None

_SOI = b"\xff\xd8\xff"
_EOI = b"\xff\xd9"
#: Pillow modes the device decodes to the same RGB as Pillow (``L`` repeated to three channels).
_PLAIN_MODES = ("RGB", "L")
#: Encoded bytes read per batch at most: the rest of a batch of huge files goes to Pillow.
_BATCH_BYTES = 256 * 2**20
#: Decoded RGB bytes on the device at once at most (a part of a batch; the resize of a part
#: takes about 4x more in float, briefly): 256 MiB is 470 images of 500 x 375 px, or 7 of 12 MP.
_DECODE_BYTES = 256 * 2**20
_ORIENTATION = 0x0112  # the EXIF tag ImageOps.exif_transpose reads
_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"


def is_jpeg(head: bytes) -> bool:
    """Whether encoded data starts with the JPEG SOI marker (``FF D8 FF``).

    Examples
    --------
    >>> is_jpeg(bytes.fromhex("ffd8ffe0")), is_jpeg(bytes.fromhex("89504e47"))
    (True, False)
    """
    return head[:3] == _SOI


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """A ``(C, H, W)`` image as :func:`PIL.ImageOps.exif_transpose` turns it for ``orientation``.

    Orientations 2-8 flip, rotate or transpose (pixels moved, never changed); any other value,
    like Pillow, leaves the image as it is.

    Examples
    --------
    >>> import torch
    >>> image = torch.arange(6).reshape(1, 2, 3)
    >>> orient(image, 6)[0].tolist()  # 6: to be shown turned 90 degrees clockwise
    [[3, 0], [4, 1], [5, 2]]
    """
    if orientation == 2:
        return image.flip(-1)
    if orientation == 3:
        return image.flip(-2, -1)
    if orientation == 4:
        return image.flip(-2)
    if orientation == 5:
        return image.transpose(-2, -1)
    if orientation == 6:
        return torch.rot90(image, -1, (-2, -1))
    if orientation == 7:
        return image.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return torch.rot90(image, 1, (-2, -1))
    return image


def decode_jpegs(encoded: Sequence[torch.Tensor], device: torch.device
                 ) -> list[torch.Tensor | None]:
    """Each JPEG (a 1-D uint8 CPU tensor) as an RGB uint8 ``(3, H, W)`` tensor on ``device``.

    One call for the whole list (nvJPEG's batched decoder on CUDA; libjpeg, image by image, on
    the CPU), without EXIF orientation (see :func:`orient`). The decoder returns nothing of a
    list with one image it cannot decode, so after a failure each image is tried alone; an
    image that fails alone is None (and is read by Pillow). ``torch.OutOfMemoryError`` is
    raised, not taken for a bad image, where the decoder lets it through (torchvision's CUDA
    decoder turns every error into a ``RuntimeError``: its images then go to Pillow).

    Examples
    --------
    >>> import io, torch
    >>> from PIL import Image
    >>> buffer = io.BytesIO()
    >>> Image.new("L", (4, 2)).save(buffer, "JPEG")
    >>> good = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
    >>> [None if image is None else tuple(image.shape)
    ...  for image in decode_jpegs([good, good[:20]], torch.device("cpu"))]
    [(3, 2, 4), None]
    """
    if not encoded:
        return []
    try:
        return list(_decode(list(encoded), device))
    except torch.OutOfMemoryError:
        raise
    except RuntimeError:
        if len(encoded) == 1:
            return [None]
    return [decode_jpegs([one], device)[0] for one in encoded]


def _decode(encoded: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    # torchvision >= 0.29 warns at every call that its decoders are moving to TorchCodec. The
    # filter is set at each call (idempotent, and the caller's own catch_warnings blocks, such
    # as pytest's, drop it when they end); catch_warnings() here instead would save and restore
    # the whole process's filters from the reading thread while the caller's thread may warn.
    warnings.filterwarnings("ignore", message=_DEPRECATION, category=DeprecationWarning)
    return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)


_WORKS_ON: dict[str, bool] = {}


def _decodes_on(device: torch.device) -> bool:
    """Whether torchvision decodes a JPEG on ``device`` (built with nvJPEG, for CUDA); tried
    once per device with a small JPEG."""
    key = str(device)
    if key not in _WORKS_ON:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (200, 30, 90)).save(buffer, "JPEG")
        data = torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8)
        # A launch, kept out of another thread's CUDA-graph capture as all of skdeep's are.
        with CUDA_GRAPH_LOCK if device.type == "cuda" else contextlib.nullcontext():
            decoded = decode_jpegs([data], device) if decode_jpeg is not None else [None]
        _WORKS_ON[key] = decoded[0] is not None
    return _WORKS_ON[key]


@dataclass
class JpegRows:
    """A batch as the workers hand it over: JPEG bytes to decode, and rows Pillow already read.

    Attributes
    ----------
    data : uint8 tensor
        The encoded rows' bytes, one after another (one tensor: one block of shared memory out
        of a worker, not one per image).
    bounds : list of int
        Where each encoded row starts in ``data``, and where the last ends.
    positions, indices, orientations, pixels : list of int
        Each encoded row's place in the batch, its dataset index (to read it with Pillow if the
        device refuses it), its EXIF orientation, and its width times height (from its header).
    read : uint8 tensor
        The other rows, ``(n, C, H, W)`` at the network's input size, read by Pillow.
    read_positions : list of int
        Their places in the batch.
    """

    data: torch.Tensor
    bounds: list[int]
    positions: list[int]
    indices: list[int]
    orientations: list[int]
    pixels: list[int]
    read: torch.Tensor
    read_positions: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.positions) + len(self.read_positions)

    def encoded(self) -> list[torch.Tensor]:
        """Each encoded row's bytes (views of ``data``)."""
        return [self.data[start:stop] for start, stop in zip(self.bounds[:-1], self.bounds[1:])]

    def parts(self, budget: int) -> list[range]:
        """The encoded rows in consecutive parts of at most ``budget`` decoded RGB bytes (each
        at least one row): what is decoded at once, so that a batch of large photos never
        holds all of them decoded on the device."""
        parts, start, used = [], 0, 0
        for row, pixels in enumerate(self.pixels):
            if row > start and used + 3 * pixels > budget:
                parts.append(range(start, row))
                start, used = row, 0
            used += 3 * pixels
        if start < len(self.pixels):
            parts.append(range(start, len(self.pixels)))
        return parts

    def pin_memory(self) -> JpegRows:
        """Pin the rows Pillow read, for an asynchronous copy (the DataLoader calls this).

        The encoded bytes stay as they are: the decoder reads them on the host.
        """
        if self.read.numel():
            self.read = self.read.pin_memory()
        return self


class JpegOnDevice:
    """An eval transform whose JPEG rows are decoded, resized and cropped on the device.

    The dataset view built with it (``dataset.view(JpegOnDevice(transform))``, as
    :func:`~skdeep._base.resized_on_device` builds it) hands the DataLoader a :class:`JpegRows`
    per batch (:meth:`read_rows`, in the workers), and :meth:`batch` turns it into the
    network's uint8 NCHW batch on the device (the inference loop's ``prepare``). Read one row
    at a time (``dataset[i]``), it is ``then``: Pillow, and the tensor resize.

    Parameters
    ----------
    then : TensorEvalTransform
        The eval resize and crop, run per image on Pillow's rows and per batch on the device.
    """

    def __init__(self, then: TensorEvalTransform) -> None:
        self.then = then

    @staticmethod
    def applies(device: torch.device | None) -> bool:
        """Whether JPEG files and bytes are decoded on ``device``: CUDA, with a torchvision
        that decodes there (nvJPEG)."""
        return device is not None and device.type == "cuda" and _decodes_on(device)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.then(image)

    def resized_size(self, size: tuple[int, int]) -> tuple[int, int]:
        """What :attr:`then` resizes an image of ``size`` to (the bomb check's question)."""
        return self.then.resized_size(size)

    # --- in the workers ---------------------------------------------------------------------

    def read_rows(self, dataset: ImageDataset, indices: Sequence[int]
                  ) -> tuple[JpegRows, list[str]]:
        """Rows ``indices`` of ``dataset``: the bytes of its plain JPEGs, the rest read by
        Pillow (``dataset[i]``, with its errors and ``on_error``), and each row's message."""
        chunks: list[bytes] = []
        bounds, positions, rows, orientations, pixels = [0], [], [], [], []
        read, read_positions, messages = [], [], [""] * len(indices)
        budget = _BATCH_BYTES
        for position, index in enumerate(indices):
            found = None if index in dataset.bad else self._plain_jpeg(dataset.items[index],
                                                                       budget)
            if found is None:
                image, messages[position] = dataset[index][:2]
                read.append(image)
                read_positions.append(position)
                continue
            data, orientation, size = found
            budget -= len(data)
            chunks.append(data)
            bounds.append(bounds[-1] + len(data))
            positions.append(position)
            rows.append(index)
            orientations.append(orientation)
            pixels.append(size)
        data = torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8) if chunks \
            else torch.empty(0, dtype=torch.uint8)
        stacked = torch.stack(read) if read else torch.empty((0, *dataset.input_size),
                                                             dtype=torch.uint8)
        return JpegRows(data, bounds, positions, rows, orientations, pixels, stacked,
                        read_positions), messages

    def _plain_jpeg(self, item: Any, budget: int) -> tuple[bytes, int, int] | None:
        """``(bytes, EXIF orientation, pixels)`` of a file or bytes item that the device may
        decode, or None for anything Pillow should read (it reports what is wrong)."""
        try:
            data = _read_jpeg(item, budget)
            return None if data is None else self._screened(data)
        except MemoryError:
            raise
        except Exception:  # unreadable in any way: Pillow's path says how, under on_error
            return None

    def _screened(self, data: bytes) -> tuple[bytes, int, int] | None:
        if not data.endswith(_EOI):  # truncated (or trailing data): Pillow decides
            return None
        with warnings.catch_warnings():  # as skdeep._inputs.decode: refused below, by Pillow
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["JPEG"])
        with image:
            if image.mode not in _PLAIN_MODES or image.info.get("adobe_transform") == 0:
                return None  # CMYK, YCCK, or RGB stored without YCbCr: Pillow converts it
            orientation = image.getexif().get(_ORIENTATION, 1)
            width, height = image.size
        orientation = orientation if isinstance(orientation, int) else 1
        if orientation in (5, 6, 7, 8):  # a quarter turn: the image is read transposed
            width, height = height, width
        new_width, new_height = self.resized_size((width, height))
        limit = Image.MAX_IMAGE_PIXELS
        if limit is not None and max(width * height, new_width * new_height) > limit:
            return None  # a decompression bomb: Pillow's path refuses it with its reasons
        return data, orientation, width * height

    # --- on the device, a batch ahead of the network -------------------------------------

    def batch(self, dataset: ImageDataset, rows: JpegRows, messages: list[str],
              device: torch.device) -> tuple[torch.Tensor, list[str]]:
        """``rows`` -> the uint8 NCHW batch of the input size on ``device`` (the inference
        loop's ``prepare``, with ``dataset`` bound: a JPEG the device refuses is read by
        Pillow from it, its error under ``on_error`` as everywhere).

        The JPEGs are decoded in parts of at most ``_DECODE_BYTES`` decoded, each part resized
        (one call per image size) before the next is decoded.
        """
        encoded = rows.encoded()
        pieces: list[tuple[list[int], torch.Tensor]] = []  # (positions, resized images)
        refused: list[int] = []
        for part in rows.parts(_DECODE_BYTES):
            groups: dict[tuple[int, ...], list[tuple[int, torch.Tensor]]] = {}
            for row, image in zip(part, decode_jpegs(encoded[part.start:part.stop], device)):
                if image is None:
                    refused.append(row)
                    continue
                image = orient(image, rows.orientations[row])
                groups.setdefault(tuple(image.shape), []).append((rows.positions[row], image))
            for members in groups.values():
                stacked = torch.stack([image for _, image in members])
                pieces.append(([position for position, _ in members], self.then.batch(stacked)))
        if len(pieces) == 1 and pieces[0][0] == list(range(len(rows))):
            return pieces[0][1].contiguous(), messages  # the usual batch: JPEGs of one size
        out = torch.empty((len(rows), *dataset.input_size), dtype=torch.uint8, device=device)
        if rows.read_positions:
            out[rows.read_positions] = rows.read.to(device, non_blocking=True)
        for row in refused:
            position = rows.positions[row]
            image, messages[position] = dataset[rows.indices[row]][:2]
            out[position] = image.to(device)
        for positions, resized in pieces:
            out[positions] = resized
        return out, messages


def eval_jpeg_decoder(data_config: dict[str, Any], device: torch.device | None) -> str:
    """Who decodes JPEG files and bytes at eval time for ``data_config`` on ``device``:
    ``"nvjpeg"`` (:class:`JpegOnDevice`, when the eval resize runs on tensors and the device is
    CUDA with nvJPEG) or ``"pillow"``. The feature cache's keys say so.

    Examples
    --------
    >>> import torch
    >>> config = {"input_size": (3, 224, 224), "interpolation": "bicubic", "crop_pct": 0.875}
    >>> eval_jpeg_decoder(config, torch.device("cpu"))
    'pillow'
    """
    if TensorEvalTransform.supports(data_config) and JpegOnDevice.applies(device):
        return "nvjpeg"
    return "pillow"


def _read_jpeg(item: Any, budget: int) -> bytes | None:
    """The bytes of a path or bytes item if it starts as a JPEG and fits in ``budget`` bytes.

    A path is opened as Pillow's path opens it (:func:`~skdeep._inputs.open_regular`: never a
    FIFO or a device), and only its first three bytes are read if it is not a JPEG.
    """
    if isinstance(item, (str, os.PathLike)):
        with open_regular(item) as handle:
            if not is_jpeg(handle.read(3)) or os.fstat(handle.fileno()).st_size > budget:
                return None
            return _SOI + handle.read(budget - len(_SOI))  # a file grown since: cut, then refused
    if isinstance(item, (bytes, bytearray, memoryview)):
        data = bytes(item)
        return data if is_jpeg(data) and len(data) <= budget else None
    return None  # a PIL image or an array: already decoded
