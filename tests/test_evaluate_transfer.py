"""evaluate for images unlike ImageNet (issue 11): pairs of layers, input sizes, fine-tuning."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdeep import PretrainedCNNFeatures
from skdeep._device import torch_threads
from skdeep._report import recommend
from skdeep._strategies import finetune_settings, finetune_strategy, is_finetune, short_label
from skdeep.cli import main
from skdeep.evaluation import evaluate
from skdeep.recipes import RECIPES, COMPARED_RECIPE, recipe_params

from _helpers import TINY, FineTunedStandIn, make_images

FROZEN = dict(backbone=TINY, weights=None, precision="fp32", compile=False, cv=2)


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


@pytest.fixture(scope="module")
def data():
    images, labels = make_images(n=24, n_classes=2, seed=3)
    images[::3] = 255 - images[::3]  # not a perfect score for every strategy
    return images, labels


def test_a_pair_is_the_pipeline_of_the_two_layers_concatenated(data):
    images, labels = data
    result = evaluate(images, labels, image_size=32, layers=["blocks.1", "blocks.2"], **FROZEN)
    assert result.scores["strategy"].tolist() == ["pixels", "blocks.1", "blocks.2",
                                                  "blocks.1+blocks.2"]
    row = result.scores.set_index("strategy").loc["blocks.1+blocks.2"]
    assert row["layer"] == "blocks.1+blocks.2" and row["image_size"] == 32
    assert row["n_features"] == sum(result.embeddings[name].shape[1]
                                    for name in ("blocks.1", "blocks.2"))
    pipeline = make_pipeline(
        PretrainedCNNFeatures(backbone=TINY, weights=None, layer=["blocks.1", "blocks.2"],
                              image_size=32, precision="fp32", random_state=0, compile=False),
        StandardScaler(), LogisticRegression(max_iter=1000))
    expected = cross_val_score(pipeline, images, labels,
                               cv=StratifiedKFold(2, shuffle=True, random_state=0))
    got = result.folds[result.folds["strategy"] == "blocks.1+blocks.2"]["accuracy"]
    np.testing.assert_allclose(got.to_numpy(), expected)
    assert "Depth: best single layer" in result.recommendation
    assert "blocks.1 + blocks.2 features" in result.summary()


def test_pairs_false_scores_the_single_layers_alone(data):
    images, labels = data
    result = evaluate(images, labels, image_size=32, layers=["blocks.1", "blocks.2"],
                      pairs=False, **FROZEN)
    assert result.scores["strategy"].tolist() == ["pixels", "blocks.1", "blocks.2"]
    assert "Depth:" not in result.recommendation


def test_image_sizes_sweep_one_forward_pass_per_size_same_size_once(data, tmp_path):
    images, labels = data
    result = evaluate(images, labels, image_sizes=[32, "auto", 48, 32], layers=["blocks.1"],
                      **FROZEN)  # auto: 16 px images are small, so 96
    config = result.config
    assert config["image_sizes"] == [32, 96, 48] and config["image_size"] == 32
    assert set(config["embedding_seconds_by_size"]) == {"32", "96", "48"}
    assert result.scores["strategy"].tolist() == ["pixels", "blocks.1", "blocks.1@96",
                                                  "blocks.1@48"]
    assert result.scores["image_size"].tolist()[1:] == [32, 96, 48]
    assert set(result.embeddings) == {"blocks.1", "blocks.1@96", "blocks.1@48"}
    # the features at 48 px are those of the extractor at 48 px
    at_48 = PretrainedCNNFeatures(backbone=TINY, weights=None, layer="blocks.1", image_size=48,
                                  precision="fp32", random_state=0, compile=False).fit()
    np.testing.assert_allclose(result.embeddings["blocks.1@48"], at_48.transform(images),
                               rtol=1e-5, atol=1e-6)
    assert "Size: best frozen accuracy" in result.recommendation
    assert "features at 96 px" in result.summary()
    result.save(tmp_path / "r")  # the plot draws a line per size
    json.dumps(result.to_dict())


def test_the_recommended_pipeline_of_a_pair_at_another_size_is_runnable_code(data):
    from skdeep._report import recommend

    images, labels = data
    result = evaluate(images, labels, image_sizes=[32, 48], layers=["blocks.1", "blocks.2"],
                      **FROZEN)
    scores = result.scores.copy()  # the pair at 48 px alone at the top, whatever its cost
    scores.loc[scores["strategy"] != "blocks.1+blocks.2@48", "accuracy_mean"] = 0.0
    text = recommend(scores, "blocks.1+blocks.2@48", result.config)
    assert "layer=['blocks.1', 'blocks.2'], image_size=48" in text


@pytest.mark.parametrize("sizes, match", [([], "image_sizes is empty"),
                                          ([32, 4], r"'image_sizes' .* in the range \[8, inf\).* Got 4"),
                                          (["big"], r"'image_sizes' .* Got 'big'")])
def test_bad_image_sizes_are_refused_by_value(data, sizes, match):
    images, labels = data
    with pytest.raises(ValueError, match=match):
        evaluate(images, labels, image_sizes=sizes, **FROZEN)


def test_cli_image_sizes_and_no_pairs(tmp_path, capsys, monkeypatch):
    seen = {}
    import skdeep.evaluation

    def spy(X, y, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(skdeep.evaluation, "evaluate", spy)
    with pytest.raises(SystemExit):
        main(["evaluate", "--max-images", "20", "--image-sizes", "96,native", "--no-pairs",
              "-o", str(tmp_path / "r"), "--no-progress"])
    assert seen["image_sizes"] == [96, None] and seen["pairs"] is False
    assert main(["evaluate", "--image-sizes", "96,4", "-o", str(tmp_path / "r")]) != 0
    assert "at least 8 pixels" in capsys.readouterr().err


def test_extract_has_no_evaluate_only_flags(capsys):
    assert main(["extract", "x", "-o", "y.npy", "--no-pairs"]) != 0
    assert "--no-pairs" in capsys.readouterr().err


# --- fine-tuning: head, last k, all, all with the recipe, each with and without TTA (item 5) -----

TUNE = dict(FROZEN, image_size=16, layers=["blocks.1"], finetune=True)
# max_steps: the recipe's "auto" would be 400 steps (200 epochs of these 12 training images);
# a value given wins over the recipe's, so every fit is one epoch of 2 batches.
FAST_FIT = {"epochs": 1, "batch_size": 8, "validation_fraction": 0, "max_steps": 2}


def test_finetune_compares_layers_trained_and_tta_from_one_fit_each(data, monkeypatch):
    from skdeep import FineTunedCNNClassifier

    images, labels = data
    fits = []
    real_fit = FineTunedCNNClassifier.fit

    def counted_fit(self, X, y, **kwargs):
        real_fit(self, X, y, **kwargs)
        fits.append((self.train_layers, self.recipe, self.recipe_params_))
        return self

    monkeypatch.setattr(FineTunedCNNClassifier, "fit", counted_fit)
    result = evaluate(images, labels, finetune_params=FAST_FIT, **TUNE)
    recipe = f"all-{COMPARED_RECIPE}"
    assert result.scores["strategy"].tolist()[2:] == [
        "finetune-head", "finetune-head-tta", "finetune-last2", "finetune-last2-tta",
        "finetune-all", "finetune-all-tta", f"finetune-{recipe}", f"finetune-{recipe}-tta"]
    # one fit per fold for each, none for TTA; the last fits all layers with the recipe, whose
    # values apply except the max_steps given (an explicit value wins)
    assert [(trained, name) for trained, name, _ in fits] == [
        ("head", None), ("head", None), (2, None), (2, None), ("all", None), ("all", None),
        ("all", COMPARED_RECIPE), ("all", COMPARED_RECIPE)]
    assert fits[-1][2] == {"head_init": "random", "ema": None, "sampler": "shuffle",
                           **recipe_params(COMPARED_RECIPE), "max_steps": 2}
    assert fits[0][2] == {"head_init": "random", "max_steps": 2, "ema": None,
                          "sampler": "shuffle"}
    assert result.config["finetune_train_layers"] == ["head", 2, "all"]
    assert result.config["finetune_recipe"] == COMPARED_RECIPE
    summary = result.summary()
    assert f"fine-tuned network (all layers, recipe {COMPARED_RECIPE!r}) + TTA" in summary
    recipe_line = next(line for line in summary.splitlines()  # what the recipe is
                       if line.startswith(f"recipe {COMPARED_RECIPE!r}: "))
    assert all(f"{name}={value!r}" in recipe_line
               for name, value in recipe_params(COMPARED_RECIPE).items())
    folds = result.folds.set_index(["strategy", "fold"])
    for trained in ("head", "last2", "all", recipe):  # a TTA row shares its fit, adds a prediction
        plain, tta = folds.loc[f"finetune-{trained}"], folds.loc[f"finetune-{trained}-tta"]
        np.testing.assert_array_equal(tta["fit_seconds"], plain["fit_seconds"])
    # seconds: the forward pass of the frozen features, then fit + prediction (a TTA row's own)
    scores = result.scores.set_index("strategy")
    forward = {"blocks.1": result.config["embedding_seconds"]}
    np.testing.assert_allclose(scores["seconds"].drop("pixels"),
                               (scores["fit_seconds"] + scores["predict_seconds"]).drop("pixels")
                               + [forward.get(name, 0.0) for name in scores.index[1:]],
                               atol=1e-3)  # the config rounds seconds to milliseconds
    # the TTA predictions are the fold's fitted model predicting with tta="flip"
    train, test = next(StratifiedKFold(2, shuffle=True, random_state=0).split(images, labels))
    model = FineTunedCNNClassifier(backbone=TINY, weights=None, image_size=16, precision="fp32",
                                   random_state=0, train_layers="head", **FAST_FIT)
    real_fit(model, images[train], labels[train])
    np.testing.assert_array_equal(result.predictions["finetune-head-tta"][test],
                                  model.set_params(tta="flip").predict(images[test]))
    np.testing.assert_array_equal(result.predictions["finetune-head"][test],
                                  model.set_params(tta=None).predict(images[test]))


def test_finetune_params_apply_to_every_fit_and_choose_k_and_tta(data):
    images, labels = data
    result = evaluate(images, labels, finetune_params={**FAST_FIT, "train_layers": 1, "tta": None},
                      **TUNE)
    assert result.scores["strategy"].tolist()[2:] == [
        "finetune-head", "finetune-last1", "finetune-all", f"finetune-all-{COMPARED_RECIPE}"]
    assert result.config["finetune_tta"] is None
    with pytest.raises(ValueError, match="finetune_params has train_layers='head'; evaluate "
                                         "compares 'head', the last k units and 'all'"):
        evaluate(images, labels, finetune_params={"train_layers": "head"}, **TUNE)
    with pytest.raises(ValueError, match="'tta' parameter of evaluate's finetune_params"):
        evaluate(images, labels, finetune_params={"tta": "flips"}, **TUNE)
    with pytest.raises(ValueError, match=r"unknown fine-tuning parameter\(s\) \['epoch'\]"):
        evaluate(images, labels, finetune_params={"epoch": 1}, **TUNE)


class _Recorded(FineTunedStandIn):
    """Stands in for FineTunedCNNClassifier: the majority class; records the parameters of
    each fit."""

    fitted = []

    def fit(self, X, y):
        type(self).fitted.append(self.get_params())
        values, counts = np.unique(y, return_counts=True)
        self.classes_, self.majority_ = values, values[np.argmax(counts)]
        return self

    def predict(self, X):
        return np.full(len(X), self.majority_)


@pytest.mark.parametrize("given", [COMPARED_RECIPE, None])
def test_a_recipe_in_finetune_params_applies_to_every_fit_and_adds_no_strategy(data, given,
                                                                             monkeypatch):
    import skdeep.evaluation

    monkeypatch.setattr(skdeep.evaluation, "FineTunedCNNClassifier", _Recorded)
    _Recorded.fitted = []
    images, labels = data
    result = evaluate(images, labels, finetune_params={"recipe": given, "tta": None}, **TUNE)
    assert result.scores["strategy"].tolist()[2:] == ["finetune-head", "finetune-last2",
                                                      "finetune-all"]
    assert [params["recipe"] for params in _Recorded.fitted] == [given] * 6
    assert result.config["finetune_recipe"] is None


def test_finetune_names_round_trip_for_every_recipe():
    assert COMPARED_RECIPE in RECIPES
    names = set()
    for recipe in [None, *RECIPES]:  # a recipe named "tta" or "...-tta" would fail here
        for train_layers in ("head", 3, "all"):
            for tta in (False, True):
                name = finetune_strategy(train_layers, tta=tta, recipe=recipe)
                assert is_finetune(name) and name not in names
                assert finetune_settings(name) == (train_layers, tta, recipe)
                names.add(name)
    assert short_label(finetune_strategy("all", recipe=COMPARED_RECIPE)) == (
        f"fine-tuned network (all layers, recipe {COMPARED_RECIPE!r})")


def _table(rows):
    names = ["strategy", "layer", "accuracy_mean", "accuracy_std", "seconds"]
    return pd.DataFrame([dict(zip(names, row), image_size=96) for row in rows])


CONFIG = {"backbone": "efficientnet_lite0", "image_size": 96, "n_images": 500, "finetune": True,
          "finetune_params": {"epochs": 3, "tta": "symmetric"}, "finetune_tta": "symmetric",
          "logistic_regression": {"C": 1.0, "max_iter": 1000}}


def test_recommendation_is_the_cheapest_within_one_std_of_the_best():
    scores = _table([("pixels", None, 0.70, 0.01, 1.0), ("blocks.4", "blocks.4", 0.80, 0.01, 5.0),
                     ("finetune-head", None, 0.88, 0.01, 20.0),
                     ("finetune-head-tta", None, 0.89, 0.01, 24.0),
                     ("finetune-all", None, 0.90, 0.02, 100.0),
                     ("finetune-all-tta", None, 0.905, 0.02, 110.0)])
    text = recommend(scores, "finetune-all-tta", CONFIG)
    assert text.startswith("The most accurate is the fine-tuned network (all layers) + TTA "
                           "(0.905 +- 0.020, 110 s per fold); the cheapest strategy within one "
                           "standard deviation of it is the fine-tuned network (head only) + TTA "
                           "(0.890 +- 0.010, 24 s per fold), so that is the recommendation.")
    assert ("FineTunedCNNClassifier(backbone='efficientnet_lite0', image_size=96, epochs=3, "
            "train_layers='head', tta='symmetric')") in text
    assert "Within one standard deviation of the best: finetune-head-tta, finetune-all" in text
    # frozen features within one std of the best fine-tuning, at a fraction of its cost
    scores.loc[scores["strategy"] == "blocks.4", "accuracy_mean"] = 0.89
    text = recommend(scores, "finetune-all-tta", CONFIG)
    assert "is the blocks.4 features (0.890 +- 0.010, 5.00 s per fold)" in text
    assert "PretrainedCNNFeatures(layer='blocks.4', image_size=96)" in text
    # the most accurate is also the cheapest of those tied: no trade to explain
    text = recommend(scores, "blocks.4", CONFIG)
    assert text.startswith("Use the blocks.4 features")


def test_the_recommended_recipe_when_it_wins_is_runnable_code():
    name = finetune_strategy("all", tta=True, recipe=COMPARED_RECIPE)
    scores = _table([("pixels", None, 0.70, 0.01, 1.0), ("blocks.4", "blocks.4", 0.80, 0.01, 5.0),
                     ("finetune-all", None, 0.85, 0.01, 100.0),
                     (name, None, 0.95, 0.01, 150.0)])
    text = recommend(scores, name, CONFIG)
    assert text.startswith(f"Fine-tuning wins: 0.950 +- 0.010 for the fine-tuned network (all "
                           f"layers, recipe {COMPARED_RECIPE!r}) + TTA vs 0.800")
    assert (f"FineTunedCNNClassifier(backbone='efficientnet_lite0', image_size=96, epochs=3, "
            f"recipe={COMPARED_RECIPE!r}, train_layers='all', tta='symmetric')") in text
