"""The batched inference loop shared by every estimator: DataLoader in, float32 rows out.

Written to be right on CUDA by construction: pinned host memory and ``non_blocking`` copies, the
uint8 -> float conversion on the device, outputs kept on the device and copied back in large
chunks (so there is no host-device synchronisation per batch), and autocast for half precision.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ._device import autocast

# Results stay on the device for this many batches before one copy to the host.
_FLUSH_EVERY = 32


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
    """Run ``forward`` over every row of ``dataset`` (yielding ``(uint8 images, error)``).

    ``fixed_batch=True`` pads a short last batch with blank images to ``batch_size`` and drops
    their rows, so that ``forward`` sees one shape: a compiled graph then compiles once per job
    (and once per fitted estimator), instead of again for every new remainder.

    Returns
    -------
    rows : ndarray of shape (n_samples, n_outputs), float32
        One row per dataset row, in order. Rows whose image could not be read are NaN.
    errors : dict
        ``{row: message}`` for those rows.
    """
    from tqdm.auto import tqdm

    loader = make_loader(dataset, batch_size=batch_size, device=device, num_workers=num_workers)
    chunks: list[torch.Tensor] = []
    pending: list[torch.Tensor] = []
    errors: dict[int, str] = {}
    start = 0
    with torch.inference_mode(), autocast(device, precision), tqdm(
        total=len(dataset), unit="img", desc=desc, disable=not progress, leave=False
    ) as bar:
        for images, messages in loader:
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
            if len(pending) >= _FLUSH_EVERY:
                chunks.append(torch.cat(pending).cpu())
                pending = []
            bar.update(len(messages))
    if pending:
        chunks.append(torch.cat(pending).cpu())
    rows = torch.cat(chunks).numpy()
    if errors:
        rows[list(errors)] = np.nan
    return rows, errors
