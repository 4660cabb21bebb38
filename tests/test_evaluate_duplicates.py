"""evaluate scores on folds that keep near-duplicate images together (issue 21, item 3)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

from skdeep._device import torch_threads
from skdeep.cli import in_flags, main
from skdeep.evaluation import evaluate

from _helpers import TINY, FineTunedStandIn, make_images

FAST = dict(backbone=TINY, weights=None, image_size=32, precision="fp32", compile=False,
            layers=["blocks.1", "penultimate"])
CV = 3


@pytest.fixture(autouse=True)
def one_torch_thread():
    with torch_threads(1):
        yield


def _plain_test_fold(labels, cv=CV, random_state=0):
    """The test fold of each row under duplicates="ignore": sklearn's own StratifiedKFold."""
    fold = np.empty(len(labels), dtype=int)
    splitter = StratifiedKFold(cv, shuffle=True, random_state=random_state)
    for k, (_, test) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        fold[test] = k
    return fold


@pytest.fixture(scope="module")
def planted():
    """24 images whose last four are exact copies of the first four (same class)."""
    images, labels = make_images(n=24, n_classes=2, seed=0)
    images[20:24] = images[0:4]
    return images, labels


@pytest.fixture(scope="module")
def grouped(planted):
    with torch_threads(1):
        return evaluate(*planted, cv=CV, **FAST)


def test_planted_copies_are_grouped_and_never_straddle_a_fold(planted, grouped):
    _, labels = planted
    result = grouped
    groups, fold = result.duplicate_groups, result.test_fold
    assert len(np.unique(groups)) == 20
    assert all(groups[i] == groups[i + 20] for i in range(4))
    for group in np.unique(groups):  # every group lies in one test fold
        assert len(set(fold[groups == group])) == 1
    # the plain folds would have split some copies from their original: grouping changed them
    plain = _plain_test_fold(labels)
    straddling = sum(plain[i] != plain[i + 20] for i in range(4))
    assert straddling > 0 and not np.array_equal(fold, plain)
    config = result.config
    assert config["duplicates"] == "group"
    assert config["n_duplicate_groups"] == 4 and config["n_images_in_duplicate_groups"] == 8
    assert config["duplicate_pairs_by_reason"] == {"exact": 4, "pixels": 0, "embedding": 0}
    assert config["n_duplicate_pairs"] == 4 and config["n_straddling_pairs"] == straddling
    pairs = result.duplicate_pairs
    assert pairs[["first", "second"]].values.tolist() == [[i, i + 20] for i in range(4)]
    assert pairs["straddles_plain_folds"].sum() == straddling
    # the folds each image was tested in are those the fold table counts
    counts = result.folds[result.folds["strategy"] == "pixels"]["n_test"].tolist()
    assert counts == np.bincount(fold).tolist()


def test_the_best_strategy_is_also_scored_on_plain_folds(planted, grouped):
    images, labels = planted
    result, config = grouped, grouped.config
    compared = config["duplicates_compared"]
    assert compared == result.best
    scores = result.scores.set_index("strategy")
    assert config["grouped_cv_accuracy"] == scores.loc[compared, "accuracy_mean"]
    data = (images.reshape(len(images), -1).astype(np.float32) if compared == "pixels"
            else np.hstack([result.embeddings[layer] for layer in compared.split("+")]))
    plain = cross_val_score(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
                            data, labels, cv=StratifiedKFold(CV, shuffle=True, random_state=0))
    assert config["plain_cv_accuracy"] == pytest.approx(plain.mean())


def test_the_report_says_what_was_found(grouped, tmp_path):
    text = grouped.summary()
    assert "near-duplicates kept in one fold" in text
    straddling = grouped.config["n_straddling_pairs"]
    assert (f"Near-duplicates: 4 group(s) of 8 images (4 exact, 0 pixel and 0 embedding pairs), "
            f"each kept in one fold; {straddling} pair(s) would have straddled plain folds."
            in text)
    assert (f"The best strategy, {grouped.best}" in text.replace(" features", "")
            or "The best strategy, raw pixels" in text)
    assert "on plain folds" in text and "on grouped folds (scores here use grouped folds)" in text
    written = {path.name for path in grouped.save(tmp_path / "r")}
    assert "duplicates.csv" in written
    table = pd.read_csv(tmp_path / "r" / "duplicates.csv")
    assert table[["first", "second"]].values.tolist() == [[i, i + 20] for i in range(4)]
    assert set(table["reason"]) == {"exact"} and "first_path" not in table
    saved = json.loads((tmp_path / "r" / "results.json").read_text())["config"]
    assert saved["n_duplicate_groups"] == 4 and saved["plain_cv_accuracy"] is not None


def test_without_near_duplicates_nothing_changes(tmp_path):
    images, labels = make_images(n=24, n_classes=2, seed=0)
    result = evaluate(images, labels, cv=CV, **FAST)
    ignored = evaluate(images, labels, cv=CV, duplicates="ignore", **FAST)
    assert result.config["n_duplicate_groups"] == 0 and len(result.duplicate_pairs) == 0
    assert len(np.unique(result.duplicate_groups)) == 24
    np.testing.assert_array_equal(result.test_fold, _plain_test_fold(labels))
    np.testing.assert_array_equal(ignored.test_fold, _plain_test_fold(labels))
    columns = ["strategy", "accuracy_mean", "accuracy_std"]
    pd.testing.assert_frame_equal(result.scores[columns], ignored.scores[columns])
    assert result.config["plain_cv_accuracy"] == result.config["grouped_cv_accuracy"]
    assert "No near-duplicate images were found" in result.summary()
    assert ignored.duplicate_groups is None and ignored.duplicate_pairs is None
    assert ignored.config["duplicates"] == "ignore" and "n_duplicate_groups" not in ignored.config
    assert "were not looked for" in ignored.summary()
    # a duplicates.csv of an earlier report in the folder would describe other images
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "duplicates.csv").write_text("first,second\n0,1\n")
    assert "duplicates.csv" not in {path.name for path in result.save(tmp_path / "r")}
    assert not (tmp_path / "r" / "duplicates.csv").exists()


def test_plain_folds_that_split_no_group_are_kept():
    images, labels = make_images(n=24, n_classes=2, seed=0)
    plain = _plain_test_fold(labels)
    a, b = [i for i in range(24) if plain[i] == plain[0] and labels[i] == labels[0]][:2]
    images[b] = images[a]  # a copy in its original's test fold already
    result = evaluate(images, labels, cv=CV, **FAST)
    ignored = evaluate(images, labels, cv=CV, duplicates="ignore", **FAST)
    assert result.config["n_duplicate_groups"] == 1 and result.config["n_straddling_pairs"] == 0
    np.testing.assert_array_equal(result.test_fold, plain)
    pd.testing.assert_series_equal(result.scores["accuracy_mean"], ignored.scores["accuracy_mean"])
    assert "plain stratified folds split none of them" in result.summary()


def test_a_class_of_copies_cannot_be_split_and_the_error_says_what_to_do():
    images, labels = make_images(n=12, n_classes=2, seed=0)
    images[labels == 1] = images[1]  # every image of class 1 is the same image
    with pytest.raises(ValueError, match=r"class 1 has 6 image\(s\) but only 1 once "
                                         r"near-duplicates are grouped.*duplicates='ignore'"):
        evaluate(images, labels, cv=2, **FAST)
    assert evaluate(images, labels, cv=2, duplicates="ignore", **FAST).config["cv"] == 2
    message = "score on plain folds with duplicates='ignore' (scores inflated)"
    assert "--duplicates ignore" in in_flags(message)


def test_bad_duplicates_is_refused():
    images, labels = make_images(n=12, n_classes=2, seed=0)
    with pytest.raises(InvalidParameterError, match="'duplicates' parameter of evaluate"):
        evaluate(images, labels, cv=2, duplicates="bogus", **FAST)


class _Oracle(FineTunedStandIn):
    """Stands in for FineTunedCNNClassifier: always right (it looks the answer up), so that
    fine-tuning is the best strategy; counts its fits."""

    truth: dict = {}
    fits: list = []

    def fit(self, X, y):
        type(self).fits.append(len(X))
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.array([type(self).truth[np.asarray(image).tobytes()] for image in X])


def test_when_fine_tuning_wins_the_best_frozen_strategy_is_compared(planted, monkeypatch):
    import skdeep.evaluation

    images, labels = planted[0].copy(), planted[1]
    images[::3] = 255 - images[::3]  # no linear model is perfect
    monkeypatch.setattr(skdeep.evaluation, "FineTunedCNNClassifier", _Oracle)
    _Oracle.truth = {image.tobytes(): label for image, label in zip(images, labels)}
    _Oracle.fits = []
    result = evaluate(images, labels, cv=CV, finetune=True, finetune_params={"tta": None},
                      **FAST)
    assert result.best.startswith("finetune-")
    frozen = result.scores[result.scores["layer"].notna()].set_index("strategy")
    compared = result.config["duplicates_compared"]
    assert compared == frozen["accuracy_mean"].idxmax()
    assert result.config["grouped_cv_accuracy"] == frozen.loc[compared, "accuracy_mean"]
    assert len(_Oracle.fits) == 4 * CV  # fine-tuning is never refitted on the plain folds
    assert "best frozen strategy (fine-tuning is not refitted on plain folds)" in result.summary()


# --- the command -------------------------------------------------------------------------------


def _spy(monkeypatch):
    import skdeep.evaluation

    seen = {}

    def spy(X, y, **kwargs):
        seen.update(kwargs)
        raise SystemExit(0)

    monkeypatch.setattr(skdeep.evaluation, "evaluate", spy)
    return seen


@pytest.mark.parametrize("argv, expected", [([], "group"), (["--duplicates", "ignore"], "ignore"),
                                            (["--duplicates", "group"], "group")])
def test_cli_duplicates_flag(argv, expected, monkeypatch, tmp_path):
    seen = _spy(monkeypatch)
    with pytest.raises(SystemExit):
        main(["evaluate", "-o", str(tmp_path / "r"), *argv])
    assert seen["duplicates"] == expected


def test_cli_bad_duplicates_is_one_line(capsys, tmp_path):
    assert main(["evaluate", "-o", str(tmp_path / "r"), "--duplicates", "bogus"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("skdeep: error: argument --duplicates")
    assert "invalid choice: 'bogus'" in lines[0]


def test_cli_report_lists_copied_files_by_path(tmp_path, capsys):
    images, labels = make_images(n=12, n_classes=2, seed=0)
    for i, (image, label) in enumerate(zip(images, labels)):
        (tmp_path / "photos" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "photos" / str(label) / f"{i:02d}.png")
    # the same picture twice, under another name and format
    Image.fromarray(images[0]).save(tmp_path / "photos" / "0" / "copy.bmp")
    code = main(["evaluate", str(tmp_path / "photos"), "-o", str(tmp_path / "r"), "--folds", "2",
                 "--layers", "blocks.1,penultimate", "--image-size", "32", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Near-duplicates: 1 group(s) of 2 images (1 exact" in out
    table = pd.read_csv(tmp_path / "r" / "duplicates.csv")
    assert len(table) == 1 and table.loc[0, "reason"] == "exact"
    assert {table.loc[0, "first_path"], table.loc[0, "second_path"]} == {
        str(tmp_path / "photos" / "0" / "00.png"), str(tmp_path / "photos" / "0" / "copy.bmp")}
