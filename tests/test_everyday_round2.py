"""Issue 26, everyday use round 2: what a new user, following the docs literally, tripped over."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from _helpers import TINY, FineTunedStandIn, make_images
from skdeep import BadImageWarning, Checkpoint, FineTunedCNNClassifier, evaluate
from skdeep._report import plot_accuracy_by_layer
from skdeep.cli import main

FAST = {"backbone": TINY, "weights": None, "image_size": 16, "batch_size": 8, "random_state": 0}


def test_a_fit_says_what_it_trains_and_one_line_per_epoch_by_default(capsys):
    X, y = make_images(24)
    clf = FineTunedCNNClassifier(epochs=2, validation_fraction=0.25, **FAST)
    assert clf.verbose == 1
    clf.fit(X, y)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("training on 18 images, validating on 6: epochs 1-2, "
                        "3 batches of up to 8 per epoch")
    epochs = [line for line in lines if line.startswith("epoch ")]
    assert len(epochs) == 2 and all("valid_accuracy" in line for line in epochs)


def test_verbose_0_is_silent_and_no_validation_prints_no_nan(capsys):
    X, y = make_images(24)
    FineTunedCNNClassifier(epochs=1, verbose=0, **FAST).fit(X, y)
    assert capsys.readouterr().out == ""
    FineTunedCNNClassifier(epochs=1, validation_fraction=0, **FAST).fit(X, y)
    out = capsys.readouterr().out
    assert out.startswith("training on 24 images: epochs 1-1, 3 batches")
    assert "nan" not in out and "valid_" not in out


# --- 4. on_error="nan": each warning says what became of the rows ---------------------------------


def test_each_bad_row_warning_says_what_became_of_the_rows(tmp_path):
    X, y = make_images(24)
    names = np.array(["cat", "dog"])[y]
    items = list(X)
    items[5] = str(tmp_path / "missing.png")
    clf = FineTunedCNNClassifier(epochs=1, on_error="nan", validation_fraction=0, verbose=0,
                                 **FAST)
    with pytest.warns(BadImageWarning, match=r"left out of training \(listed in bad_rows_\)"):
        clf.fit(items, names)
    with pytest.warns(BadImageWarning) as caught:
        predicted = clf.predict(items)
    message = str(caught[0].message)
    assert message.startswith("1 image(s) could not be read; predict gives their rows the "
                              "placeholder 'cat', not a prediction (listed in bad_rows_):")
    assert "NaN" not in message and "row 5" in message
    assert predicted[5] == "cat" and clf.bad_rows_.tolist() == [5]
    # The result that cannot be mistaken for a prediction: NaN probabilities.
    with pytest.warns(BadImageWarning, match=r"their rows are NaN \(listed in bad_rows_\)"):
        proba = clf.predict_proba(items)
    assert np.flatnonzero(np.isnan(proba).any(axis=1)).tolist() == [5]


# --- 6. "train two more epochs": resume= with a larger epochs ------------------------------------


def test_resume_with_more_epochs_extends_the_run_on_the_recomputed_schedule(tmp_path):
    X, y = make_images(32)
    params = dict(FAST, scheduler="cosine", validation_fraction=0, verbose=0)
    folder = tmp_path / "ckpt"
    FineTunedCNNClassifier(epochs=2, callbacks=[Checkpoint(folder, monitor=None)],
                           **params).fit(X, y)
    longer = FineTunedCNNClassifier(epochs=4, **params).fit(X, y, resume=folder)
    straight = FineTunedCNNClassifier(epochs=4, **params).fit(X, y)
    assert [r["epoch"] for r in longer.history_] == [1, 2, 3, 4] and longer.n_iter_ == 4
    # Epochs 3-4 run on the 4-epoch cosine, from the step reached: the rates of a 4-epoch run.
    assert [r["lr"] for r in longer.history_[2:]] == [r["lr"] for r in straight.history_[2:]]
    assert longer.history_[2]["lr"] > 0  # the 2-epoch cosine had reached 0


def test_resume_refuses_fewer_epochs_and_a_longer_one_cycle(tmp_path):
    X, y = make_images(24)
    params = dict(FAST, validation_fraction=0, verbose=0)
    FineTunedCNNClassifier(epochs=2, callbacks=[Checkpoint(tmp_path / "a", monitor=None)],
                           **params).fit(X, y)
    with pytest.raises(ValueError, match=r"epochs=2, now epochs=1"):
        FineTunedCNNClassifier(epochs=1, **params).fit(X, y, resume=tmp_path / "a")
    FineTunedCNNClassifier(epochs=2, scheduler="onecycle", **params,
                           callbacks=[Checkpoint(tmp_path / "b", monitor=None)]).fit(X, y)
    with pytest.raises(ValueError, match=r"epochs=2, now epochs=3"):
        FineTunedCNNClassifier(epochs=3, scheduler="onecycle", **params).fit(
            X, y, resume=tmp_path / "b")


# --- 7. `skdeep backbones PATTERN --offline`: a wrong name is not missing weights -----------------


def test_backbones_offline_says_the_weights_are_missing_not_the_name(monkeypatch, tmp_path,
                                                                      capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache
    assert main(["backbones", "resnet", "--source", "torchvision", "--offline"]) == 1
    err = capsys.readouterr().err
    assert "torchvision backbone(s) match 'resnet' (['resnet101'" in err
    assert "none has its pretrained weights on this machine" in err
    assert "no torchvision backbone matches" not in err
    assert main(["backbones", "no-such-net", "--source", "torchvision", "--offline"]) == 1
    assert "no torchvision backbone matches 'no-such-net'" in capsys.readouterr().err
    assert main(["backbones", "lite0", "--offline"]) == 0  # the bundled weights are here
    assert capsys.readouterr().out.split() == ["efficientnet_lite0"]


# --- 8. evaluate's fine-tuning fits give the small-validation-split warning once -----------------


def test_evaluate_finetune_warns_about_the_validation_split_once_not_per_fit():
    images, labels = make_images(n=16, n_classes=2, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate(images, labels, backbone=TINY, weights=None, image_size=16, cv=2,
                 layers=["blocks.1"], precision="fp32", compile=False, finetune=True,
                 finetune_params={"epochs": 1, "batch_size": 8, "tta": None, "max_steps": 1})
    split = [w for w in caught if "too few for a stratified split" in str(w.message)]
    assert len(split) == 1  # 4 strategies x 2 folds = 8 fits, one warning


class _Warns(FineTunedStandIn):
    """Stands in for FineTunedCNNClassifier: each fit warns about its own bad row."""

    def fit(self, X, y):
        warnings.warn(BadImageWarning(f"row {len(X)} of {self.train_layers}", rows=[0],
                                      paths=[None], reasons=["?"]))
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_evaluate_still_passes_on_every_bad_image_warning(monkeypatch):
    import skdeep.evaluation

    monkeypatch.setattr(skdeep.evaluation, "FineTunedCNNClassifier", _Warns)
    images, labels = make_images(n=16, n_classes=2, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        evaluate(images, labels, backbone=TINY, weights=None, image_size=16, cv=2,
                 layers=["blocks.1"], precision="fp32", compile=False, finetune=True,
                 finetune_params={"tta": None})
    assert sum(issubclass(w.category, BadImageWarning) for w in caught) == 8  # 4 x 2 folds


# --- 9. the input-size rules of Python and of the command line, said in both places --------------


def test_the_documented_difference_of_the_image_size_rules_holds(capsys):
    from skdeep import PretrainedCNNFeatures
    from skdeep._inputs import auto_image_size

    digits = np.zeros((2, 28, 28), np.uint8)
    assert auto_image_size(digits) == 96  # skdeep extract / evaluate: --image-size auto
    assert PretrainedCNNFeatures().fit().data_config_["input_size"][-1] == 224  # Python: native
    assert "pass ``image_size=96``" in PretrainedCNNFeatures.__doc__
    assert main(["extract", "--help"]) == 0
    assert "PretrainedCNNFeatures has no auto" in " ".join(capsys.readouterr().out.split())


# --- 10. floats outside [0, 1]: advice from the data's range -------------------------------------


@pytest.mark.parametrize(("top", "advice"), [
    (16.0, "the largest value is 16, so divide by 16 if 0-16 is the scale (the scale of sklearn's "
           "load_digits)"),
    (200.0, "divide by 255 if 0-255 is the scale (8-bit data; or pass it as uint8)"),
    (1000.0, "divide by 4095 if 0-4095 is the scale (12-bit data)"),
    (1e6, "the largest value is 1e+06; divide by X.max()"),
    (-0.5, "for data in [-1, 1], use (X + 1) / 2"),
    (-3.0, "negative values look normalised"),
])
def test_floats_outside_0_1_get_advice_from_their_range(top, advice):
    from skdeep import PretrainedCNNFeatures

    X = np.zeros((2, 8, 8))
    X[1, 0, 0] = top
    cnn = PretrainedCNNFeatures(backbone=TINY, weights=None, image_size=16).fit()
    with pytest.raises(ValueError, match=r"rows \[1\]") as raised:
        cnn.transform(X)
    assert advice in str(raised.value)
    if top == 16.0:
        assert "255" not in str(raised.value)


# --- 11. small disagreements between the docs and the code ---------------------------------------


def test_the_fine_tuning_progress_bar_counts_batches_as_the_docs_say(capsys):
    X, y = make_images(24)
    FineTunedCNNClassifier(epochs=1, validation_fraction=0, verbose=0, progress=True,
                           **FAST).fit(X, y)
    err = capsys.readouterr().err
    assert "epoch 1" in err and "3/3" in err and "batch" in err  # 24 images, batches of 8
    guide = Path(__file__).resolve().parents[1] / "docs" / "user_guide" / "performance.rst"
    text = " ".join(guide.read_text(encoding="utf-8").split())
    assert "one bar per epoch over its training batches" in text


def test_the_accuracy_plots_legend_stands_beside_the_lines():
    pytest.importorskip("matplotlib")
    images, labels = make_images(n=16, n_classes=2, seed=1)
    result = evaluate(images, labels, backbone=TINY, weights=None, image_size=16, cv=2,
                      layers=["blocks.1", "penultimate"], precision="fp32", compile=False,
                      finetune=True, finetune_params={"epochs": 1, "batch_size": 8,
                                                      "validation_fraction": 0, "max_steps": 1})
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    figure = plot_accuracy_by_layer(result)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    ax = figure.axes[0]
    renderer = canvas.get_renderer()
    legend, plot = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert len(ax.get_legend().get_texts()) >= 10  # pixels, fine-tuning x 8, the features...
    assert legend.x0 >= plot.x1  # right of the axes: it covers no line
    assert plot.width > legend.width  # the longest label (the recipe's) leaves the axes room
    # each fit has its colour, shared by its TTA twin: the recipe's is not the head's
    tuned = {line.get_label().split(" (0.")[0]: line.get_color() for line in ax.get_lines()
             if line.get_label().startswith("fine-tuned network")}
    fits = [label for label in tuned if not label.endswith(" + TTA")]
    assert len(fits) == 4 and len({tuned[label] for label in fits}) == 4
    assert all(tuned[label + " + TTA"] == tuned[label] for label in fits)
