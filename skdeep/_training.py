"""The training loop of a fine-tuned classifier: epochs, validation, early stopping, history.

Written to be right on CUDA by construction, like the inference loop it reuses for validation:
images arrive as pinned ``uint8`` batches copied with ``non_blocking``, targets and sample weights
live on the device and are gathered there by row index, autocast runs the forward pass in half
precision (with a ``GradScaler`` for fp16, whose narrow range needs it), and the epoch's loss is
accumulated on the device and read once per epoch, so there is no host-device synchronisation
per batch.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._device import autocast
from ._inference import predict_rows
from ._optim import LRSchedule


@contextlib.contextmanager
def seeded_rngs(seed: int | None, device: torch.device) -> Iterator[None]:
    """Seed torch's and Python's global RNGs inside the block and restore them afterwards.

    Dropout and train-time augmentation draw from these; forking keeps ``fit`` from changing the
    caller's random streams. ``seed=None`` leaves them alone (not reproducible).
    """
    if seed is None:
        yield
        return
    devices = [device] if device.type == "cuda" else []
    python_state = random.getstate()
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        random.seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)


def make_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """A GradScaler, enabled only for fp16 (bf16 has fp32's range and needs none)."""
    enabled = precision == "fp16" and device.type in ("cuda", "cpu")
    return torch.amp.GradScaler(device.type if enabled else "cpu", enabled=enabled)


@dataclass
class Trainer:
    """Everything one epoch of training needs.

    ``network`` maps a ``uint8`` batch to a row of outputs whose columns from ``logits_from`` on
    are the logits. ``targets`` and ``weights`` are indexed by the dataset's row numbers (the
    third item of each batch); weights have mean 1 over the training rows.
    """

    network: nn.Module
    logits_from: int
    set_modes: Callable[[], None]
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    scaler: torch.amp.GradScaler
    targets: torch.Tensor
    weights: torch.Tensor
    device: torch.device
    precision: str
    label_smoothing: float = 0.0
    grad_clip_norm: float | None = None
    bad_rows: dict[int, str] = field(default_factory=dict)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)[:, self.logits_from:]

    def train_epoch(self, loader: DataLoader, progress: bool = False, desc: str = "") -> float:
        """One pass over ``loader``; returns the weighted mean training loss."""
        from tqdm.auto import tqdm

        self.set_modes()
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        total = torch.zeros((), device=self.device)
        weight_sum = torch.zeros((), device=self.device)
        for images, messages, rows in tqdm(loader, desc=desc, disable=not progress, leave=False):
            images = images.to(self.device, non_blocking=True)
            rows_on_device = rows.to(self.device, non_blocking=True)
            targets = self.targets[rows_on_device]
            weights = self.weights[rows_on_device]
            if any(messages):  # unreadable images (on_error="nan") do not train
                ok = [not message for message in messages]
                self.bad_rows.update({int(r): m for r, m in zip(rows.tolist(), messages) if m})
                weights = weights * torch.tensor(ok, device=self.device, dtype=weights.dtype)
            with autocast(self.device, self.precision):
                logits = self.logits(images)
            losses = F.cross_entropy(logits.float(), targets, reduction="none",
                                     label_smoothing=self.label_smoothing)
            weighted = (losses * weights).sum()
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(weighted / len(rows)).backward()
            if self.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(trainable, self.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.schedule.after_step()
            total += weighted.detach()
            weight_sum += weights.sum()
        return float(total / weight_sum.clamp(min=1e-12))  # the one synchronisation per epoch

    def evaluate(self, dataset: Dataset, rows: np.ndarray, *, batch_size: int,
                 num_workers: int) -> tuple[float, float]:
        """Weighted log-loss and accuracy on ``dataset`` (rows ``rows`` of the training data)."""
        self.network.eval()
        logits, errors = predict_rows(
            self.logits, dataset, device=self.device, precision=self.precision,
            batch_size=batch_size, num_workers=num_workers,
        )
        self.bad_rows.update({int(rows[i]): m for i, m in errors.items()})
        keep = np.ones(len(rows), dtype=bool)
        keep[list(errors)] = False
        index = torch.as_tensor(rows[keep], device=self.device)
        targets = self.targets[index].cpu()
        weights = self.weights[index].cpu().double()
        logits_t = torch.from_numpy(logits[keep]).double()
        losses = F.cross_entropy(logits_t, targets, reduction="none")
        correct = (logits_t.argmax(dim=1) == targets).double()
        total = float(weights.sum())
        if total <= 0:
            return math.nan, math.nan
        return float((losses * weights).sum() / total), float((correct * weights).sum() / total)


@dataclass
class EarlyStopping:
    """Tracks the best validation loss and keeps a copy of the weights that achieved it."""

    patience: int
    tol: float
    best_loss: float = math.inf
    best_epoch: int | None = None
    best_state: dict[str, torch.Tensor] | None = None
    waited: int = 0

    def update(self, loss: float, epoch: int, model: nn.Module) -> bool:
        """Record ``epoch``'s validation loss; returns whether training should stop."""
        if math.isfinite(loss) and loss < self.best_loss - self.tol:
            self.best_loss, self.best_epoch, self.waited = loss, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.waited += 1
        return self.waited >= self.patience

    def restore(self, model: nn.Module) -> None:
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def run_epochs(
    trainer: Trainer,
    train_loader: DataLoader,
    *,
    epochs: int,
    first_epoch: int,
    validation: tuple[Dataset, np.ndarray] | None,
    early_stopping: EarlyStopping | None,
    eval_batch_size: int,
    num_workers: int,
    verbose: int = 0,
    progress: bool = False,
    check_bad_rows: Callable[[dict[int, str]], None] | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """Train for up to ``epochs`` epochs. Returns the history records and the epoch whose weights
    the network ends with (the best one when ``early_stopping`` is given and validation exists).

    ``check_bad_rows`` is called with the unreadable training rows (``{row: message}``) after the
    first epoch's pass: files that exist but do not decode are only known once loaded, and it may
    raise rather than let training go on with nothing (or no image of a class) to learn from.
    """
    history: list[dict[str, Any]] = []
    head_group = trainer.optimizer.param_groups[0]
    epoch = first_epoch
    for epoch in range(first_epoch, first_epoch + epochs):
        start = time.perf_counter()
        lr = float(head_group["lr"])
        train_loss = trainer.train_epoch(train_loader, progress, desc=f"epoch {epoch}")
        if epoch == first_epoch and check_bad_rows is not None:
            check_bad_rows(trainer.bad_rows)  # before validation adds its own rows
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training diverged: the loss is {train_loss} at epoch {epoch}. Lower lr, set "
                "grad_clip_norm, or use precision='fp32'."
            )
        valid_loss = valid_accuracy = math.nan
        if validation is not None:
            valid_loss, valid_accuracy = trainer.evaluate(
                *validation, batch_size=eval_batch_size, num_workers=num_workers
            )
        trainer.schedule.after_epoch(valid_loss if validation is not None else train_loss)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "valid_accuracy": valid_accuracy,
            "lr": lr,
            "seconds": time.perf_counter() - start,
        }
        history.append(record)
        if verbose:
            print(
                f"epoch {epoch:3d}  train_loss {train_loss:.4f}  valid_loss {valid_loss:.4f}  "
                f"valid_accuracy {valid_accuracy:.4f}  lr {lr:.2e}  {record['seconds']:.1f}s",
                flush=True,
            )
        if early_stopping is not None and validation is not None:
            if early_stopping.update(valid_loss, epoch, trainer.network):
                if verbose:
                    print(f"early stopping: no improvement for {early_stopping.patience} epochs",
                          flush=True)
                break
    if early_stopping is not None and validation is not None and early_stopping.best_epoch is not None:
        early_stopping.restore(trainer.network)
        return history, early_stopping.best_epoch
    return history, epoch
