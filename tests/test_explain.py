"""Activation maps (skdeep.explain): tests that fail on a wrong map, and the API's edges."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

from skdeep import FineTunedCNNClassifier, PretrainedCNNFeatures
from skdeep.datasets import make_patch_images
from skdeep.explain import activation_maps, input_images, overlay, plot_activation_maps

# Localisation: 32 px images, read at 128 px, where lite0's last map is 4 x 4 (one quadrant:
# 2 x 2 cells). At 64 px the 2 x 2 last map of lite0 does not localise (its cells see the whole
# image); benchmarks/bench_explain.py measures the rates.
SIZE = 128


def _quadrant_rate(maps: np.ndarray, quadrants: np.ndarray) -> float:
    height, width = maps.shape[1:]
    rows, columns = np.unravel_index(np.nanargmax(maps.reshape(len(maps), -1), axis=1),
                                     (height, width))
    return float(np.mean((rows >= height / 2) * 2 + (columns >= width / 2) == quadrants))


@pytest.fixture(scope="module")
def patches():
    # 200 test images: a rate near 0.93 (bench_explain.py) measured on 60 swung by +-0.03.
    images, labels, quadrants = make_patch_images(400, size=32, patch=6, random_state=0)
    return images[:200], labels[:200], images[200:], labels[200:], quadrants[200:]


@pytest.fixture(scope="module")
def probe(patches):
    train, y, *_ = patches
    return make_pipeline(PretrainedCNNFeatures(image_size=SIZE, precision="fp32"),
                         StandardScaler(), LogisticRegression(max_iter=1000)).fit(train, y)


def test_probe_maps_peak_in_the_patch_quadrant(probe, patches):
    *_, test, labels, quadrants = patches
    assert probe.score(test, labels) >= 0.9
    assert _quadrant_rate(activation_maps(probe, test), quadrants) >= 0.9


@pytest.mark.slow
def test_fine_tuned_maps_peak_in_the_patch_quadrant(patches):
    train, y, test, labels, quadrants = patches
    clf = FineTunedCNNClassifier(image_size=SIZE, epochs=4, train_layers="head", lr=1e-2,
                                 augment=False, validation_fraction=0, random_state=0,
                                 precision="fp32").fit(train, y)
    assert clf.score(test, labels) >= 0.9
    assert _quadrant_rate(activation_maps(clf, test), quadrants) >= 0.9
    # exact for the head too: the map's mean plus the bias is the logit
    maps = activation_maps(clf, test[:6], target=clf.classes_[1], output_size=None)
    bias = clf.model_.get_submodule(clf.head_).fc.bias.detach().numpy()
    logit = clf.decision_function(test[:6])  # two classes: logit 1 - logit 0
    other = activation_maps(clf, test[:6], target=clf.classes_[0], output_size=None)
    np.testing.assert_allclose(maps.mean((1, 2)) + bias[1] - other.mean((1, 2)) - bias[0],
                               logit, rtol=1e-4, atol=1e-4)


def test_permuting_the_head_weights_changes_the_maps(probe, patches):
    *_, test, _, _ = patches
    shuffled = clone(probe).fit(*patches[:2])
    permutation = np.random.default_rng(0).permutation(shuffled[-1].coef_.shape[1])
    shuffled[-1].coef_ = shuffled[-1].coef_[:, permutation]
    original = activation_maps(probe, test, target="red", output_size=None)
    randomised = activation_maps(shuffled, test, target="red", output_size=None)
    rho = [spearmanr(a.ravel(), b.ravel())[0] for a, b in zip(original, randomised)]
    assert np.nanmedian(rho) < 0.5


# --- exactness ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(12, 24, 24, 3), dtype=np.uint8)
    images[:4, :8] = 250
    images[4:8, -8:] = 10
    return images


@pytest.mark.parametrize("classifier, layer", [
    (LogisticRegression(max_iter=1000), "blocks.5"), (LinearSVC(), "penultimate"),
    (RidgeClassifier(), "blocks.5"), (SGDClassifier(random_state=0), "penultimate")])
@pytest.mark.parametrize("n_classes", [2, 3])
def test_map_mean_plus_intercept_is_the_decision(small, classifier, n_classes, layer):
    y = np.arange(12) % n_classes
    pipe = make_pipeline(PretrainedCNNFeatures(image_size=64, layer=layer, precision="fp32"),
                         StandardScaler(), classifier).fit(small, y)
    decision = pipe.decision_function(small)
    # the tail's decision on features 0 is its effective intercept (scaler folded in)
    intercept = np.atleast_1d(pipe[1:].decision_function(np.zeros((1, pipe[0].n_features_out_)))[0])
    for target in range(n_classes):
        maps = activation_maps(pipe, small, target=target, output_size=None)
        if n_classes == 2:  # decision_function scores class 1; class 0's score is its negative
            expected = decision if target == 1 else -decision
            offset = intercept[0] if target == 1 else -intercept[0]
        else:
            expected, offset = decision[:, target], intercept[target]
        np.testing.assert_allclose(maps.mean((1, 2)) + offset, expected, rtol=1e-4, atol=1e-4)


# --- what is refused -----------------------------------------------------------------------------


def test_unsupported_models_are_refused_by_name(small):
    y = np.arange(12) % 2
    cnn = PretrainedCNNFeatures(image_size=64, layer="blocks.5")
    rbf = make_pipeline(cnn, SVC()).fit(small, y)
    with pytest.raises(ValueError, match=r"SVC\(kernel='rbf'\).*not linear"):
        activation_maps(rbf, small)
    normalized = make_pipeline(clone(cnn), Normalizer(), LogisticRegression(max_iter=1000)).fit(small, y)
    with pytest.raises(ValueError, match="'normalizer'.*not an affine"):
        activation_maps(normalized, small)
    several = make_pipeline(PretrainedCNNFeatures(image_size=64, layer=["blocks.4", "blocks.5"]),
                            LogisticRegression(max_iter=1000)).fit(small, y)
    with pytest.raises(ValueError, match="several layers"):
        activation_maps(several, small, method="cam")
    gem = make_pipeline(clone(cnn).set_params(pooling="gem"), LogisticRegression(max_iter=1000)).fit(small, y)
    with pytest.raises(ValueError, match="pooling='gem'"):
        activation_maps(gem, small, method="cam")
    flipped = make_pipeline(clone(cnn).set_params(tta="flip"), LogisticRegression(max_iter=1000)).fit(small, y)
    with pytest.raises(ValueError, match="tta='flip'"):
        activation_maps(flipped, small)
    with pytest.raises(TypeError, match="Pipeline of PretrainedCNNFeatures"):
        activation_maps(LogisticRegression().fit(np.eye(2), [0, 1]), small)
    good = make_pipeline(clone(cnn), LogisticRegression(max_iter=1000)).fit(small, y)
    with pytest.raises(ValueError, match="needs the true labels"):
        activation_maps(good, small, target="true")
    with pytest.raises(ValueError, match="one of the classes"):
        activation_maps(good, small, target=7)
    with pytest.raises(ValueError, match="not among the classes"):
        activation_maps(good, small, target="true", y=np.full(12, 5))


# --- shapes, targets, labels, bad rows, pandas -------------------------------------------------


@pytest.fixture(scope="module")
def labelled(small):
    y = pd.Series(pd.Categorical(np.where(np.arange(12) % 3 == 0, "cat", "dog")))
    pipe = make_pipeline(PretrainedCNNFeatures(image_size=64, layer="blocks.5", on_error="nan"),
                         StandardScaler(), LogisticRegression(max_iter=1000)).fit(small, y)
    return pipe, y


def test_shapes_and_targets(small, labelled):
    pipe, y = labelled
    assert activation_maps(pipe, small).shape == (12, 64, 64)
    assert activation_maps(pipe, small).dtype == np.float32
    assert activation_maps(pipe, small, output_size=None).shape == (12, 2, 2)
    assert activation_maps(pipe, small, output_size="input").shape == (12, 24, 24)
    predicted = pipe.predict(small)
    by_label = activation_maps(pipe, small, target="cat", output_size=None)
    true = activation_maps(pipe, small, target="true", y=y, output_size=None)
    automatic = activation_maps(pipe, small, output_size=None)
    cat = np.asarray(y == "cat")
    np.testing.assert_allclose(true[cat], by_label[cat])
    np.testing.assert_allclose(true[~cat], -by_label[~cat])  # two classes: "dog" is -"cat"
    np.testing.assert_allclose(automatic[predicted == "cat"], by_label[predicted == "cat"])


def test_input_size_maps_are_nan_where_the_crop_cut(labelled, tmp_path):
    pipe, _ = labelled
    wide = np.full((20, 60, 3), 128, np.uint8)
    maps = activation_maps(pipe, [wide, np.zeros((24, 24, 3), np.uint8)], output_size="input")
    assert isinstance(maps, list) and maps[0].shape == (20, 60) and maps[1].shape == (24, 24)
    assert np.isnan(maps[0][:, 0]).all() and np.isnan(maps[0][:, -1]).all()  # cut by the crop
    # the shorter side resized to 73 px and cropped to 64: the middle 64/73 of the rows, and
    # the middle 64/219 of the columns (17.5 px of 60) are seen
    assert np.isfinite(maps[0][2:18, 22:38]).all() and np.isnan(maps[0][:, :20]).all()


def test_unreadable_rows_give_nan_maps_and_pandas_works(small, labelled, tmp_path):
    pipe, y = labelled
    paths = []
    for index in range(3):
        path = tmp_path / f"{index}.png"
        Image.fromarray(small[index]).save(path)
        paths.append(str(path))
    paths.insert(1, str(tmp_path / "missing.png"))
    X = pd.Series(paths, index=["a", "b", "c", "d"])
    with pytest.warns(UserWarning, match="missing.png"):
        maps = activation_maps(pipe, X, target="true", y=y[:4].to_numpy())
    assert np.isnan(maps[1]).all() and np.isfinite(maps[[0, 2, 3]]).all()
    frame = pd.DataFrame({"image": list(small[:3])})
    assert activation_maps(pipe, frame).shape == (3, 64, 64)


@pytest.mark.parametrize("labels", [np.array([10, 20, 30] * 4),
                                    np.array([("a", 1), ("b", 2), ("c", 3)] * 4, dtype=object)[:, 0],
                                    np.array([True, False] * 6)])
def test_labels_of_any_dtype(small, labels):
    pipe = make_pipeline(PretrainedCNNFeatures(image_size=64, layer="blocks.5"),
                         LogisticRegression(max_iter=1000)).fit(small, labels)
    maps = activation_maps(pipe, small, target="true", y=labels, output_size=None)
    first = activation_maps(pipe, small, target=labels[0], output_size=None)
    assert maps.shape == first.shape == (12, 2, 2)


def test_overlay_and_plot(labelled, small, tmp_path):
    pipe, y = labelled
    maps = activation_maps(pipe, small[:2])
    pictures = overlay(input_images(pipe, small[:2]), maps)
    assert pictures.shape == (2, 64, 64, 3) and pictures.dtype == np.uint8
    grey = overlay(np.full((1, 64, 64), 128, np.uint8), maps[:1])[0].astype(int)
    hot = np.unravel_index(np.argmax(maps[0]), maps[0].shape)
    cold = np.unravel_index(np.argmin(maps[0]), maps[0].shape)
    assert grey[hot][0] > grey[hot][2] and grey[cold][2] > grey[cold][0]  # jet: red high, blue low
    with_nan = overlay(np.full((1, 4, 4), 100, np.uint8), np.full((1, 4, 4), np.nan))
    assert (with_nan == 100).all()  # nothing to draw: the image alone
    figure = plot_activation_maps(pipe, small, y, n=5, path=tmp_path / "maps.png")
    assert len([ax for ax in figure.axes if ax.images]) == 5
    assert (tmp_path / "maps.png").stat().st_size > 1000


# --- gradient methods (grad-cam) -----------------------------------------------------------------


def test_gradient_methods(small):
    pytest.importorskip("pytorch_grad_cam")
    y = np.arange(12) % 2
    clf = FineTunedCNNClassifier(image_size=64, epochs=1, train_layers="head",
                                 validation_fraction=0, random_state=0).fit(small, y)
    maps = activation_maps(clf, small[:4], layer="blocks.4")
    assert maps.shape == (4, 64, 64) and np.nanmin(maps) >= 0 and np.nanmax(maps) <= 1 + 1e-6
    with pytest.raises(ValueError, match="output_size=None"):
        activation_maps(clf, small[:4], layer="blocks.4", output_size=None)
    gem = make_pipeline(PretrainedCNNFeatures(image_size=64, layer="blocks.5", pooling="gem"),
                        LogisticRegression(max_iter=1000)).fit(small, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert activation_maps(gem, small[:3]).shape == (3, 64, 64)  # auto: grad-cam


# --- skdeep evaluate --explain -------------------------------------------------------------------


def test_evaluate_explain_with_calibrate_explains_the_calibrated_models(tmp_path, capsys):
    # The fold models are then CalibratedClassifierCV: their maps are those of the linear
    # models they calibrate (the gallery once failed: "not linear in the features").
    from skdeep.cli import main

    report = tmp_path / "report"
    code = main(["evaluate", "--max-images", "90", "--folds", "2", "--layers", "blocks.5",
                 "--image-size", "64", "--no-progress", "--explain", "--calibrate",
                 "-o", str(report)])
    _, err = capsys.readouterr()
    assert code == 0, err
    config = json.loads((report / "results.json").read_text())["config"]
    assert config["activation_maps"]["images"]
    assert (report / "activation_maps.png").is_file()


def test_evaluate_explain_writes_the_gallery(tmp_path, capsys):
    from skdeep.cli import main

    report = tmp_path / "report"
    code = main(["evaluate", "--max-images", "40", "--folds", "2", "--layers",
                 "blocks.5,penultimate", "--image-size", "64", "--no-progress", "--explain",
                 "-o", str(report)])
    _, err = capsys.readouterr()
    assert code == 0, err
    config = json.loads((report / "results.json").read_text())["config"]
    facts = config["activation_maps"]
    assert facts["file"] == "activation_maps.png"
    assert facts["strategy"] in ("blocks.5", "penultimate")  # one layer: a pair has no maps
    shown = facts["images"]
    assert shown and {image["label"] for image in shown} <= set(config["classes"])
    # per class, the correct ones first, each kind most confident first
    for label in config["classes"]:
        for correct in (True, False):
            kind = [i["probability"] for i in shown if i["label"] == label
                    and i["correct"] is correct]
            assert len(kind) <= 2 and kind == sorted(kind, reverse=True)
    with Image.open(report / "activation_maps.png") as image:
        assert image.format == "PNG" and image.size[1] > 1000  # ten rows of classes
