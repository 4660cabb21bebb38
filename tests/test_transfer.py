"""Transfer to images unlike ImageNet (issue #11): augment policies, test-time augmentation and
staged fine-tuning (freeze_epochs).

Offline and CPU-only: tiny synthetic images and timm's ``test_efficientnet`` (356k parameters)
with random weights at 32 px, one torch thread.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.special import softmax
from sklearn.base import clone
from sklearn.utils._param_validation import InvalidParameterError
from torchvision.transforms import v2

from skdeep import Callback, Checkpoint, FineTunedCNNClassifier, PretrainedCNNFeatures
from skdeep._augment import AveragedViews, train_transform, tta_views
from skdeep._device import torch_threads
from skdeep.backbones import resolve_backbone

from _helpers import TINY, make_images


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def config() -> dict:
    """The data config of the tiny network at 32 px (bilinear or bicubic, crop_pct...)."""
    return resolve_backbone(TINY, None, random_state=0, image_size=32).data_config


def tiny(**params) -> FineTunedCNNClassifier:
    defaults = dict(backbone=TINY, weights=None, image_size=32, epochs=1, batch_size=8,
                    precision="fp32", random_state=0, compile=False)
    return FineTunedCNNClassifier(**{**defaults, **params})


def corner_image(size: int = 48) -> Image.Image:
    """A dark image with a bright top-left quadrant: where the quadrant lands shows the geometry."""
    pixels = np.full((size, size, 3), 20, dtype=np.uint8)
    pixels[: size // 2, : size // 2] = 230
    return Image.fromarray(pixels)


def bright_corner(tensor: torch.Tensor) -> tuple[int, int]:
    """(row, column) half, 0 or 1, of the brightest quadrant of a (C, H, W) image."""
    half = tensor.shape[-1] // 2
    mean = tensor.float().mean(0)
    quadrants = [[mean[:half, :half].mean(), mean[:half, half:].mean()],
                 [mean[half:, :half].mean(), mean[half:, half:].mean()]]
    flat = torch.tensor(quadrants).flatten()
    index = int(flat.argmax())
    return index // 2, index % 2


def draws(transform, image, n: int = 40, seed: int = 0) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    import random

    random.seed(seed)
    return [transform(image) for _ in range(n)]


# --- 1. augment policies -------------------------------------------------------------------------


@pytest.mark.parametrize("augment", ["natural", "symmetric", "light", True, False])
def test_each_policy_gives_uint8_images_of_the_input_size_deterministic_under_a_seed(
        config, augment):
    transform = train_transform(config, augment)
    first = draws(transform, corner_image(), n=8)
    again = draws(transform, corner_image(), n=8)
    for a, b in zip(first, again):
        assert a.dtype == torch.uint8 and tuple(a.shape) == (3, 32, 32)
        assert torch.equal(a, b)
    other = draws(transform, corner_image(), n=8, seed=1)
    changed = any(not torch.equal(a, b) for a, b in zip(first, other))
    assert changed == (augment is not False)  # only augmentation depends on the seed


def test_true_is_the_natural_policy(config):
    natural = draws(train_transform(config, "natural"), corner_image())
    true = draws(train_transform(config, True), corner_image())
    assert all(torch.equal(a, b) for a, b in zip(natural, true))


def test_symmetric_rotates_and_flips_light_keeps_the_orientation_natural_flips_sideways(config):
    corners = {name: {bright_corner(t) for t in draws(train_transform(config, name),
                                                      corner_image(), n=60)}
               for name in ("symmetric", "light", "natural")}
    assert corners["symmetric"] == {(0, 0), (0, 1), (1, 0), (1, 1)}  # every corner: rotations
    assert corners["light"] == {(0, 0)}  # a mild crop never moves the quadrant
    assert (0, 1) in corners["natural"] and (1, 0) not in corners["natural"]  # no vertical flip


def test_a_callable_policy_runs_on_the_uint8_tensor_of_the_input_size():
    seen = []

    def augment(image: torch.Tensor) -> torch.Tensor:
        seen.append((image.dtype, tuple(image.shape)))
        return v2.RandomVerticalFlip(p=1.0)(image)

    X, y = make_images()
    clf = tiny(augment=augment, validation_fraction=0).fit(X, y)
    assert seen and set(seen) == {(torch.uint8, (3, 32, 32))}
    assert len(seen) == len(X)  # every training image of the one epoch, no validation image
    assert clf.predict(X).shape == (len(X),)


def test_a_torchvision_v2_transform_is_a_policy():
    X, y = make_images()
    transform = v2.Compose([v2.RandomRotation(15), v2.ColorJitter(brightness=0.2)])
    clf = tiny(augment=transform).fit(X, y)
    assert clf.predict_proba(X).shape == (len(X), 2)


def test_a_callable_policy_that_changes_the_size_is_refused_by_name():
    X, y = make_images()
    with pytest.raises(ValueError, match=r"augment=.*returned an image of shape \(3, 16, 16\)"):
        tiny(augment=v2.Resize(16)).fit(X, y)


@pytest.mark.parametrize("augment", ["upside", None, 1])
def test_unknown_policies_are_refused(augment):
    X, y = make_images()
    with pytest.raises(InvalidParameterError, match="augment"):
        tiny(augment=augment).fit(X, y)


# --- 2. test-time augmentation -------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted() -> FineTunedCNNClassifier:
    X, y = make_images()
    with torch_threads(1):
        return tiny(epochs=2).fit(X, y)


def count_forwards(monkeypatch, clf) -> list[torch.Tensor]:
    """Record every batch the fitted network sees, with its outputs."""
    network = clf._get_network()
    calls = []
    real = type(network).forward

    def spy(images):
        out = real(network, images)
        calls.append((images.clone(), out.detach().float().clone()))
        return out

    monkeypatch.setattr(network, "forward", spy)
    return calls


@pytest.mark.parametrize("tta, n_views", [(None, 1), ("flip", 2), ("symmetric", 8), (3, 3)])
def test_tta_runs_one_batched_forward_per_view_and_averages_probabilities(
        monkeypatch, fitted, tta, n_views):
    X, _ = make_images(n=10)
    clf = fitted
    calls = count_forwards(monkeypatch, clf)
    try:
        clf.set_params(tta=tta)
        proba = clf.predict_proba(X)
        n_calls = len(calls)
        predicted = clf.predict(X)
    finally:
        clf.set_params(tta=None)
    batches = -(-len(X) // clf.batch_size)  # 10 images in batches of 8: 2 batches
    assert n_calls == batches * n_views
    assert proba.shape == (10, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    # predict_proba is the mean of the views' probabilities, batch by batch
    k = clf.n_features_out_
    expected = []
    for b in range(batches):
        views = calls[b * n_views:(b + 1) * n_views]
        assert all(v[0].shape == views[0][0].shape and v[0].dtype == torch.uint8 for v in views)
        expected.append(np.mean([softmax(out[:, k:].numpy().astype(np.float64), axis=1)
                                 for _, out in views], axis=0))
    np.testing.assert_allclose(proba, np.concatenate(expected), rtol=1e-5, atol=1e-6)
    assert (predicted == clf.classes_[proba.argmax(axis=1)]).all()
    if n_views > 1:  # the views differ from each other
        assert not torch.equal(calls[0][0], calls[1][0])


def test_tta_none_is_prediction_as_before(monkeypatch, fitted):
    X, _ = make_images(n=10)
    calls = count_forwards(monkeypatch, fitted)
    logits = fitted.decision_function(X)
    assert len(calls) == 2  # one forward per batch, nothing else
    outputs = torch.cat([out for _, out in calls]).numpy()[:, fitted.n_features_out_:]
    outputs = outputs.astype(np.float64)
    np.testing.assert_array_equal(logits, outputs[:, 1] - outputs[:, 0])
    np.testing.assert_array_equal(fitted.predict_proba(X), softmax(outputs, axis=1))


def test_tta_decision_function_and_log_proba_are_logs_of_the_mean_probability(fitted):
    X, _ = make_images(n=10)
    clf = fitted
    try:
        clf.set_params(tta="flip")
        proba = clf.predict_proba(X)
        np.testing.assert_allclose(np.exp(clf.predict_log_proba(X)), proba, rtol=1e-6)
        decision = clf.decision_function(X)  # two classes: log p1 - log p0
        np.testing.assert_allclose(decision, np.log(proba[:, 1] / proba[:, 0]), rtol=1e-5,
                                   atol=1e-7)
        assert clf.transform(X).shape == (10, clf.n_features_out_)
    finally:
        clf.set_params(tta=None)


def test_tta_flip_views_are_mirror_images_and_symmetric_the_dihedral_group(config):
    batch = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    flip = [view(batch) for view in tta_views("flip", config)]
    assert torch.equal(flip[0], batch) and torch.equal(flip[1], batch.flip(-1))
    symmetric = [view(batch) for view in tta_views("symmetric", config)]
    expected = [torch.rot90(batch, k, dims=(-2, -1)) for k in range(4)]
    expected += [e.flip(-1) for e in expected]
    assert all(torch.equal(a, b) for a, b in zip(symmetric, expected))
    assert all(v.is_contiguous() and v.dtype == torch.uint8 for v in symmetric)


def test_tta_random_views_follow_the_seed_and_the_policy(config):
    batch = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)

    def outputs(seed, augment="natural"):
        return [view(batch) for view in tta_views(4, config, augment=augment, seed=seed)]

    first, again, other = outputs(0), outputs(0), outputs(1)
    assert len(first) == 4 and torch.equal(first[0], batch)  # the unchanged image comes first
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert not all(torch.equal(a, b) for a, b in zip(first[1:], other[1:]))
    assert all(v.shape == batch.shape and v.dtype == torch.uint8 for v in first)
    # "light" never mirrors: the bright corner of a corner image stays where it is
    corner = torch.zeros(8, 3, 32, 32, dtype=torch.uint8)
    corner[:, :, :16, :16] = 230
    for view in tta_views(6, config, augment="light", seed=0)[1:]:
        assert {bright_corner(image) for image in view(corner)} == {(0, 0)}


def test_tta_int_predictions_are_reproducible_with_random_state(fitted):
    X, _ = make_images(n=10)
    try:
        fitted.set_params(tta=4)
        first, second = fitted.predict_proba(X), fitted.predict_proba(X)
        np.testing.assert_array_equal(first, second)
        fitted.set_params(random_state=1)
        assert not np.array_equal(fitted.predict_proba(X), first)
    finally:
        fitted.set_params(tta=None, random_state=0)


def test_tta_int_without_augmentation_and_bad_values_are_refused(fitted):
    X, _ = make_images(n=4)
    try:
        fitted.set_params(tta=4, augment=False)
        with pytest.raises(ValueError, match="augment=False"):
            fitted.predict(X)
        for bad in (1, True, "rotate", 2.5):
            fitted.set_params(tta=bad, augment=True)
            with pytest.raises(InvalidParameterError, match="tta"):
                fitted.predict(X)
    finally:
        fitted.set_params(tta=None, augment=True)


def test_averaged_views_of_embeddings_are_the_mean():
    views = tta_views("flip", {"input_size": (3, 4, 4), "interpolation": "bilinear"})
    forward = lambda images: images.float().flatten(1)  # noqa: E731
    batch = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).reshape(2, 3, 4, 4)
    out = AveragedViews(forward, views)(batch)
    expected = (batch.float() + batch.flip(-1).float()).flatten(1) / 2
    assert torch.allclose(out, expected)


@pytest.mark.slow
def test_tta_with_a_compiled_network_compiles_once_and_agrees_with_eager(fitted):
    X, _ = make_images(n=10)
    try:
        fitted.set_params(tta="symmetric")
        eager = fitted.predict_proba(X)
        fitted.set_params(compile=True)
        before = torch._dynamo.utils.counters["stats"]["unique_graphs"]
        compiled = fitted.predict_proba(X)
        assert torch._dynamo.utils.counters["stats"]["unique_graphs"] - before == 1
        np.testing.assert_allclose(compiled, eager, atol=1e-4)
    finally:
        fitted.set_params(tta=None, compile=False)
        fitted.__dict__.pop("_compiled", None)


# --- 3. staged fine-tuning -----------------------------------------------------------------------


class Snapshots(Callback):
    """The network's parameters and buffers at the start and after each epoch."""

    def on_train_begin(self, estimator):
        self.states_ = [self.copy(estimator)]

    def on_epoch_end(self, estimator, record):
        self.states_.append(self.copy(estimator))

    @staticmethod
    def copy(estimator):
        return {k: v.detach().clone() for k, v in estimator.model_.state_dict().items()}


def changed(before: dict, after: dict) -> set[str]:
    return {key for key in before if not torch.equal(before[key], after[key])}


def test_freeze_epochs_trains_the_head_alone_first_then_the_chosen_layers():
    X, y = make_images(n=32)
    snapshots = Snapshots()
    clf = tiny(epochs=1, freeze_epochs=2, callbacks=[snapshots], validation_fraction=0,
               bn_mode="train").fit(X, y)
    start, head1, head2, last = snapshots.states_
    head = {key for key in start if key.startswith(clf.head_ + ".")}
    assert changed(start, head1) == head == changed(head1, head2)  # BatchNorm statistics too
    backbone = changed(head2, last) - head
    assert len(backbone) > len(head)  # the whole network trains in the second stage
    assert any(key.startswith("conv_stem") for key in backbone)
    assert clf.n_iter_ == 3 and [r["epoch"] for r in clf.history_] == [1, 2, 3]
    assert clf.trained_layers_ == clf.trainable_layers_  # train_layers="all", as param_groups_ says
    assert {g["name"] for g in clf.param_groups_} > {"head", "head (no decay)"}


def test_freeze_epochs_then_train_layers_k_trains_only_those_units():
    X, y = make_images(n=32)
    snapshots = Snapshots()
    clf = tiny(epochs=1, freeze_epochs=1, train_layers=1, callbacks=[snapshots],
               validation_fraction=0).fit(X, y)
    start, head_epoch, last = snapshots.states_
    head = {key for key in start if key.startswith(clf.head_ + ".")}
    assert changed(start, head_epoch) <= head
    neck = clf.trained_layers_[0]
    second = changed(head_epoch, last) - head
    assert second and all(key.startswith(neck) for key in second)


def test_freeze_epochs_zero_is_the_fit_as_before():
    X, y = make_images()
    a = tiny(epochs=2).fit(X, y).predict_proba(X)
    b = tiny(epochs=2, freeze_epochs=0).fit(X, y).predict_proba(X)
    np.testing.assert_array_equal(a, b)


class StopAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, estimator, record):
        return record["epoch"] >= self.epoch


@pytest.mark.parametrize("stop_after", [1, 2, 3])  # in the head stage, at its end, after it
def test_staged_fit_resumes_to_the_same_weights_across_the_stage_boundary(tmp_path, stop_after):
    X, y = make_images(n=32)
    params = dict(epochs=2, freeze_epochs=2, n_iter_no_change=2, lr=3e-3, dropout=0.3,
                  augment="symmetric")
    straight = tiny(**params).fit(X, y)
    folder = tmp_path / "ckpt"
    tiny(**params, callbacks=[Checkpoint(folder, monitor=None), StopAfter(stop_after)]).fit(X, y)
    resumed = tiny(**params).fit(X, y, resume=folder)
    for key, value in straight.model_.state_dict().items():
        assert torch.equal(resumed.model_.state_dict()[key], value), key
    assert resumed.n_iter_ == straight.n_iter_ and resumed.best_epoch_ == straight.best_epoch_


def test_resume_refuses_another_freeze_epochs(tmp_path):
    X, y = make_images()
    tiny(freeze_epochs=1, callbacks=[Checkpoint(tmp_path / "c", monitor=None)]).fit(X, y)
    with pytest.raises(ValueError, match="freeze_epochs=1, now freeze_epochs=0"):
        tiny(freeze_epochs=0).fit(X, y, resume=tmp_path / "c")
    tiny(freeze_epochs=1, tta="flip").fit(X, y, resume=tmp_path / "c")  # tta may change


# --- persistence and parameters ------------------------------------------------------------------


def test_save_and_load_round_trip_the_new_parameters(tmp_path):
    X, y = make_images()
    clf = tiny(augment="symmetric", tta=3, freeze_epochs=1).fit(X, y)
    clf.save(tmp_path / "model")
    loaded = FineTunedCNNClassifier.load(tmp_path / "model")
    params = loaded.get_params()
    assert (params["augment"], params["tta"], params["freeze_epochs"]) == ("symmetric", 3, 1)
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-6)


def test_save_of_a_callable_policy_describes_it_and_load_says_it_is_not_code(tmp_path):
    import json

    X, y = make_images()
    clf = tiny(augment=v2.RandomVerticalFlip(p=0.5)).fit(X, y)
    clf.save(tmp_path / "model")
    saved = json.loads((tmp_path / "model" / "skdeep.json").read_text())["params"]["augment"]
    assert saved == {"callable": "RandomVerticalFlip(p=0.5)"}
    with pytest.warns(UserWarning, match="RandomVerticalFlip.*augment=False"):
        loaded = FineTunedCNNClassifier.load(tmp_path / "model")
    assert loaded.augment is False
    np.testing.assert_allclose(loaded.predict_proba(X), clf.predict_proba(X), rtol=1e-6)


def test_load_refuses_invalid_saved_values_of_the_new_parameters(tmp_path):
    import json

    X, y = make_images()
    tiny().fit(X, y).save(tmp_path / "model")
    path = tmp_path / "model" / "skdeep.json"
    document = json.loads(path.read_text())
    for name, bad in (("augment", "sideways"), ("tta", 1), ("freeze_epochs", -1)):
        broken = json.loads(json.dumps(document))
        broken["params"][name] = bad
        path.write_text(json.dumps(broken))
        with pytest.raises(ValueError, match=f"params.{name}"):
            FineTunedCNNClassifier.load(tmp_path / "model")


def test_clone_and_get_params_carry_the_new_parameters():
    flip = v2.RandomHorizontalFlip()
    clf = tiny(augment=flip, tta="symmetric", freeze_epochs=2)
    params = clone(clf).get_params()
    assert params["augment"] is not flip and isinstance(params["augment"], v2.RandomHorizontalFlip)
    assert (params["tta"], params["freeze_epochs"]) == ("symmetric", 2)
    defaults = FineTunedCNNClassifier().get_params()
    assert (defaults["augment"], defaults["tta"]) == (True, None)
    with pytest.raises(InvalidParameterError, match="freeze_epochs"):
        tiny(freeze_epochs=-1).fit(*make_images())


# --- 2. test-time augmentation of frozen features -------------------------------------------------


def frozen(**params) -> PretrainedCNNFeatures:
    defaults = dict(backbone=TINY, weights=None, image_size=32, batch_size=8, precision="fp32",
                    random_state=0, compile=False)
    return PretrainedCNNFeatures(**{**defaults, **params})


def test_tta_flip_features_are_the_mean_of_the_image_and_its_mirror_image():
    X, _ = make_images(n=10)
    cnn = frozen(tta="flip").fit()
    averaged = cnn.transform(X)
    plain = frozen().fit().transform(X)
    assert averaged.shape == plain.shape and averaged.dtype == np.float32
    assert not np.allclose(averaged, plain)
    # by hand: the network on the decoded batch (its crop exactly centred, as tta="flip" takes
    # it) and on its mirror image
    batch = torch.stack([cnn._dataset(X)[row][0] for row in range(len(X))])
    with torch.no_grad():
        views = [cnn._get_extractor()(images).numpy() for images in (batch, batch.flip(-1))]
    np.testing.assert_allclose(averaged, (views[0] + views[1]) / 2, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("tta, n_views", [(None, 1), ("flip", 2), ("symmetric", 8), (3, 3)])
def test_tta_features_run_one_batched_forward_per_view(monkeypatch, tta, n_views):
    X, _ = make_images(n=10)
    cnn = frozen(tta=tta).fit()
    network = cnn._get_extractor()
    shapes = []
    real = type(network).forward
    monkeypatch.setattr(network, "forward", lambda images: shapes.append(images.shape)
                        or real(network, images))
    assert cnn.transform(X).shape == (10, cnn.n_features_out_)
    assert shapes == [(8, 3, 32, 32)] * n_views + [(2, 3, 32, 32)] * n_views


def test_a_cache_filled_without_tta_is_not_served_to_tta(tmp_path):
    X, _ = make_images(n=6)
    plain = frozen(cache=tmp_path / "c").fit().transform(X)
    cnn = frozen(cache=tmp_path / "c", tta="flip").fit()
    averaged = cnn.transform(X)
    assert cnn.cache_info().misses == 2 * len(X)  # the TTA features were computed, not read
    assert not np.allclose(averaged, plain)
    np.testing.assert_allclose(averaged, frozen(tta="flip").fit().transform(X), rtol=1e-5,
                               atol=1e-6)
    # and the other way round: the plain entries are still the plain features
    np.testing.assert_array_equal(frozen(cache=tmp_path / "c").fit().transform(X), plain)


@pytest.mark.parametrize("params", [
    dict(tta=3, random_state=0),
    dict(tta=3, random_state=None, backbone="efficientnet_lite0", weights="DEFAULT"),
    dict(tta=3, augment=v2.RandomHorizontalFlip()),
])
def test_an_int_tta_does_not_use_the_cache(tmp_path, params):
    # A random view depends on the image's place in the stream of images embedded: features
    # cached for the misses of one call would differ from a full pass over the same images.
    with pytest.warns(UserWarning, match=r"cache is ignored: tta=3 draws random views"):
        cnn = frozen(cache=tmp_path / "c", **params).fit()
        assert cnn._feature_cache() is None
    assert not (tmp_path / "c").exists()


def test_an_int_tta_without_a_cache_says_nothing_of_one():
    X, _ = make_images(n=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        frozen(tta=3).fit().transform(X)


def test_an_int_tta_with_a_cache_gives_the_features_of_a_full_pass(tmp_path):
    X, _ = make_images(n=10)
    with pytest.warns(UserWarning, match="cache is ignored"):
        frozen(cache=tmp_path / "c", tta=3, random_state=0).fit().transform(X[:4])
    with pytest.warns(UserWarning, match="cache is ignored"):
        cached = frozen(cache=tmp_path / "c", tta=3, random_state=0).fit().transform(X)
    np.testing.assert_array_equal(cached, frozen(tta=3, random_state=0).fit().transform(X))


def test_int_tta_features_are_reproducible_with_a_seed_and_follow_the_policy():
    X, _ = make_images(n=10)
    first = frozen(tta=4, augment="light").fit()
    again = first.transform(X)
    np.testing.assert_array_equal(again, first.transform(X))
    np.testing.assert_array_equal(again, frozen(tta=4, augment="light").fit().transform(X))
    assert not np.allclose(again, frozen(tta=4, augment="light", random_state=1).fit()
                           .transform(X))
    assert not np.allclose(again, frozen(tta=4, augment="symmetric").fit().transform(X))
    assert not np.allclose(again, frozen().fit().transform(X))


def test_tta_and_augment_of_the_features_clone_and_grid_search():
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import Pipeline

    cnn = frozen(tta="symmetric", augment="light")
    params = clone(cnn).get_params()
    assert (params["tta"], params["augment"]) == ("symmetric", "light")
    assert (PretrainedCNNFeatures().get_params()["tta"],
            PretrainedCNNFeatures().get_params()["augment"]) == (None, True)
    X, y = make_images(n=16)
    pipe = Pipeline([("cnn", frozen()), ("clf", LogisticRegression(max_iter=200))])
    search = GridSearchCV(pipe, {"cnn__tta": [None, "flip", 2]}, cv=2).fit(X, y)
    assert [p["cnn__tta"] for p in search.cv_results_["params"]] == [None, "flip", 2]
    assert search.best_estimator_.named_steps["cnn"]._fitted_tta == search.best_params_["cnn__tta"]


@pytest.mark.parametrize("params, error, match", [
    (dict(tta="rotate"), InvalidParameterError, "tta"),
    (dict(tta=1), InvalidParameterError, "tta"),
    (dict(tta=True), InvalidParameterError, "tta"),
    (dict(augment="upside"), InvalidParameterError, "augment"),
    (dict(tta=3, augment=False), ValueError, "augment=False"),
])
def test_bad_tta_and_augment_of_the_features_are_refused_at_fit(params, error, match):
    with pytest.raises(error, match=match):
        frozen(**params).fit()


def test_symmetric_tta_is_refused_for_a_non_square_input_by_its_size():
    import timm

    model = timm.create_model("test_efficientnet", pretrained=False)
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, 32, 48)}
    cnn = PretrainedCNNFeatures(backbone=model, weights=None, tta="symmetric", compile=False)
    with pytest.raises(ValueError, match=r"square input; the input size is 32x48: set image_size"):
        cnn.fit()
    assert cnn.set_params(tta="flip").fit().data_config_["input_size"] == (3, 32, 48)
