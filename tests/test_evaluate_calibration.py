"""evaluate(calibrate=...) (issue 22): calibration scores of every strategy, calibration fitted
inside each training fold only, and the reliability diagram of the recommended strategy."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from _helpers import TINY, make_images
from skdeep.calibration import calibration_scores
from skdeep.evaluation import evaluate

FAST = dict(backbone=TINY, weights=None, image_size=32, layers=["blocks.1"], pairs=False,
            duplicates="ignore", precision="fp32", cv=2)
# recipe=None: no fourth fit with the recommended recipe, the slowest of them (all layers and
# a probe's forward pass), whose temperature is fitted as those of the others are
FINETUNE = dict(finetune=True, finetune_params={"epochs": 1, "tta": None, "batch_size": 8,
                                                "recipe": None})


@pytest.fixture(scope="module")
def data():
    images, labels = make_images(n=48, n_classes=3, seed=2)
    noise = np.random.default_rng(0).integers(0, 60, size=images.shape, dtype=np.uint8)
    return images + noise, labels  # not perfectly separable: probabilities to calibrate


def test_every_strategy_gets_calibration_scores_of_its_out_of_fold_probabilities(data):
    result = evaluate(*data, **FAST)
    classes = np.unique(result.y)
    for _, row in result.scores.iterrows():
        proba = result.probabilities[row["strategy"]]
        assert proba.shape == (len(result.y), len(classes))
        np.testing.assert_array_equal(classes[proba.argmax(axis=1)],
                                      result.predictions[row["strategy"]])
        scores = calibration_scores(result.y, proba, labels=classes)
        assert {name: row[name] for name in scores} == pytest.approx(scores)
    assert "log_loss_calibrated" not in result.scores and result.calibrated_probabilities is None


def test_calibrate_keeps_accuracy_and_never_sees_the_test_fold(data, tmp_path):
    """Fold 0's images are permuted among its rows, so that its labels no longer fit its
    images, while y (and so the folds) stays the same. The models that predict fold 0 are
    fitted and calibrated on fold 1 alone, so fold 0's calibrated probabilities must be the
    same numbers, permuted with the images: a calibration that had looked at fold 0's labels
    would have moved."""
    images, labels = data
    plain = evaluate(images, labels, **FAST)
    result = evaluate(images, labels, calibrate=True, **FAST, **FINETUNE)
    frozen = list(plain.scores["strategy"])
    np.testing.assert_array_equal(result.scores.set_index("strategy").loc[frozen, "accuracy_mean"],
                                  plain.scores.set_index("strategy")["accuracy_mean"])
    assert result.config["calibrate"] and "ece_calibrated" in result.scores
    fold0 = np.flatnonzero(result.test_fold == 0)
    order = np.random.default_rng(1).permutation(fold0)
    shuffled = images.copy()
    shuffled[fold0] = images[order]
    again = evaluate(shuffled, labels, calibrate=True, **FAST, **FINETUNE)
    np.testing.assert_array_equal(again.test_fold, result.test_fold)  # the same folds
    for name in result.scores["strategy"]:
        first, second = result.calibrated_probabilities[name], again.calibrated_probabilities[name]
        np.testing.assert_allclose(second[fold0], first[order], rtol=1e-5, atol=1e-6,
                                   err_msg=name)
    # and the labels of fold 0 did change the problem: its scores moved
    assert not np.allclose(again.scores["log_loss_calibrated"], result.scores["log_loss_calibrated"])
    written = result.save(tmp_path / "report")
    assert tmp_path / "report" / "reliability_diagram.png" in written
    with Image.open(tmp_path / "report" / "reliability_diagram.png") as picture:
        assert min(picture.size) > 300


def test_calibrate_needs_three_images_of_each_class_in_a_training_fold():
    images, labels = make_images(n=12, n_classes=3)
    with pytest.raises(ValueError, match="3 inner folds.*fold 0 has 2 image"):
        evaluate(images, labels, calibrate=True, **FAST)  # 2 folds: 2 training images a class
