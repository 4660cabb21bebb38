"""compile= on both estimators: one compile per fitted network, padding dropped, eager fallback.

Compiling takes seconds, so the compiled estimators are built once per module.
"""

import logging
import pickle
import warnings

import numpy as np
import pytest
import torch
from torch import nn

import skdeep._base as base_module
import skdeep._compiled as compiled_module
from skdeep import FineTunedCNNClassifier, PretrainedCNNFeatures
from skdeep.datasets import load_fashion_sample

SETTINGS = {"image_size": 32, "batch_size": 4}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def _graphs_compiled() -> int:
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


@pytest.fixture(scope="module")
def images():
    X, _ = load_fashion_sample(return_X_y=True)
    return X[:10]  # real images: 10 rows = two full batches of 4 and one padded batch of 2


@pytest.fixture(scope="module")
def compiled_run(images):
    """A compiled transformer (real pretrained weights) after two calls of different sizes."""
    cnn = PretrainedCNNFeatures(compile=True, layer=["blocks.3", "penultimate"], **SETTINGS).fit()
    before = _graphs_compiled()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback to eager would be a warning: fail instead
        first = cnn.transform(images)
        second = cnn.transform(images[:3])
    return cnn, first, second, _graphs_compiled() - before


def test_compiled_features_agree_with_eager(compiled_run, images):
    cnn, first, _, _ = compiled_run
    eager = PretrainedCNNFeatures(compile=False, layer=["blocks.3", "penultimate"],
                                  **SETTINGS).fit().transform(images)
    assert first.shape == eager.shape == (10, cnn.n_features_out_)
    assert _cosine(first, eager).min() >= 0.999


def test_one_compile_per_fitted_network_and_padding_rows_dropped(compiled_run):
    cnn, first, second, graphs = compiled_run
    assert graphs == 1  # 10 images (a padded last batch) then 3: one shape, one graph
    assert second.shape == (3, cnn.n_features_out_)
    # Rows do not depend on the batch they were in, nor on the padding beside them.
    np.testing.assert_allclose(second, first[:3], rtol=1e-3, atol=1e-3)


def test_compiled_graph_is_never_pickled(compiled_run, images):
    cnn, first, _, _ = compiled_run
    assert cnn.__dict__.get("_compiled") is not None
    restored = pickle.loads(pickle.dumps(cnn))
    assert "_compiled" not in restored.__dict__
    restored.set_params(compile=False)
    assert _cosine(restored.transform(images), first).min() >= 0.999


def test_auto_does_not_compile_a_small_job(images):
    cnn = PretrainedCNNFeatures(compile="auto", **SETTINGS).fit()
    cnn.transform(images)
    assert cnn.__dict__.get("_compiled") is None


def _failing_compile(*args, **kwargs):
    def run(images):
        raise RuntimeError("no C++ compiler found")
    return run


def test_compile_failure_warns_once_and_runs_eager(monkeypatch, images):
    monkeypatch.setattr(compiled_module.torch, "compile", _failing_compile)
    eager = PretrainedCNNFeatures(compile=False, **SETTINGS).fit().transform(images)
    cnn = PretrainedCNNFeatures(compile=True, **SETTINGS).fit()
    with pytest.warns(UserWarning, match="runs eager .*no C\\+\\+ compiler") as caught:
        first = cnn.transform(images)
        second = cnn.transform(images)
    assert sum("runs eager" in str(w.message) for w in caught) == 1
    np.testing.assert_array_equal(first, eager)
    np.testing.assert_array_equal(second, eager)


def _instant_compile(module, **kwargs):
    """torch.compile without the wait: the module itself, which logs what inductor's import logs
    on a machine with a CUDA toolkit folder and no GPU (on the first call: the compile)."""
    calls = []

    def run(images):
        if not calls:
            logging.getLogger("torch.utils.cpp_extension").warning(
                "No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local")
        calls.append(len(images))
        return module(images)
    return run


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_a_first_compile_is_announced_once_without_the_cuda_noise(monkeypatch, images, capsys):
    monkeypatch.setattr(compiled_module.torch, "compile", _instant_compile)
    records = _Records()
    logger = logging.getLogger("torch.utils.cpp_extension")
    logger.addHandler(records)
    try:
        cnn = PretrainedCNNFeatures(compile=True, **SETTINGS).fit()  # progress is off
        cnn.transform(images)
        cnn.transform(images)
    finally:
        logger.removeHandler(records)
    err = capsys.readouterr().err
    assert err.count("compile: compiling EfficientNet for batches of 4x3x32x32, once") == 1
    assert f"cached in {compiled_module.compile_cache_dir()}" in err
    assert not records.messages  # silenced on a CPU while compiling
    logger.warning("No CUDA runtime is found")  # and only then
    assert "No CUDA runtime is found" in capsys.readouterr().err


@pytest.mark.parametrize(("progress", "announced"), [(False, False), (True, True)])
def test_auto_announces_its_compile_when_progress_is_on(monkeypatch, images, capsys, progress,
                                                        announced):
    monkeypatch.setattr(compiled_module.torch, "compile", _instant_compile)
    monkeypatch.setattr(base_module, "compile_pays", lambda *args: True)  # as for a large job
    cnn = PretrainedCNNFeatures(compile="auto", progress=progress, **SETTINGS).fit()
    cnn.transform(images)
    assert cnn.__dict__.get("_compiled") is not None
    assert ("compile: compiling" in capsys.readouterr().err) is announced


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = self.conv(x)
        if x.mean() > 0:  # control flow on values: cannot be traced to one graph
            x = x.relu()
        return self.fc(x.mean(dim=(2, 3)))


def test_untraceable_backbone_warns_and_runs_eager(images):
    eager = PretrainedCNNFeatures(_DataDependent(), compile=False, **SETTINGS).fit()
    cnn = PretrainedCNNFeatures(_DataDependent(), compile=True, **SETTINGS).fit()
    with pytest.warns(UserWarning, match="_DataDependent runs eager"):
        rows = cnn.transform(images)
    np.testing.assert_array_equal(rows, eager.transform(images))


def test_compile_false_never_tries(monkeypatch, images):
    monkeypatch.setattr(compiled_module.torch, "compile", _failing_compile)
    cnn = PretrainedCNNFeatures(compile=False, **SETTINGS).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cnn.transform(images)  # compile=False never even tries
    assert cnn.__dict__.get("_compiled") is None


def test_classifier_compiled_prediction_agrees_with_eager(labelled_images):
    X, y = labelled_images
    clf = FineTunedCNNClassifier(weights=None, random_state=0, epochs=1, validation_fraction=0,
                                 early_stopping=False, compile=False, **SETTINGS).fit(X, y)
    expected = clf.predict_proba(X[:6])
    clf.set_params(compile=True)
    before = _graphs_compiled()
    got = clf.predict_proba(X[:6])
    assert _graphs_compiled() - before == 1
    np.testing.assert_allclose(got, expected, atol=0.02)
    # Refitting changes the weights, which the compiled graph holds as constants: it is dropped.
    clf.set_params(warm_start=True).fit(X, y)
    assert "_compiled" not in clf.__dict__


def test_compiled_transform_from_threads_matches_single_thread(compiled_run, images):
    from concurrent.futures import ThreadPoolExecutor

    cnn, first, _, _ = compiled_run
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: cnn.transform(images), range(8)))
    for result in results:
        np.testing.assert_allclose(result, first, rtol=1e-3, atol=1e-3)
