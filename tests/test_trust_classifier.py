"""FineTunedCNNClassifier gives no silent wrong results (issue #16): what is saved is what was
fitted, a failed save keeps the old model, a fit with nothing readable refuses, a tampered save
folder cannot exhaust the machine, and labels of mixed types are refused clearly.

Offline and CPU-only: the bundled EfficientNet-Lite0 at 32 px on tiny synthetic images.
"""

from __future__ import annotations

import json
import os
import shutil
import types

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

import skdeep._safe_format as safe_format
from skdeep._device import torch_threads
from skdeep.classifier import FineTunedCNNClassifier


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks gain nothing from a second thread (see test_classifier.py)."""
    with torch_threads(1):
        yield


def make_images(n: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class (cat/dog) sets the brightness of the top rows."""
    rng = np.random.default_rng(seed)
    labels = np.array(["cat", "dog"])[np.arange(n) % 2]
    images = rng.integers(0, 100, size=(n, 16, 16, 3), dtype=np.uint8)
    images[labels == "dog", :6] += 120
    return images, labels


def lite0(**params) -> FineTunedCNNClassifier:
    defaults = dict(image_size=32, epochs=1, batch_size=8, precision="fp32", random_state=0,
                    validation_fraction=0)
    return FineTunedCNNClassifier(**{**defaults, **params})


# --- defect 8: save/load and warm_start follow the fitted network, not the current params -------


def test_save_after_set_params_loads_the_fitted_network(tmp_path):
    X, y = make_images()
    clf = lite0().fit(X, y)
    expected = clf.predict_proba(X)
    clf.set_params(backbone="resnet18", image_size=64)  # for a later refit, not for these weights
    clf.save(tmp_path / "model")
    loaded = FineTunedCNNClassifier.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)
    assert loaded.backbone_.name == "efficientnet_lite0"
    assert loaded.data_config_["input_size"] == (3, 32, 32)
    assert loaded.get_params()["backbone"] == "resnet18"  # params are kept for refitting
    assert loaded.get_params()["image_size"] == 64


@pytest.mark.parametrize(
    "change, name",
    [({"backbone": "resnet18", "weights": None}, "backbone"), ({"weights": None}, "weights"),
     ({"image_size": 48}, "image_size")],
    ids=["backbone", "weights", "image_size"],
)
def test_warm_start_refuses_a_changed_network(change, name):
    X, y = make_images()
    clf = lite0(warm_start=True).fit(X, y)
    before = clf.predict_proba(X)
    clf.set_params(**change)
    with pytest.raises(ValueError, match=rf"warm_start.*{name}.*warm_start=False"):
        clf.fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), before)  # nothing was trained
    clf.set_params(warm_start=False).fit(X, y)  # starting afresh works
    assert clf.n_iter_ == 1


def test_warm_start_allows_what_does_not_change_the_network():
    X, y = make_images()
    clf = lite0(weights=None, warm_start=True).fit(X, y)
    clf.set_params(random_state=1, weights=None, image_size=32, lr=1e-4).fit(X, y)
    assert clf.n_iter_ == 2


# --- defect 9: a failed save leaves the old folder intact --------------------------------------


def test_failed_save_keeps_the_old_model(tmp_path, monkeypatch):
    X, y = make_images()
    old = lite0().fit(X, y)
    old.save(tmp_path / "model")
    expected = old.predict_proba(X)
    new = lite0(random_state=1, lr=1e-2).fit(X, y)
    assert not np.allclose(new.predict_proba(X), expected)

    def broken_dumps(*args, **kwargs):
        raise OSError("disk full")

    # the weights are written first: the JSON failing after them is the worst moment
    monkeypatch.setattr(safe_format, "json", types.SimpleNamespace(dumps=broken_dumps))
    with pytest.raises(OSError, match="disk full"):
        new.save(tmp_path / "model")
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["model"]  # no temporary folder left behind
    loaded = FineTunedCNNClassifier.load(tmp_path / "model")
    np.testing.assert_array_equal(loaded.predict_proba(X), expected)


def test_save_replaces_a_saved_model_and_refuses_other_folders(tmp_path):
    X, y = make_images()
    lite0().fit(X, y).save(tmp_path / "model")
    new = lite0(random_state=1, lr=1e-2).fit(X, y)
    new.save(tmp_path / "model")
    assert sorted(os.listdir(tmp_path)) == ["model"]
    np.testing.assert_array_equal(FineTunedCNNClassifier.load(tmp_path / "model").predict_proba(X),
                                  new.predict_proba(X))
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"todo\.txt"):
        new.save(tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["model", "notes"]


# --- defect 11: on_error="nan" with nothing readable (in a class) refuses to fit ---------------


def test_fit_refuses_when_no_image_is_readable(tmp_path):
    _, y = make_images()
    missing = [str(tmp_path / f"missing_{i}.png") for i in range(len(y))]
    with pytest.raises(ValueError, match=r"no readable.*16 .*could not be read.*missing_0\.png"):
        lite0(on_error="nan").fit(missing, y)


def test_fit_refuses_a_class_without_readable_training_image(tmp_path):
    X, y = make_images()
    items = [str(tmp_path / f"missing_{i}.png") if label == "dog" else image
             for i, (image, label) in enumerate(zip(X, y))]
    with pytest.raises(ValueError, match=r"class 'dog'.*8 .*could not be read.*missing_1\.png"):
        lite0(on_error="nan").fit(items, y)


def test_fit_refuses_a_class_whose_files_fail_to_decode():
    """Files that exist but do not decode are only found while training: the backstop."""
    X, y = make_images()
    items = [b"not an image" if label == "dog" else image for image, label in zip(X, y)]
    with pytest.raises(ValueError, match=r"class 'dog'.*8 .*could not be read"):
        lite0(on_error="nan").fit(items, y)


def test_fit_with_some_unreadable_images_still_trains(tmp_path):
    X, y = make_images()
    items = list(X)
    items[1] = str(tmp_path / "missing.png")
    with pytest.warns(UserWarning, match="row 1"):
        clf = lite0(on_error="nan").fit(items, y)
    assert clf.n_iter_ == 1 and clf.history_[0]["train_loss"] > 0


# --- defect 13: a tampered save folder is refused before anything is built ----------------------


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    X, y = make_images()
    folder = tmp_path_factory.mktemp("saved") / "model"
    with torch_threads(1):
        lite0().fit(X, y).save(folder)
    return folder


def tampered(saved, tmp_path, edit) -> str:
    """A copy of the saved folder whose skdeep.json went through ``edit(document)``."""
    folder = tmp_path / "tampered"
    shutil.copytree(saved, folder)
    path = folder / "skdeep.json"
    document = json.loads(path.read_text())
    edit(document)
    path.write_text(json.dumps(document))
    return folder


def test_load_caps_num_workers_at_the_cpu_count(saved, tmp_path):
    folder = tampered(saved, tmp_path, lambda d: d["params"].update(num_workers=48))
    with pytest.warns(UserWarning, match=r"skdeep\.json.*params\.num_workers.*48"):
        loaded = FineTunedCNNClassifier.load(folder)
    assert loaded.num_workers == min(48, os.cpu_count() or 1)


def test_load_rebuilds_the_label_dtype_from_the_labels(saved, tmp_path):
    folder = tampered(saved, tmp_path, lambda d: d["classes"].update(dtype="<U100000"))
    loaded = FineTunedCNNClassifier.load(folder)
    assert loaded.classes_.dtype == np.dtype("<U3")
    assert loaded.classes_.tolist() == ["cat", "dog"]


@pytest.mark.parametrize("dtype", ["(1000000000,)f8", "V100000000", "<M8[s]", 7])
def test_load_refuses_a_label_dtype_it_does_not_write(saved, tmp_path, dtype):
    folder = tampered(saved, tmp_path, lambda d: d["classes"].update(dtype=dtype))
    with pytest.raises(ValueError, match=r"skdeep\.json.*classes\.dtype"):
        FineTunedCNNClassifier.load(folder)


def test_load_refuses_a_huge_input_size(saved, tmp_path):
    folder = tampered(saved, tmp_path,
                      lambda d: d["data_config"].update(input_size=[3, 20000, 20000]))
    with pytest.raises(ValueError, match=r"skdeep\.json.*data_config\.input_size.*4096"):
        FineTunedCNNClassifier.load(folder)


def test_load_refuses_a_tiny_crop_pct(saved, tmp_path):
    folder = tampered(saved, tmp_path, lambda d: d["data_config"].update(crop_pct=1e-6))
    with pytest.raises(ValueError, match=r"skdeep\.json.*data_config\.crop_pct"):
        FineTunedCNNClassifier.load(folder)


def test_load_refuses_a_huge_image_size_param(saved, tmp_path):
    folder = tampered(saved, tmp_path, lambda d: d["params"].update(image_size=20000))
    with pytest.raises(ValueError, match=r"skdeep\.json.*params\.image_size.*4096"):
        FineTunedCNNClassifier.load(folder)


@pytest.mark.parametrize("head", ["heads.head", None], ids=["its-head", "head-unchanged"])
def test_load_refuses_a_backbone_the_weights_do_not_fit_before_building_it(
        saved, tmp_path, monkeypatch, head):
    def edit(document):  # a 632M-parameter network named over a 4.7M-parameter file
        document["backbone"]["name"] = "vit_h_14"
        document["head"] = head or document["head"]

    folder = tampered(saved, tmp_path, edit)

    def no_build(*args, **kwargs):
        raise AssertionError("load() built the network before checking the weights file")

    monkeypatch.setattr(FineTunedCNNClassifier, "_assemble", no_build)
    with pytest.raises(ValueError, match=r"weights\.safetensors.*backbone\.name.*vit_h_14"):
        FineTunedCNNClassifier.load(folder)


def test_load_refuses_weights_with_a_missing_tensor(saved, tmp_path):
    folder = tampered(saved, tmp_path, lambda d: None)
    tensors = load_file(folder / "weights.safetensors")
    tensors.pop(sorted(tensors)[0])
    save_file(tensors, folder / "weights.safetensors")
    with pytest.raises(ValueError, match=r"weights\.safetensors.*missing"):
        FineTunedCNNClassifier.load(folder)


@pytest.mark.parametrize(
    "edit, field",
    [(lambda d: d.pop("head"), "head"),
     (lambda d: d["params"].update(colour="red"), "params"),
     (lambda d: d["params"].update(lr="fast"), "params.lr"),
     (lambda d: d.update(history={"epoch": 1}), "history"),
     (lambda d: d["data_config"].update(mean=[0.5, "x", 0.5]), "data_config.mean"),
     (lambda d: d["classes"].update(values=[["cat"], "dog"]), "classes.values"),
     (lambda d: d["params"].update(device="nonsense"), "params.device"),
     (lambda d: d["params"].update(class_weight={"pairs": [["cat", "heavy"]]}),
      r"params.class_weight.pairs\[0\]"),
     (lambda d: d.update(bn_mode="sometimes"), "bn_mode"),
     (lambda d: d.update(head="features.0"), "head"),
     (lambda d: d.update(format_version="1"), "format_version")],
    ids=["missing", "unknown-param", "param-type", "history", "mean", "label-value", "device",
         "class-weight", "bn-mode", "head", "format-version"],
)
def test_load_names_the_file_and_the_field(saved, tmp_path, edit, field):
    folder = tampered(saved, tmp_path, edit)
    with pytest.raises(ValueError, match=rf"skdeep\.json.*{field}"):
        FineTunedCNNClassifier.load(folder)


def test_load_round_trip_still_works(saved):
    X, _ = make_images()
    loaded = FineTunedCNNClassifier.load(saved)
    assert loaded.predict_proba(X).shape == (16, 2)
    assert loaded.classes_.tolist() == ["cat", "dog"]


# --- defect 15: labels of mixed types ---------------------------------------------------------


@pytest.mark.parametrize(
    "labels, message",
    [(["a", 1] * 8, r"y mixes str and int labels \(int at rows \[1, 3, 5, 7, 9, \.\.\.\]\): use one type"),
     (np.array(["a", 1] * 8, dtype=object), r"y mixes str and int labels"),
     (["a", "b"] * 7 + [None, "a"], r"y has missing labels \(None or NaN\) at rows \[14\]"),
     (np.array(["a", "b"] * 7 + [np.nan, "a"], dtype=object), r"missing labels .* rows \[14\]")],
    ids=["list", "object-array", "none", "nan"],
)
def test_mixed_or_missing_labels_raise_a_clear_error(labels, message):
    X, _ = make_images()
    with pytest.raises(ValueError, match=message):
        lite0().fit(X, labels)
