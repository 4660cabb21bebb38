"""The batched inference loop shared by every estimator: DataLoader in, float32 rows out.

Written to be right on CUDA by construction: pinned host memory and ``non_blocking`` copies made
on a side stream one batch ahead, the uint8 -> float conversion (and, for arrays of images, the
resize) on the device, outputs kept on the device and copied back in large chunks (so there is
no host-device synchronisation per batch), and autocast for half precision. On an accelerator,
batch k+1 is read, copied and resized in a background thread while the network runs on batch k
(:class:`Prefetcher`: decoding and the resize kernels release the GIL); on the CPU, where that
thread would take the network's cores, in the caller's thread (:func:`read_batches`). A batch the device has
no memory for is split in halves and retried (:class:`MemoryBackoff`). Chunks are handed to the
caller as they come back (:func:`iter_row_chunks`), so that long jobs can store their results as
they go.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from ._device import CUDA_GRAPH_LOCK, autocast
from ._inputs import ImageDataset, collate_rows

# Results stay on the device for this many batches, or this many seconds, before one copy to
# the host: few synchronisations on a GPU, and a chunk to commit every few seconds.
_FLUSH_EVERY = 32
_FLUSH_SECONDS = 2.0


def _worker_init(_: int) -> None:
    # Decoding workers do not need torch's thread pool; one thread each avoids oversubscription.
    torch.set_num_threads(1)


# num_workers="auto" on CUDA: one worker per spare core, at most this many.
_MAX_AUTO_WORKERS = 8


def resolve_num_workers(num_workers: int | str, dataset: Dataset, device: torch.device, *,
                        train: bool = False) -> int:
    """The DataLoader worker processes for ``num_workers`` (``"auto"``, or a count kept as is).

    ``"auto"`` is 0, the main process reading the batches (see :func:`read_batches`), wherever
    that keeps up: on a CPU, where workers take cores from the network, and for images already in memory
    (arrays, tensors, PIL images) at inference, which are resized a batch at a time on the
    device. On CUDA, when there are files or bytes to decode, or training augmentations to run
    per image: one worker per spare core, at most 8. The figures that chose this rule are in
    the performance guide (``benchmarks/bench_extract.py``, ``benchmarks/bench_gpu.py``).
    """
    if num_workers != "auto":
        return int(num_workers)
    if device.type != "cuda":
        return 0
    if not train and not reads_encoded(dataset):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(_MAX_AUTO_WORKERS, (cores or 1) - 1))


def reads_encoded(dataset: Dataset) -> bool:
    """Whether ``dataset`` (an ImageDataset, or a Subset of one) has files or bytes to decode."""
    inner = dataset.dataset if isinstance(dataset, Subset) else dataset
    return inner.has_encoded if isinstance(inner, ImageDataset) else True  # not ours: assume so


def make_loader(dataset: Dataset, *, batch_size: int, device: torch.device,
                num_workers: int | str, shuffle: bool = False,
                generator: torch.Generator | None = None, drop_last: bool = False,
                sampler: Sampler | None = None) -> DataLoader:
    """A DataLoader that decodes in ``num_workers`` processes and pins memory for CUDA.

    ``num_workers="auto"`` is resolved by :func:`resolve_num_workers` (``shuffle`` means a
    training loader). A ``sampler`` draws the training order instead of shuffling.
    """
    num_workers = resolve_num_workers(num_workers, dataset, device, train=shuffle)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if num_workers > 0 else None,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
        generator=generator,
        drop_last=drop_last,
        collate_fn=collate_rows,
    )


# Batches read ahead of the network by the prefetching thread: one being computed, one ready,
# one being prepared bounds the memory at three batches.
_PREFETCH_DEPTH = 2


def to_device(images: torch.Tensor, messages: list[str],
              device: torch.device) -> tuple[torch.Tensor, list[str]]:
    """The default preparation of a batch: a copy to ``device`` (asynchronous from pinned memory)."""
    return images.to(device, non_blocking=True), messages


class Prefetcher:
    """The batches of ``loader``, prepared on ``device``, a batch ahead of the caller.

    A background thread reads the next batch (decoding it when ``num_workers=0``) and prepares
    it on the device (``prepare``: the copy, and for an array of images the batched resize),
    while the caller runs the network on the current one.
    On CUDA this runs on a side stream; the caller's stream waits for an event, never the host.
    An exception raised while reading a batch (an unreadable image under ``on_error="raise"``)
    is raised by the caller at that batch, after every batch before it was handed over. Closing
    the iteration early (an error in the caller, Ctrl-C) stops the thread.

    Parameters
    ----------
    loader : iterable of (images, messages)
        Batches of images (as ``prepare`` takes them) and their error messages.
    device : torch.device
    prepare : callable, default=:func:`to_device`
        ``(images, messages, device) -> (uint8 NCHW tensor on device, messages)``.
    """

    def __init__(self, loader: Iterable, device: torch.device,
                 prepare: Callable[..., tuple[torch.Tensor, list[str]]] | None = None) -> None:
        self.loader = loader
        self.device = device
        self.prepare = prepare or to_device

    def __iter__(self) -> Iterator[tuple[torch.Tensor, list[str]]]:
        ready: queue.Queue = queue.Queue(maxsize=_PREFETCH_DEPTH)
        stop = threading.Event()
        thread = threading.Thread(target=self._work, args=(ready, stop), daemon=True,
                                  name="skdeep-prefetch")
        thread.start()
        try:
            while True:
                kind, item = ready.get()
                if kind == "done":
                    return
                if kind == "error":
                    raise item
                images, messages, event = item
                if event is not None:  # prepared on the side stream
                    with CUDA_GRAPH_LOCK:
                        stream = torch.cuda.current_stream(self.device)
                        stream.wait_event(event)
                        images.record_stream(stream)
                yield images, messages
        finally:
            stop.set()
            while thread.is_alive():  # unblock a thread waiting to put, then let it end
                with contextlib.suppress(queue.Empty):
                    ready.get(timeout=0.05)

    def _work(self, ready: queue.Queue, stop: threading.Event) -> None:
        with torch.inference_mode():  # batches made as the caller's are (a compiled graph
            self._read_ahead(ready, stop)  # is specialised on a tensor's dispatch keys)

    def _read_ahead(self, ready: queue.Queue, stop: threading.Event) -> None:
        cuda = self.device.type == "cuda"
        stream = torch.cuda.Stream(self.device) if cuda else None
        try:
            for images, messages in self.loader:
                if stop.is_set():
                    return
                event = None
                with contextlib.ExitStack() as on_device:
                    if cuda:
                        on_device.enter_context(CUDA_GRAPH_LOCK)
                        on_device.enter_context(torch.cuda.stream(stream))
                    images, messages = self.prepare(images, list(messages), self.device)
                    if cuda:
                        event = torch.cuda.Event()
                        event.record(stream)
                if not _put(ready, stop, ("batch", (images, messages, event))):
                    return
        except BaseException as exc:  # handed to the caller, who raises it at this batch
            _put(ready, stop, ("error", exc))
            return
        _put(ready, stop, ("done", None))


def read_batches(loader: Iterable, device: torch.device,
                 prepare: Callable[..., tuple[torch.Tensor, list[str]]] | None = None
                 ) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """The prepared batches of ``loader``: read a batch ahead in a thread (:class:`Prefetcher`)
    where the network runs on an accelerator, in the caller's thread on the CPU.

    On the CPU a reading thread takes cycles from the network's own threads: measured on 2 cores
    (EfficientNet-Lite0, bf16, 96 arrays of 224 px, batches of 8), the eager transform ran at
    0.82-0.89x the bare network with the thread and 0.95-1.0x without it. Files to decode on a
    CPU with cores to spare are better served by ``num_workers``.
    """
    if device.type != "cpu":
        return iter(Prefetcher(loader, device, prepare))
    return _in_order(loader, device, prepare or to_device)


def _in_order(loader: Iterable, device: torch.device,
              prepare: Callable[..., tuple[torch.Tensor, list[str]]]
              ) -> Iterator[tuple[torch.Tensor, list[str]]]:
    for images, messages in loader:
        yield prepare(images, list(messages), device)


def _put(ready: queue.Queue, stop: threading.Event, item: tuple) -> bool:
    while not stop.is_set():
        with contextlib.suppress(queue.Full):
            ready.put(item, timeout=0.05)
            return True
    return False


class MemoryBackoff:
    """``forward`` over a batch, split in halves and retried when the device runs out of memory.

    On ``torch.OutOfMemoryError`` (the exception type, never its text) the rows not yet computed
    are retried in parts of half the size, down to one image; the size that fits is kept for
    every later batch of the job, and one warning says so. Each row is computed exactly once, in
    order: the output equals an unconstrained run's. With ``fixed_batch`` (a compiled graph of
    one shape), short parts are padded to the current part size.

    Parameters
    ----------
    forward : callable
        ``images -> outputs`` (first dimension: rows).
    batch_size : int
        The loader's batch size: the first part size.
    fixed_batch : bool, default=False
        Pad each part to the part size (see :func:`iter_row_chunks`).
    """

    def __init__(self, forward: Callable[[torch.Tensor], torch.Tensor], batch_size: int, *,
                 fixed_batch: bool = False) -> None:
        self.forward = forward
        self.part_size = batch_size
        self.fixed_batch = fixed_batch
        self.warned = False

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        outputs, start = [], 0
        while start < len(images):
            part = images[start:start + self.part_size]
            try:
                outputs.append(self._run(part))
            except torch.OutOfMemoryError:
                if self.part_size == 1:
                    raise
                self._halve(self.part_size if self.fixed_batch else len(part))
                continue
            start += len(part)
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _run(self, part: torch.Tensor) -> torch.Tensor:
        n_rows = len(part)
        if self.fixed_batch and n_rows < self.part_size:
            blank = part.new_zeros((self.part_size - n_rows, *part.shape[1:]))
            part = torch.cat([part, blank])
        return self.forward(part)[:n_rows]

    def _halve(self, failed: int) -> None:
        self.part_size = max(1, min(self.part_size, failed) // 2)
        if not self.warned:
            self.warned = True
            warn_out_of_memory(failed, self.part_size, "this job")


def warn_out_of_memory(failed: int, part_size: int, rest: str) -> None:
    """Free the cached blocks of a failed batch and say, once per job, what runs instead."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    warnings.warn(
        f"skdeep: the device ran out of memory on a batch of {failed} images; the same images "
        f"run again in parts of {part_size} (fewer if need be), and so do the rest of {rest}. "
        "Set batch_size to choose the size.",
        UserWarning, stacklevel=3,
    )


def iter_row_chunks(
    forward: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    *,
    device: torch.device,
    precision: str,
    batch_size: int,
    num_workers: int | str = 0,
    progress: bool = False,
    desc: str = "images",
    fixed_batch: bool = False,
    prepare: Callable[..., tuple[torch.Tensor, list[str]]] | None = None,
) -> Iterator[tuple[np.ndarray, dict[int, str]]]:
    """Run ``forward`` over ``dataset`` (yielding ``(uint8 images, error)``), chunk by chunk.

    A chunk is what comes back to the host in one copy: ``_FLUSH_EVERY`` (32) batches, or fewer
    when ``_FLUSH_SECONDS`` (2 s) have passed, so that a caller can commit work every few seconds
    (a feature cache, an output file) without a host-device synchronisation per batch. The
    network runs under inference mode and autocast, entered per chunk and left before each
    chunk is yielded: the caller's code never runs under them.

    ``fixed_batch=True`` pads a short last batch with blank images to ``batch_size`` and drops
    their rows, so that ``forward`` sees one shape: a compiled graph then compiles once per job
    (and once per fitted estimator), instead of again for every new remainder.

    ``prepare`` brings each batch to the device, a batch ahead of the network
    (:class:`Prefetcher`; by default a copy; for an array of images also the batched resize).
    A batch the device has no memory for is split (:class:`MemoryBackoff`).

    Yields
    ------
    rows : ndarray of shape (n_chunk_rows, n_outputs), float32
        The next rows of the dataset, in order. Rows whose image could not be read are NaN.
    errors : dict
        ``{dataset row: message}`` for the unreadable rows of this chunk.
    """
    from tqdm.auto import tqdm

    loader = make_loader(dataset, batch_size=batch_size, device=device, num_workers=num_workers)
    batches = read_batches(loader, device, prepare)
    run = MemoryBackoff(forward, batch_size, fixed_batch=fixed_batch)
    # On CUDA the launches of this thread too are kept out of any CUDA-graph capture (another
    # thread's, with compile=True): held per batch, and never while waiting for results.
    launching = CUDA_GRAPH_LOCK if device.type == "cuda" else contextlib.nullcontext()
    start, finished = 0, False
    with tqdm(total=len(dataset), unit="img", desc=desc, disable=not progress,
              leave=True) as bar, contextlib.closing(batches):
        while not finished:
            chunk_start, pending, errors = start, [], {}
            deadline = time.monotonic() + _FLUSH_SECONDS
            with torch.inference_mode(), autocast(device, precision):
                for images, messages in batches:
                    for offset, message in enumerate(messages):
                        if message:
                            errors[start + offset] = message
                    start += len(messages)
                    with launching:
                        pending.append(run(images).float())
                    bar.update(len(messages))
                    if len(pending) >= _FLUSH_EVERY or time.monotonic() >= deadline:
                        break
                else:
                    finished = True
                if not pending:
                    return
                rows = _to_host(torch.cat(pending) if len(pending) > 1 else pending[0],
                                launching)
            if errors:
                rows[[row - chunk_start for row in errors]] = np.nan
            yield rows, errors


def _to_host(rows: torch.Tensor, launching: contextlib.AbstractContextManager) -> np.ndarray:
    """``rows`` as a NumPy array: on CUDA one asynchronous copy into pinned memory, launched
    under ``launching`` and waited for outside it."""
    if rows.device.type != "cuda":
        return rows.numpy()
    with launching:
        host = torch.empty(rows.shape, dtype=rows.dtype, pin_memory=True)
        host.copy_(rows, non_blocking=True)
        copied = torch.cuda.Event()
        copied.record()
    copied.synchronize()
    return host.numpy().copy()  # the pinned block goes back to torch's cache for the next chunk


def predict_rows(
    forward: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    *,
    device: torch.device,
    precision: str,
    batch_size: int,
    num_workers: int | str = 0,
    progress: bool = False,
    desc: str = "images",
    fixed_batch: bool = False,
    prepare: Callable[..., tuple[torch.Tensor, list[str]]] | None = None,
) -> tuple[np.ndarray, dict[int, str]]:
    """Every row of ``forward`` over ``dataset`` at once (see :func:`iter_row_chunks`).

    Returns
    -------
    rows : ndarray of shape (n_samples, n_outputs), float32
        One row per dataset row, in order. Rows whose image could not be read are NaN.
    errors : dict
        ``{row: message}`` for those rows.
    """
    chunks: list[np.ndarray] = []
    errors: dict[int, str] = {}
    for rows, chunk_errors in iter_row_chunks(
        forward, dataset, device=device, precision=precision, batch_size=batch_size,
        num_workers=num_workers, progress=progress, desc=desc, fixed_batch=fixed_batch,
        prepare=prepare,
    ):
        chunks.append(rows)
        errors.update(chunk_errors)
    if not chunks:
        return np.empty((0, 0), dtype=np.float32), errors
    return (chunks[0] if len(chunks) == 1 else np.concatenate(chunks)), errors
