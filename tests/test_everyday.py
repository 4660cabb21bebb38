"""Everyday use (issue #12): what a data scientist trips over in the first hour, provenance, and
training callbacks with resumable training.

Offline and CPU-only: tiny synthetic images, timm's ``test_efficientnet`` (356k parameters) with
random weights, or the bundled EfficientNet-Lite0 at 32 px where pretrained weights matter.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
import torch
from sklearn.base import clone
from sklearn.metrics import accuracy_score
from sklearn.model_selection import GridSearchCV, cross_val_score

import skdeep
from skdeep import (
    BadImageWarning,
    Callback,
    Checkpoint,
    CSVLogger,
    FineTunedCNNClassifier,
    PretrainedCNNFeatures,
    WeightsUnavailableError,
)
from skdeep import _weights
from skdeep._device import torch_threads
from skdeep._provenance import provenance
from skdeep._atomic import atomic_write
from skdeep.backbones import list_backbones, resolve_backbone

ROOT = Path(__file__).resolve().parents[1]
from _helpers import TINY, make_images


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny networks gain nothing from a second thread (see test_classifier.py)."""
    with torch_threads(1):
        yield


def tiny(**params) -> FineTunedCNNClassifier:
    defaults = dict(backbone=TINY, weights=None, image_size=32, epochs=2, batch_size=8,
                    precision="fp32", random_state=0)
    return FineTunedCNNClassifier(**{**defaults, **params})


class Recorder(Callback):
    """Remembers every hook call; stops training after epoch ``stop_after`` when given."""

    def __init__(self, stop_after: int | None = None) -> None:
        self.stop_after = stop_after

    def on_train_begin(self, estimator):
        self.calls_ = [("begin", len(estimator.history_))]

    def on_epoch_end(self, estimator, record):
        self.calls_.append(("epoch", record["epoch"], estimator.n_iter_))
        return self.stop_after is not None and record["epoch"] >= self.stop_after

    def on_train_end(self, estimator):
        self.calls_.append(("end", estimator.n_iter_))


# --- 1. predict with on_error="nan": labels keep y's dtype, bad rows are named --------------------


def test_predict_on_error_nan_keeps_the_label_dtype_and_names_the_bad_rows(tmp_path):
    X, y = make_images()
    items = list(X)
    items[5] = str(tmp_path / "missing.png")
    clf = tiny(on_error="nan", validation_fraction=0, epochs=1)
    with pytest.warns(BadImageWarning, match="row 5"):
        clf.fit(items, y)
    assert clf.bad_rows_.tolist() == [5]  # skipped in training
    with pytest.warns(BadImageWarning, match="row 5"):
        predicted = clf.predict(items)
    assert predicted.dtype == y.dtype
    assert clf.bad_rows_.tolist() == [5] and clf.bad_rows_.dtype == np.intp
    assert predicted[5] == clf.classes_[0]  # the documented placeholder
    assert 0 <= accuracy_score(y, predicted) <= 1  # an int array: metrics work
    keep = np.ones(len(items), dtype=bool)
    keep[clf.bad_rows_] = False
    assert accuracy_score(y[keep], predicted[keep]) >= 0

    with pytest.warns(BadImageWarning):
        proba = clf.predict_proba(items)
    assert np.isnan(proba[5]).all() and np.isfinite(np.delete(proba, 5, axis=0)).all()
    assert clf.bad_rows_.tolist() == [5]
    clf.predict(X)  # a clean call resets the record
    assert clf.bad_rows_.tolist() == []


def test_predict_on_error_nan_keeps_string_labels_strings(tmp_path):
    X, y = make_images()
    names = np.array(["cat", "dog"])[y]
    items = list(X)
    items[2] = str(tmp_path / "missing.png")
    clf = tiny(on_error="nan", validation_fraction=0, epochs=1)
    with pytest.warns(BadImageWarning):
        clf.fit(X, names)
        predicted = clf.predict(items)
    assert predicted.dtype.kind == "U" and predicted[2] == "cat"
    assert clf.bad_rows_.tolist() == [2]


# --- 2. files written atomically get the mode the umask gives ------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_gives_files_the_mode_of_the_umask(tmp_path, umask, mode):
    target = tmp_path / "features.csv"
    previous = os.umask(umask)
    try:
        atomic_write({target: lambda temporary: Path(temporary).write_text("a,b\n")})
    finally:
        os.umask(previous)
    assert target.read_text() == "a,b\n"
    assert target.stat().st_mode & 0o777 == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.csv"]  # no temporary left


# --- 3. a relative cache path is resolved at fit; a loaded model runs with the cache off ----------


def test_a_pickled_pipeline_keeps_its_cache_folder_and_runs_with_the_cache_off(tmp_path,
                                                                               monkeypatch):
    import pickle

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    fitted_in, served_in = tmp_path / "train", tmp_path / "serve"
    fitted_in.mkdir(), served_in.mkdir()
    images, _ = make_images(4)
    monkeypatch.chdir(fitted_in)
    cnn = PretrainedCNNFeatures(backbone=TINY, weights=None, image_size=32, random_state=0,
                                cache="cache")
    pipe = make_pipeline(cnn, StandardScaler()).fit(images)
    assert cnn.cache_.path == fitted_in / "cache"
    expected = pipe.transform(images)
    blob = pickle.dumps(pipe)

    monkeypatch.chdir(served_in)
    loaded = pickle.loads(blob)
    np.testing.assert_allclose(loaded.transform(images), expected, rtol=1e-5)
    assert loaded[0].cache_info().hits == len(images)  # read from the folder of fit
    assert not (served_in / "cache").exists()

    loaded = pickle.loads(blob).set_params(pretrainedcnnfeatures__cache=None)
    np.testing.assert_allclose(loaded.transform(images), expected, rtol=1e-5)
    assert loaded[0].cache_info() is None
    assert list(served_in.iterdir()) == []  # no folder made, no refit needed


# --- 4. small data: no validation split possible -> train on everything, one warning -------------


def test_small_data_trains_without_early_stopping_and_says_so_once():
    X, y = make_images(n=40, n_classes=10)  # 4 images per class: 10% is 4 images for 10 classes
    clf = tiny(epochs=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf.fit(X, y)
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert issubclass(caught[0].category, UserWarning)
    assert "4 of 40" in messages[0] and "10 classes" in messages[0]
    assert "all 40" in messages[0] and "early stopping" in messages[0]
    assert np.isnan(clf.history_[0]["valid_loss"])


def test_small_data_cross_val_score_with_the_defaults():
    X, y = make_images(n=50, n_classes=10)
    with pytest.warns(UserWarning, match="too few"):
        scores = cross_val_score(tiny(epochs=1), X, y, cv=5, error_score="raise")
    assert np.isfinite(scores).all()


# --- 8. progress bars stay on screen (and in notebooks and logs) when done -----------------------


def test_progress_bars_are_left_on_screen_when_done(monkeypatch):
    import tqdm.auto

    made = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            made.append(kwargs.get("leave", True))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    images, labels = make_images(8)
    PretrainedCNNFeatures(backbone=TINY, weights=None, image_size=32, random_state=0,
                          progress=True).fit().transform(images)
    tiny(epochs=1, early_stopping=False, progress=True).fit(images, labels)
    assert len(made) >= 2 and all(made), made  # embedding and training bars


# --- 9. offline: HF_HUB_OFFLINE is respected, the steps are real; pretrained tags are listed -----


def test_offline_error_respects_hf_hub_offline_and_gives_real_steps(tmp_path, monkeypatch):
    from huggingface_hub import constants

    def no_probe(*args, **kwargs):
        raise AssertionError("HF_HUB_OFFLINE is set: the network must not be probed")

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(_weights, "host_reachable", no_probe)
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_backbone("timm/resnet10t").build()
    message = str(info.value)
    assert "HF_HUB_OFFLINE" in message
    assert "hf download timm/resnet10t.c3_in1k" in message
    assert str(tmp_path / "models--timm--resnet10t.c3_in1k") in message
    assert "blobs" in message and "snapshots" in message
    assert "weights=" in message and ".safetensors" in message


def test_offline_error_without_hf_hub_offline_says_the_hub_is_unreachable(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(_weights, "host_reachable", lambda *a, **k: False)
    with pytest.raises(WeightsUnavailableError) as info:
        resolve_backbone("timm/resnet10t").build()
    message = str(info.value)
    assert "cannot reach" in message and "HF_HUB_OFFLINE" not in message
    assert "hf download timm/resnet10t.c3_in1k" in message


def test_list_backbones_lists_timm_pretrained_tags():
    tagged = list_backbones("timm", tags=True)
    assert {"timm/resnet18.a1_in1k", "timm/resnet18.tv_in1k"} <= set(tagged)
    assert "timm/resnet18" not in tagged  # every name carries its tag
    plain = list_backbones("timm")
    assert "timm/resnet18" in plain and "timm/resnet18.a1_in1k" not in plain
    assert list_backbones("bundled", tags=True) == list_backbones("bundled")
    resolve_backbone(tagged[tagged.index("timm/resnet18.a1_in1k")])  # a listed name resolves


@pytest.mark.parametrize("width, hint", [
    (784, "X.reshape(-1, 28, 28)"),
    (3072, "np.moveaxis(X.reshape(-1, 3, 32, 32), 1, -1)"),
    (100 * 3 + 1, "X.reshape(-1, H, W) (gray) or X.reshape(-1, H, W, 3) (RGB), with H * W (* 3) = 301"),
])
def test_flattened_images_are_refused_with_the_reshape_that_fixes_them(width, hint):
    flat = np.zeros((5, width), np.uint8)
    with pytest.raises(ValueError, match=re.escape(hint)):
        PretrainedCNNFeatures(backbone=TINY, weights=None, random_state=0).fit().transform(flat)


def test_cli_backbones_tags_lists_the_pretrained_tags(capsys):
    from skdeep.cli import main

    assert main(["backbones", "timm/resnet18*", "--tags"]) == 0
    names = capsys.readouterr().out.split()
    assert {"timm/resnet18.a1_in1k", "timm/resnet18.tv_in1k"} <= set(names)
    assert all(name.startswith("timm/resnet18") and "." in name for name in names)  # tagged


# --- 10. packaging -------------------------------------------------------------------------------


def test_packaging_declares_the_licence_dependencies_and_extras():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    licence = (ROOT / "LICENSE").read_text()
    assert licence.startswith("BSD 3-Clause License") and "the skdeep developers" in licence
    assert project["project"]["license"] == "BSD-3-Clause"
    assert "LICENSE" in project["project"]["license-files"]
    (setuptools,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert setuptools == "setuptools>=77"  # the SPDX licence string needs setuptools 77
    names = [re.split(r"[<>=\[ ;]", dep)[0].lower().replace("_", "-")
             for dep in project["project"]["dependencies"]]
    assert "huggingface-hub" in names  # skdeep imports it
    extras = project["project"]["optional-dependencies"]
    assert not any("sphinx" in dep or "numpydoc" in dep for dep in extras["test"])
    assert any(dep.startswith("sphinx") for dep in extras["docs"])
    assert set(extras["all"]) == {"skdeep[parquet,dask,conformal,explain]"}
    assert any(dep.startswith("mapie") for dep in extras["test"])  # CI runs the MAPIE tests
    assert any(dep.startswith("grad-cam") for dep in extras["test"])  # its tests run in CI
    makefile = (ROOT / "Makefile").read_text()
    assert '-e ".[test,docs]"' in makefile  # `make test` still builds the docs


def test_readme_reads_well_on_a_pypi_page():
    readme = (ROOT / "README.md").read_text()
    first_code = readme.split("```")[1]  # "bash\npip install skdeep\n..."
    assert first_code.splitlines()[1] == "pip install skdeep"
    assert readme.index("pip install skdeep") < readme.index("make run")
    inline = re.findall(r"\]\((?!https?://)([^)]+)\)", readme)
    defined = re.findall(r"^\[[^\]]+\]: (?!https?://)(\S+)", readme, flags=re.MULTILINE)
    assert not inline + defined, f"relative links do not work on PyPI: {inline + defined}"
    assert "https://github.com/skdeep/skdeep/blob/main/LICENSE" in readme


@pytest.mark.slow
def test_the_wheel_carries_the_licence(tmp_path):
    source = tmp_path / "source"  # a copy: building in place would leave build/ in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "skdeep", source / "skdeep",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "wheel"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
         "--wheel-dir", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    if result.returncode != 0 and "setuptools" in result.stderr:  # pragma: no cover
        pytest.skip(f"cannot build here: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stderr
    import zipfile

    (wheel,) = out.glob("skdeep-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), names


# --- 12. set_output ------------------------------------------------------------------------------


def test_set_output_pandas_gives_a_dataframe_named_by_get_feature_names_out():
    X, y = make_images()
    clf = tiny(epochs=1, validation_fraction=0).fit(X, y)
    frame = clf.set_output(transform="pandas").transform(X)
    assert isinstance(frame, pd.DataFrame)
    assert frame.columns.tolist() == clf.get_feature_names_out().tolist()
    default = clf.set_output(transform="default").transform(X)
    np.testing.assert_array_equal(frame.to_numpy(), default)
    series = pd.Series(list(X), index=np.arange(100, 100 + len(X)))
    indexed = clf.set_output(transform="pandas").transform(series)
    assert indexed.index.tolist() == series.index.tolist()


# --- provenance ----------------------------------------------------------------------------------


def test_provenance_is_recorded_saved_and_loaded(tmp_path):
    import timm
    import torchvision

    X, y = make_images(n=16)
    clf = FineTunedCNNClassifier(image_size=32, epochs=1, batch_size=8, precision="fp32",
                                 random_state=0, validation_fraction=0, compile=False).fit(X, y)
    record = clf.provenance_
    assert record["skdeep"] == skdeep.__version__
    assert record["torch"] == torch.__version__ and record["timm"] == timm.__version__
    assert record["torchvision"] == torchvision.__version__
    assert record["scikit-learn"] == metadata.version("scikit-learn")
    assert record["backbone"] == "efficientnet_lite0"
    assert record["weights_id"] == clf.backbone_.weights_id
    bundled = resolve_backbone("efficientnet_lite0").weights_file()
    assert record["weights_sha256"] == _weights.file_sha256(bundled)
    assert record["data_config"]["input_size"] == [3, 32, 32]
    assert (record["device"], record["precision"], record["compile"]) == ("cpu", "fp32", False)
    fitted = pd.Timestamp(record["fitted_at"])
    assert fitted.tzinfo is not None and fitted.utcoffset().total_seconds() == 0
    assert abs((pd.Timestamp.now(tz="UTC") - fitted).total_seconds()) < 600
    assert provenance(clf)["weights_sha256"] == record["weights_sha256"]  # the one public builder

    clf.save(tmp_path / "model")
    document = json.loads((tmp_path / "model" / "skdeep.json").read_text())
    assert document["provenance"] == record
    assert FineTunedCNNClassifier.load(tmp_path / "model").provenance_ == record


def test_provenance_of_random_weights_has_no_file_and_of_a_file_its_sha256(tmp_path):
    X, y = make_images(n=16)
    random = tiny(epochs=1, validation_fraction=0).fit(X, y)
    assert random.provenance_["weights_sha256"] is None
    assert random.provenance_["weights_id"].startswith("random:")
    path = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file

    state = resolve_backbone(TINY, None, random_state=3).build().state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    from_file = tiny(weights=str(path), epochs=1, validation_fraction=0).fit(X, y)
    assert from_file.provenance_["weights_sha256"] == _weights.file_sha256(path)


def test_the_features_and_the_command_line_outputs_carry_their_provenance(tmp_path, capsys):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    from skdeep.cli import main

    cnn = PretrainedCNNFeatures(image_size=32, precision="fp32", compile=False).fit()
    bundled = resolve_backbone("efficientnet_lite0").weights_file()
    assert cnn.provenance_["weights_sha256"] == _weights.file_sha256(bundled)
    assert cnn.provenance_["data_config"]["input_size"] == [3, 32, 32]

    photos = tmp_path / "photos"
    images, labels = make_images(8)
    for row, (image, label) in enumerate(zip(images, labels)):
        (photos / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(photos / str(label) / f"{row}.png")
    common = ["--image-size", "32", "--precision", "fp32", "--compile", "off", "--no-progress"]
    records = {}
    for name in ("f.parquet", "f.npy", "f.csv"):
        assert main(["extract", str(photos), "-o", str(tmp_path / name), *common]) == 0
    metadata = pq.read_schema(tmp_path / "f.parquet").metadata
    records["parquet"] = json.loads(metadata[b"skdeep.provenance"])
    for name in ("f.npy", "f.csv"):
        records[name] = json.loads((tmp_path / f"{name}.json").read_text())["provenance"]
    report = tmp_path / "report"
    assert main(["evaluate", str(photos), "-o", str(report), "--folds", "2",
                 "--layers", "penultimate", *common]) == 0
    records["evaluate"] = json.loads((report / "results.json").read_text())["config"]["provenance"]
    capsys.readouterr()
    for where, record in records.items():
        expected = {k: v for k, v in cnn.provenance_.items() if k != "fitted_at"}
        assert {k: v for k, v in record.items() if k != "fitted_at"} == expected, where
        assert pd.Timestamp(record["fitted_at"]).utcoffset().total_seconds() == 0, where


# --- callbacks -----------------------------------------------------------------------------------


def test_callbacks_see_each_epoch_and_can_stop_training():
    X, y = make_images()
    recorder = Recorder(stop_after=2)
    clf = tiny(epochs=5, callbacks=[recorder], validation_fraction=0).fit(X, y)
    assert clf.n_iter_ == 2 and len(clf.history_) == 2
    assert recorder.calls_ == [("begin", 0), ("epoch", 1, 1), ("epoch", 2, 2), ("end", 2)]


def test_callbacks_are_parameters_clone_and_grid_search_keep_working(tmp_path):
    logger = CSVLogger(tmp_path / "log.csv")
    clf = tiny(callbacks=[Recorder(), logger])
    assert clf.get_params()["callbacks"][1] is logger
    copy = clone(clf)
    assert copy.callbacks[1] is not logger
    assert copy.callbacks[1].get_params() == logger.get_params()
    assert "callbacks" in clf.get_params(deep=True)
    X, y = make_images()
    search = GridSearchCV(tiny(epochs=1, validation_fraction=0, callbacks=[Recorder()]),
                          {"lr": [1e-3, 1e-2]}, cv=2).fit(X, y)
    assert search.best_estimator_.callbacks[0].calls_[-1] == ("end", 1)
    assert not hasattr(search.estimator.callbacks[0], "calls_")  # the template is not fitted


def test_callbacks_must_have_a_hook():
    X, y = make_images()
    with pytest.raises(TypeError, match=r"callbacks\[0\].*on_epoch_end"):
        tiny(callbacks=[object()]).fit(X, y)


def test_csv_logger_writes_the_history_every_epoch(tmp_path):
    X, y = make_images()
    path = tmp_path / "logs" / "history.csv"
    clf = tiny(epochs=3, callbacks=[CSVLogger(path)]).fit(X, y)
    logged = pd.read_csv(path)
    assert logged["epoch"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(logged["train_loss"], pd.DataFrame(clf.history_)["train_loss"])


def test_checkpoint_on_improvement_keeps_the_latest_best_epoch(tmp_path, monkeypatch):
    X, y = make_images()
    losses = iter([0.9, 0.5, 0.7, 0.4])
    real = FineTunedCNNClassifier.save_checkpoint
    saved = []

    def spy(self, path):
        saved.append(self.n_iter_)
        return real(self, path)

    monkeypatch.setattr(FineTunedCNNClassifier, "save_checkpoint", spy)

    class FakeLoss(Callback):  # runs before the checkpoint: rewrites what it monitors
        def on_epoch_end(self, estimator, record):
            record["valid_loss"] = next(losses)

    tiny(epochs=4, callbacks=[FakeLoss(), Checkpoint(tmp_path / "ckpt")]).fit(X, y)
    assert saved == [1, 2, 4]
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["epoch-0004"]
    loaded = FineTunedCNNClassifier.load(tmp_path / "ckpt" / "epoch-0004" / "model")
    assert loaded.n_iter_ == 4


CHILD = """
import sys, time
from pathlib import Path
import numpy as np
import torch
torch.set_num_threads(1)
from skdeep import Callback, Checkpoint, FineTunedCNNClassifier

folder = Path(sys.argv[1])
data = np.load(folder / "data.npz")


class KillMeAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, estimator, record):
        if record["epoch"] == self.epoch:
            (folder / "checkpointed").write_text(str(self.epoch))  # the parent kills us now
            time.sleep(600)


params = dict(__PARAMS__)
callbacks = [Checkpoint(folder / "ckpt", monitor=None), KillMeAfter(2)]
FineTunedCNNClassifier(**params, callbacks=callbacks).fit(data["X"], data["y"])
"""


def resumable(**params) -> dict:
    defaults = dict(backbone=TINY, weights=None, image_size=32, epochs=5, batch_size=8,
                    precision="fp32", random_state=0, dropout=0.3, n_iter_no_change=2, lr=3e-3,
                    max_steps=None)  # the child process sees the real step budget
    return {**defaults, **params}


@pytest.mark.slow
def test_a_killed_fit_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    X, y = make_images(n=40, n_classes=2)
    np.savez(tmp_path / "data.npz", X=X, y=y)
    params = resumable()
    script = CHILD.replace("__PARAMS__", repr(params))
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not (tmp_path / "checkpointed").exists():
            if child.poll() is not None:
                pytest.fail(f"the child ended before epoch 2: {child.communicate()[1][-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the child did not reach epoch 2 in 4 minutes")
            time.sleep(0.1)
        os.kill(child.pid, signal.SIGKILL)  # mid-fit, no chance to clean up
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == ["epoch-0002"]

    recorder = Recorder()
    resumed = FineTunedCNNClassifier(**params, callbacks=[recorder])
    resumed.fit(X, y, resume=tmp_path / "ckpt")
    straight = FineTunedCNNClassifier(**params).fit(X, y)
    assert recorder.calls_[0] == ("begin", 2)  # the callbacks see the history so far
    assert [r["epoch"] for r in resumed.history_] == [r["epoch"] for r in straight.history_]
    assert resumed.best_epoch_ == straight.best_epoch_
    for key, value in straight.model_.state_dict().items():
        assert torch.equal(resumed.model_.state_dict()[key], value), key
    np.testing.assert_array_equal(resumed.predict_proba(X), straight.predict_proba(X))
    for a, b in zip(resumed.history_, straight.history_):
        assert {k: v for k, v in a.items() if k != "seconds"} == pytest.approx(
            {k: v for k, v in b.items() if k != "seconds"}, nan_ok=True, rel=0, abs=0)


@pytest.mark.parametrize("scheduler, optimizer", [("onecycle", "sgd"), ("plateau", "adamw"),
                                                  ("step", "rmsprop")])
def test_resume_in_process_matches_an_uninterrupted_fit(tmp_path, scheduler, optimizer):
    X, y = make_images(n=32)
    params = resumable(epochs=4, scheduler=scheduler, optimizer=optimizer, warmup_epochs=1)
    straight = FineTunedCNNClassifier(**params).fit(X, y)
    # Stop after epoch 2 (as a crash would), then resume from the checkpoint.
    interrupted = FineTunedCNNClassifier(
        **params, callbacks=[Checkpoint(tmp_path / "ckpt", monitor=None), Recorder(stop_after=2)])
    interrupted.fit(X, y)
    resumed = FineTunedCNNClassifier(**params).fit(X, y, resume=tmp_path / "ckpt")
    np.testing.assert_array_equal(resumed.predict_proba(X), straight.predict_proba(X))
    assert resumed.n_iter_ == straight.n_iter_ and resumed.best_epoch_ == straight.best_epoch_


def test_resume_refuses_other_settings_or_data(tmp_path):
    X, y = make_images()
    tiny(epochs=2, callbacks=[Checkpoint(tmp_path / "ckpt", monitor=None)]).fit(X, y)
    with pytest.raises(ValueError, match=r"lr.*0\.01"):
        tiny(epochs=2, lr=1e-2).fit(X, y, resume=tmp_path / "ckpt")
    with pytest.raises(ValueError, match="labels"):
        tiny(epochs=2).fit(X, 1 - y, resume=tmp_path / "ckpt")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        tiny().fit(X, y, resume=tmp_path / "nothing")
    # A finished run resumes to the same model without training again.
    again = tiny(epochs=2).fit(X, y, resume=tmp_path / "ckpt")
    assert again.n_iter_ == 2


def test_checkpoint_ignores_a_half_written_checkpoint(tmp_path):
    X, y = make_images()
    params = dict(epochs=3)
    folder = tmp_path / "ckpt"
    tiny(**params, callbacks=[Checkpoint(folder, monitor=None), Recorder(stop_after=1)]).fit(X, y)
    (folder / ".epoch-0002.1234abcd.partial").mkdir()  # a save killed half-way
    resumed = tiny(**params, callbacks=[Checkpoint(folder, monitor=None)])
    resumed.fit(X, y, resume=folder)
    straight = tiny(**params).fit(X, y)
    np.testing.assert_array_equal(resumed.predict_proba(X), straight.predict_proba(X))
    assert sorted(p.name for p in folder.iterdir()) == ["epoch-0003"]


def test_checkpoint_needs_a_backbone_given_by_name(tmp_path):
    from torch import nn

    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(4, 2))
    X, y = make_images()
    with pytest.raises(ValueError, match="by name"):
        tiny(backbone=module, callbacks=[Checkpoint(tmp_path / "c")]).fit(X, y)


def test_save_checkpoint_only_during_fit(tmp_path):
    X, y = make_images()
    clf = tiny(epochs=1).fit(X, y)
    with pytest.raises(RuntimeError, match="during fit"):
        clf.save_checkpoint(tmp_path / "c")
