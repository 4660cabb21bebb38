"""Device and numeric precision: which hardware runs the network, and in which dtype.

One place decides both for every estimator, so that feature extraction and fine-tuning behave the
same on CUDA, Apple MPS and CPU.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

import torch

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

#: Held around CUDA-graph capture and replay (``compile=True`` on CUDA) and around the CUDA work
#: of skdeep's read-ahead threads. A capture forbids CUDA calls from other threads while it
#: records (measured on an H200: a copy issued by a read-ahead thread, or another thread's
#: call, during a capture failed it, and left the card's random-number state unusable for the
#: rest of the process). The work it guards is launches, not waits: it is held for
#: microseconds, except during a capture.
CUDA_GRAPH_LOCK = threading.RLock()


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"auto"`` (or any torch device spec) into a concrete ``torch.device``.

    ``"auto"`` prefers CUDA, then Apple MPS, then the CPU. Asking for a CUDA device on a machine
    without one falls back to the CPU with a warning, so that a model fitted on a GPU box can be
    used on a laptop.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        warnings.warn(
            f"device={device!r} was requested but CUDA is not available here; using the CPU.",
            UserWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    return resolved


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), so autocast pays off."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # pragma: no cover - builds without oneDNN
        return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """Turn ``precision="auto"`` into ``"fp32"``, ``"bf16"`` or ``"fp16"`` for ``device``.

    On CUDA: bf16 where the GPU supports it, else fp16. On a CPU with native bf16: bf16. Elsewhere
    (older CPUs, MPS): fp32, because emulated half precision is slower than fp32 there.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type == "cpu" and cpu_supports_bf16():
        return "bf16"
    return "fp32"


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast context for ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


# Images per forward pass on a CPU: a budget of input pixels, so that the activations of one
# batch stay in the caches. Measured on EfficientNet-Lite0 with bf16 on a 2-core AVX512-BF16 CPU,
# the best batch was about 8 at 224 px, 48 at 96 px and 96 at 64 px, i.e. ~400k pixels; batches
# of 64 at 224 px ran at 0.7x that speed.
_CPU_PIXELS_PER_BATCH = 400_000
_MAX_BATCH = 256
# On CUDA: 256 images at 224 px, fewer for larger images (64 at 448 px), more for smaller ones up
# to 1,024. Large batches keep a fast GPU busy between launches; a card with too little memory
# for one makes the inference loop halve it (skdeep._inference.MemoryBackoff), so it is never
# an out-of-memory crash. The sweep that chose it: benchmarks/bench_gpu.py.
_CUDA_PIXELS_PER_BATCH = 256 * 224 * 224
_MAX_CUDA_BATCH = 1024
_ACCELERATOR_BATCH = 64  # Apple MPS: not measured here


def auto_batch_size(device: torch.device, input_size: tuple[int, int, int]) -> int:
    """Images per forward pass for ``batch_size=None``.

    On a CPU, a batch holds about 400,000 input pixels (8 images at 224 px, 43 at 96 px): larger
    batches spill the caches and run slower, not faster. On CUDA, about 12.8 million pixels
    (256 images at 224 px), halved by the inference loop if the card runs out of memory. On
    other accelerators, 64 images.
    """
    pixels = int(input_size[1]) * int(input_size[2])
    if device.type == "cuda":
        return max(1, min(_MAX_CUDA_BATCH, round(_CUDA_PIXELS_PER_BATCH / pixels)))
    if device.type != "cpu":
        return _ACCELERATOR_BATCH
    return max(1, min(_MAX_BATCH, round(_CPU_PIXELS_PER_BATCH / pixels)))


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last is faster for convolutions with oneDNN and cuDNN alike."""
    return torch.channels_last if device.type in ("cpu", "cuda") else torch.contiguous_format


@contextlib.contextmanager
def torch_threads(n_threads: int | None) -> Iterator[None]:
    """Temporarily cap torch's intra-op threads (``None`` leaves them alone)."""
    if n_threads is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(max(1, int(n_threads)))
    try:
        yield
    finally:
        torch.set_num_threads(previous)
