"""Shared fixtures: small, seeded, offline images."""

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(autouse=True, scope="session")
def _short_step_budget():
    """Fits in tests train a few steps: max_steps="auto" (the default) means ``epochs`` here.

    The product's minimum of 400 steps would make every tiny fit run hundreds of steps; the
    rule itself is tested on its own (tests/test_finetune_recipes.py restores the value).
    Session-wide, so that module-scoped fixtures' fits see it too; processes a test starts see
    the real value, so their fits give ``max_steps`` explicitly.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("skdeep._optim.AUTO_MIN_STEPS", 1)
        yield


@pytest.fixture
def rgb_images():
    """Six 24x24 RGB uint8 images with structure (gradients + noise), not just noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:24]
    base = np.stack([xx * 10, yy * 10, (xx + yy) * 5], axis=-1)
    images = [(base * (i + 1) / 6 + rng.integers(0, 40, base.shape)) % 256 for i in range(6)]
    return np.asarray(images, dtype=np.uint8)


@pytest.fixture
def labelled_images():
    """Forty 24x24 RGB images of two visually distinct classes (bright vs striped), labels 0/1."""
    rng = np.random.default_rng(1)
    images = np.zeros((40, 24, 24, 3), dtype=np.uint8)
    labels = np.arange(40) % 2
    for i, label in enumerate(labels):
        noise = rng.integers(0, 30, (24, 24, 3))
        if label:
            images[i] = 200 + noise
        else:
            images[i, ::4] = 255
            images[i] += noise.astype(np.uint8)
    return images, labels
