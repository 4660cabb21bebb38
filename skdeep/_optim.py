"""Optimisation of a fine-tuned network: discriminative learning rates, optimizers, LR schedules.

Parameter groups follow the network's trainable layers (see :mod:`skdeep._trainable_layers`): the
new head learns at ``lr``; pretrained layers at ``lr * backbone_lr_mult`` (the "one tenth of the original learning
rate" rule of thumb), optionally decayed by ``layer_decay`` per layer of depth below the top, so
that early, generic layers move least. Biases and normalisation parameters get no weight decay.
Each group carries a ``"name"`` key, so ``optimizer.param_groups`` says which is which.

:class:`LRSchedule` drives the learning rate per optimisation step (cosine, step, one-cycle,
constant, each with optional linear warm-up) or per epoch (reduce-on-plateau).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ._trainable_layers import HEAD, TrainableLayer, parameter_owner

OPTIMIZERS = ("adamw", "sgd", "adam", "rmsprop", "adagrad")
SCHEDULERS = ("cosine", "step", "onecycle", "plateau")

SGD_MOMENTUM = 0.9
STEP_SIZE = 7  # epochs: the values of the PyTorch transfer-learning tutorial
STEP_GAMMA = 0.1
PLATEAU_FACTOR = 0.1
PLATEAU_PATIENCE = 2
#: ``max_steps="auto"``: train for at least this many optimisation steps. A schedule counted in
#: epochs gives a set of 200 images 7 steps per epoch, too few to move a network. 400 was chosen
#: a priori; with it ``bench_transfer.py --recipes`` measured +1.7 to +8.7 points of balanced
#: accuracy over 10 epochs on 400-500 images. Other values are not measured yet (``--steps``).
AUTO_MIN_STEPS = 400


def budget_epochs(max_steps: int | str | None, epochs: int, steps_per_epoch: int) -> int:
    """The epochs of a fit: ``epochs``, or the fewest whose steps cover ``max_steps``.

    ``max_steps="auto"`` is ``max(epochs * steps_per_epoch, AUTO_MIN_STEPS)`` steps: ``epochs``
    for sets large enough, at least :data:`AUTO_MIN_STEPS` steps for small ones. Epochs stay
    whole, so that every image is seen equally often and checkpoints fall between epochs.
    """
    if max_steps is None:
        return epochs
    steps_per_epoch = max(1, steps_per_epoch)
    steps = max(epochs * steps_per_epoch, AUTO_MIN_STEPS) if max_steps == "auto" else max_steps
    return max(1, math.ceil(steps / steps_per_epoch))


def param_groups(model: nn.Module, layers: Sequence[TrainableLayer], head: str, *, lr: float,
                 backbone_lr_mult: float, layer_decay: float | None,
                 weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters of ``model`` in groups with their own learning rate and decay.

    Layers are numbered from the top: the deepest layer gets ``lr * backbone_lr_mult``, the one
    below it that times ``layer_decay``, and so on. Only parameters with ``requires_grad`` are
    included, so frozen layers never reach the optimizer.
    """
    depth = {layer.name: len(layers) - 1 - i for i, layer in enumerate(layers)}
    buckets: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        owner = parameter_owner(name, layers, head) or "stem"
        decays = parameter.ndim > 1 and not name.endswith(".bias")
        buckets.setdefault((owner, decays), []).append(parameter)
    order = [HEAD] + [layer.name for layer in reversed(layers)]
    groups = []
    for owner in order:
        if owner == HEAD:
            group_lr = lr
        else:
            group_lr = lr * backbone_lr_mult * (layer_decay ** depth[owner] if layer_decay else 1.0)
        for decays in (True, False):
            params = buckets.get((owner, decays))
            if params:
                groups.append({
                    "params": params,
                    "lr": group_lr,
                    "weight_decay": weight_decay if decays else 0.0,
                    "name": owner if decays else f"{owner} (no decay)",
                })
    return groups


def optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """An optimizer's state as tensors (for safetensors) and JSON types, never pickled.

    Returns ``({"<param index>.<name>": tensor}, {"param_groups": [...], "values": {...}})``:
    per-parameter tensors (Adam's moments, SGD's momentum buffers, step counts) go to the
    first, the groups (learning rates, betas...) and any per-parameter value that is not a
    tensor to the second. :func:`load_optimizer_state` is the inverse.
    """
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    values: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                values.setdefault(str(index), {})[name] = value
    groups = [{key: list(value) if isinstance(value, tuple) else value
               for key, value in group.items()} for group in state["param_groups"]]
    return tensors, {"param_groups": groups, "values": values}


def load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor],
                         document: dict) -> None:
    """Restore what :func:`optimizer_state` returned into ``optimizer`` (built the same way)."""
    state: dict[int, dict[str, Any]] = {}
    for key, tensor in tensors.items():
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = tensor
    for index, entries in document["values"].items():
        state.setdefault(int(index), {}).update(entries)
    # JSON has no tuples; groups hold tuples (betas) except the parameter indices
    groups = [{key: tuple(value) if isinstance(value, list) and key != "params" else value
               for key, value in group.items()} for group in document["param_groups"]]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def make_optimizer(name: str, groups: list[dict[str, Any]], *,
                   nesterov: bool = False) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``groups`` (their lr and weight_decay are used as given).

    ``"sgd"`` uses momentum 0.9 (Nesterov's when ``nesterov``); ``"adamw"`` decouples weight
    decay from the gradient, ``"adam"`` adds it to the gradient (L2).
    """
    default_lr = groups[0]["lr"]
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=default_lr)
    if name == "adam":
        return torch.optim.Adam(groups, lr=default_lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=default_lr, momentum=SGD_MOMENTUM, nesterov=nesterov)
    if name == "rmsprop":
        return torch.optim.RMSprop(groups, lr=default_lr)
    if name == "adagrad":
        return torch.optim.Adagrad(groups, lr=default_lr)
    raise ValueError(f"unknown optimizer {name!r}; expected one of {OPTIMIZERS}.")


class LRSchedule:
    """Learning rate over training: call :meth:`after_step` per batch, :meth:`after_epoch` per epoch.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Its groups' current ``lr`` are the peak rates.
    kind : {"cosine", "step", "onecycle", "plateau"} or None
        ``"cosine"`` anneals to 0 over the run; ``"step"`` multiplies by 0.1 every 7 epochs;
        ``"onecycle"`` is Smith's one-cycle policy (warm-up included); ``"plateau"`` divides by 10
        after 2 epochs without improvement of the monitored loss; None keeps the rate.
    steps_per_epoch, epochs : int
    warmup_epochs : float
        Linear warm-up from 0 over that many epochs (for one-cycle: the rising phase).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, kind: str | None, *, steps_per_epoch: int,
                 epochs: int, warmup_epochs: float = 0.0) -> None:
        self.optimizer = optimizer
        self.kind = kind
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total = self.steps_per_epoch * max(1, epochs)
        self.warmup = min(self.total, int(round(warmup_epochs * self.steps_per_epoch)))
        self.step_count = 0
        self.base = [group["lr"] for group in optimizer.param_groups]
        self._torch = None
        if kind == "onecycle":
            momentum = "betas" in optimizer.defaults or optimizer.defaults.get("momentum", 0) > 0
            pct_start = self.warmup / self.total if self.warmup else 0.3
            self._torch = torch.optim.lr_scheduler.OneCycleLR(
                optimizer, max_lr=self.base, total_steps=self.total,
                pct_start=min(max(pct_start, 1.0 / self.total), 0.99), cycle_momentum=momentum,
            )
        elif kind == "plateau":
            self._torch = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE,
            )
        if kind != "onecycle":
            self._apply(0)

    def _factor(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.kind == "cosine":
            span = max(1, self.total - self.warmup)
            return 0.5 * (1.0 + math.cos(math.pi * min(step - self.warmup, span) / span))
        if self.kind == "step":
            return STEP_GAMMA ** (step // self.steps_per_epoch // STEP_SIZE)
        return 1.0

    def _apply(self, step: int) -> None:
        if self.kind == "plateau" and step >= self.warmup:
            if step == self.warmup and self.warmup:
                for group, base in zip(self.optimizer.param_groups, self.base):
                    group["lr"] = base
            return  # the plateau scheduler owns the rate after warm-up
        factor = self._factor(step)
        for group, base in zip(self.optimizer.param_groups, self.base):
            group["lr"] = base * factor

    def after_step(self) -> None:
        """Advance one optimisation step."""
        self.step_count += 1
        if self.kind == "onecycle":
            if self.step_count < self.total:
                self._torch.step()
        else:
            self._apply(self.step_count)

    def state_dict(self) -> dict[str, Any]:
        """Where the schedule is, in JSON types (the rates themselves live in the optimizer)."""
        return {"step_count": self.step_count,
                "torch": self._torch.state_dict() if self._torch is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`; load the optimizer's state (its rates) as well."""
        self.step_count = int(state["step_count"])
        if self._torch is not None:
            self._torch.load_state_dict(state["torch"])
        if self.kind not in ("onecycle", "plateau"):  # those two own their rates: as saved
            # The rate of this step under this schedule: the saved one, unless the run was
            # extended (more epochs: a cosine is recomputed for the new total).
            self._apply(self.step_count)

    def after_epoch(self, monitored_loss: float) -> None:
        """Advance one epoch; ``monitored_loss`` drives "plateau" (NaN is ignored)."""
        if self.kind == "plateau" and self.step_count >= self.warmup and math.isfinite(monitored_loss):
            self._torch.step(monitored_loss)
