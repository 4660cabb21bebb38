"""The training loop of a fine-tuned classifier: epochs, validation, early stopping, history.

Written to be right on CUDA by construction, like the inference loop it reuses for validation:
images arrive as pinned ``uint8`` batches copied with ``non_blocking``, targets and sample weights
live on the device and are gathered there by row index, autocast runs the forward pass in half
precision (with a ``GradScaler`` for fp16, whose narrow range needs it), and the epoch's loss is
accumulated on the device and read once per epoch, so there is no host-device synchronisation
per batch.

A fit in progress (:class:`Run`) can be written to a checkpoint folder and continued from it
exactly (:func:`write_training_state`, :func:`read_training_state`, :func:`restore_training_state`):
besides the network, the optimizer's moments, the schedule's position, the early-stopping record
and its best weights, and the random streams (torch's, Python's and the shuffling generator's)
are kept, as safetensors and JSON, never pickled.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, WeightedRandomSampler

from ._averaging import WeightAverage
from ._device import autocast
from ._inference import make_loader, predict_rows, warn_out_of_memory
from ._inputs import ImageDataset
from ._mixing import Mixer
from ._optim import LRSchedule, load_optimizer_state, optimizer_state

TRAINING_STATE = "training.json"  # next to training.safetensors and the model/ folder
_TENSORS = "training.safetensors"
_FORMAT = "skdeep.training_state"
_FORMAT_VERSION = 1


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
class TrainingData:
    """What a fit reads: shuffled training batches, the validation set and the shuffling seed.

    ``validation`` is ``(dataset, rows)``: the validation images through the evaluation
    transform and their rows in the whole data (for the targets and weights), or None.
    """

    loader: DataLoader
    validation: tuple[Dataset, np.ndarray] | None
    generator: torch.Generator | None


def training_data(dataset: ImageDataset, train_rows: np.ndarray, valid_rows: np.ndarray | None,
                  *, eval_transform: Callable, batch_size: int, device: torch.device,
                  num_workers: int, seed: int | None,
                  balance: np.ndarray | None = None) -> TrainingData:
    """The loaders of a fit on the ``train_rows`` of ``dataset`` (whose transform augments).

    Shuffling is seeded by ``seed`` (None: not reproducible). The validation rows are read
    through ``eval_transform``, without augmentation. With ``balance`` (the class of every row
    of ``dataset``), each epoch draws ``len(train_rows)`` images with replacement, every class
    with the same probability (:func:`balanced_sampler`), instead of each image once.
    """
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    # A last batch of one image fails in BatchNorm's training mode: drop it.
    drop_last = len(train_rows) % batch_size == 1 and len(train_rows) > 1
    sampler = None if balance is None else balanced_sampler(balance[train_rows], generator)
    loader = make_loader(Subset(dataset, train_rows), batch_size=batch_size, device=device,
                         num_workers=num_workers, shuffle=True, generator=generator,
                         drop_last=drop_last, sampler=sampler)
    validation = None
    if valid_rows is not None:
        validation = (Subset(dataset.view(eval_transform, targets=False), valid_rows), valid_rows)
    return TrainingData(loader, validation, generator)


def balanced_sampler(classes: np.ndarray,
                     generator: torch.Generator | None) -> WeightedRandomSampler:
    """Draws ``len(classes)`` positions per epoch, with replacement, each class equally often.

    Each position is drawn with probability ``1 / (n_classes * count of its class)``: a class of
    4 images is seen as often as one of 400 (its images repeated, under the augmentation).
    """
    _, index, counts = np.unique(classes, return_inverse=True, return_counts=True)
    probability = 1.0 / (len(counts) * counts[index])
    return WeightedRandomSampler(torch.as_tensor(probability, dtype=torch.double),
                                 num_samples=len(classes), replacement=True, generator=generator)


@dataclass
class Stage:
    """One stage of training (the head alone, then the chosen layers): its optimizer's parameter
    groups, the optimizer, its schedule, and what puts the network in its training modes."""

    groups: list[dict[str, Any]]
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    names: list[str]  # the layers it trains besides the head
    set_modes: Callable[[], None]


@dataclass
class Trainer:
    """Everything one epoch of training needs.

    ``network`` maps a ``uint8`` batch to a row of outputs whose columns from ``logits_from`` on
    are the logits. With ``mix``, training batches are mixed (float images, soft targets).
    ``targets`` and ``weights`` are indexed by the dataset's row numbers (the third item of each
    batch); weights have mean 1 over the training rows.
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
    part_size: int | None = None  # images per forward/backward pass once memory ran out
    average: WeightAverage | None = None  # the EMA of the weights, updated after each step
    mix: Mixer | None = None  # mixup / CutMix of each batch (soft targets, mixed weights)

    def averaged(self) -> contextlib.AbstractContextManager:
        """A block in which the network holds the averaged weights (if there is an average)."""
        return contextlib.nullcontext() if self.average is None else self.average.applied(
            self.network)

    def enter(self, stage: Stage) -> None:
        """Train with ``stage``'s optimizer, schedule and modes from now on."""
        self.optimizer, self.schedule, self.set_modes = (stage.optimizer, stage.schedule,
                                                         stage.set_modes)

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)[:, self.logits_from:]

    def train_epoch(self, loader: DataLoader, progress: bool = False, desc: str = "") -> float:
        """One pass over ``loader``; returns the weighted mean training loss."""
        from tqdm.auto import tqdm

        self.set_modes()
        trainable = [p for group in self.optimizer.param_groups for p in group["params"]]
        total = torch.zeros((), device=self.device)
        weight_sum = torch.zeros((), device=self.device)
        # The bar counts batches. (tqdm.auto's bar calls iter(loader) once more, which draws
        # from the loader's generator: iterating without it would change every shuffle.)
        for images, messages, rows in tqdm(loader, desc=desc, unit="batch", disable=not progress,
                                           leave=True):
            images = images.to(self.device, non_blocking=True)
            rows_on_device = rows.to(self.device, non_blocking=True)
            targets = self.targets[rows_on_device]
            weights = self.weights[rows_on_device]
            if any(messages):  # unreadable images (on_error="nan") do not train
                ok = [not message for message in messages]
                self.bad_rows.update({int(r): m for r, m in zip(rows.tolist(), messages) if m})
                weights = weights * torch.tensor(ok, device=self.device, dtype=weights.dtype)
            if self.mix is not None:
                images, targets, weights = self.mix(images, targets, weights)
            self.optimizer.zero_grad(set_to_none=True)
            weighted = self._backward(images, targets, weights)
            if self.grad_clip_norm is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(trainable, self.grad_clip_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.schedule.after_step()
            if self.average is not None:
                self.average.update()
            total += weighted.detach()
            weight_sum += weights.sum()
        return float(total / weight_sum.clamp(min=1e-12))  # the one synchronisation per epoch

    def _backward(self, images: torch.Tensor, targets: torch.Tensor,
                  weights: torch.Tensor) -> torch.Tensor:
        """Gradients of the batch's mean weighted loss; returns its weighted sum (on the device).

        When the device runs out of memory (``torch.OutOfMemoryError``), the partial gradients
        are dropped and the same batch runs again as parts of half the size, whose gradients
        add up to the whole batch's (each part's loss divided by the batch's size): one
        optimizer step over the same rows, none skipped or seen twice. The part size is kept
        for the rest of the fit. Batch-norm layers then see smaller batches.
        """
        n_rows = len(images)
        while True:
            part_size = self.part_size or n_rows
            total = torch.zeros((), device=self.device)
            try:
                for start in range(0, n_rows, part_size):
                    part = slice(start, start + part_size)
                    with autocast(self.device, self.precision):
                        logits = self.logits(images[part])
                    losses = F.cross_entropy(logits.float(), targets[part], reduction="none",
                                             label_smoothing=self.label_smoothing)
                    weighted = (losses * weights[part]).sum()
                    self.scaler.scale(weighted / n_rows).backward()
                    total += weighted.detach()
                return total
            except torch.OutOfMemoryError:
                if part_size == 1:
                    raise
                self.optimizer.zero_grad(set_to_none=True)
                first = self.part_size is None
                self.part_size = part_size // 2
                if first:
                    warn_out_of_memory(part_size, self.part_size, "this fit's steps")

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

    @property
    def should_stop(self) -> bool:
        """Whether the validation loss has not improved for ``patience`` epochs."""
        return self.waited >= self.patience

    def update(self, loss: float, epoch: int, model: nn.Module) -> bool:
        """Record ``epoch``'s validation loss; returns whether training should stop."""
        if math.isfinite(loss) and loss < self.best_loss - self.tol:
            self.best_loss, self.best_epoch, self.waited = loss, epoch, 0
            self.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            self.waited += 1
        return self.should_stop

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
    on_epoch_end: Callable[[dict[str, Any]], bool] | None = None,
    unfreeze_after: int | None = None,
    unfreeze: Callable[[], None] | None = None,
) -> int | None:
    """Train for up to ``epochs`` epochs, numbered from ``first_epoch``.

    Each epoch's record (``epoch``, ``train_loss``, ``valid_loss``, ``valid_accuracy``, ``lr``,
    ``seconds``) goes to ``on_epoch_end``, after early stopping has seen it; a true return stops
    training. Returns the epoch whose weights the network ends with when early stopping
    restored the best one, else None (the network holds the last epoch's weights).

    ``check_bad_rows`` is called with the unreadable training rows (``{row: message}``) after the
    first epoch's pass: files that exist but do not decode are only known once loaded, and it may
    raise rather than let training go on with nothing (or no image of a class) to learn from.

    Staged training: epochs up to ``unfreeze_after`` (an epoch number) train the head alone;
    ``unfreeze()`` then gives ``trainer`` the optimizer, schedule and modes of the next stage.
    It runs at the end of that epoch, before ``on_epoch_end``, so that a checkpoint written
    then holds the stage its next epoch trains in. Early stopping records the head epochs (the
    best weights may be one of them) but does not stop them, and its patience restarts with
    the next stage.
    """
    stopper = early_stopping if validation is not None else None
    if verbose and epochs > 0:
        held_out = f", validating on {len(validation[1])}" if validation is not None else ""
        batches = len(train_loader)
        print(f"training on {len(train_loader.dataset)} images{held_out}: epochs "
              f"{first_epoch}-{first_epoch + epochs - 1}, {batches} batch{'es' * (batches != 1)} "
              f"of up to {train_loader.batch_size} per epoch", flush=True)
    for epoch in range(first_epoch, first_epoch + epochs):
        head_only = unfreeze_after is not None and epoch <= unfreeze_after
        if stopper is not None and stopper.should_stop and not head_only:  # a resumed run that
            break                                                         # had stopped
        start = time.perf_counter()
        lr = float(trainer.optimizer.param_groups[0]["lr"])  # the head's group comes first
        train_loss = trainer.train_epoch(train_loader, progress, desc=f"epoch {epoch}")
        if epoch == first_epoch and check_bad_rows is not None:
            check_bad_rows(trainer.bad_rows)  # before validation adds its own rows
        if not math.isfinite(train_loss):
            raise FloatingPointError(
                f"training diverged: the loss is {train_loss} at epoch {epoch}. Lower lr, set "
                "grad_clip_norm, or use precision='fp32'."
            )
        valid_loss = valid_accuracy = math.nan
        with trainer.averaged():  # the averaged weights are validated, and kept if the best
            if validation is not None:
                valid_loss, valid_accuracy = trainer.evaluate(
                    *validation, batch_size=eval_batch_size, num_workers=num_workers
                )
            stop = stopper is not None and stopper.update(valid_loss, epoch, trainer.network)
        trainer.schedule.after_epoch(valid_loss if validation is not None else train_loss)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "valid_loss": valid_loss,
            "valid_accuracy": valid_accuracy,
            "lr": lr,
            "seconds": time.perf_counter() - start,
        }
        if verbose:
            valid = (f"  valid_loss {valid_loss:.4f}  valid_accuracy {valid_accuracy:.4f}"
                     if validation is not None else "")
            print(f"epoch {epoch:3d}  train_loss {train_loss:.4f}{valid}  lr {lr:.2e}  "
                  f"{record['seconds']:.1f}s", flush=True)
        stop = stop and not head_only
        if stop and verbose:
            print(f"early stopping: no improvement for {stopper.patience} epochs", flush=True)
        if epoch == unfreeze_after and unfreeze is not None:
            unfreeze()
            if stopper is not None:
                stopper.waited = 0
            if verbose:
                print("the head is trained: the chosen layers train from now on", flush=True)
        if on_epoch_end is not None and on_epoch_end(record):
            if verbose:
                print("stopped by a callback", flush=True)
            stop = True
        if stop:
            break
    if stopper is not None and stopper.best_epoch is not None:
        stopper.restore(trainer.network)
        return stopper.best_epoch
    if trainer.average is not None:
        trainer.average.apply(trainer.network)
    return None


# --- resumable training ----------------------------------------------------------------------


@dataclass
class Run:
    """A fit in progress: what a checkpoint holds, besides the network, to continue it exactly.

    ``first_epoch`` is the number of the run's first epoch (``warm_start`` continues the count),
    ``fingerprint`` identifies its targets, sample weights and split, ``images`` its images X,
    and ``seeded`` says whether the random streams were seeded (only then are they worth
    keeping).
    """

    trainer: Trainer
    early_stopping: EarlyStopping | None
    generator: torch.Generator | None
    first_epoch: int
    fingerprint: str
    seeded: bool
    #: Digest of the images X (computed on the first checkpoint: a fit that writes none never
    #: reads its files twice); None when unknown.
    images: Callable[[], str | None] = lambda: None


def write_training_state(folder: str | os.PathLike, run: Run) -> None:
    """Write ``run``'s state (all but the network) to ``folder`` as safetensors and JSON."""
    from safetensors.torch import save_file

    trainer, stopper = run.trainer, run.early_stopping
    tensors, optimizer_document = optimizer_state(trainer.optimizer)
    tensors = {f"optimizer.{key}": value for key, value in tensors.items()}
    document: dict[str, Any] = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "first_epoch": run.first_epoch,
        "fingerprint": run.fingerprint,
        "images": run.images(),
        "optimizer": optimizer_document,
        "schedule": trainer.schedule.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "early_stopping": None,
        "bad_rows": {str(row): message for row, message in trainer.bad_rows.items()},
        "python_random": None,
        "average_updates": None if trainer.average is None else trainer.average.updates,
    }
    if trainer.average is not None:
        for key, value in trainer.average.shadow.items():
            tensors[f"average.{key}"] = value.detach().cpu().contiguous().clone()
    if stopper is not None:
        document["early_stopping"] = {
            "best_loss": stopper.best_loss if math.isfinite(stopper.best_loss) else None,
            "best_epoch": stopper.best_epoch, "waited": stopper.waited,
        }
        for key, value in (stopper.best_state or {}).items():
            tensors[f"best.{key}"] = value.detach().cpu().contiguous().clone()
    if run.seeded:
        tensors["rng.torch"] = torch.get_rng_state()
        if trainer.device.type == "cuda":
            tensors["rng.cuda"] = torch.cuda.get_rng_state(trainer.device)
        if run.generator is not None:
            tensors["rng.loader"] = run.generator.get_state()
        version, internal, gauss = random.getstate()
        document["python_random"] = [version, list(internal), gauss]
    folder = Path(folder)
    save_file(tensors, str(folder / _TENSORS), metadata={"format": "pt"})
    # Python's json writes the schedulers' infinities as Infinity and reads them back.
    (folder / TRAINING_STATE).write_text(json.dumps(document) + "\n", encoding="utf-8")


def read_training_state(
        folder: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON document and the tensors :func:`write_training_state` wrote to ``folder``."""
    from safetensors.torch import load_file

    folder = Path(folder)
    path = folder / TRAINING_STATE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        tensors = load_file(str(folder / _TENSORS), device="cpu")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{str(folder)!r} is not a readable skdeep checkpoint ({exc}); resume "
                         "from another checkpoint or fit afresh.") from exc
    if not isinstance(document, dict) or document.get("format") != _FORMAT:
        raise ValueError(f"{str(path)!r} is not an skdeep training state.")
    if document.get("format_version") != _FORMAT_VERSION:
        raise ValueError(f"{str(path)!r} has format version {document.get('format_version')!r}; "
                         f"this skdeep reads version {_FORMAT_VERSION}.")
    return document, tensors


def restore_training_state(run: Run, document: dict[str, Any],
                           tensors: dict[str, torch.Tensor]) -> None:
    """Put the state :func:`read_training_state` returned into ``run`` (built as it was).

    Call it after the network's weights are loaded and before training: the optimizer's state
    goes in before the schedule's, so that the schedule finds the rates where it left them.
    """
    trainer, stopper = run.trainer, run.early_stopping
    prefixed = {prefix: {key[len(prefix):]: value for key, value in tensors.items()
                         if key.startswith(prefix)}
                for prefix in ("optimizer.", "best.", "average.")}
    load_optimizer_state(trainer.optimizer, prefixed["optimizer."], document["optimizer"])
    trainer.schedule.load_state_dict(document["schedule"])
    if document["scaler"] is not None:
        trainer.scaler.load_state_dict(document["scaler"])
    trainer.bad_rows.update({int(row): message for row, message in document["bad_rows"].items()})
    if trainer.average is not None and document.get("average_updates") is not None:
        trainer.average.updates = int(document["average_updates"])
        for key, value in prefixed["average."].items():
            trainer.average.shadow[key].copy_(value)
    if stopper is not None and document["early_stopping"] is not None:
        record = document["early_stopping"]
        best_loss = record["best_loss"]
        stopper.best_loss = math.inf if best_loss is None else float(best_loss)
        stopper.best_epoch, stopper.waited = record["best_epoch"], int(record["waited"])
        best = prefixed["best."]
        if best:
            device = next(iter(trainer.network.parameters())).device
            stopper.best_state = {key: value.to(device) for key, value in best.items()}
    if run.seeded:
        torch.set_rng_state(tensors["rng.torch"])
        if trainer.device.type == "cuda" and "rng.cuda" in tensors:
            torch.cuda.set_rng_state(tensors["rng.cuda"], trainer.device)
        if run.generator is not None and "rng.loader" in tensors:
            run.generator.set_state(tensors["rng.loader"])
        if document["python_random"] is not None:
            version, internal, gauss = document["python_random"]
            random.setstate((version, tuple(internal), gauss))
