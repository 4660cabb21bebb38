"""Issue 24: LP-FT, the step budget, the weight average, balanced sampling and named recipes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.utils._param_validation import InvalidParameterError
from torch import nn

from _helpers import TINY, make_images
from skdeep import Callback, Checkpoint, FineTunedCNNClassifier
from skdeep._averaging import WeightAverage
from skdeep._mixing import batch_mixer
from skdeep import _optim
from skdeep._optim import AUTO_MIN_STEPS, budget_epochs
from skdeep._training import balanced_sampler
from skdeep.probing import linear_probe
from skdeep.recipes import RECIPE_PARAMETERS, RECIPES, recipe_params


def tiny(**params) -> FineTunedCNNClassifier:
    defaults = dict(backbone=TINY, weights=None, image_size=32, epochs=2, batch_size=8,
                    precision="fp32", random_state=0, verbose=0)
    return FineTunedCNNClassifier(**{**defaults, **params})


class AtStart(Callback):
    """Records, when training begins, the network's logits and features of ``X``."""

    def __init__(self, X) -> None:
        self.X = X

    def on_train_begin(self, estimator):
        outputs = estimator._outputs(self.X, "start")  # [features | logits], nothing trained yet
        self.features_ = outputs[:, :estimator.n_features_out_]
        self.logits_ = outputs[:, estimator.n_features_out_:]


class LastRawWeights(Callback):
    """The network's own weights at the end of each epoch (what training holds)."""

    def on_epoch_end(self, estimator, record):
        self.state_ = {k: v.detach().clone() for k, v in estimator.model_.state_dict().items()}
        return False


# --- LP-FT -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [3, 2])
def test_the_probe_head_starts_from_the_probe_decision_function(n_classes):
    X, y = make_images(n=36, n_classes=n_classes)
    start = AtStart(X)
    tiny(head_init="probe", validation_fraction=0, callbacks=[start]).fit(X, y)
    probe = linear_probe().fit(start.features_, y)  # the same probe, on the same features
    if n_classes == 2:  # softmax of (-d/2, d/2) is the probe's sigmoid of d
        decision = probe.decision_function(start.features_)
        np.testing.assert_allclose(start.logits_[:, 1] - start.logits_[:, 0], decision,
                                   rtol=1e-3, atol=1e-3)
    else:
        np.testing.assert_allclose(start.logits_, probe.decision_function(start.features_),
                                   rtol=1e-3, atol=1e-3)
    np.testing.assert_array_equal(start.logits_.argmax(axis=1), probe.predict(start.features_))


def test_a_random_head_does_not_start_from_the_probe():
    X, y = make_images(n=36, n_classes=3)
    start = AtStart(X)
    tiny(validation_fraction=0, callbacks=[start]).fit(X, y)
    probe = linear_probe().fit(start.features_, y)
    assert not np.allclose(start.logits_, probe.decision_function(start.features_), atol=1e-2)


def test_the_probe_learns_on_training_rows_only_with_their_weights(monkeypatch):
    X, y = make_images(n=40, n_classes=2)
    seen = {}
    original = linear_probe

    def recording(*args, **kwargs):
        pipe = original(*args, **kwargs)
        fit = pipe.fit

        def fit_and_record(F, labels, **params):
            seen.update(n=len(F), weights=params["logisticregression__sample_weight"])
            return fit(F, labels, **params)

        pipe.fit = fit_and_record
        return pipe

    monkeypatch.setattr("skdeep.classifier.linear_probe", recording)
    weights = np.where(y == 1, 3.0, 1.0)
    tiny(head_init="probe", validation_fraction=0.25, epochs=1).fit(X, y, sample_weight=weights)
    assert seen["n"] == 30  # 10 of 40 held out for validation
    assert set(np.round(seen["weights"] / seen["weights"].min(), 6)) == {1.0, 3.0}


# --- the weight average ----------------------------------------------------------------------


def test_the_average_follows_timms_warmed_up_decay():
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    average = WeightAverage(net, decay=0.5)
    start = net.weight.detach().clone()
    expected = start.clone()
    for step in range(4):
        with torch.no_grad():
            net.weight.add_(1.0)
        decay = min(0.5, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * net.weight.detach()
        average.update()
    torch.testing.assert_close(average.shadow["weight"], expected)
    with average.applied(net):
        torch.testing.assert_close(net.weight.detach(), expected)
    torch.testing.assert_close(net.weight.detach(), start + 4)  # its own weights back


def test_ema_weights_differ_from_the_raw_ones_and_are_the_ones_saved(tmp_path):
    X, y = make_images(n=32)
    raw = LastRawWeights()
    clf = tiny(ema=0.9, validation_fraction=0, epochs=3, lr=3e-3, callbacks=[raw]).fit(X, y)
    fitted = clf.model_.state_dict()
    moved = [k for k, v in fitted.items() if v.is_floating_point()
             and not torch.equal(v, raw.state_[k])]
    assert moved, "the fitted network holds the last epoch's raw weights, not their average"
    clf.save(tmp_path / "model")
    loaded = FineTunedCNNClassifier.load(tmp_path / "model")
    for key, value in fitted.items():
        assert torch.equal(loaded.model_.state_dict()[key], value), key
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


def test_with_validation_the_kept_weights_are_the_best_average():
    X, y = make_images(n=40)

    class RawPerEpoch(Callback):
        states: dict = {}

        def on_epoch_end(self, estimator, record):
            self.states[record["epoch"]] = {
                k: v.detach().clone() for k, v in estimator.model_.state_dict().items()}
            return False

    raw = RawPerEpoch()
    clf = tiny(ema=0.9, epochs=3, n_iter_no_change=5, callbacks=[raw]).fit(X, y)
    assert clf.best_epoch_ in (1, 2, 3)
    # without an average the model would hold its best epoch's raw weights
    best_raw = raw.states[clf.best_epoch_]
    fitted = clf.model_.state_dict()
    assert any(not torch.equal(v, best_raw[k]) for k, v in fitted.items()
               if v.is_floating_point())


def test_a_fit_with_ema_resumes_to_the_same_weights(tmp_path):
    X, y = make_images(n=32)
    params = dict(ema=0.9, epochs=4, lr=3e-3, n_iter_no_change=10)
    straight = tiny(**params).fit(X, y)

    class StopAfter(Callback):
        def on_epoch_end(self, estimator, record):
            return record["epoch"] >= 2

    tiny(**params, callbacks=[Checkpoint(tmp_path / "ckpt", monitor=None), StopAfter()]).fit(X, y)
    resumed = tiny(**params).fit(X, y, resume=tmp_path / "ckpt")
    for key, value in straight.model_.state_dict().items():
        assert torch.equal(resumed.model_.state_dict()[key], value), key


# --- balanced sampling -----------------------------------------------------------------------


def test_balanced_sampling_draws_each_class_equally_often():
    classes = np.array([0] * 90 + [1] * 9 + [2] * 1)
    sampler = balanced_sampler(classes, torch.Generator().manual_seed(0))
    draws = np.concatenate([classes[list(sampler)] for _ in range(60)])  # 60 epochs of 100
    assert len(draws) == 6000
    shares = np.bincount(draws, minlength=3) / len(draws)
    np.testing.assert_allclose(shares, 1 / 3, atol=0.03)


def test_a_balanced_fit_trains_on_draws_of_the_rare_class(monkeypatch):
    X, y = make_images(n=44)
    y = np.where(np.arange(44) < 40, 0, 1)  # 40 against 4
    drawn = []
    original = balanced_sampler

    def recording(classes, generator):
        sampler = original(classes, generator)
        drawn.append(classes)
        return sampler

    monkeypatch.setattr("skdeep._training.balanced_sampler", recording)
    clf = tiny(sampler="balanced", validation_fraction=0, epochs=1).fit(X, y)
    assert len(drawn) == 1 and np.bincount(drawn[0]).tolist() == [40, 4]
    assert clf.recipe_params_["sampler"] == "balanced"


# --- the step budget -------------------------------------------------------------------------


def test_the_step_budget_rule(monkeypatch):
    monkeypatch.setattr(_optim, "AUTO_MIN_STEPS", AUTO_MIN_STEPS)  # conftest lifts it
    assert budget_epochs(None, 10, 3) == 10
    assert budget_epochs(100, 10, 30) == 4  # whole epochs covering 100 steps
    assert budget_epochs("auto", 10, 1000) == 10  # large sets: the epochs
    assert budget_epochs("auto", 10, 15) == -(-AUTO_MIN_STEPS // 15)  # small: >= the minimum
    assert budget_epochs("auto", 10, 15) * 15 >= AUTO_MIN_STEPS


def test_max_steps_sets_the_number_of_epochs():
    X, y = make_images(n=32)  # 32 images, batches of 8: 4 steps per epoch
    clf = tiny(max_steps=10, validation_fraction=0, epochs=50).fit(X, y)
    assert clf.n_iter_ == 3 and len(clf.history_) == 3


# --- recipes ---------------------------------------------------------------------------------


def test_a_recipe_fills_the_parameters_left_at_their_default_and_explicit_ones_win():
    X, y = make_images(n=32)
    clf = tiny(recipe="lp-ft", max_steps=4, validation_fraction=0).fit(X, y)
    expected = {**recipe_params("lp-ft"), "max_steps": 4, "sampler": "shuffle"}
    assert clf.recipe_params_ == expected
    assert clf.n_iter_ == 1
    plain = tiny(max_steps=4, validation_fraction=0).fit(X, y)
    assert plain.recipe_params_ == {"head_init": "random", "max_steps": 4, "ema": None,
                                    "sampler": "shuffle"}
    # "fast" sets max_steps=None, a default being "auto": the epochs count again
    fast = tiny(recipe="fast", epochs=3, validation_fraction=0).fit(X, y)
    assert fast.recipe_params_["max_steps"] is None and fast.n_iter_ == 3


def test_recipes_name_only_parameters_the_classifier_reads_through_them():
    names = FineTunedCNNClassifier().get_params()
    for recipe in RECIPES.values():
        assert set(recipe) <= set(RECIPE_PARAMETERS) <= set(names)
    with pytest.raises(ValueError, match="not a recipe"):
        recipe_params("large-data")


def test_recipe_is_a_parameter_like_any_other():
    X, y = make_images(n=32)
    with pytest.raises(InvalidParameterError, match="recipe"):
        tiny(recipe="slow-and-steady").fit(X, y)
    clf = tiny(recipe="lp-ft")
    assert clone(clf).get_params()["recipe"] == "lp-ft"
    search = GridSearchCV(tiny(max_steps=2, validation_fraction=0),
                          {"recipe": [None, "lp-ft"]}, cv=2).fit(X, y)
    assert search.best_params_["recipe"] in (None, "lp-ft")


# --- mixup, CutMix, drop-path ------------------------------------------------------------------


def test_mixing_mixes_labels_and_weights_alike():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    targets = torch.arange(6)
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    for mixup, cutmix in ((0.4, 0.0), (0.0, 1.0)):
        mixed, soft, mixed_weights = batch_mixer(mixup, cutmix, n_classes=6)(
            images, targets, weights)
        assert mixed.dtype == torch.float32 and mixed.shape == images.shape
        lam = float(soft[0, 0])  # each row: lam of itself, 1 - lam of the row before it
        expected = torch.eye(6) * lam + torch.eye(6).roll(1, 0) * (1 - lam)
        torch.testing.assert_close(soft, expected)
        torch.testing.assert_close(mixed_weights, lam * weights + (1 - lam) * weights.roll(1))
    assert batch_mixer(0.0, 0.0, n_classes=6) is None


def test_a_fit_with_mixup_and_cutmix_is_reproducible_and_leaves_numpy_alone():
    X, y = make_images(n=32)
    state = np.random.get_state()
    a = tiny(mixup=0.4, cutmix=1.0).fit(X, y)
    b = tiny(mixup=0.4, cutmix=1.0).fit(X, y)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    after = np.random.get_state()
    assert all(np.array_equal(x, z) for x, z in zip(state[1:2], after[1:2]))
    plain = tiny().fit(X, y)
    assert not np.array_equal(a.predict_proba(X), plain.predict_proba(X))


def test_drop_path_rate_builds_timms_stochastic_depth_and_saves_like_any_fit(tmp_path):
    from timm.layers import DropPath

    X, y = make_images(n=32)
    clf = tiny(drop_path_rate=0.2).fit(X, y)
    rates = [m.drop_prob for m in clf.model_.modules() if isinstance(m, DropPath)]
    assert rates and max(rates) == pytest.approx(0.2, abs=0.05) and min(rates) < max(rates)
    clf.save(tmp_path / "model")
    np.testing.assert_allclose(FineTunedCNNClassifier.load(tmp_path / "model").predict_proba(X),
                               clf.predict_proba(X), rtol=1e-5, atol=1e-6)


def test_drop_path_rate_refuses_a_network_that_is_not_timms():
    X, y = make_images(n=16)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match="drop_path_rate=0.1 needs a timm network"):
        tiny(backbone=net, drop_path_rate=0.1).fit(X, y)
