"""skdeep.datasets: the bundled Fashion-MNIST sample, folders of images, tables of paths."""

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from skdeep.datasets import (
    FASHION_MNIST_CLASSES,
    RESOLVED_PATH_COLUMN,
    read_image_table,
    find_images,
    load_fashion_sample,
    load_image_folder,
)


def _png(path, value=128, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)
    return path


# --- load_fashion_sample -----------------------------------------------------------------------


def test_fashion_sample_bunch():
    sample = load_fashion_sample()
    assert sample.images.shape == (1000, 28, 28) and sample.images.dtype == np.uint8
    assert sample.target.shape == (1000,) and sample.target.dtype == np.int64
    assert np.bincount(sample.target).tolist() == [100] * 10
    assert sample.target_names.tolist() == list(FASHION_MNIST_CLASSES)
    assert sample.target_names[0] == "T-shirt/top" and sample.target_names[9] == "Ankle boot"
    np.testing.assert_array_equal(sample.data, sample.images.reshape(1000, 784))
    assert sample.frame is None
    # provenance: positions in the 10,000-image test set, increasing (original order kept)
    assert np.all(np.diff(sample.source_index) > 0)
    assert 0 <= sample.source_index.min() and sample.source_index.max() < 10_000
    # real images, not blanks: ink on a dark background
    assert sample.images.mean() > 30 and (sample.images == 0).mean() > 0.3


def test_fashion_sample_descr_carries_the_license():
    descr = load_fashion_sample().DESCR
    assert "Zalando SE" in descr and "MIT License" in descr
    assert "Permission is hereby granted" in descr
    assert "Fashion-MNIST" in descr and "1,000" in descr


def test_fashion_sample_as_frame():
    sample = load_fashion_sample(as_frame=True)
    frame = sample.frame
    assert list(frame.columns) == ["image", "label"] and len(frame) == 1000
    assert isinstance(frame["label"].dtype, pd.CategoricalDtype)
    assert list(frame["label"].cat.categories) == list(FASHION_MNIST_CLASSES)
    np.testing.assert_array_equal(frame["image"][7], sample.images[7])
    assert frame["label"][7] == sample.target_names[sample.target[7]]


def test_fashion_sample_return_X_y():
    images, target = load_fashion_sample(return_X_y=True)
    assert images.shape == (1000, 28, 28) and target.shape == (1000,)
    X, y = load_fashion_sample(as_frame=True, return_X_y=True)
    assert isinstance(X, pd.Series) and isinstance(y, pd.Series)
    assert X.name == "image" and y.name == "label"
    np.testing.assert_array_equal(X[3], images[3])
    assert y.value_counts().tolist() == [100] * 10


def test_fashion_sample_feeds_the_transformer():
    from skdeep import PretrainedCNNFeatures

    X, _ = load_fashion_sample(as_frame=True, return_X_y=True)
    features = PretrainedCNNFeatures(image_size=32, layer="blocks.1").fit().transform(X[:3])
    assert features.shape == (3, 24) and np.isfinite(features).all()


# --- find_images / load_image_folder -----------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "photos"
    _png(root / "dog" / "b.png")
    _png(root / "dog" / "a.PNG")
    _png(root / "dog" / "nested" / "deeper" / "c.jpg")
    _png(root / "cat" / "z.png")
    _png(root / "cat" / ".hidden.png")
    _png(root / "cat" / ".cache" / "thumb.png")
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def test_load_image_folder_lists_classes_sorted(folder):
    frame = load_image_folder(folder)
    assert list(frame.columns) == ["path", "label"]
    relative = [os.path.relpath(p, folder).replace(os.sep, "/") for p in frame["path"]]
    assert relative == ["cat/z.png", "dog/a.PNG", "dog/b.png", "dog/nested/deeper/c.jpg"]
    assert frame["label"].tolist() == ["cat", "dog", "dog", "dog"]
    assert all(os.path.isfile(p) for p in frame["path"])


def test_load_image_folder_keeps_paths_as_given(folder, monkeypatch):
    monkeypatch.chdir(folder.parent)
    frame = load_image_folder("photos")
    assert frame["path"][0] == os.path.join("photos", "cat", "z.png")


def test_load_image_folder_is_deterministic(folder):
    pd.testing.assert_frame_equal(load_image_folder(folder), load_image_folder(str(folder)))


def test_load_image_folder_extensions(folder):
    with pytest.warns(UserWarning, match="'cat'.*hold no image"):  # no .jpg in cat/
        frame = load_image_folder(folder, extensions=["jpg"])
    assert frame["label"].tolist() == ["dog"]
    with pytest.warns(UserWarning, match="'cat'.*hold no image"):
        assert len(load_image_folder(folder, extensions=(".JPG",))) == 1
    with pytest.raises(ValueError, match="extensions"):
        load_image_folder(folder, extensions=[""])


def test_load_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="folder not found"):
        load_image_folder(tmp_path / "missing")
    image = _png(tmp_path / "one.png")
    with pytest.raises(NotADirectoryError, match="is a file"):
        load_image_folder(image)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="is empty"):
        load_image_folder(empty)
    flat = tmp_path / "flat"
    _png(flat / "1.png")
    _png(flat / "2.png")
    with pytest.raises(ValueError, match="2 image.*no class subfolders.*find_images"):
        load_image_folder(flat)
    no_images = tmp_path / "no_images"
    (no_images / "a").mkdir(parents=True)
    (no_images / "a" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match=r"class subfolders \['a'\] but none holds an image"):
        load_image_folder(no_images)


def test_load_image_folder_warns_about_loose_images(folder):
    _png(folder / "stray.png")
    with pytest.warns(UserWarning, match="1 image.*belong to no class folder.*stray.png"):
        frame = load_image_folder(folder)
    assert len(frame) == 4


def test_load_image_folder_no_warning_when_clean(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_image_folder(folder)


def test_find_images_recursive_and_sorted(folder):
    found = [os.path.relpath(p, folder).replace(os.sep, "/") for p in find_images(folder)]
    assert found == ["cat/z.png", "dog/a.PNG", "dog/b.png", "dog/nested/deeper/c.jpg"]
    assert find_images(folder / "dog" / "nested") == [
        os.path.join(str(folder / "dog" / "nested"), "deeper", "c.jpg")
    ]
    with pytest.raises(FileNotFoundError):
        find_images(folder / "nope")


# --- tables of paths ---------------------------------------------------------------------------


def test_read_image_table_csv_resolves_next_to_the_table(folder, tmp_path, monkeypatch):
    table = folder / "index.csv"
    pd.DataFrame({"file": ["cat/z.png", "dog/b.png"], "kind": ["c", "d"]}).to_csv(table, index=False)
    monkeypatch.chdir(tmp_path)  # elsewhere: relative paths are found next to the table
    read = read_image_table(table, path_column="file", label_column="kind")
    assert read["file"].tolist() == ["cat/z.png", "dog/b.png"]  # as written, for joining back
    assert all(os.path.isfile(f) for f in read[RESOLVED_PATH_COLUMN])
    assert read["kind"].tolist() == ["c", "d"]


def test_read_image_table_falls_back_to_the_current_folder(folder, tmp_path, monkeypatch):
    tables = tmp_path / "tables"
    tables.mkdir()
    pd.DataFrame({"path": ["photos/cat/z.png"]}).to_csv(tables / "t.csv", index=False)
    monkeypatch.chdir(tmp_path)
    assert read_image_table(tables / "t.csv")[RESOLVED_PATH_COLUMN].tolist() == ["photos/cat/z.png"]


def test_read_image_table_parquet(folder):
    pytest.importorskip("pyarrow")
    table = folder / "index.parquet"
    pd.DataFrame({"path": [str(folder / "cat" / "z.png")], "label": ["cat"]}).to_parquet(table)
    read = read_image_table(table, label_column="label")
    assert read[RESOLVED_PATH_COLUMN].tolist() == [str(folder / "cat" / "z.png")]


def test_read_image_table_keeps_the_users_columns_and_adds_one(folder):
    table = folder / "index.csv"
    pd.DataFrame({"file": ["0001.png", "cat/z.png"], "sku": ["0001", "0002"], "price": [9.5, 3.0],
                  "species": ["c", "d"], "path": ["a user's own path", "column"]}
                 ).to_csv(table, index=False)
    read = read_image_table(table, path_column="file", label_column="species")
    assert list(read.columns) == ["file", "sku", "price", "species", "path", RESOLVED_PATH_COLUMN]
    assert read["file"].tolist() == ["0001.png", "cat/z.png"]  # text, as written
    assert read["price"].tolist() == [9.5, 3.0] and read["species"].tolist() == ["c", "d"]
    assert read["path"].tolist() == ["a user's own path", "column"]  # unchanged meaning
    assert read[RESOLVED_PATH_COLUMN].tolist() == [str(folder / "0001.png"),
                                                   str(folder / "cat" / "z.png")]
    pd.DataFrame({"path": ["a.png"], RESOLVED_PATH_COLUMN: ["b.png"]}).to_csv(table, index=False)
    with pytest.raises(ValueError, match="already has a column 'resolved_path'.*rename it"):
        read_image_table(table)


def test_read_image_table_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="table not found"):
        read_image_table(tmp_path / "none.csv")
    table = tmp_path / "t.csv"
    pd.DataFrame({"filename": ["a.png"]}).to_csv(table, index=False)
    with pytest.raises(ValueError, match="no column 'path'.*'filename'.*--path-column"):
        read_image_table(table)
    with pytest.raises(ValueError, match="no column 'label'.*--label-column"):
        read_image_table(table, path_column="filename", label_column="label")
    pd.DataFrame({"path": ["a.png", None], "label": ["x", "y"]}).to_csv(table, index=False)
    with pytest.raises(ValueError, match=r"column 'path' is empty in rows \[1\]"):
        read_image_table(table, label_column="label")
    other = tmp_path / "t.json"
    other.write_text("{}")
    with pytest.raises(ValueError, match="neither a folder nor a table"):
        read_image_table(other)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="cannot read"):
        read_image_table(empty)
