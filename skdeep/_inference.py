"""The batched inference loop shared by every estimator: DataLoader in, float32 rows out.

Written to be right on CUDA by construction: pinned host memory and ``non_blocking`` copies, the
uint8 -> float conversion on the device, outputs kept on the device and copied back in large
chunks (so there is no host-device synchronisation per batch), and autocast for half precision.
Chunks are handed to the caller as they come back (:func:`iter_row_chunks`), so that long jobs
can store their results as they go.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ._device import autocast

# Results stay on the device for this many batches, or this many seconds, before one copy to
# the host: few synchronisations on a GPU, and a chunk to commit every few seconds.
_FLUSH_EVERY = 32
_FLUSH_SECONDS = 2.0


def _worker_init(_: int) -> None:
    # Decoding workers do not need torch's thread pool; one thread each avoids oversubscription.
    torch.set_num_threads(1)


def make_loader(dataset: Dataset, *, batch_size: int, device: torch.device, num_workers: int,
                shuffle: bool = False, generator: torch.Generator | None = None,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader that decodes in ``num_workers`` processes and pins memory for CUDA."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init if num_workers > 0 else None,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
        generator=generator,
        drop_last=drop_last,
    )


def iter_row_chunks(
    forward: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    *,
    device: torch.device,
    precision: str,
    batch_size: int,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "images",
    fixed_batch: bool = False,
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

    Yields
    ------
    rows : ndarray of shape (n_chunk_rows, n_outputs), float32
        The next rows of the dataset, in order. Rows whose image could not be read are NaN.
    errors : dict
        ``{dataset row: message}`` for the unreadable rows of this chunk.
    """
    from tqdm.auto import tqdm

    batches = iter(make_loader(dataset, batch_size=batch_size, device=device,
                               num_workers=num_workers))
    start, finished = 0, False
    with tqdm(total=len(dataset), unit="img", desc=desc, disable=not progress,
              leave=True) as bar:
        while not finished:
            chunk_start, pending, errors = start, [], {}
            deadline = time.monotonic() + _FLUSH_SECONDS
            with torch.inference_mode(), autocast(device, precision):
                for images, messages in batches:
                    for offset, message in enumerate(messages):
                        if message:
                            errors[start + offset] = message
                    start += len(messages)
                    images = images.to(device, non_blocking=True)
                    n_rows = len(images)
                    if fixed_batch and n_rows < batch_size:
                        blank = images.new_zeros((batch_size - n_rows, *images.shape[1:]))
                        images = torch.cat([images, blank])
                    pending.append(forward(images)[:n_rows].float())
                    bar.update(len(messages))
                    if len(pending) >= _FLUSH_EVERY or time.monotonic() >= deadline:
                        break
                else:
                    finished = True
                if not pending:
                    return
                rows = torch.cat(pending).cpu().numpy()
            if errors:
                rows[[row - chunk_start for row in errors]] = np.nan
            yield rows, errors


def predict_rows(
    forward: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    *,
    device: torch.device,
    precision: str,
    batch_size: int,
    num_workers: int = 0,
    progress: bool = False,
    desc: str = "images",
    fixed_batch: bool = False,
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
    ):
        chunks.append(rows)
        errors.update(chunk_errors)
    if not chunks:
        return np.empty((0, 0), dtype=np.float32), errors
    return (chunks[0] if len(chunks) == 1 else np.concatenate(chunks)), errors
