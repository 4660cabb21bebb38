"""skdeep.model_selection: near-duplicate groups and the splitter that keeps them in one fold.

Each test would fail on a wrong rule: a planted copy not grouped, a group split across folds,
a clean set with findings, a threshold that does not cut where it says.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageFilter
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    GridSearchCV,
    StratifiedGroupKFold,
    cross_val_score,
)
from sklearn.pipeline import Pipeline
from sklearn.utils._param_validation import InvalidParameterError

from skdeep import NearDuplicateGroupKFold, PretrainedCNNFeatures, near_duplicate_groups
from skdeep.datasets import load_fashion_sample
from skdeep.model_selection import find_near_duplicates, image_signatures

FAST = {"image_size": 32, "layer": "blocks.1", "precision": "fp32"}


@pytest.fixture(scope="module")
def fashion():
    """200 distinct Fashion-MNIST images (20 per class) and their labels."""
    images, labels = load_fashion_sample(return_X_y=True)
    keep = np.concatenate([np.flatnonzero(labels == c)[:20] for c in np.unique(labels)])
    return images[keep], labels[keep]


def _jpeg(image: np.ndarray, quality: int = 40) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer).convert("L"))


def _blurred(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.5)))


def _brighter(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 1.15, 0, 255).astype(np.uint8)


# --- the rule ----------------------------------------------------------------------------------


def test_a_clean_set_has_no_near_duplicates(fashion):
    images, _ = fashion
    found = find_near_duplicates(signatures=image_signatures(images))
    assert found.pairs.empty
    np.testing.assert_array_equal(found.groups, np.arange(len(images)))


@pytest.mark.parametrize("copy", [_jpeg, _blurred, _brighter])
def test_re_encoded_blurred_or_brightened_copies_are_grouped_by_their_pixels(fashion, copy):
    images, _ = fashion
    planted = np.concatenate([images, [copy(images[17])], [copy(images[150])]])
    found = find_near_duplicates(signatures=image_signatures(planted))
    assert set(found.pairs["reason"]) == {"pixels"}
    assert {tuple(pair) for pair in found.pairs[["first", "second"]].values} == {
        (17, 200), (150, 201)}
    assert found.groups[17] == found.groups[200] and found.groups[150] == found.groups[201]
    assert len(np.unique(found.groups)) == 200
    assert 0 < found.thresholds["pixels"] and found.thresholds["embedding"] is None


def test_identical_pixels_are_exact_duplicates_even_as_other_files(tmp_path, fashion):
    images, _ = fashion
    paths = []
    for index, fmt in [(3, "png"), (3, "bmp"), (4, "png")]:  # row 3 twice, in two formats
        paths.append(str(tmp_path / f"{len(paths)}.{fmt}"))
        Image.fromarray(images[index]).save(paths[-1])
    signatures = image_signatures(paths)
    assert signatures.digests[0] == signatures.digests[1] != signatures.digests[2]
    found = find_near_duplicates(signatures=signatures, threshold=0.0)  # exact only
    assert found.pairs.values.tolist() == [[0, 1, "exact", 0.0]]


def test_the_embedding_rule_cuts_at_a_fraction_of_the_median_nearest_neighbour_distance():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(200, 32))
    embeddings[100] = embeddings[5] + 0.01 * rng.normal(size=32)  # a close copy
    embeddings[101] = embeddings[6] + rng.normal(size=32)  # a distinct neighbour
    found = find_near_duplicates(embeddings)
    assert found.pairs[["first", "second"]].values.tolist() == [[5, 100]]
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    distance = 1 - unit[6] @ unit[101]
    assert found.thresholds["embedding"] < distance


def test_a_float_threshold_is_an_absolute_cosine_distance():
    embeddings = np.array([[1.0, 0.0], [np.cos(0.1), np.sin(0.1)], [0.0, 1.0], [-1.0, 0.1]])
    distance = 1 - np.cos(0.1)  # rows 0 and 1
    assert near_duplicate_groups(embeddings, threshold=distance * 1.01).tolist() == [0, 0, 1, 2]
    assert near_duplicate_groups(embeddings, threshold=distance * 0.99).tolist() == [0, 1, 2, 3]
    assert near_duplicate_groups(embeddings, threshold=2.0).tolist() == [0, 0, 0, 0]


def test_chains_of_near_duplicates_form_one_group_numbered_by_first_appearance():
    rng = np.random.default_rng(1)
    embeddings = rng.normal(size=(60, 16))
    embeddings[40] = embeddings[9] + 1e-4
    embeddings[50] = embeddings[40] + 1e-4
    groups = near_duplicate_groups(embeddings)
    assert groups[9] == groups[40] == groups[50] == 9
    assert groups[:40].tolist() == list(range(40)) and groups[41] == 40  # by first appearance
    assert len(np.unique(groups)) == 58


def test_unreadable_images_are_groups_of_their_own(tmp_path, fashion):
    images, _ = fashion
    paths = []
    for index in (1, 1, 2):
        paths.append(str(tmp_path / f"{len(paths)}.png"))
        Image.fromarray(images[index]).save(paths[-1])
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    paths += [str(broken), str(broken)]
    signatures = image_signatures(paths, on_error="nan")
    assert signatures.digests[3] is None and np.isnan(signatures.thumbnails[3]).all()
    groups = find_near_duplicates(signatures=signatures).groups
    assert groups.tolist() == [0, 0, 1, 2, 3]


def test_an_unreadable_image_is_named_by_default(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match="broken.png"):
        image_signatures([str(broken)])


def test_images_are_embedded_with_the_given_estimator_and_exact_copies_grouped():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(12, 24, 24), dtype=np.uint8)
    images[8] = images[2]
    groups = near_duplicate_groups(images, estimator=PretrainedCNNFeatures(**FAST))
    assert groups[8] == groups[2] and len(np.unique(groups)) == 11


def test_bad_arguments_are_refused():
    with pytest.raises(InvalidParameterError):
        near_duplicate_groups(np.eye(3), threshold="nearby")
    with pytest.raises(ValueError, match="2-D"):
        find_near_duplicates(np.zeros(3))
    with pytest.raises(ValueError, match="needs embeddings"):
        find_near_duplicates()


# --- the splitter ------------------------------------------------------------------------------


def _copies(n=60, n_copies=15, seed=0):
    """Embeddings of ``n`` distinct images, the last ``n_copies`` near-copies of the first."""
    rng = np.random.default_rng(seed)
    embeddings = rng.normal(size=(n, 16))
    embeddings[n - n_copies:] = embeddings[:n_copies] + 1e-4 * rng.normal(size=(n_copies, 16))
    y = np.tile([0, 1, 2], n // 3)
    y[n - n_copies:] = y[:n_copies]
    return embeddings, y


@pytest.mark.parametrize("stratified", [True, False])
def test_no_near_duplicate_group_straddles_a_split(stratified):
    embeddings, y = _copies()
    cv = NearDuplicateGroupKFold(n_splits=3, stratified=stratified, shuffle=True, random_state=0)
    folds = list(cv.split(embeddings, y))
    assert len(folds) == cv.get_n_splits() == 3
    for train, test in folds:
        for source in range(15):
            assert (source in test) == (45 + source in test)
        assert not set(train) & set(test)
    assert sorted(np.concatenate([test for _, test in folds]).tolist()) == list(range(60))
    assert len(np.unique(cv.groups_)) == 45


def test_without_near_duplicates_the_folds_are_stratified_group_kfold_with_one_image_a_group():
    rng = np.random.default_rng(0)
    embeddings, y = rng.normal(size=(30, 8)), np.tile([0, 1], 15)
    ours = list(NearDuplicateGroupKFold(3, shuffle=True, random_state=4).split(embeddings, y))
    plain = list(StratifiedGroupKFold(3, shuffle=True, random_state=4)
                 .split(embeddings, y, np.arange(30)))
    for (a, b), (c, d) in zip(ours, plain, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_groups_given_to_split_are_kept_together_as_well():
    embeddings, y = _copies()
    patients = np.arange(60) // 2  # rows 2k and 2k+1 are one patient
    cv = NearDuplicateGroupKFold(n_splits=3)
    for _, test in cv.split(embeddings, y, groups=patients):
        rows = set(test)
        assert all((2 * k in rows) == (2 * k + 1 in rows) for k in range(30))
        assert all((s in rows) == (45 + s in rows) for s in range(15))


def test_the_splitter_needs_no_groups_in_cross_val_score_and_grid_search():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(30, 24, 24), dtype=np.uint8)
    y = np.tile([0, 1, 2], 10)
    images[y == 1, :8] = 255
    images[24:] = images[:6]  # copies, same labels
    y[24:] = y[:6]
    cnn = PretrainedCNNFeatures(**FAST)
    pipe = Pipeline([("cnn", cnn), ("clf", LogisticRegression(max_iter=200))])
    cv = NearDuplicateGroupKFold(n_splits=3, estimator=cnn)
    scores = cross_val_score(pipe, images, y, cv=cv)
    assert scores.shape == (3,) and np.all(scores >= 0)
    search = GridSearchCV(pipe, {"clf__C": [0.1, 1.0]}, cv=cv).fit(images, y)
    assert search.n_splits_ == 3
    assert all(cv.groups_[k] == cv.groups_[24 + k] for k in range(6))


def test_the_splitter_shows_its_parameters_and_validates_them_in_split():
    cv = NearDuplicateGroupKFold(4, shuffle=True, random_state=3, threshold=0.1)
    assert "threshold=0.1" in repr(cv) and "n_splits=4" in repr(cv)
    with pytest.raises(InvalidParameterError):
        next(NearDuplicateGroupKFold(n_splits=1).split(np.eye(4)))
    with pytest.raises(ValueError, match="groups has 3 rows"):
        next(NearDuplicateGroupKFold(n_splits=2).split(np.eye(4), groups=[0, 1, 2]))


def test_nearest_neighbours_skip_the_row_itself_also_among_identical_rows_and_nan_rows():
    from skdeep.model_selection import nearest_neighbours

    vectors = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [np.nan, 1.0],
                        [0.0, 0.0]])
    found = nearest_neighbours(vectors, k=2)
    for row in range(4):
        assert row not in found.indices[row]
    assert sorted(found.indices[0]) == [1, 2] and sorted(found.indices[2]) == [0, 1]
    np.testing.assert_allclose(found.distances[:3], 0.0, atol=1e-12)
    assert (found.indices[4:] == -1).all() and np.isnan(found.distances[4:]).all()
