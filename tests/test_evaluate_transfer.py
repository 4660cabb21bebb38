"""evaluate for images unlike ImageNet (issue 11): pairs of layers, input sizes, fine-tuning."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skdeep import PretrainedCNNFeatures
from skdeep._device import torch_threads
from skdeep.cli import main
from skdeep.evaluation import evaluate

from _helpers import TINY, make_images

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
    text = recommend(result.scores, "blocks.1+blocks.2@48", result.config)
    assert "layer=['blocks.1', 'blocks.2'], image_size=48" in text


@pytest.mark.parametrize("sizes, match", [([], "image_sizes is empty"),
                                          ([32, 4], "image_sizes has 4"),
                                          (["big"], "image_sizes has 'big'")])
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
