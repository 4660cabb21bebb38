"""A saved folder that lies (issue #15): ``load`` checks the whole document against format 1
before building anything, and every refusal names the file and the field, or the first tensor
that does not fit.

Offline and CPU-only: the save of a tiny EfficientNet-Lite0 classifier at 32 px, copied and
edited per test (the helpers come from test_trust_classifier.py).
"""

from __future__ import annotations

import json
import os
import threading

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from skdeep._device import torch_threads
from skdeep.classifier import FineTunedCNNClassifier
from test_trust_classifier import lite0, make_images, saved, tampered  # noqa: F401 - a fixture

FIELD = r"skdeep\.json', field '{}'"


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


def edited_text(saved, tmp_path, text: str):
    """A copy of the save whose skdeep.json is ``text`` (JSON that json.dumps would not write)."""
    folder = tampered(saved, tmp_path, lambda document: None)
    (folder / "skdeep.json").write_text(text)
    return folder


# --- the examples of the issue ------------------------------------------------------------------


def _truncate(folder):
    weights = folder / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])


@pytest.mark.parametrize(
    "edit, message",
    [(lambda d: d.update(classes=["cat", "dog"]), FIELD.format("classes") + " is list, not a dict"),
     (lambda d: d.update(backbone="efficientnet_lite0"), FIELD.format("backbone") + " is \"eff"),
     (lambda d: d["params"].update(image_size=10**9), FIELD.format("params.image_size")),
     (_truncate, r"weights\.safetensors' is not a readable safetensors file.*save the model again")],
    ids=["classes-as-a-list", "backbone-as-a-string", "image-size-1e9", "truncated-weights"],
)
def test_the_issues_examples_are_named(saved, tmp_path, edit, message):
    if edit is _truncate:
        folder = tampered(saved, tmp_path, lambda d: None)
        _truncate(folder)
    else:
        folder = tampered(saved, tmp_path, edit)
    with pytest.raises(ValueError, match=message):
        FineTunedCNNClassifier.load(folder)


# --- the classes: their order is the meaning of every probability column -----------------------


@pytest.mark.parametrize("values", [["dog", "cat"], ["cat", "cat"], ["cat", 1]],
                         ids=["reordered", "repeated", "mixed-types"])
def test_load_refuses_classes_that_np_unique_would_not_give(saved, tmp_path, values):
    # ["dog", "cat"] used to load and predict every image with the other label.
    folder = tampered(saved, tmp_path, lambda d: d["classes"].update(values=values, dtype="object"))
    with pytest.raises(ValueError, match=FIELD.format("classes.values") + " is not unique and "
                                         "sorted: item 0 .* comes before item 1"):
        FineTunedCNNClassifier.load(folder)


@pytest.mark.parametrize("values", [[], ["cat"]], ids=["none", "one"])
def test_load_refuses_fewer_than_two_classes(saved, tmp_path, values):
    folder = tampered(saved, tmp_path, lambda d: d["classes"].update(values=values))
    with pytest.raises(ValueError, match=FIELD.format("classes.values") + r" holds \d class"):
        FineTunedCNNClassifier.load(folder)


# --- fields that format 1 does not have ----------------------------------------------------------


@pytest.mark.parametrize(
    "edit, field",
    [(lambda d: d.update(import_module="os"), "import_module"),
     (lambda d: d["backbone"].update(module="os.system"), "backbone.module"),
     (lambda d: d["classes"].update(file="/etc/passwd"), "classes.file")],
    ids=["top-level", "backbone", "classes"],
)
def test_load_refuses_a_field_it_does_not_know(saved, tmp_path, edit, field):
    folder = tampered(saved, tmp_path, edit)
    with pytest.raises(ValueError, match=FIELD.format(field) + " is not a field of"):
        FineTunedCNNClassifier.load(folder)


def test_load_refuses_a_format_version_below_one(saved, tmp_path):
    folder = tampered(saved, tmp_path, lambda d: d.update(format_version=0))
    with pytest.raises(ValueError, match=FIELD.format("format_version") + " is 0"):
        FineTunedCNNClassifier.load(folder)


# --- fields that contradict each other ----------------------------------------------------------


@pytest.mark.parametrize(
    "edit, field",
    [(lambda d: d.update(n_iter=10**30), "n_iter"),
     (lambda d: d.update(n_iter=0, history=[]), "n_iter"),
     (lambda d: d["history"][0].update(epoch=7), "n_iter"),
     (lambda d: d.update(best_epoch=-5), "best_epoch"),
     (lambda d: d.update(best_epoch=2), "best_epoch"),
     (lambda d: d.update(trained_blocks=[["os"]]), r"trained_blocks\[0\]")],
    ids=["n_iter-huge", "no-epoch", "epoch-number", "best-negative", "best-after-last",
         "trained-unknown-layer"],
)
def test_load_refuses_fields_that_disagree(saved, tmp_path, edit, field):
    folder = tampered(saved, tmp_path, edit)
    with pytest.raises(ValueError, match=FIELD.format(field)):
        FineTunedCNNClassifier.load(folder)


def test_a_warm_started_model_still_loads(tmp_path):
    """Two fits: history epochs 1 and 2, n_iter 2; the checks must accept a real save."""
    X, y = make_images()
    clf = lite0(warm_start=True).fit(X, y).fit(X, y)
    clf.save(tmp_path / "model")
    loaded = FineTunedCNNClassifier.load(tmp_path / "model")
    assert loaded.n_iter_ == 2 and [r["epoch"] for r in loaded.history_] == [1, 2]
    np.testing.assert_array_equal(loaded.predict_proba(X), clf.predict_proba(X))


# --- JSON that save() never writes --------------------------------------------------------------


@pytest.mark.parametrize(
    "change, reason",
    [(lambda text: text.replace('"n_iter": 1', '"n_iter": 1, "n_iter": 2'),
      "the key 'n_iter' appears twice"),
     (lambda text: text.replace('"lr": 0.001', '"lr": NaN', 1), "NaN is not a JSON number"),
     (lambda text: text.replace('"lr": 0.001', '"lr": 1e400', 1), "1e400 is too large"),
     (lambda text: text.replace('"blocks": [', '"blocks": ' + "[" * 100_000 + "]" * 100_000
                                + ", \"x\": [", 1), "")],
    ids=["duplicate-key", "nan", "overflowing-float", "deep-nesting"],
)
def test_load_refuses_json_that_save_never_writes(saved, tmp_path, change, reason):
    text = (saved / "skdeep.json").read_text()
    changed = change(text)
    assert changed != text
    folder = edited_text(saved, tmp_path, changed)
    with pytest.raises(ValueError, match=r"skdeep\.json' is not valid JSON as save\(\) writes it: "
                                         + reason):
        FineTunedCNNClassifier.load(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
@pytest.mark.parametrize("name", ["skdeep.json", "weights.safetensors"])
def test_load_refuses_a_special_file_in_the_folder(saved, tmp_path, name):
    folder = tampered(saved, tmp_path, lambda d: None)
    (folder / name).unlink()
    os.mkfifo(folder / name)
    outcome = {}

    def load():
        try:
            FineTunedCNNClassifier.load(folder)
        except ValueError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(20)
    if thread.is_alive():  # release the reader, then fail
        os.close(os.open(folder / name, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("load() blocked on a FIFO")
    assert f"{name}' is not a regular file" in outcome.get("error", ""), outcome


# --- the weights: the first tensor that does not fit, spelled out --------------------------------


def test_a_head_that_does_not_match_the_classes_names_the_first_bad_tensor(saved, tmp_path):
    folder = tampered(saved, tmp_path,
                      lambda d: d["classes"].update(values=["cat", "dog", "eel"]))
    with pytest.raises(ValueError, match=r"weights\.safetensors' does not fit .* 3 classes in "
                                         r"field 'classes'.*first of another shape: "
                                         r"'classifier\.fc\.weight', \(2, 1280\) in the file, "
                                         r"\(3, 1280\) in the network"):
        FineTunedCNNClassifier.load(folder)


def test_an_extra_tensor_is_named(saved, tmp_path):
    folder = tampered(saved, tmp_path, lambda d: None)
    tensors = load_file(folder / "weights.safetensors")
    tensors["backdoor.weight"] = tensors["classifier.fc.bias"].clone()
    save_file(tensors, folder / "weights.safetensors")
    with pytest.raises(ValueError, match=r"1 unexpected \(backdoor\.weight\); first unexpected: "
                                         r"'backdoor\.weight' \(2,\)"):
        FineTunedCNNClassifier.load(folder)


def test_a_missing_tensor_is_named_with_its_shape(saved, tmp_path):
    folder = tampered(saved, tmp_path, lambda d: None)
    tensors = load_file(folder / "weights.safetensors")
    del tensors["classifier.fc.weight"]
    save_file(tensors, folder / "weights.safetensors")
    with pytest.raises(ValueError, match=r"first missing: 'classifier\.fc\.weight', shape "
                                         r"\(2, 1280\) in the network"):
        FineTunedCNNClassifier.load(folder)


def test_the_document_is_checked_when_the_folder_is_opened(saved, tmp_path, monkeypatch):
    """Nothing is built from a folder that is wrong anywhere: not even the estimator."""
    folder = tampered(saved, tmp_path, lambda d: d.update(best_epoch=99))

    def no_build(*args, **kwargs):
        raise AssertionError("load() resolved a backbone before checking the whole document")

    monkeypatch.setattr("skdeep.classifier.resolve_backbone", no_build)
    with pytest.raises(ValueError, match=FIELD.format("best_epoch")):
        FineTunedCNNClassifier.load(folder)


def test_the_saved_document_has_exactly_the_format_fields(saved):
    from skdeep._safe_format import DOCUMENT_FIELDS, OPTIONAL_FIELDS

    document = json.loads((saved / "skdeep.json").read_text())
    assert set(DOCUMENT_FIELDS) <= set(document) <= set(DOCUMENT_FIELDS) | set(OPTIONAL_FIELDS)


@pytest.mark.parametrize(
    "record, field",
    [({"skdeep": ["1", "2"]}, "provenance.skdeep"),
     ({"data_config": {"mean": [{"file": "/etc/passwd"}]}}, r"provenance\.data_config\.mean\[0\]"),
     ("2024-01-01", "provenance")],
    ids=["list-value", "nested-object", "not-an-object"],
)
def test_load_checks_the_provenance_record(saved, tmp_path, record, field):
    folder = tampered(saved, tmp_path, lambda d: d.update(provenance=record))
    with pytest.raises(ValueError, match=FIELD.format(field) + " is "):
        FineTunedCNNClassifier.load(folder)


# --- a weights path in params is a parameter, never a file load() reads -------------------------


def test_load_never_reads_the_weights_file_named_in_params(saved, tmp_path):
    """The weights come from the folder's weights.safetensors only. params.weights keeps what the
    model was fitted with (a refit reads it, as any parameter), but load() does not open it: here
    it names a file that torch could not even parse."""
    decoy = tmp_path / "elsewhere.pth"
    decoy.write_bytes(b"not a checkpoint")
    folder = tampered(saved, tmp_path, lambda d: d["params"].update(weights=str(decoy)))
    X, _ = make_images()
    loaded = FineTunedCNNClassifier.load(folder)
    assert loaded.weights == str(decoy)
    np.testing.assert_allclose(loaded.predict_proba(X),
                               FineTunedCNNClassifier.load(saved).predict_proba(X), atol=1e-6)
