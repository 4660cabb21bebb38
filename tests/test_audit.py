"""skdeep.audit (skdeep.data_audit) and ``skdeep audit``.

Fast: scikit-learn's bundled 8x8 digits, upscaled to 16x16, embedded by blocks.1 of the bundled
backbone at 32 px in fp32; label errors on synthetic embeddings.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from skdeep import AuditReport, BadImageWarning, PretrainedCNNFeatures, audit
from skdeep.cli import main
from skdeep.data_audit import ISSUE_TYPES

FAST = ["--image-size", "32", "--layer", "blocks.1", "--precision", "fp32", "--no-progress"]


def _cnn(layer: str = "blocks.1") -> PretrainedCNNFeatures:
    return PretrainedCNNFeatures(image_size=32, precision="fp32", layer=layer)


def _digits(n: int, digit: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` distinct digits (of one ``digit`` or all), 16x16 grey uint8, and their labels."""
    data = load_digits()
    rows = np.flatnonzero(data.target == digit) if digit is not None else np.arange(len(data.target))
    rows = np.random.default_rng(seed).permutation(rows)
    _, first = np.unique(data.images[rows].reshape(len(rows), -1), axis=0, return_index=True)
    rows = rows[np.sort(first)][:n]  # no two identical digits
    images = np.kron(data.images[rows], np.ones((2, 2))) * 15
    return images.astype(np.uint8), data.target[rows]


def _blobs(seed: int = 0, per_class: int = 30):
    """Three well separated classes of 16-d embeddings, labels "a", "b", "c"."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 16)) * 6
    labels = np.repeat(np.array(["a", "b", "c"], dtype=object), per_class)
    codes = np.repeat(np.arange(3), per_class)
    return centres[codes] + rng.normal(size=(len(codes), 16)), labels


def _found(report: AuditReport, issue: str) -> pd.DataFrame:
    return report.issues[report.issues["issue"] == issue]


# --- duplicates --------------------------------------------------------------------------------


def test_planted_exact_and_near_copies_are_found_in_their_groups():
    images, _ = _digits(40)
    images[30] = images[4]  # the same image twice
    images[31] = np.clip(images[7].astype(int) + 40, 0, 255).astype(np.uint8)  # brighter copy
    report = audit(images, estimator=_cnn())
    exact, near = _found(report, "exact_duplicate"), _found(report, "near_duplicate")
    assert exact[["row", "duplicate_of", "score"]].values.tolist() == [[30, 4, 1.0]]
    assert near[["row", "duplicate_of"]].values.tolist() == [[31, 7]]
    assert 0 <= near["score"].iloc[0] <= 1
    groups = report.groups_
    assert groups[30] == groups[4] == exact["group"].iloc[0]
    assert groups[31] == groups[7] == near["group"].iloc[0] != groups[4]
    assert report.summary["n_groups"] == 2 and report.summary["exact_duplicate"] == 1
    assert report.summary["near_duplicate"] == 1
    assert report.issues["path"].isna().all()  # in-memory images have no path
    # the first member of a group is the one to keep: it is no finding
    assert not report.issues["row"].isin([4, 7]).any()


def test_a_clean_set_of_distinct_images_has_no_duplicate_findings():
    images, _ = _digits(40)
    report = audit(images, estimator=_cnn())
    assert report.summary["exact_duplicate"] == report.summary["near_duplicate"] == 0
    assert report.summary["n_groups"] == 0 and len(np.unique(report.groups_)) == 40
    assert len(report.pairs_) == 0


def test_copies_with_different_labels_are_a_label_conflict():
    images, labels = _digits(40)
    labels = np.where(labels % 2, "odd", "even").astype(object)
    images[30] = images[4]
    labels[30] = "odd" if labels[4] == "even" else "even"
    report = audit(images, labels, estimator=_cnn(), cv=2, random_state=0)
    conflict = _found(report, "label_conflict")
    assert sorted(conflict["row"]) == [4, 30]
    assert set(conflict["given_label"]) == {labels[4], labels[30]}
    assert conflict["group"].nunique() == 1 and conflict["score"].eq(1.0).all()
    assert report.summary["label_conflict"] == 2


# --- outliers ----------------------------------------------------------------------------------


def test_a_planted_noise_image_among_similar_digits_is_an_outlier():
    images, _ = _digits(40, digit=3)
    clean = audit(images, estimator=_cnn())
    assert clean.summary["outlier"] == 0
    noise = np.random.default_rng(0).integers(0, 256, size=(1, 16, 16), dtype=np.uint8)
    report = audit(np.concatenate([images[:20], noise, images[20:]]), estimator=_cnn())
    outliers = _found(report, "outlier")
    assert outliers["row"].tolist() == [20]
    assert 0 < outliers["score"].iloc[0] <= 1
    assert report.outlier_scores_[20] == np.nanmax(report.outlier_scores_)


# --- label errors ------------------------------------------------------------------------------


def test_flipped_labels_are_found_with_the_right_suggestion():
    embeddings, labels = _blobs()
    clean = audit(embeddings, labels, random_state=0)
    assert clean.summary["label_error"] == 0
    assert clean.probabilities_.shape == (90, 3) and list(clean.classes_) == ["a", "b", "c"]
    noisy = labels.copy()
    flips = {2: "b", 40: "c", 75: "a"}  # truly a, b, c
    for row, wrong in flips.items():
        noisy[row] = wrong
    report = audit(embeddings, noisy, random_state=0)
    errors = _found(report, "label_error").set_index("row")
    assert sorted(errors.index) == sorted(flips)
    assert errors.loc[2, "suggested_label"] == "a" and errors.loc[2, "given_label"] == "b"
    assert errors.loc[40, "suggested_label"] == "b" and errors.loc[75, "suggested_label"] == "c"
    assert errors["score"].between(0.5, 1).all()
    assert report.thresholds_["label"].keys() == {"a", "b", "c"}


def test_folds_shrink_to_the_smallest_class_with_a_note():
    embeddings, labels = _blobs(per_class=30)
    keep = np.r_[0:3, 30:90]  # class "a" has 3 images
    with pytest.warns(UserWarning, match="3-fold instead of 5-fold"):
        report = audit(embeddings[keep], labels[keep], cv=5, random_state=0)
    assert any("3-fold" in note for note in report.notes_)
    with pytest.raises(ValueError, match="class 'a' has only 1"):
        audit(embeddings[29:], labels[29:])


def test_the_issues_table_is_sorted_and_complete():
    embeddings, labels = _blobs()
    embeddings[60] = embeddings[10] + 1e-6  # a copy, labelled differently
    labels = labels.copy()
    labels[5] = "c"
    report = audit(embeddings, labels, random_state=0)
    issues = report.issues
    assert {"row", "path", "issue", "score", "group", "given_label",
            "suggested_label"} <= set(issues.columns)
    order = issues["issue"].map(ISSUE_TYPES.index).to_numpy()
    assert (np.diff(order) >= 0).all()
    for _, part in issues.groupby("issue"):
        assert (np.diff(part["score"].to_numpy()) <= 0).all()
    assert issues["score"].between(0, 1).all()
    assert set(report.summary) >= {*ISSUE_TYPES, "n_images", "n_groups"}
    assert report.summary["n_images"] == 90
    assert "near_duplicate" in set(issues["issue"]) and "label_conflict" in set(issues["issue"])


# --- bad input ---------------------------------------------------------------------------------


@pytest.mark.parametrize("X", [np.zeros((0, 16, 16), dtype=np.uint8), [],
                               np.zeros((1, 16, 16), dtype=np.uint8), np.zeros((1, 8))])
def test_empty_or_single_image_is_a_clear_error(X):
    with pytest.raises(ValueError, match="at least 2"):
        audit(X, estimator=_cnn())


def test_labels_must_match(tmp_path):
    embeddings, labels = _blobs()
    with pytest.raises(ValueError, match="90 images but y has 89"):
        audit(embeddings, labels[:-1])
    with pytest.raises(ValueError, match="single class"):
        audit(embeddings, np.zeros(90))


class _MustNotRun:
    """An embedding transformer that fails the test if used."""

    def fit(self, X=None, y=None):
        raise AssertionError("the images were embedded before the labels were checked")

    transform = fit


def test_labels_are_checked_before_the_images_are_embedded():
    images, labels = _digits(20)
    with pytest.raises(ValueError, match="20 images but y has 19"):
        audit(images, labels[:-1], estimator=_MustNotRun())
    with pytest.raises(ValueError, match="class 'b' has only 1 image"):
        audit(images, np.array(["a"] * 19 + ["b"]), estimator=_MustNotRun())


def _image_files(folder, n=12):
    images, _ = _digits(n)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(folder / f"{i:02d}.png"))
        Image.fromarray(image).save(paths[-1])
    return paths


def test_a_bad_file_raises_naming_its_path(tmp_path):
    paths = _image_files(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    paths.insert(3, str(broken))
    with pytest.raises(ValueError, match=r"row 3.*broken\.png"):
        audit(paths, estimator=_cnn())


def test_on_error_nan_leaves_the_bad_file_out_and_reports_it(tmp_path):
    paths = _image_files(tmp_path)
    paths.insert(3, str(tmp_path / "missing.png"))
    paths.append(paths[5])  # a copy, so that the rows after the bad one are checked too
    with pytest.warns(BadImageWarning, match="missing.png"):
        report = audit(pd.Series(paths), estimator=_cnn(), on_error="nan")
    assert report.unreadable_.values.tolist() == [[3, paths[3]]]
    assert report.summary["n_unreadable"] == 1 and report.summary["n_images"] == 14
    assert 3 not in set(report.issues["row"]) and report.groups_[3] == -1
    exact = _found(report, "exact_duplicate")
    assert exact[["row", "duplicate_of", "path"]].values.tolist() == [[13, 5, paths[5]]]
    assert "unreadable" in report.describe()


# --- the report's files ------------------------------------------------------------------------


def test_plot_writes_galleries_issues_and_summary(tmp_path):
    images, labels = _digits(40)
    labels = np.where(labels % 2, "odd", "even").astype(object)
    images[30] = images[4]
    labels[30] = "odd" if labels[4] == "even" else "even"
    images[31] = np.clip(images[7].astype(int) + 40, 0, 255).astype(np.uint8)
    images[20] = np.random.default_rng(0).integers(0, 256, size=(16, 16), dtype=np.uint8)
    report = audit(images, labels, estimator=_cnn(), cv=2, random_state=0)
    written = report.plot(tmp_path / "audit")
    names = {path.name for path in written}
    found = set(report.issues["issue"])
    assert names == {"issues.csv", "summary.json", *(f"{issue}.png" for issue in found)}
    assert {"exact_duplicate", "near_duplicate", "label_conflict"} <= found
    for name in names - {"issues.csv", "summary.json"}:
        with Image.open(tmp_path / "audit" / name) as png:
            assert png.format == "PNG" and png.size[0] > 600 and png.size[1] > 200
    table = pd.read_csv(tmp_path / "audit" / "issues.csv")
    assert len(table) == len(report.issues) and table["issue"].tolist() == report.issues[
        "issue"].tolist()
    summary = json.loads((tmp_path / "audit" / "summary.json").read_text())
    assert summary["summary"] == report.summary and summary["skdeep"]
    assert summary["provenance"]["backbone"] == "efficientnet_lite0"
    assert set(summary["thresholds"]) >= {"pixels", "embedding", "outlier_z", "label"}


def test_plot_of_embeddings_writes_the_tables_only(tmp_path):
    embeddings, labels = _blobs()
    (tmp_path / "outlier.png").write_bytes(b"an earlier audit's gallery")
    (tmp_path / "mine.png").write_bytes(b"not the audit's")
    written = audit(embeddings, labels, random_state=0).plot(tmp_path)
    assert [path.name for path in written] == ["issues.csv", "summary.json"]
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        ".skdeep-output", "issues.csv", "mine.png", "summary.json"]


# --- the command -------------------------------------------------------------------------------


@pytest.fixture
def labelled_folder(tmp_path):
    """photos/<digit>/<i>.png: 10 images of each of 2 digits, one file copied across."""
    root = tmp_path / "photos"
    for digit in (0, 1):
        images, _ = _digits(10, digit=digit)
        (root / str(digit)).mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(root / str(digit) / f"{i:02d}.png")
    Image.open(root / "0" / "00.png").save(root / "1" / "copy.png")
    return root


def test_audit_command_writes_its_files(labelled_folder, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["audit", str(labelled_folder), "-o", str(out), "--folds", "2", *FAST])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "Auditing 21 images in 2 class folders" in stderr
    assert "exact_duplicate" in stdout and "copy.png" in stdout
    files = {path.name for path in out.iterdir()}
    assert {"issues.csv", "summary.json", "exact_duplicate.png", "label_conflict.png"} <= files
    issues = pd.read_csv(out / "issues.csv")
    assert issues.loc[issues["issue"] == "exact_duplicate", "path"].str.endswith(
        "copy.png").all()


def test_audit_command_without_labels(labelled_folder, tmp_path, capsys):
    code = main(["audit", str(labelled_folder), "-o", str(tmp_path / "o"), "--no-labels", *FAST])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "(without labels)" in stderr
    assert "label errors were not checked" in stdout


@pytest.mark.parametrize("argv, code, message", [
    (["audit", "--threshold", "3"], 2, "--threshold: must be a cosine distance"),
    (["audit", "--folds", "1"], 2, "--folds: must be at least 2"),
    (["audit", "no/such/folder"], 1, "INPUT not found"),
])
def test_audit_command_errors_are_one_line(argv, code, message, tmp_path, capsys):
    assert main([*argv, "-o", str(tmp_path / "o"), *FAST]) == code
    _, stderr = capsys.readouterr()
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("skdeep: error: ") and message in lines[-1], stderr
    assert "Traceback" not in stderr and len(lines) <= 2


def test_an_exact_copy_of_a_near_copy_points_at_its_twin():
    images, _ = _digits(30)
    images[20] = np.clip(images[3].astype(int) + 40, 0, 255).astype(np.uint8)  # near row 3
    images[25] = images[20]  # and the same pixels again
    report = audit(images, estimator=_cnn())
    copies = report.issues[report.issues["issue"].str.endswith("_duplicate")]
    assert copies[["row", "issue", "duplicate_of"]].values.tolist() == [
        [25, "exact_duplicate", 20], [20, "near_duplicate", 3]]
    assert report.groups_[3] == report.groups_[20] == report.groups_[25]


def test_copies_of_one_image_need_no_folds():
    embeddings = np.tile(np.random.default_rng(0).normal(size=(1, 8)), (6, 1))
    with pytest.warns(UserWarning, match="label errors not checked"):
        report = audit(embeddings, np.array(["a", "b"] * 3))
    assert report.probabilities_ is None and report.summary["label_error"] == 0
    assert report.summary["near_duplicate"] == 5 and report.summary["label_conflict"] == 6
