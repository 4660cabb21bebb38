"""An exponential moving average (EMA) of a network's weights during training.

Validation, early stopping and the fitted model use the average instead of the last step's
weights: averaging the end of a noisy trajectory (small batches, few images) lands nearer the
centre of the basin it wanders in (Polyak averaging; timm's ``ModelEmaV3``).

Written here rather than taken from ``torch.optim.swa_utils.AveragedModel`` or timm's
``ModelEmaV3``: both hold a second copy of the *module*, while the training loop must swap the
average in and out of its own network (for validation and early stopping, whose best weights are
then the average's) and write it to a checkpoint as plain tensors (safetensors, never pickled).
The update rule is timm's: ``decay_t = min(decay, (1 + t) / (10 + t))`` at step ``t``, so that the
first steps, whose weights are still the pretrained ones, do not weigh for hundreds of steps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class WeightAverage:
    """The running average of ``network``'s floating-point weights and buffers.

    Integer buffers (BatchNorm's batch counters) follow the network. ``updates`` counts the
    optimisation steps averaged so far.
    """

    def __init__(self, network: nn.Module, decay: float) -> None:
        self.decay = decay
        self.updates = 0
        state = network.state_dict()
        self.shadow = {name: value.detach().clone() for name, value in state.items()}
        self._floats = [name for name, value in state.items() if value.is_floating_point()]
        self._others = [name for name, value in state.items() if not value.is_floating_point()]
        # state_dict() returns views of the live tensors (load_state_dict copies into them), so
        # the references stay valid for the whole fit: no dictionary built per step.
        self._live = state

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Fold the network's current weights into the average (after an optimizer step)."""
        weight = 1.0 - self.current_decay()
        torch._foreach_lerp_([self.shadow[name] for name in self._floats],
                             [self._live[name].detach() for name in self._floats], weight)
        for name in self._others:
            self.shadow[name].copy_(self._live[name])
        self.updates += 1

    @contextlib.contextmanager
    def applied(self, network: nn.Module) -> Iterator[None]:
        """Inside the block ``network`` holds the average; afterwards its own weights again."""
        own = {name: value.detach().clone() for name, value in self._live.items()}
        network.load_state_dict(self.shadow)
        try:
            yield
        finally:
            network.load_state_dict(own)

    def apply(self, network: nn.Module) -> None:
        """Put the average into ``network`` for good (the end of training)."""
        network.load_state_dict(self.shadow)
