"""Mixup and CutMix of training batches, by torchvision's ``v2.MixUp`` and ``v2.CutMix``.

Mixup (Zhang et al., 2018) trains on convex combinations of image pairs and of their labels;
CutMix (Yun et al., 2019) pastes a box of one image into another and mixes the labels by its
area. With both, each batch takes one of the two at random, as timm's ``Mixup`` does.

torchvision's transforms rather than timm's ``Mixup``: timm draws from NumPy's global random
state, which a fit would then change for the caller and could not restore from a checkpoint;
torchvision draws from torch's generator, which ``fit`` seeds and checkpoints. Sample weights
are mixed with the labels (they travel as one more label column), so that an image's weight in
the loss is the mix of its two sources' weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Mixer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor],
                 tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def batch_mixer(mixup: float, cutmix: float, n_classes: int) -> Mixer | None:
    """``(images, targets, weights) -> (mixed images, soft targets, mixed weights)``, or None.

    ``mixup`` and ``cutmix`` are the Beta distributions' ``alpha`` (0: not used); ``images``
    is a ``uint8`` (or [0, 255] float) NCHW batch, ``targets`` class indices. The mixed images
    are float in [0, 255] (the network's normalisation takes either).
    """
    from torchvision.transforms import v2

    choices = [kind(alpha=alpha) for kind, alpha in ((v2.MixUp, mixup), (v2.CutMix, cutmix))
               if alpha > 0]
    if not choices:
        return None
    mix = choices[0] if len(choices) == 1 else v2.RandomChoice(choices)

    def apply(images: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor):
        labels = torch.cat([F.one_hot(targets, n_classes).float(), weights[:, None].float()], 1)
        mixed, labels = mix(images.float(), labels)
        return mixed, labels[:, :-1], labels[:, -1]

    return apply
