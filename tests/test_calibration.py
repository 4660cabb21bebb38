"""Calibrated probabilities (issue 22): ECE, temperature scaling in FineTunedCNNClassifier, its
persistence, and scikit-learn's calibration wrappers and MAPIE around both estimator kinds."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.pipeline import Pipeline

from skdeep import Callback, Checkpoint, FineTunedCNNClassifier, PretrainedCNNFeatures
from skdeep.calibration import (
    calibrated_in_fold,
    calibration_scores,
    fit_temperature,
    plot_reliability_diagram,
    probabilities_before_and_after,
)
from skdeep.metrics import expected_calibration_error

from _helpers import TINY, make_images


def tiny(**params) -> FineTunedCNNClassifier:
    defaults = dict(backbone=TINY, weights=None, image_size=32, epochs=2, batch_size=8,
                    precision="fp32", random_state=0)
    return FineTunedCNNClassifier(**{**defaults, **params})


# --- expected_calibration_error ------------------------------------------------------------------


def test_ece_is_the_weighted_gap_between_confidence_and_accuracy():
    y = np.array(["a", "b", "b", "a", "a"])
    # confidence 0.9 (right), 0.9 (wrong): one bin, accuracy 0.5 -> gap 0.4, weight 2/5;
    # 0.6 (right), 0.6 (right), 0.6 (wrong): one bin, gap |0.6 - 2/3|, weight 3/5
    proba = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.6, 0.4], [0.4, 0.6]])
    assert expected_calibration_error(y, proba) == pytest.approx(
        0.4 * 2 / 5 + abs(0.6 - 2 / 3) * 3 / 5)
    # the second class's probability alone is the same prediction
    assert expected_calibration_error(y, proba[:, 1]) == expected_calibration_error(y, proba)
    # one bin holds everything: the gap of the means
    assert expected_calibration_error(y, proba, n_bins=1) == pytest.approx(
        abs(np.mean([0.9, 0.9, 0.6, 0.6, 0.6]) - 3 / 5))


def test_ece_of_calibrated_draws_is_small_and_of_overconfident_ones_large():
    rng = np.random.default_rng(0)
    proba = softmax(rng.normal(size=(20_000, 4)) * 1.5, axis=1)
    y = (rng.random((20_000, 1)) > proba.cumsum(axis=1)).sum(axis=1)  # drawn from proba
    assert expected_calibration_error(y, proba) < 0.01
    sharpened = softmax(np.log(proba) * 3, axis=1)  # same argmax, far more confident
    assert expected_calibration_error(y, sharpened) > 0.1


def test_ece_refuses_mismatched_inputs():
    with pytest.raises(ValueError, match="3 columns but there are 2 labels"):
        expected_calibration_error([0, 1], np.full((2, 3), 1 / 3))
    with pytest.raises(ValueError, match="row 1"):
        expected_calibration_error([0, 1], np.array([[0.5, 0.5], [np.nan, np.nan]]))
    with pytest.raises(ValueError, match="label 7 .row 1"):
        expected_calibration_error([0, 7], np.eye(2), labels=[0, 1])
    with pytest.raises(ValueError, match="shape"):
        expected_calibration_error([0, 1, 1], np.eye(2))


def test_fit_temperature_undoes_a_scaling_of_the_logits():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4000, 3)) * 2
    y = (rng.random((4000, 1)) > softmax(logits, axis=1).cumsum(axis=1)).sum(axis=1)
    assert fit_temperature(logits, y) == pytest.approx(1.0, abs=0.1)
    assert fit_temperature(3 * logits, y) == pytest.approx(3 * fit_temperature(logits, y), rel=1e-3)
    # weights count like repeated rows
    weights = rng.integers(1, 3, size=len(y))
    assert fit_temperature(logits, y, weights) == pytest.approx(
        fit_temperature(np.repeat(logits, weights, axis=0), np.repeat(y, weights)), rel=1e-3)


def test_calibration_scores_are_scikit_learns_and_the_ece():
    y = np.array([0, 2, 1, 2])
    proba = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6], [0.3, 0.4, 0.3], [0.5, 0.1, 0.4]])
    scores = calibration_scores(y, proba, labels=[0, 1, 2])
    assert scores["log_loss"] == pytest.approx(log_loss(y, proba))
    assert scores["brier"] == pytest.approx(np.mean(np.sum((proba - np.eye(3)[y]) ** 2, axis=1)))
    assert scores["ece"] == pytest.approx(expected_calibration_error(y, proba))


# --- FineTunedCNNClassifier(calibration=...) -----------------------------------------------------


@pytest.fixture(scope="module")
def memorised():
    """An over-confident network: trained for 40 epochs to memorise 30 % random wrong labels
    (12 epochs and one fixed wrong label per class did not memorise them, and were not
    over-confident on held-out images), and 64 held-out images labelled the same way."""
    X, y = make_images(n=128, n_classes=3, seed=3)
    rng = np.random.default_rng(0)
    noisy = y.copy()
    flip = rng.random(len(y)) < 0.3
    noisy[flip] = (noisy[flip] + rng.integers(1, 3, flip.sum())) % 3
    params = dict(epochs=40, lr=3e-2, early_stopping=False, validation_fraction=0.25,
                  augment=False, dropout=0.0, verbose=0)
    raw = tiny(calibration=None, **params).fit(X[:64], noisy[:64])
    calibrated = tiny(calibration="temperature", **params).fit(X[:64], noisy[:64])
    return raw, calibrated, X[64:], noisy[64:]


def test_temperature_keeps_predict_and_improves_held_out_log_loss(memorised):
    raw, calibrated, X_test, y_test = memorised
    assert raw.temperature_ == 1.0
    assert calibrated.temperature_ > 1.2  # over-confident: softened
    np.testing.assert_array_equal(calibrated.predict(X_test), raw.predict(X_test))
    before = log_loss(y_test, raw.predict_proba(X_test), labels=raw.classes_)
    after = log_loss(y_test, calibrated.predict_proba(X_test), labels=raw.classes_)
    assert after < before - 0.2  # measured: 1.47 -> 0.93 (temperature 3.8)
    # the logits are divided by the temperature, in every output
    np.testing.assert_allclose(calibrated.decision_function(X_test) * calibrated.temperature_,
                               raw.decision_function(X_test), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.exp(calibrated.predict_log_proba(X_test)),
                               calibrated.predict_proba(X_test), rtol=1e-6)
    assert calibrated.provenance_["calibration"] == "temperature"
    assert calibrated.provenance_["temperature"] == calibrated.temperature_
    before_after = probabilities_before_and_after(calibrated, X_test)
    np.testing.assert_allclose(before_after[0], raw.predict_proba(X_test), rtol=1e-5, atol=1e-6)


def test_decision_function_is_one_column_for_two_classes():
    X, y = make_images(n=40)
    clf = tiny().fit(X, y)
    scores = clf.decision_function(X[:5])
    assert scores.shape == (5,)
    proba = clf.predict_proba(X[:5])
    np.testing.assert_allclose(scores, np.log(proba[:, 1]) - np.log(proba[:, 0]), rtol=1e-5)


def test_without_validation_auto_warns_and_temperature_refuses():
    X, y = make_images(n=24)
    with pytest.warns(UserWarning, match="calibration='auto' cannot calibrate.*validation_fraction=0"):
        clf = tiny(validation_fraction=0, epochs=1, calibration="auto").fit(X, y)
    assert clf.temperature_ == 1.0
    with pytest.raises(ValueError, match="calibration='temperature'.*validation_fraction > 0"):
        tiny(validation_fraction=0, calibration="temperature").fit(X, y)
    assert tiny(validation_fraction=0, epochs=1).fit(X, y).temperature_ == 1.0  # None: silent
    with pytest.raises(ValueError, match="calibration"):
        tiny(calibration="isotonic").fit(X, y)


def test_temperature_is_saved_loaded_and_checked(memorised, tmp_path):
    _, calibrated, X_test, _ = memorised
    calibrated.save(tmp_path / "model")
    loaded = FineTunedCNNClassifier.load(tmp_path / "model")
    assert loaded.temperature_ == calibrated.temperature_
    assert loaded.calibration == "temperature"
    np.testing.assert_allclose(loaded.predict_proba(X_test), calibrated.predict_proba(X_test),
                               rtol=1e-6)
    document = tmp_path / "model" / "skdeep.json"
    config = json.loads(document.read_text())
    config["temperature"] = -1.0
    document.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="temperature.*not a finite number > 0"):
        FineTunedCNNClassifier.load(tmp_path / "model")
    del config["temperature"]  # a save made before calibration existed: uncalibrated
    document.write_text(json.dumps(config))
    assert FineTunedCNNClassifier.load(tmp_path / "model").temperature_ == 1.0


class _StopAfter(Callback):
    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_epoch_end(self, estimator, record) -> bool:
        return record["epoch"] >= self.epochs


def test_checkpoints_hold_the_uncalibrated_epoch_and_resume_calibrates_alike(tmp_path):
    X, y = make_images(n=48, n_classes=3)
    params = dict(epochs=3, calibration="temperature", validation_fraction=0.25)
    straight = tiny(**params).fit(X, y)
    tiny(**params, callbacks=[Checkpoint(tmp_path / "ckpt", monitor=None), _StopAfter(2)]).fit(X, y)
    epoch = FineTunedCNNClassifier.load(tmp_path / "ckpt" / "epoch-0002" / "model")
    assert epoch.temperature_ == 1.0  # an epoch's network, before the fit calibrated it
    resumed = tiny(**params).fit(X, y, resume=tmp_path / "ckpt" / "epoch-0002")
    assert straight.temperature_ != 1.0
    assert resumed.temperature_ == straight.temperature_


# --- scikit-learn's calibration wrappers and MAPIE, around both estimator kinds -----------------


@pytest.fixture(scope="module")
def fitted_pair():
    """A fitted fine-tuned classifier and a fitted probe pipeline, and data to calibrate on."""
    X, y = make_images(n=150, n_classes=3, seed=5)
    clf = tiny(epochs=3, calibration=None).fit(X[:60], y[:60])
    probe = Pipeline([("cnn", PretrainedCNNFeatures(TINY, weights=None, image_size=32,
                                                    precision="fp32", random_state=0)),
                      ("lr", LogisticRegression(max_iter=500))]).fit(X[:60], y[:60])
    return {"finetuned": clf, "probe": probe}, X[60:120], y[60:120], X[120:], y[120:]


@pytest.mark.parametrize("kind", ["finetuned", "probe"])
@pytest.mark.parametrize("method", ["temperature", "sigmoid", "isotonic"])
def test_calibrated_classifier_cv_wraps_both_estimators(fitted_pair, kind, method):
    models, X_cal, y_cal, X_test, y_test = fitted_pair
    model = models[kind]
    calibrated = CalibratedClassifierCV(FrozenEstimator(model), method=method).fit(X_cal, y_cal)
    proba = calibrated.predict_proba(X_test)
    assert proba.shape == (len(X_test), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    if method == "temperature":  # one scale for all classes: every prediction is kept
        np.testing.assert_array_equal(calibrated.predict(X_test), model.predict(X_test))
    assert model.predict_proba(X_test).shape == proba.shape  # the frozen model is not refitted


def test_calibrated_in_fold_keeps_the_full_fit_and_its_predictions():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(90, 4))
    y = (X[:, 0] + rng.normal(size=90) > 0).astype(int)
    wrapped = calibrated_in_fold(LogisticRegression(C=100)).fit(X, y)
    full = clone(LogisticRegression(C=100)).fit(X, y)
    before, after = probabilities_before_and_after(wrapped, X)
    np.testing.assert_allclose(before, full.predict_proba(X), rtol=1e-6)
    np.testing.assert_array_equal(after.argmax(1), before.argmax(1))


def test_reliability_diagram_draws_each_set(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=200)
    proba = softmax(rng.normal(size=(200, 3)) * 3, axis=1)
    figure = plot_reliability_diagram(y, {"before": proba, "after": softmax(np.log(proba) / 3, 1)},
                                      labels=[0, 1, 2], title="t")
    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]
    assert legend[0] == "perfectly calibrated"
    assert legend[1].startswith("before (ECE ") and legend[2].startswith("after (ECE ")
    figure.savefig(tmp_path / "d.png")
    assert (tmp_path / "d.png").stat().st_size > 1000


@pytest.mark.parametrize("kind", ["finetuned", "probe"])
def test_mapie_split_conformal_sets_around_both_estimators(fitted_pair, kind):
    classification = pytest.importorskip("mapie.classification")  # the skdeep[conformal] extra
    models, X_cal, y_cal, X_test, y_test = fitted_pair
    conformal = classification.SplitConformalClassifier(
        models[kind], confidence_level=0.9, prefit=True).conformalize(X_cal, y_cal)
    predicted, sets = conformal.predict_set(X_test)
    assert sets.shape == (len(X_test), 3, 1)
    np.testing.assert_array_equal(predicted, models[kind].predict(X_test))
    sizes = sets[:, :, 0].sum(axis=1)
    assert sizes.min() >= 0 and sizes.max() <= 3
    # a set at 90 % holds at least what a set at 50 % holds
    narrow = classification.SplitConformalClassifier(
        models[kind], confidence_level=0.5, prefit=True).conformalize(X_cal, y_cal)
    assert (narrow.predict_set(X_test)[1][:, :, 0] <= sets[:, :, 0]).all()
