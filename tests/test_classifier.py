"""FineTunedCNNClassifier: the sklearn contract, what trains and what stays frozen, persistence.

Offline and CPU-only: a small CIFAR-style CNN given as a module (fast) and the bundled
EfficientNet-Lite0 at 32 px, on synthetic 16 px images whose class is visible (bright top half).
"""

from __future__ import annotations

import json
import pickle

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.metrics import log_loss
from sklearn.model_selection import GridSearchCV
from torch import nn

import skdeep.classifier as classifier_module
from skdeep import BadImageWarning
from skdeep._trainable_layers import trainable_layers
from skdeep._device import torch_threads
from skdeep._optim import LRSchedule, make_optimizer, param_groups
from skdeep._training import Trainer
from skdeep.backbones import resolve_backbone
from skdeep.classifier import FineTunedCNNClassifier


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks gain nothing from a second thread, and on a busy machine OpenMP barriers
    between two threads cost more than the work: one thread keeps this file fast anywhere."""
    with torch_threads(1):
        yield


class MiniNet(nn.Module):
    """A CIFAR-10-exercise CNN: stem, two stages, a linear classifier."""

    def __init__(self, n_outputs: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                    nn.MaxPool2d(2))
        self.layer2 = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, n_outputs)

    def forward(self, x):
        x = self.layer2(self.layer1(self.relu(self.bn1(self.conv1(x)))))
        return self.fc(self.pool(x).flatten(1))


def mini_net() -> MiniNet:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return MiniNet()


def make_images(n: int = 48, n_classes: int = 2, seed: int = 0):
    """Images whose class sets the brightness of the top rows, plus labels 0..n_classes-1."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % n_classes
    images = rng.integers(0, 100, size=(n, 16, 16, 3), dtype=np.uint8)
    for k in range(n_classes):
        images[labels == k, : 4 + 4 * k] += 120
    return images, labels


def small(**params) -> FineTunedCNNClassifier:
    defaults = dict(backbone=mini_net(), image_size=16, epochs=2, batch_size=8, lr=1e-2,
                    precision="fp32", random_state=0)
    return FineTunedCNNClassifier(**{**defaults, **params})


def lite0(**params) -> FineTunedCNNClassifier:
    defaults = dict(image_size=32, epochs=1, batch_size=16, precision="fp32", random_state=0,
                    validation_fraction=0)
    return FineTunedCNNClassifier(**{**defaults, **params})


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def changed(before: dict, after: dict, prefix: str) -> list[bool]:
    keys = [k for k in before if k == prefix or k.startswith(prefix + ".")]
    assert keys, f"no tensors under {prefix!r}"
    return [not torch.equal(before[k], after[k]) for k in keys]


# --- the scikit-learn contract -------------------------------------------------------------------


def test_contract_fit_predict_proba_decision_score():
    X, y = make_images(n_classes=3)
    names = np.array(["ankle boot", "bag", "coat"])[y]
    clf = small(epochs=3)
    with pytest.raises(NotFittedError):
        clf.predict(X)
    assert clf.fit(X, names) is clf
    assert clf.classes_.tolist() == ["ankle boot", "bag", "coat"] and clf.n_classes_ == 3
    predicted = clf.predict(X)
    assert predicted.shape == (48,) and set(predicted) <= set(clf.classes_)
    proba = clf.predict_proba(X)
    assert proba.shape == (48, 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(clf.classes_[proba.argmax(axis=1)], predicted)
    np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-6)
    assert clf.decision_function(X).shape == (48, 3)
    assert clf.score(X, names) == pytest.approx(np.mean(predicted == names))
    assert clf.score(X, names) > 0.6  # the classes are easy: the network did learn
    history = pd.DataFrame(clf.history_)
    assert list(history.columns) == ["epoch", "train_loss", "valid_loss", "valid_accuracy", "lr",
                                     "seconds"]
    assert history["epoch"].tolist() == [1, 2, 3] and clf.n_iter_ == 3
    assert history["valid_loss"].notna().all()
    assert 1 <= clf.best_epoch_ <= 3


def test_binary_decision_function_is_logit_difference():
    X, y = make_images()
    clf = small().fit(X, y)
    scores = clf.decision_function(X)
    proba = clf.predict_proba(X)
    assert scores.shape == (48,)
    np.testing.assert_allclose(1 / (1 + np.exp(-scores)), proba[:, 1], rtol=1e-5)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[(scores > 0).astype(int)])


def test_clone_get_set_params_and_validation():
    clf = small(lr=0.05, train_layers=1)
    copy = clone(clf)
    assert not hasattr(copy, "classes_")
    assert copy.get_params()["lr"] == 0.05 and copy.get_params()["train_layers"] == 1
    X, y = make_images()
    with pytest.raises(ValueError, match="train_layers"):
        small(train_layers="some").fit(X, y)
    with pytest.raises(ValueError, match="optimizer"):
        small(optimizer="lbfgs").fit(X, y)
    fitted = small().fit(X, y)
    assert not hasattr(clone(fitted), "classes_")


@pytest.mark.parametrize(
    "labels",
    [
        np.array(["dog", "cat"] * 24),
        np.array([7, 3] * 24),
        pd.Series(["b", "a"] * 24, dtype="category"),
        [True, False] * 24,
    ],
    ids=["str", "int", "categorical", "bool"],
)
def test_labels_of_any_type(labels):
    X, _ = make_images()
    clf = small(epochs=1).fit(X, labels)
    expected = np.unique(np.asarray(labels))
    np.testing.assert_array_equal(clf.classes_, expected)
    predicted = clf.predict(X)
    assert set(predicted.tolist()) <= set(expected.tolist())
    assert type(predicted[0]) is type(expected[0])


def test_bad_targets_raise_clear_errors():
    X, y = make_images()
    with pytest.raises(ValueError, match="single class"):
        small().fit(X, np.zeros(48, dtype=int))
    with pytest.raises(ValueError, match="48 images but y has 47"):
        small().fit(X, y[:47])
    with pytest.warns(UserWarning, match="too few for a stratified split"):  # trains on all
        small(validation_fraction=0.01).fit(X[:10], y[:10])
    with pytest.raises(ValueError, match="Unknown label type"):
        small().fit(X, np.linspace(0, 1, 48))


def test_transform_gives_penultimate_embeddings():
    X, y = make_images()
    clf = small().fit(X, y)
    embeddings = clf.transform(X)
    assert embeddings.shape == (48, 16) and clf.n_features_out_ == 16
    assert embeddings.dtype == np.float32
    assert clf.get_feature_names_out()[0] == "penultimate_0"
    # the head applied to the embeddings gives the logits: they are its input
    fc = clf.model_.get_submodule(clf.head_).fc
    with torch.no_grad():
        logits = fc(torch.from_numpy(embeddings)).numpy()
    np.testing.assert_allclose(logits[:, 1] - logits[:, 0], clf.decision_function(X), atol=1e-4)


# --- what trains and what does not ---------------------------------------------------------------


def test_head_mode_freezes_the_whole_backbone_and_its_batchnorm_stats():
    X, y = make_images()
    backbone = mini_net()
    before = state_of(backbone)
    clf = small(backbone=backbone, train_layers="head", epochs=2).fit(X, y)
    after = state_of(clf.model_)
    for prefix in ("conv1", "bn1", "layer1", "layer2"):  # weights and running stats alike
        assert not any(changed(before, after, prefix)), prefix
    assert clf.trained_layers_ == []
    assert [g["name"] for g in clf.param_groups_] == ["head", "head (no decay)"]


def test_training_data_reads_validation_rows_through_the_evaluation_transform():
    from skdeep._inputs import ImageDataset
    from skdeep._training import training_data

    def augmenting(image):
        raise AssertionError("not called here")

    def evaluating(image):
        raise AssertionError("not called here")

    X = np.zeros((6, 8, 8, 3), dtype=np.uint8)
    base = ImageDataset(X, augmenting, (3, 8, 8), targets=np.arange(6))
    data = training_data(base, np.array([0, 2, 3, 5]), np.array([1, 4]),
                         eval_transform=evaluating, batch_size=2, device=torch.device("cpu"),
                         num_workers=0, seed=0)
    valid_set, valid_rows = data.validation
    assert valid_set.dataset.transform is evaluating and valid_set.dataset.targets is None
    assert valid_set.indices.tolist() == valid_rows.tolist() == [1, 4]
    assert base.transform is augmenting and base.targets.tolist() == list(range(6))  # untouched
    assert data.loader.dataset.dataset is base and len(data.loader) == 2
    assert training_data(base, np.arange(6), None, eval_transform=evaluating, batch_size=4,
                         device=torch.device("cpu"), num_workers=0, seed=None).validation is None


def test_int_train_layers_trains_only_the_last_layers():
    X, y = make_images()
    backbone = mini_net()
    before = state_of(backbone)
    clf = small(backbone=backbone, train_layers=1).fit(X, y)
    after = state_of(clf.model_)
    assert clf.trainable_layers_ == [("conv1", "bn1"), ("layer1",), ("layer2",)]
    assert clf.trained_layers_ == [("layer2",)]
    assert not any(changed(before, after, "conv1")) and not any(changed(before, after, "bn1"))
    assert not any(changed(before, after, "layer1"))
    assert all(changed(before, after, "layer2.0"))  # conv weight and bias learned
    assert all(changed(before, after, "layer2.1.running_mean"))  # BN of a trained layer trains
    for old, new in (("blocks_", "trainable_layers_"), ("trained_blocks_", "trained_layers_")):
        with pytest.warns(FutureWarning, match=f"{old} is now called {new}"):
            assert getattr(clf, old) == getattr(clf, new)


def test_all_mode_trains_everything_and_bn_mode_frozen_keeps_running_stats():
    X, y = make_images()
    backbone = mini_net()
    before = state_of(backbone)
    after = state_of(small(backbone=backbone, train_layers="all").fit(X, y).model_)
    assert all(changed(before, after, "conv1")) and all(changed(before, after, "bn1.running_var"))
    assert small().fit(X, y).bn_mode_ == "train"  # auto: a fresh network learns its statistics
    frozen_bn = state_of(small(backbone=mini_net(), bn_mode="frozen").fit(X, y).model_)
    for key in ("bn1", "layer1.1", "layer2.1"):
        assert not any(changed(before, frozen_bn, f"{key}.running_mean"))
        assert not any(changed(before, frozen_bn, f"{key}.running_var"))
        assert all(changed(before, frozen_bn, f"{key}.weight"))  # scale and shift still learn


def test_lite0_head_mode_keeps_pretrained_weights_and_bn_stats():
    X, y = make_images(n=32)
    pretrained = state_of(resolve_backbone("efficientnet_lite0", "DEFAULT").build())
    clf = lite0(train_layers="head").fit(X, y)
    after = state_of(clf.model_)
    backbone_keys = [k for k in pretrained if not k.startswith("classifier")]
    assert all(torch.equal(pretrained[k], after[k]) for k in backbone_keys)
    assert clf.head_ == "classifier" and clf.n_features_out_ == 1280


def test_lite0_blocks_and_discriminative_learning_rates():
    X, y = make_images(n=32)
    captured = {}
    original = classifier_module.make_optimizer

    def spy(*args, **kwargs):
        captured["optimizer"] = optimizer = original(*args, **kwargs)
        return optimizer

    classifier_module.make_optimizer = spy
    try:
        clf = lite0(train_layers=2, lr=1e-3, backbone_lr_mult=0.1, layer_decay=0.5,
                    scheduler=None).fit(X, y)
    finally:
        classifier_module.make_optimizer = original
    assert clf.bn_mode_ == "frozen"  # auto: pretrained statistics are kept
    after = state_of(clf.model_)
    pretrained = state_of(resolve_backbone("efficientnet_lite0", "DEFAULT").build())
    assert torch.equal(after["bn2.running_mean"], pretrained["bn2.running_mean"])
    assert not torch.equal(after["bn2.weight"], pretrained["bn2.weight"])
    assert [b[0] for b in clf.trainable_layers_][:3] == ["conv_stem", "blocks.0", "blocks.1"]
    assert clf.trainable_layers_[-1] == ("conv_head", "bn2")
    assert clf.trained_layers_ == [("blocks.6",), ("conv_head", "bn2")]
    lrs = {g["name"]: g["lr"] for g in captured["optimizer"].param_groups}
    assert lrs == pytest.approx({
        "head": 1e-3, "head (no decay)": 1e-3,
        "neck": 1e-4, "neck (no decay)": 1e-4,
        "blocks.6": 5e-5, "blocks.6 (no decay)": 5e-5,
    })
    decays = {g["name"]: g["weight_decay"] for g in captured["optimizer"].param_groups}
    assert decays["head"] == 0.01 and decays["neck (no decay)"] == 0.0
    trained = {id(p) for g in captured["optimizer"].param_groups for p in g["params"]}
    frozen = [p for n, p in clf.model_.named_parameters() if n.startswith("blocks.5")]
    assert frozen and not any(id(p) in trained for p in frozen)


def test_from_scratch_learns_at_lr_everywhere():
    X, y = make_images(n=32)
    clf = lite0(weights=None, train_layers="all").fit(X, y)
    assert {g["lr"] for g in clf.param_groups_} == {1e-3}


def test_param_groups_and_optimizers():
    model = mini_net()
    layers = trainable_layers(model, "fc")
    groups = param_groups(model, layers, "fc", lr=0.1, backbone_lr_mult=0.1, layer_decay=0.1,
                          weight_decay=0.5)
    by_name = {g["name"]: g for g in groups}
    assert by_name["fc"]["lr"] == 0.1 if "fc" in by_name else by_name["head"]["lr"] == 0.1
    assert by_name["layer2"]["lr"] == pytest.approx(0.01)
    assert by_name["layer1"]["lr"] == pytest.approx(0.001)
    assert by_name["stem"]["lr"] == pytest.approx(0.0001)
    assert by_name["stem (no decay)"]["weight_decay"] == 0.0
    for name in ("adamw", "sgd", "adam", "rmsprop", "adagrad"):
        optimizer = make_optimizer(name, param_groups(model, layers, "fc", lr=0.1,
                                                      backbone_lr_mult=0.1, layer_decay=None,
                                                      weight_decay=0.0), nesterov=True)
        assert [g["lr"] for g in optimizer.param_groups][:2] == [0.1, 0.1]
    assert make_optimizer("sgd", groups, nesterov=True).defaults["nesterov"] is True


def _lrs(kind, epochs=10, steps=4, warmup=0.0):
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0, momentum=0.9)
    schedule = LRSchedule(optimizer, kind, steps_per_epoch=steps, epochs=epochs,
                          warmup_epochs=warmup)
    lrs = []
    for epoch in range(epochs):
        for _ in range(steps):
            lrs.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.after_step()
        schedule.after_epoch(1.0)  # a loss that never improves
    return np.array(lrs)


def test_learning_rate_schedules():
    step = _lrs("step")
    assert step[0] == 1.0 and step[7 * 4 - 1] == 1.0 and step[7 * 4] == pytest.approx(0.1)
    cosine = _lrs("cosine")
    assert cosine[0] == 1.0 and np.all(np.diff(cosine) <= 0) and cosine[-1] < 0.01
    warm = _lrs("cosine", warmup=2)
    assert np.all(np.diff(warm[:8]) > 0) and warm[8] == pytest.approx(1.0)
    onecycle = _lrs("onecycle")
    assert onecycle.argmax() == pytest.approx(0.3 * 40, abs=1) and onecycle[0] < 0.1
    plateau = _lrs("plateau")
    assert plateau[0] == 1.0 and plateau[-1] < 1.0  # divided once the loss stalled
    assert np.all(_lrs(None) == 1.0)


# --- early stopping, determinism, weights ----------------------------------------------------------


def test_early_stopping_restores_the_best_epoch(monkeypatch):
    X, y = make_images()
    scripted = iter([0.9, 0.5, 0.7, 0.8, 0.95, 0.99])
    snapshots = []
    real_evaluate = Trainer.evaluate

    def scripted_evaluate(self, *args, **kwargs):
        real_evaluate(self, *args, **kwargs)
        snapshots.append(state_of(self.network))
        return next(scripted), 0.5

    monkeypatch.setattr(Trainer, "evaluate", scripted_evaluate)
    clf = small(epochs=6, n_iter_no_change=2, lr=0.05).fit(X, y)
    assert len(clf.history_) == 4 and clf.best_epoch_ == 2
    final = state_of(clf._get_network())
    assert all(torch.equal(final[k], snapshots[1][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[3][k]) for k in final)


def test_valid_loss_of_best_epoch_is_the_final_models():
    X, y = make_images()
    clf = small(epochs=3, augment=False).fit(X, y)
    _, valid = clf._split(y, 0)
    proba = clf.predict_proba(X[valid])
    best = clf.history_[clf.best_epoch_ - 1]
    assert best["valid_loss"] == min(r["valid_loss"] for r in clf.history_)
    assert log_loss(y[valid], proba, labels=[0, 1]) == pytest.approx(best["valid_loss"], rel=1e-4)


def test_same_seed_same_predictions_and_different_seed_differs():
    X, y = make_images()
    first = small(dropout=0.3, augment=True).fit(X, y).predict_proba(X)
    second = small(dropout=0.3, augment=True).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(first, second)
    other = small(dropout=0.3, augment=True, random_state=1).fit(X, y).predict_proba(X)
    assert not np.array_equal(first, other)


def test_global_rng_is_left_alone():
    X, y = make_images()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    small(epochs=1).fit(X, y)
    np.testing.assert_array_equal(torch.rand(3), expected)


def test_class_weight_is_a_per_class_sample_weight():
    X, y = make_images()
    by_class = small(class_weight={0: 3.0, 1: 1.0}).fit(X, y).predict_proba(X)
    by_sample = small().fit(X, y, sample_weight=np.where(y == 0, 3.0, 1.0)).predict_proba(X)
    np.testing.assert_allclose(by_class, by_sample, rtol=1e-5, atol=1e-6)
    unweighted = small().fit(X, y).predict_proba(X)
    assert not np.allclose(by_class, unweighted)
    scaled = small().fit(X, y, sample_weight=np.full(48, 5.0)).predict_proba(X)
    np.testing.assert_allclose(scaled, unweighted, rtol=1e-5, atol=1e-6)  # only ratios matter


def test_zero_class_weight_means_the_class_is_not_learned():
    X, y = make_images()
    clf = small(class_weight={0: 1.0, 1: 0.0}, epochs=4, lr=0.05, validation_fraction=0)
    proba = clf.fit(X, y).predict_proba(X)
    assert (proba[:, 0] > 0.5).all()
    balanced = small(class_weight="balanced", validation_fraction=0).fit(X[:36], y[:36])
    assert balanced.n_iter_ == 2
    with pytest.raises(ValueError, match="sample_weight|negative"):
        small().fit(X, y, sample_weight=-np.ones(48))


def test_unreadable_images_are_skipped_in_fit_and_flagged_in_predict(tmp_path):
    X, y = make_images(n=24)
    items = list(X)
    items[5] = str(tmp_path / "missing.png")
    clf = small(on_error="nan", validation_fraction=0, epochs=1)
    with pytest.warns(BadImageWarning, match="row 5") as fitting:
        clf.fit(items, y)
    with pytest.warns(BadImageWarning, match="row 5") as predicting:
        predicted = clf.predict(items)
    for caught in (fitting, predicting):  # the warnings name the paths, not only the rows
        warning = next(w.message for w in caught if isinstance(w.message, BadImageWarning))
        assert warning.rows == [5] and warning.paths == [items[5]]
    assert predicted.dtype == clf.classes_.dtype and clf.bad_rows_.tolist() == [5]
    assert predicted[5] == clf.classes_[0] and predicted[4] in clf.classes_
    with pytest.raises(FileNotFoundError, match="row 5"):
        small(validation_fraction=0).fit(items, y)


def test_warm_start_continues_training():
    X, y = make_images()
    clf = small(warm_start=True, train_layers="head", epochs=2, validation_fraction=0).fit(X, y)
    head_only = state_of(clf.model_)
    clf.set_params(train_layers="all", epochs=1).fit(X, y)
    assert [r["epoch"] for r in clf.history_] == [1, 2, 3] and clf.n_iter_ == 3
    assert any(changed(head_only, state_of(clf.model_), "conv1"))
    with pytest.raises(ValueError, match="warm_start"):
        clf.fit(X, np.where(y == 0, "a", "b"))


# --- persistence ----------------------------------------------------------------------------------


def test_pickle_and_joblib_round_trip(tmp_path):
    X, y = make_images()
    assert not small().network_built
    clf = small().fit(X, y)
    expected = clf.predict_proba(X)
    restored = pickle.loads(pickle.dumps(clf))
    assert clf.network_built and not restored.network_built  # rebuilt on first use
    np.testing.assert_array_equal(restored.predict_proba(X), expected)
    assert restored.network_built
    joblib.dump(clf, tmp_path / "clf.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "clf.joblib").predict_proba(X), expected)
    np.testing.assert_array_equal(restored.transform(X), clf.transform(X))


def test_lite0_pickle_stores_the_fine_tuned_weights():
    X, y = make_images(n=32)
    clf = lite0(train_layers="all", lr=1e-2).fit(X, y)
    restored = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(restored.predict_proba(X), clf.predict_proba(X))


def test_fitted_on_cuda_unpickles_on_cpu_with_a_warning():
    X, y = make_images()
    clf = small(device="cpu").fit(X, y)
    expected = clf.predict_proba(X)
    clf.device_ = torch.device("cuda")  # as if fitted on a GPU box
    clf.set_params(device="cuda")
    payload = pickle.dumps(clf)
    if torch.cuda.is_available():  # pragma: no cover - the simulation needs a CPU-only machine
        pytest.skip("this machine has CUDA")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        restored = pickle.loads(payload)
    assert restored.device_.type == "cpu"
    np.testing.assert_array_equal(restored.predict_proba(X), expected)


def test_save_and_load_without_pickle(tmp_path, monkeypatch):
    X, y = make_images(n=32)
    names = np.array(["shirt", "trouser"])[y]
    clf = lite0(train_layers=1, class_weight={"shirt": 2.0, "trouser": 1.0}).fit(X, names)
    clf.save(tmp_path / "model")
    document = json.loads((tmp_path / "model" / "skdeep.json").read_text())
    assert document["params"]["train_layers"] == 1
    assert document["classes"]["values"] == ["shirt", "trouser"]

    def no_unpickling(*args, **kwargs):
        raise AssertionError("load() must not unpickle")

    monkeypatch.setattr(pickle, "loads", no_unpickling)
    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(torch, "load", no_unpickling)
    loaded = FineTunedCNNClassifier.load(tmp_path / "model")
    monkeypatch.undo()
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    assert loaded.get_params() == clf.get_params()
    assert pd.DataFrame(loaded.history_).shape == pd.DataFrame(clf.history_).shape
    assert loaded.best_epoch_ == clf.best_epoch_


@pytest.mark.parametrize("estimator", ["PretrainedCNNFeatures", "FineTunedCNNClassifier"])
def test_parameters_after_backbone_are_keyword_only(estimator):
    import skdeep

    cls = getattr(skdeep, estimator)
    assert cls("resnet18").backbone == "resnet18"  # backbone alone may be positional
    with pytest.raises(TypeError, match="positional"):
        cls("resnet18", None)


def test_save_and_load_round_trip_every_declared_fitted_attribute(tmp_path):
    from skdeep._safe_format import FITTED_STATE

    X, y = make_images(n=32)
    clf = lite0(train_layers=1, validation_fraction=0.25, early_stopping=True).fit(X, y)
    clf.save(tmp_path / "model")
    loaded = FineTunedCNNClassifier.load(tmp_path / "model")
    for fitted in FITTED_STATE:
        assert hasattr(clf, fitted.attribute), fitted.attribute
        # assert_equal compares nested lists, dicts and arrays, and NaN (valid_loss) equal to NaN
        np.testing.assert_equal(getattr(loaded, fitted.attribute),
                                getattr(clf, fitted.attribute), err_msg=fitted.attribute)


def test_save_refuses_module_backbones_and_load_checks_the_folder(tmp_path):
    X, y = make_images()
    with pytest.raises(ValueError, match="by name"):
        small(epochs=1).fit(X, y).save(tmp_path / "m")
    with pytest.raises(FileNotFoundError, match="save"):
        FineTunedCNNClassifier.load(tmp_path)


# --- model selection ------------------------------------------------------------------------------


def test_grid_search_over_lr_train_layers_epochs():
    X, y = make_images()
    search = GridSearchCV(
        small(validation_fraction=0),
        {"lr": [1e-3, 3e-2], "train_layers": ["head", 1], "epochs": [1, 2]},
        cv=2,
    ).fit(X, y)
    assert len(search.cv_results_["params"]) == 8
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    assert search.best_estimator_.n_iter_ == search.best_params_["epochs"]
    assert search.best_estimator_.get_params()["lr"] == search.best_params_["lr"]


def _fit_in_worker():
    X, y = make_images(n=24)
    threads_before = torch.get_num_threads()
    lite0(max_steps=None).fit(X, y)  # a worker process sees the real 400-step budget
    return threads_before, torch.get_num_threads()


@pytest.mark.slow
def test_parallel_fits_do_not_oversubscribe_threads():
    import os

    results = joblib.Parallel(n_jobs=2)(joblib.delayed(_fit_in_worker)() for _ in range(2))
    budget = max(1, (os.cpu_count() or 1) // 2)
    for before, after in results:
        assert before <= budget and after == before
