"""The skdeep command (skdeep.cli) and the evaluation behind `skdeep evaluate` (skdeep.evaluation).

Fast: 16x16 images, image_size=32, two folds, the bundled backbone.
"""

import re
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

import skdeep
from skdeep import BadImageWarning, PretrainedCNNFeatures
from skdeep._inputs import auto_image_size
from skdeep._report import recommend
from skdeep.cli import main
from skdeep.datasets import find_images
from skdeep.evaluation import evaluate, layer_sweep
from skdeep.recipes import COMPARED_RECIPE

from _helpers import TINY, FineTunedStandIn, make_images

FAST = ["--image-size", "32", "--no-progress"]
REPORT_FILES = {"results.csv", "folds.csv", "results.json", "summary.txt",
                "accuracy_by_layer.png", "confusion_matrix.png", "embedding_map.png",
                "reliability_diagram.png"}
MARKER = ".skdeep-output"  # in every report folder: never read back as images


def _image(value_or_array, size=16, seed=0):
    if isinstance(value_or_array, np.ndarray):
        return Image.fromarray(value_or_array)
    rng = np.random.default_rng(seed)
    pixels = np.clip(value_or_array + rng.integers(-20, 20, (size, size, 3)), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


@pytest.fixture
def labelled_folder(tmp_path):
    """photos/<class>/<i>.png: 10 bright and 10 dark 16x16 images."""
    root = tmp_path / "photos"
    for label, value in (("bright", 210), ("dark", 40)):
        (root / label).mkdir(parents=True)
        for i in range(10):
            _image(value, seed=i).save(root / label / f"{i:02d}.png")
    return root


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err):
    """The one error line, last on stderr (after at most a status line saying what was tried)."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert errors[0].startswith("skdeep: error: "), err
    assert "Traceback" not in err and len(lines) <= 2, err
    return errors[0]


# --- help and usage ----------------------------------------------------------------------------


def test_help_teaches_with_examples(capsys):
    code, out, _ = _run(["--help"], capsys)
    assert code == 0
    for text in ("evaluate", "extract", "backbones", "layers", "examples:", "skdeep evaluate photos/"):
        assert text in out
    for command in ("evaluate", "extract", "backbones", "layers"):
        code, out, _ = _run([command, "--help"], capsys)
        assert code == 0 and "examples:" in out and f"skdeep {command}" in out


def test_evaluate_help_explains_the_shared_forward_pass(capsys):
    _, out, _ = _run(["evaluate", "--help"], capsys)
    assert "ONE forward pass" in out and "leaks nothing" in out
    assert "--finetune" in out and "--image-size" in out and "96" in out
    # argparse may wrap the help at the recipe name's hyphen ("'lp-" / "ft'")
    assert f"all layers with recipe {COMPARED_RECIPE!r}" in re.sub(r"-\s+", "-",
                                                                    " ".join(out.split()))


def test_version(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and out.startswith("skdeep ")


def test_no_command_prints_help_and_fails(capsys):
    code, out, err = _run([], capsys)
    assert code == 2 and "usage: skdeep" in err and out == ""


@pytest.mark.parametrize("argv, message", [
    (["extract", "{folder}", "-o", "out.txt"], "unknown extension"),
    (["extract", "{folder}"], "required: -o/--output"),
    (["extract", "{folder}", "-o", "x.npy", "--pooling", "median"], "invalid choice 'median'"),
    (["extract", "{folder}", "-o", "x.npy", "--image-size", "big"],
     "expected an integer, 'auto' or 'native'"),
    (["evaluate", "--folds", "1"], "must be at least 2"),
    (["evaluate", "--image-size", "big"], "expected an integer, 'auto' or 'native'"),
    (["evaluate", "--jobs", "0"], "positive number of processes"),
    (["evaluate", "--device", "gpu0"], "'gpu0' is not a device"),
    (["evaluate", "--finetune-epochs", "2"], "--finetune-epochs needs --finetune"),
    (["evaluate", "--finetune-tta", "flip"], "--finetune-tta needs --finetune"),
    (["evaluate", "--finetune", "--finetune-tta", "flips"], "expected flip, symmetric, none or"),
    (["layers"], "required: NAME"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_give_one_line_and_exit_2(argv, message, labelled_folder, capsys):
    argv = [a.format(folder=labelled_folder) for a in argv]
    code, _, err = _run(argv, capsys)
    assert code == 2
    line = _one_error_line(err)
    assert message in line and "--help" in line


def test_bad_inputs_give_one_line_and_exit_1(labelled_folder, tmp_path, capsys):
    out = tmp_path / "f.npy"
    cases = [
        (["extract", tmp_path / "missing", "-o", out], "INPUT not found"),
        (["extract", labelled_folder, "-o", out, "--backbone", "resnet1800"], "Unknown backbone"),
        (["extract", labelled_folder, "-o", out, "--layer", "blocks.99"], "Unknown layer 'blocks.99'"),
        (["extract", labelled_folder, "-o", out, "--weights", tmp_path / "w.pth"], "w.pth"),
        (["evaluate", labelled_folder / "bright", *FAST], "no class subfolders"),
        (["evaluate", labelled_folder, "--folds", "11", *FAST],
         "only 10 image(s), but 11-fold cross-validation needs at least 11"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((["extract", empty, "-o", out], "no image files under"))
    table = tmp_path / "t.csv"
    pd.DataFrame({"path": find_images(labelled_folder)}).to_csv(table, index=False)
    cases.append((["evaluate", table, *FAST], "no column 'label'"))
    for argv, message in cases:
        code, _, err = _run(argv, capsys)
        assert code == 1, (argv, err)
        assert message in _one_error_line(err), (argv, err)
    assert not out.exists()


def test_unreadable_image_is_named(labelled_folder, tmp_path, capsys):
    broken = labelled_folder / "dark" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    code, _, err = _run(["extract", labelled_folder, "-o", tmp_path / "f.parquet", *FAST], capsys)
    assert code == 1
    line = _one_error_line(err)
    assert "cannot read image" in line and "broken.png" in line and "row" in line


def test_errors_speak_in_flags(labelled_folder, tmp_path, capsys):
    out = tmp_path / "f.npy"
    (labelled_folder / "dark" / "broken.png").write_bytes(b"not an image")
    cases = [
        (["extract", labelled_folder, "-o", out, *FAST], "--on-error nan", "on_error"),
        (["extract", labelled_folder, "-o", out, "--backbone", "resnet1800"], "`skdeep backbones`",
         "list_backbones"),
        (["extract", labelled_folder, "-o", out, "--layer", "blocks.99"],
         "`skdeep layers BACKBONE`", "list_layers"),
    ]
    for argv, flag, python in cases:
        code, _, err = _run(argv, capsys)
        line = _one_error_line(err)
        assert code == 1 and flag in line and python not in line, line


def test_in_flags_maps_parameters_and_functions_to_the_command_line():
    from skdeep.cli import in_flags

    assert in_flags("timm has no pretrained weights for 'x'; use weights=None.") == (
        "timm has no pretrained weights for 'x'; use --weights none.")
    assert in_flags("or pass weights='/tmp/a b.pth', num_workers=0") == (
        "or pass --weights '/tmp/a b.pth', --workers 0")  # a value with a space stays quoted
    assert in_flags("skdeep.list_layers(backbone) lists them") == (
        "`skdeep layers BACKBONE` lists them")
    assert in_flags("x.weights=None and prefix_on_error='nan'") == (
        "x.weights=None and prefix_on_error='nan'")  # only whole parameter names


def test_debug_shows_the_real_exception(labelled_folder, tmp_path):
    with pytest.raises(ValueError, match="Unknown backbone"):
        main(["extract", str(labelled_folder), "-o", str(tmp_path / "f.npy"),
              "--backbone", "nope", "--debug"])


HEAVY = ("torch", "timm", "sklearn", "pandas", "torchvision", "PIL", "numpy")


@pytest.mark.parametrize("argv", [["--help"], ["extract", "--help"], ["evaluate", "--nope"],
                                  ["extract", "in/", "-o", "x.bad"], ["audit", "--help"],
                                  ["audit", "--threshold", "9"]])
def test_help_and_argument_errors_import_nothing_heavy(argv):
    # `skdeep --help` took 5 s, importing torch and timm: the parser must need none of them.
    probe = ("import runpy, sys\n"
             "sys.argv = ['skdeep', *sys.argv[1:]]\n"
             "try:\n    runpy.run_module('skdeep', run_name='__main__')\n"
             "except SystemExit as exc:\n    code = exc.code\n"
             f"heavy = sorted(name for name in {HEAVY!r} if name in sys.modules)\n"
             "print(code, heavy, file=sys.stderr)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [
        os.path.dirname(os.path.dirname(skdeep.__file__)), os.environ.get("PYTHONPATH")]))}
    result = subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True,
                            text=True, timeout=120, env=env)
    code, _, heavy = result.stderr.strip().splitlines()[-1].partition(" ")
    assert code == ("0" if "--help" in argv else "2"), result.stderr
    assert heavy == "[]", result.stderr
    assert "usage:" in result.stdout or "skdeep: error: " in result.stderr


def test_the_package_imports_its_public_names_on_first_use():
    for name in skdeep.__all__:
        assert getattr(skdeep, name) is not None
    assert set(skdeep.__all__) <= set(dir(skdeep))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        skdeep.nope
    assert skdeep.backbones.Backbone.__name__ == "Backbone"  # public modules too, as before


def test_python_dash_m(tmp_path):
    result = subprocess.run([sys.executable, "-m", "skdeep", "extract", str(tmp_path), "-o", "x.bad"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.startswith("skdeep: error: ") and "unknown extension" in result.stderr


# --- extract -----------------------------------------------------------------------------------


def test_extract_parquet_matches_the_transformer(labelled_folder, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    out = tmp_path / "out" / "features.parquet"  # the parent folder is created
    code, _, err = _run(["extract", labelled_folder, "-o", out, "--layer", "blocks.1,blocks.2",
                         "--precision", "fp32", *FAST], capsys)
    assert code == 0, err
    assert "Wrote 20 x 64 features" in err
    frame = pd.read_parquet(out)
    paths = find_images(labelled_folder)
    assert frame.index.name == "path" and frame.index.tolist() == paths
    assert frame.columns[0] == "blocks.1_0" and frame.columns[-1] == "blocks.2_39"
    expected = PretrainedCNNFeatures(layer=["blocks.1", "blocks.2"], image_size=32,
                                     precision="fp32").fit().transform(paths)
    np.testing.assert_allclose(frame.to_numpy(), expected, rtol=1e-5, atol=1e-6)


def test_extract_csv_and_repeated_layer_option(labelled_folder, tmp_path, capsys):
    out = tmp_path / "features.csv"
    code, _, err = _run(["extract", labelled_folder, "-o", out, "--layer", "blocks.1",
                         "--layer", "penultimate", *FAST], capsys)
    assert code == 0, err
    frame = pd.read_csv(out, index_col="path")
    assert frame.shape == (20, 24 + 1280)
    assert frame.index.tolist() == find_images(labelled_folder)


def test_extract_npy_writes_a_paths_sidecar(labelled_folder, tmp_path, capsys):
    out = tmp_path / "emb.npy"
    code, _, err = _run(["extract", labelled_folder, "-o", out, "--layer", "blocks.1", *FAST], capsys)
    assert code == 0, err
    matrix = np.load(out, allow_pickle=False)
    assert matrix.shape == (20, 24) and matrix.dtype == np.float32
    sidecar = tmp_path / "emb.paths.txt"
    assert sidecar.read_text(encoding="utf-8").splitlines() == find_images(labelled_folder)
    assert "emb.paths.txt" in err


def test_extract_from_a_table_keeps_paths_as_written(labelled_folder, tmp_path, capsys,
                                                     monkeypatch):
    table = labelled_folder / "index.csv"
    written = ["dark/03.png", "bright/00.png", "dark/00.png"]
    pd.DataFrame({"file": written}).to_csv(table, index=False)
    monkeypatch.chdir(tmp_path)  # paths are relative to the table, not to here
    out = tmp_path / "f.csv"
    code, _, err = _run(["extract", table, "-o", out, "--path-column", "file",
                         "--layer", "blocks.1", *FAST], capsys)
    assert code == 0, err
    frame = pd.read_csv(out, index_col="path")
    assert frame.index.tolist() == written
    # rows follow the table: a dark and a bright image differ, two dark ones are close
    assert not np.allclose(frame.iloc[0], frame.iloc[1], atol=1e-2)


def test_extract_on_error_nan(labelled_folder, tmp_path, capsys):
    (labelled_folder / "dark" / "zz_broken.png").write_bytes(b"garbage")
    out = tmp_path / "f.csv"
    code, _, err = _run(["extract", labelled_folder, "-o", out, "--on-error", "nan",
                         "--layer", "blocks.1", *FAST], capsys)
    assert code == 0, err
    lines = err.splitlines()
    warning = [row for row, line in enumerate(lines) if line.startswith("skdeep: warning:")]
    assert len(warning) == 1 and "1 image(s) could not be read" in lines[warning[0]]
    assert lines[warning[0] + 1].startswith("  row ") and "zz_broken.png" in lines[warning[0] + 1]
    assert "1 unreadable image(s) are NaN rows" in err
    frame = pd.read_csv(out, index_col="path")
    broken = str(labelled_folder / "dark" / "zz_broken.png")
    assert frame.loc[broken].isna().all()
    assert frame.drop(index=broken).notna().all().all()


def test_extract_with_cache_reuses_features(labelled_folder, tmp_path, capsys):
    cache = tmp_path / "cache"
    first, second = tmp_path / "a.npy", tmp_path / "b.npy"
    for out in (first, second):
        code, _, err = _run(["extract", labelled_folder, "-o", out, "--layer", "blocks.1",
                             "--cache", cache, *FAST], capsys)
        assert code == 0, err
    assert any(cache.iterdir())
    np.testing.assert_array_equal(np.load(first), np.load(second))


# --- backbones and layers ----------------------------------------------------------------------


def test_backbones(capsys):
    code, out, _ = _run(["backbones", "--source", "bundled"], capsys)
    assert code == 0 and "efficientnet_lite0" in out.split()
    code, out, _ = _run(["backbones", "RESNET1", "--source", "torchvision"], capsys)
    names = out.split()
    assert code == 0 and "resnet18" in names and all("resnet1" in n for n in names)
    code, out, _ = _run(["backbones", "vgg1?", "--source", "torchvision"], capsys)
    assert out.split() == ["vgg11", "vgg13", "vgg16", "vgg19"]
    code, _, err = _run(["backbones", "no-such-net", "--source", "torchvision"], capsys)
    assert code == 1 and "no torchvision backbone matches 'no-such-net'" in _one_error_line(err)


def test_layers(capsys):
    code, out, _ = _run(["layers", "efficientnet_lite0"], capsys)
    names = out.split()
    assert code == 0 and names[:2] == ["penultimate", "logits"] and "blocks.3.0.conv_dw" in names
    code, out, _ = _run(["layers", "efficientnet_lite0", "--depth", "1"], capsys)
    shallow = out.split()
    assert "blocks" in shallow and "penultimate" in shallow and "blocks.0" not in shallow
    code, out, _ = _run(["layers", "efficientnet_lite0", "--sweep"], capsys)
    assert out.split() == ["blocks.1", "blocks.3", "blocks.5", "penultimate"]
    code, _, err = _run(["layers", "no-such-net"], capsys)
    assert code == 1 and "Unknown backbone" in _one_error_line(err)


# --- evaluate (command) ------------------------------------------------------------------------


def test_evaluate_folder_writes_the_report(labelled_folder, tmp_path, capsys):
    report = tmp_path / "report"
    code, out, err = _run(["evaluate", labelled_folder, "-o", report, "--folds", "2", *FAST],
                          capsys)
    assert code == 0, err
    for text in ("20 images, 2 classes, 2-fold", "raw pixels", "blocks.1 features",
                 "penultimate features", "computed once", "Report written to"):
        assert text in out
    assert "Evaluating 20 images in 2 class folders" in err
    results = json.loads((report / "results.json").read_text())
    # duplicates.csv when the near-duplicate search found some (one colour + noise per class)
    found = {"duplicates.csv"} if results["config"]["n_duplicate_groups"] else set()
    assert {p.name for p in report.iterdir()} == REPORT_FILES | found | {MARKER}
    strategies = [row["strategy"] for row in results["scores"]]
    singles = ["blocks.1", "blocks.3", "blocks.5", "penultimate"]
    pairs = [f"{a}+{b}" for i, a in enumerate(singles) for b in singles[i + 1:]]
    assert strategies == ["pixels", *singles, *pairs]  # every pair of layers: 6 cheap fits
    assert results["config"]["image_size"] == 32 and results["config"]["n_images"] == 20
    assert results["best"] in strategies and results["recommendation"]
    folds = pd.read_csv(report / "folds.csv")
    assert len(folds) == 2 * len(strategies) and set(folds["fold"]) == {0, 1}
    scores = pd.read_csv(report / "results.csv")
    assert scores["accuracy_mean"].between(0, 1).all()
    # bright vs dark is easy: the best strategy separates it
    assert scores["accuracy_mean"].max() == 1.0
    for name in ("accuracy_by_layer.png", "confusion_matrix.png", "embedding_map.png",
                 "reliability_diagram.png"):
        with Image.open(report / name) as image:
            assert image.format == "PNG" and min(image.size) > 300
    assert (report / "summary.txt").read_text().strip() in out


def test_evaluate_calibrate_reports_before_and_after(labelled_folder, tmp_path, capsys):
    report = tmp_path / "report"
    code, out, err = _run(["evaluate", labelled_folder, "-o", report, "--folds", "2",
                           "--layers", "blocks.1", "--calibrate", *FAST], capsys)
    assert code == 0, err
    assert "log loss (cal.)" in out and "ECE (cal.)" in out
    scores = pd.read_csv(report / "results.csv")
    for column in ("log_loss", "brier", "ece", "log_loss_calibrated", "brier_calibrated",
                   "ece_calibrated"):
        assert scores[column].between(0, 10).all(), column
    assert json.loads((report / "results.json").read_text())["config"]["calibrate"] is True
    assert (report / "reliability_diagram.png").exists()


def test_evaluate_table_with_label_column(labelled_folder, tmp_path, capsys):
    frame = pd.DataFrame({"img": find_images(labelled_folder)})
    frame["kind"] = [os.path.basename(os.path.dirname(p)) for p in frame["img"]]
    table = tmp_path / "labels.csv"
    frame.to_csv(table, index=False)
    code, out, err = _run(["evaluate", table, "--path-column", "img", "--label-column", "kind",
                           "--folds", "2", "--layers", "blocks.1,penultimate", "-o",
                           tmp_path / "r", "--map", "tsne", *FAST], capsys)
    assert code == 0, err
    assert "20 images listed in" in err and "blocks.1 features" in out
    config = json.loads((tmp_path / "r" / "results.json").read_text())["config"]
    assert config["classes"] == ["bright", "dark"] and config["layers"] == ["blocks.1", "penultimate"]


def test_evaluate_bundled_sample_subset(tmp_path, capsys):
    code, out, err = _run(["evaluate", "--max-images", "40", "--folds", "2", "--layers",
                           "blocks.1,penultimate", "-o", tmp_path / "r", *FAST], capsys)
    assert code == 0, err
    assert "bundled Fashion-MNIST sample" in err and "40 images, 10 classes" in out
    config = json.loads((tmp_path / "r" / "results.json").read_text())["config"]
    assert config["classes"][0] == "T-shirt/top"  # the official class order, not alphabetical
    assert config["pixel_features"] == 784  # 28x28 gray pixels taken as they are


class _FakeFineTuned(FineTunedStandIn):
    """Stands in for FineTunedCNNClassifier: majority class, records what it was fitted on and
    the ``tta`` of each prediction."""

    fitted_on = []
    predicted_with = []

    def fit(self, X, y):
        type(self).fitted_on.append((len(X), self.get_params()))
        values, counts = np.unique(y, return_counts=True)
        self.classes_, self.majority_ = values, values[np.argmax(counts)]
        return self

    def predict(self, X):
        type(self).predicted_with.append((self.train_layers, self.tta))
        return np.full(len(X), self.majority_)


FINETUNED = ["finetune-head", "finetune-head-tta", "finetune-last2", "finetune-last2-tta",
             "finetune-all", "finetune-all-tta", f"finetune-all-{COMPARED_RECIPE}",
             f"finetune-all-{COMPARED_RECIPE}-tta"]


def test_evaluate_finetune_path(labelled_folder, tmp_path, capsys, monkeypatch):
    import skdeep.evaluation

    monkeypatch.setattr(skdeep.evaluation, "FineTunedCNNClassifier", _FakeFineTuned)
    _FakeFineTuned.fitted_on, _FakeFineTuned.predicted_with = [], []
    code, out, err = _run(["evaluate", labelled_folder, "--folds", "2", "--finetune",
                           "--finetune-epochs", "3", "--finetune-tta", "symmetric", "--layers",
                           "penultimate", "-o", tmp_path / "r", *FAST,
                           # plain folds, whose sizes the asserts count: the folder's images
                           # (one colour + noise per class) are near-duplicates of each other
                           "--duplicates", "ignore"], capsys)
    assert code == 0, err
    assert "fine-tuned network (last 2 units) + TTA" in out and "0.500 +- 0.000" in out
    assert f"fine-tuned network (all layers, recipe {COMPARED_RECIPE!r}) + TTA" in out
    assert "predicting with tta='symmetric', its seconds include that fit" in out
    # a fresh fit per fold and per layers trained (all of them twice: without and with the
    # recommended recipe), on the images; TTA is no second fit
    assert [(params["train_layers"], params["recipe"]) for _, params in
            _FakeFineTuned.fitted_on] == [("head", None)] * 2 + [(2, None)] * 2 + [
        ("all", None)] * 2 + [("all", COMPARED_RECIPE)] * 2
    for n_train, params in _FakeFineTuned.fitted_on:
        assert n_train == 10 and params["epochs"] == 3 and params["image_size"] == 32
        assert params["random_state"] == 0 and params["tta"] is None
    # each fitted model predicts twice: as fitted, then with the TTA set on it
    assert _FakeFineTuned.predicted_with == [
        (trained, tta) for trained in ("head", 2, "all", "all") for _fold in range(2)
        for tta in (None, "symmetric")]
    scores = pd.read_csv(tmp_path / "r" / "results.csv")
    assert scores["strategy"].tolist() == ["pixels", "penultimate", *FINETUNED]


def test_evaluate_real_finetune():
    images, labels = make_images(n=16, n_classes=2, seed=1)
    result = evaluate(images, labels, backbone=TINY, weights=None, image_size=16, cv=2,
                      layers=["blocks.1"], precision="fp32", compile=False, finetune=True,
                      finetune_params={"epochs": 1, "batch_size": 8, "validation_fraction": 0,
                                       "max_steps": 1})  # not the recipe's 400 steps
    scores = result.scores.set_index("strategy")
    assert scores.index.tolist()[2:] == FINETUNED
    for name in FINETUNED:
        assert 0 <= scores.loc[name, "accuracy_mean"] <= 1 and scores.loc[name, "fit_seconds"] > 0
        assert len(result.predictions[name]) == len(labels)
    assert result.config["finetune_train_layers"] == ["head", 2, "all"]
    assert result.config["finetune_recipe"] == COMPARED_RECIPE
    assert result.config["finetune_tta"] == "flip"


# --- evaluate (Python) -------------------------------------------------------------------------


def test_shared_forward_pass_equals_per_layer_pipelines(labelled_images):
    """The claim the method rests on: features computed once == features computed per fold."""
    images, labels = labelled_images
    images = images.copy()
    images[::3] = 255 - images[::3]  # make it harder than a perfect score
    result = evaluate(images, labels, image_size=32, cv=3, layers=["blocks.1", "blocks.2"],
                      precision="fp32")
    folds = StratifiedKFold(3, shuffle=True, random_state=0)
    for layer in ("blocks.1", "blocks.2"):
        pipeline = make_pipeline(PretrainedCNNFeatures(layer=layer, image_size=32, precision="fp32"),
                                 StandardScaler(), LogisticRegression(max_iter=1000))
        expected = cross_val_score(pipeline, images, labels, cv=folds)
        got = result.folds[result.folds["strategy"] == layer]["accuracy"].to_numpy()
        np.testing.assert_allclose(got, expected)


def test_evaluate_result_object(labelled_images, tmp_path):
    images, labels = labelled_images
    names = np.where(labels == 1, "bright", "striped")
    # duplicates="ignore": the bright images (one colour + noise) are near-duplicates of each
    # other, one group, which 2 grouped folds cannot split; this test is about the result object
    result = evaluate(images, names, image_size=32, cv=2, layers=["blocks.1", "penultimate"],
                      duplicates="ignore")
    assert result.scores.columns.tolist()[:6] == [
        "strategy", "model", "layer", "n_features", "accuracy_mean", "accuracy_std"]
    assert result.scores["n_features"].tolist() == [24 * 24 * 3, 24, 1280, 24 + 1280]
    assert result.best in set(result.scores["strategy"])
    assert result.embeddings["penultimate"].shape == (40, 1280)
    assert set(result.predictions) == {"pixels", "blocks.1", "penultimate", "blocks.1+penultimate"}
    assert (result.predictions[result.best] == result.y).mean() == pytest.approx(
        result.scores.set_index("strategy").loc[result.best, "accuracy_mean"])
    label = "raw pixels" if result.best == "pixels" else f"{result.best} features"
    marked = [line for line in str(result).splitlines() if line.split("  ")[0].endswith(" *")]
    assert len(marked) == 1 and marked[0].startswith(f"{label} *")
    json.dumps(result.to_dict())  # serialisable
    written = result.save(tmp_path / "r")
    assert {p.name for p in written} == REPORT_FILES


def test_evaluate_drops_unreadable_images(labelled_folder):
    (labelled_folder / "dark" / "zz.png").write_bytes(b"not an image")
    from skdeep.datasets import load_image_folder

    frame = load_image_folder(labelled_folder)
    with pytest.warns(BadImageWarning, match="zz.png"):
        result = evaluate(frame["path"].tolist(), frame["label"], image_size=32, cv=2,
                          layers=["blocks.1"], on_error="nan")
    assert result.config["n_images"] == 20 and len(result.y) == 20
    assert result.config["unreadable_rows"] == [20]
    assert result.config["pixel_features"] == 32 * 32 * 3  # paths: resized RGB grids
    assert "1 unreadable image(s) were left out" in result.summary()


def test_evaluate_validates_labels(labelled_images):
    images, labels = labelled_images
    with pytest.raises(ValueError, match="40 images but y has 39 labels"):
        evaluate(images, labels[:39], image_size=32)
    with pytest.raises(ValueError, match="single class"):
        evaluate(images, np.zeros(40), image_size=32)
    with pytest.raises(ValueError, match=r"missing labels in rows \[3\]"):
        evaluate(images, np.where(np.arange(40) == 3, None, "a"), image_size=32)
    with pytest.raises(ValueError, match=r"'cv' parameter of evaluate must be an int in the "
                                         r"range \[2, inf\)"):
        evaluate(images, labels, cv=1)
    with pytest.raises(ValueError, match=r"'image_size' parameter of evaluate must be an int "
                                         r".*\{'auto'\} or None"):
        evaluate(images, labels, image_size="large")
    with pytest.raises(ValueError, match="'y' parameter of evaluate must be an array-like"):
        evaluate(images, None, image_size=32)
    for name, value in [("pixel_size", 0), ("max_images", 1), ("finetune", 1)]:
        with pytest.raises(ValueError, match=f"'{name}' parameter of evaluate"):
            evaluate(images, labels, image_size=32, **{name: value})


def test_evaluate_keeps_categorical_order_and_subsets(labelled_images):
    images, labels = labelled_images
    y = pd.Categorical.from_codes(labels, categories=["zebra", "apple"])
    result = evaluate(images, y, image_size=32, cv=2, layers=["blocks.1"], max_images=20)
    assert result.classes.tolist() == ["zebra", "apple"]
    assert result.config["n_images"] == 20
    assert sorted(np.unique(result.y, return_counts=True)[1].tolist()) == [10, 10]


@pytest.mark.slow  # starts joblib worker processes, which import torch
def test_evaluate_parallel_folds_give_the_same_scores(labelled_images):
    images, labels = labelled_images
    kwargs = dict(image_size=32, cv=2, layers=["blocks.1"])
    serial = evaluate(images, labels, **kwargs)
    parallel = evaluate(images, labels, n_jobs=2, **kwargs)
    pd.testing.assert_series_equal(serial.folds["accuracy"], parallel.folds["accuracy"])


def test_layer_sweep_shapes():
    assert layer_sweep("efficientnet_lite0") == ["blocks.1", "blocks.3", "blocks.5", "penultimate"]
    assert layer_sweep("efficientnet_lite0", n_stages=1) == ["blocks.5", "penultimate"]
    assert layer_sweep("efficientnet_lite0", n_stages=0) == ["penultimate"]

    class Tiny(nn.Module):
        def __init__(self, head=True):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3)
            self.blocks = nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(6)])
            self.fc = nn.Linear(4, 2) if head else nn.Identity()

    assert layer_sweep(Tiny()) == ["blocks.0", "blocks.2", "blocks.4", "penultimate"]
    assert layer_sweep(Tiny(), n_stages=2) == ["blocks.0", "blocks.4", "penultimate"]
    # no classifier: no penultimate vector, the last stage ends the sweep
    assert layer_sweep(Tiny(head=False)) == ["blocks.0", "blocks.2", "blocks.4", "blocks.5"]


def test_layer_sweep_decaf_for_alexnet():
    from torchvision.models import alexnet

    assert layer_sweep(alexnet(weights=None)) == ["pool5", "fc6", "fc7"]


def test_auto_image_size(tmp_path):
    assert auto_image_size(np.zeros((3, 28, 28), np.uint8)) == 96
    assert auto_image_size(np.zeros((3, 200, 100, 3), np.uint8)) is None
    small, large = tmp_path / "s.png", tmp_path / "l.png"
    _image(np.zeros((20, 30, 3), np.uint8)).save(small)
    _image(np.zeros((120, 90, 3), np.uint8)).save(large)
    assert auto_image_size([str(small)]) == 96
    assert auto_image_size([str(small), str(large)]) is None
    assert auto_image_size([str(tmp_path / "missing.png")]) is None


def test_extract_and_evaluate_share_one_image_size_rule(labelled_folder, tmp_path, capsys):
    # 16 px images: both commands feed them at the size auto_image_size chooses, by default.
    code, _, err = _run(["extract", labelled_folder, "-o", tmp_path / "f.npy", "--no-progress"],
                        capsys)
    assert code == 0, err
    assert f"at {auto_image_size(find_images(labelled_folder))} px" in err
    for command in ("extract", "evaluate"):
        _, out, _ = _run([command, "--help"], capsys)
        assert "--image-size N|auto|native" in out and "default: auto" in out


def _scores(rows):
    frame = pd.DataFrame(rows, columns=["strategy", "layer", "accuracy_mean", "accuracy_std",
                                        "seconds"])
    frame["image_size"] = 96
    return frame


def test_recommendation_texts():
    config = {"backbone": "efficientnet_lite0", "image_size": 96, "n_images": 500,
              "finetune": False, "logistic_regression": {"C": 1.0, "max_iter": 1000}}
    pixels_win = _scores([("pixels", None, 0.9, 0.01, 1.0), ("blocks.1", "blocks.1", 0.7, 0.01, 1.0)])
    text = recommend(pixels_win, "pixels", config)
    assert text.startswith("Raw pixels (0.900 +- 0.010) do as well") and "--finetune" in text
    layer_wins = _scores([("pixels", None, 0.7, 0.01, 1.0), ("blocks.5", "blocks.5", 0.85, 0.02, 1.0),
                          ("penultimate", "penultimate", 0.84, 0.02, 1.0)])
    text = recommend(layer_wins, "blocks.5", config)
    assert "+15.0 points over raw pixels" in text
    assert "PretrainedCNNFeatures(layer='blocks.5', image_size=96)" in text
    assert "Within one standard deviation of the best: penultimate" in text
    finetune_wins = _scores([("pixels", None, 0.7, 0.01, 1.0), ("blocks.5", "blocks.5", 0.8, 0.01, 5.0),
                             ("finetune-all", None, 0.95, 0.01, 50.0)])
    text = recommend(finetune_wins, "finetune-all", {**config, "finetune": True,
                                                     "finetune_params": {"epochs": 3}})
    assert text.startswith("Fine-tuning wins: 0.950") and "10x the cost of the frozen" in text
    assert ("FineTunedCNNClassifier(backbone='efficientnet_lite0', image_size=96, epochs=3, "
            "train_layers='all')") in text


def test_no_stray_warnings_on_a_clean_run(labelled_images):
    images, labels = labelled_images
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        evaluate(images, labels, image_size=32, cv=2, layers=["blocks.1"])


def test_embedding_map_subsamples_large_sets(labelled_images, monkeypatch):
    import skdeep._report as report

    images, labels = labelled_images
    result = evaluate(images, labels, image_size=32, cv=2, layers=["blocks.1"])
    monkeypatch.setattr(report, "_MAX_MAP_POINTS", 10)
    for method in ("pca", "tsne"):
        figure = report.plot_embedding_map(result, method=method)
        axes = figure.axes[0]
        assert "10 of 40 images" in axes.get_title()
        assert sum(len(c.get_offsets()) for c in axes.collections) == 10
