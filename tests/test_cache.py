"""FeatureCache: exact hit/miss accounting, lazy network, keys, concurrency, crashes, eviction."""

import pickle
import sqlite3
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
from PIL import Image
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from skdeep import BadImageWarning, FeatureCache, PretrainedCNNFeatures
from skdeep import backbones as backbones_module
from skdeep import _layers
from skdeep import cache as cache_module
from skdeep.cache import image_keys

pytestmark = pytest.mark.filterwarnings("error::UserWarning")


def cnn(cache, **params):
    return PretrainedCNNFeatures(**{"image_size": 32, "cache": cache, **params})


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (12, 20, 20, 3), dtype=np.uint8)


def test_second_transform_hits_every_image_and_builds_no_network(tmp_path, images, monkeypatch):
    cache = FeatureCache(tmp_path)
    first = cnn(cache).fit().transform(images)
    assert (cache.info().hits, cache.info().misses) == (0, 12)
    monkeypatch.setattr(backbones_module.Backbone, "build", _refuse)
    second = cnn(cache).fit().transform(images)  # a new estimator: fit and transform are lookups
    assert (cache.info().hits, cache.info().misses) == (12, 12)
    np.testing.assert_array_equal(first, second)


def test_cached_features_equal_uncached_ones(tmp_path, images):
    plain = cnn(None).fit().transform(images)
    cache = FeatureCache(tmp_path)
    cold = cnn(cache).fit().transform(images)
    warm = cnn(cache).fit().transform(images)
    np.testing.assert_array_equal(cold, plain)
    np.testing.assert_array_equal(warm, plain)


@pytest.mark.parametrize("change", [
    {"layer": "blocks.3"},
    {"pooling": "max"},
    {"image_size": 40},
    {"precision": "fp32"},
    {"backbone": "resnet18", "weights": None, "random_state": 0},
    {"backbone": "resnet18", "weights": None, "random_state": 1},
])
def test_anything_that_changes_the_numbers_misses(tmp_path, images, change):
    cache = FeatureCache(tmp_path)
    cnn(cache, precision="bf16", backbone="resnet18", weights=None, random_state=0).fit().transform(images)
    cnn(cache, precision="bf16").fit().transform(images)
    before = cache.info()
    cnn(cache, **{"precision": "bf16", **change}).fit().transform(images)
    after = cache.info()
    expected_hits = 12 if change == {"backbone": "resnet18", "weights": None, "random_state": 0} else 0
    assert after.hits - before.hits == expected_hits
    assert after.misses - before.misses == 12 - expected_hits


def test_one_pixel_changes_the_key(tmp_path, images):
    cache = FeatureCache(tmp_path)
    cnn(cache).fit().transform(images)
    edited = images.copy()
    edited[3, 0, 0, 0] ^= 1
    cnn(cache).fit().transform(edited)
    assert cache.info().misses == 12 + 1


def test_files_are_keyed_by_content(tmp_path, images):
    paths = []
    for i, image in enumerate(images[:4]):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(image).save(paths[-1])
    cache = FeatureCache(tmp_path / "cache")
    cnn(cache).fit().transform([str(p) for p in paths])
    moved = [p.rename(p.with_name(f"moved-{p.name}")) for p in paths]
    cnn(cache).fit().transform(moved)  # a moved file is the same image
    assert (cache.info().hits, cache.info().misses) == (4, 4)
    Image.fromarray(images[5]).save(moved[0])  # an edited file is a new image
    cnn(cache).fit().transform([moved[0]])
    assert cache.info().misses == 5
    as_bytes = [p.read_bytes() for p in moved[1:]]
    cnn(cache).fit().transform(as_bytes)  # the same encoded bytes as the files
    assert cache.info().hits == 7


def test_cache_layers_make_a_layer_grid_cost_one_pass_per_image(tmp_path, labelled_images,
                                                                  monkeypatch):
    images, labels = labelled_images
    forwarded = []
    original = _layers.FeatureExtractor.forward
    monkeypatch.setattr(_layers.FeatureExtractor, "forward",
                        lambda self, x: forwarded.append(len(x)) or original(self, x))
    pipe = Pipeline([
        ("cnn", cnn(FeatureCache(tmp_path), cache_layers=["blocks.2", "penultimate"])),
        ("svm", SVC()),
    ])
    grid = GridSearchCV(pipe, {"cnn__layer": ["blocks.2", "penultimate"], "svm__C": [1, 10]}, cv=2)
    grid.fit(images, labels)
    assert sum(forwarded) == len(images)
    assert grid.best_score_ > 0.9


def test_unreadable_rows_are_not_cached(tmp_path, images):
    good = tmp_path / "good.png"
    Image.fromarray(images[0]).save(good)
    cache = FeatureCache(tmp_path / "cache")
    X = [str(good), str(tmp_path / "missing.png")]
    with pytest.warns(BadImageWarning, match="missing.png"):
        rows = cnn(cache, on_error="nan").fit().transform(X)
    assert np.isfinite(rows[0]).all() and np.isnan(rows[1]).all()
    assert cache.info().entries == 1
    (tmp_path / "missing.png").write_bytes(good.read_bytes())  # the file appears later
    rows = cnn(cache, on_error="nan").fit().transform(X)
    np.testing.assert_array_equal(rows[0], rows[1])


def test_cache_survives_a_new_python_process(tmp_path, images):
    np.save(tmp_path / "images.npy", images)
    script = f"""
        import numpy as np
        from skdeep import FeatureCache, PretrainedCNNFeatures
        images = np.load({str(tmp_path / 'images.npy')!r})
        cache = FeatureCache({str(tmp_path / 'cache')!r})
        PretrainedCNNFeatures(image_size=32, cache=cache).fit().transform(images)
        assert cache.info().misses == 12, cache.info()
    """
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True)
    cache = FeatureCache(tmp_path / "cache")
    cnn(cache).fit().transform(images)
    assert (cache.info().hits, cache.info().misses) == (12, 0)


def test_two_processes_writing_at_once_neither_corrupt_nor_lose_entries(tmp_path, images):
    np.save(tmp_path / "images.npy", images)
    script = f"""
        import sys
        import numpy as np
        from skdeep import PretrainedCNNFeatures
        images = np.load({str(tmp_path / 'images.npy')!r})
        rows = PretrainedCNNFeatures(image_size=32, batch_size=2, cache={str(tmp_path / 'cache')!r},
                                     cache_layers=["blocks.1"]).fit().transform(images)
        np.save(sys.argv[1], rows)
    """
    workers = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(script),
                                 str(tmp_path / f"out{i}.npy")]) for i in range(2)]
    assert [worker.wait(timeout=300) for worker in workers] == [0, 0]
    expected = cnn(None).fit().transform(images)
    for i in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"out{i}.npy"), expected)
    with sqlite3.connect(tmp_path / "cache" / "features.sqlite") as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert FeatureCache(tmp_path / "cache").info().entries == 12 * 2


class _Contended:
    """A connection whose journal-mode switch meets another process's lock ``busy`` times: what
    SQLite answers at once (no busy handler) when two processes open a new cache together."""

    def __init__(self, busy: int, error: str = "database is locked") -> None:
        self.busy, self.error, self.calls = busy, error, 0

    def execute(self, sql: str):
        self.calls += 1
        if self.calls <= self.busy:
            raise sqlite3.OperationalError(self.error)


def test_opening_a_cache_waits_while_another_process_holds_the_lock():
    # CI once saw "database is locked" from PRAGMA journal_mode=WAL when two processes opened
    # one new cache at once (test_two_processes_writing_at_once...): the switch is retried.
    connection = _Contended(busy=3)
    cache_module._switch_to_wal(connection)
    assert connection.calls == 4


def test_a_damaged_database_is_not_retried_as_if_it_were_locked():
    connection = _Contended(busy=1, error="file is not a database")
    with pytest.raises(sqlite3.OperationalError, match="not a database"):
        cache_module._switch_to_wal(connection)
    assert connection.calls == 1


def test_grid_search_with_two_processes_shares_the_cache(tmp_path, labelled_images):
    images, labels = labelled_images
    pipe = Pipeline([("cnn", cnn(str(tmp_path))), ("svm", SVC())])
    serial = GridSearchCV(pipe, {"svm__C": [0.1, 10]}, cv=2).fit(images, labels)
    parallel = GridSearchCV(pipe, {"svm__C": [0.1, 10]}, cv=2, n_jobs=2).fit(images, labels)
    assert parallel.best_score_ == serial.best_score_
    assert FeatureCache(tmp_path).info().entries == len(images)


def test_a_crash_mid_write_leaves_no_entry_behind(tmp_path):
    FeatureCache(tmp_path).put("layer", {"warm": np.ones(3, np.float32)})
    script = f"""
        import os
        import numpy as np
        from skdeep import FeatureCache
        cache = FeatureCache({str(tmp_path)!r})
        connection = cache._connection()
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("INSERT INTO features VALUES ('layer', 'half', x'00', 12, 0)")
        os._exit(1)  # the process dies before COMMIT
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(script)])
    assert result.returncode == 1
    cache = FeatureCache(tmp_path)
    assert cache.get("layer", ["warm", "half"], width=3).keys() == {"warm"}
    assert cache.info().entries == 1


def test_an_entry_of_the_wrong_size_is_a_miss(tmp_path):
    cache = FeatureCache(tmp_path)
    cache.put("layer", {"image": np.ones(5, np.float32)})
    assert cache.get("layer", ["image"], width=4) == {}


def test_clear_size_and_eviction(tmp_path):
    cache = FeatureCache(tmp_path, max_bytes=4 * 100 * 3)
    for i in range(5):
        cache.put("layer", {f"image{i}": np.full(100, i, np.float32)})
    assert cache.info().entries == 3  # the two least recently used went first
    assert set(cache.get("layer", [f"image{i}" for i in range(5)], width=100)) == {
        "image2", "image3", "image4"}
    assert cache.size_bytes() > 0
    cache.clear()
    info = cache.info()
    assert (info.entries, info.hits, info.misses) == (0, 0, 0)


def test_clones_share_the_cache_and_pickles_reopen_it(tmp_path, images):
    cache = FeatureCache(tmp_path)
    estimator = cnn(cache)
    assert clone(estimator).cache is cache
    fitted = estimator.fit()
    fitted.transform(images)
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.transform(images), fitted.transform(images))
    assert restored.cache.path == cache.path
    assert restored.cache_info().hits == 12


def test_unseeded_random_weights_are_not_cached(tmp_path, images):
    with pytest.warns(UserWarning, match="cache is ignored"):
        estimator = cnn(FeatureCache(tmp_path), backbone="resnet18", weights=None).fit()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator.transform(images)
    assert FeatureCache(tmp_path).info().entries == 0


def test_a_directory_path_is_accepted(tmp_path, images):
    cnn(str(tmp_path)).fit().transform(images)
    assert cnn(str(tmp_path)).fit().cache_info().entries == 12
    assert cnn(None).fit().cache_info() is None


def _refuse(*args, **kwargs):
    raise AssertionError("the network must not be built")


def test_the_key_of_an_eps_pil_image_never_runs_ghostscript(monkeypatch):
    # The key of a PIL image reads its pixels: it must load it as decoding does, which refuses
    # EPS (Pillow renders it by running Ghostscript, an external program, on untrusted bytes).
    import io

    from PIL import EpsImagePlugin

    ran = []

    def ghostscript(*args, **kwargs):
        ran.append(args)
        raise OSError("Ghostscript must not run")

    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", ghostscript)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\nshowpage\n"
    image = Image.open(io.BytesIO(eps), formats=["EPS"])
    assert image.format == "EPS"
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    keys = image_keys([image, Image.open(io.BytesIO(png.getvalue()))])
    assert keys[0] is None and keys[1] is not None  # refused, left to the error path
    assert ran == []
