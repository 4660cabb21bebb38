"""Issue 26, everyday use round 2: what a new user, following the docs literally, tripped over."""

from __future__ import annotations

import numpy as np
import pytest

from _helpers import TINY, make_images
from skdeep import FineTunedCNNClassifier

FAST = {"backbone": TINY, "weights": None, "image_size": 16, "batch_size": 8, "random_state": 0}


def test_a_fit_says_what_it_trains_and_one_line_per_epoch_by_default(capsys):
    X, y = make_images(24)
    clf = FineTunedCNNClassifier(epochs=2, validation_fraction=0.25, **FAST)
    assert clf.verbose == 1
    clf.fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("training on 18 images, validating on 6: epochs 1-2, "
                        "3 batches of up to 8 per epoch")
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and all("valid_accuracy" in line for line in epochs)


def test_verbose_0_is_silent_and_no_validation_prints_no_nan(capsys):
    X, y = make_images(24)
    FineTunedCNNClassifier(epochs=1, verbose=0, **FAST).fit(X, y)
    assert capsys.readouterr().out == ""
    FineTunedCNNClassifier(epochs=1, validation_fraction=0, **FAST).fit(X, y)
    out = capsys.readouterr().out
    assert out.startswith("training on 24 images: epochs 1-1, 3 batches")
    assert "nan" not in out and "valid_" not in out
