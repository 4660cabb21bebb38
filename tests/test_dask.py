"""skdeep.dask: the same estimators over a Dask cluster, one network per worker.

One module-scoped LocalCluster (2 worker processes, 1 thread each, loopback only) serves every
test; the worker-death test runs last because it restarts a worker.
"""

import os
import pickle
import re
import sys
import types
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

distributed = pytest.importorskip("distributed", reason="skdeep.dask needs: pip install 'skdeep[dask]'")
dd = pytest.importorskip("dask.dataframe")
da = pytest.importorskip("dask.array")

import cloudpickle  # noqa: E402 - dask[distributed] depends on it
import joblib  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.exceptions import NotFittedError  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

import skdeep.dask as skdask  # noqa: E402
from skdeep import BadImageError, BadImageWarning, PretrainedCNNFeatures  # noqa: E402

# Helpers defined here run on the workers: ship them by value rather than by module name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

N_IMAGES = 24
PARAMS = {"backbone": "resnet18", "weights": None, "random_state": 0, "image_size": 32,
          "precision": "fp32", "batch_size": 4}
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}  # other thread counts and batch boundaries


def cnn(**params):
    return PretrainedCNNFeatures(**{**PARAMS, **params})


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
        dashboard_address=None, memory_limit="4GiB",
    )
    with cluster, distributed.Client(cluster) as client:
        client.wait_for_workers(2)
        yield client


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16]
    base = np.stack([xx * 12, yy * 12, (xx + yy) * 6], axis=-1)
    return np.asarray([(base * (i + 1) / 7 + rng.integers(0, 50, base.shape)) % 256
                       for i in range(N_IMAGES)], dtype=np.uint8)


@pytest.fixture(scope="module")
def paths(images, tmp_path_factory):
    folder = tmp_path_factory.mktemp("images")
    written = []
    for i, image in enumerate(images):
        path = folder / f"img_{i:02d}.png"
        Image.fromarray(image).save(path)
        written.append(str(path))
    return written


@pytest.fixture(scope="module")
def fitted():
    return cnn().fit()


@pytest.fixture(scope="module")
def expected(fitted, images):
    return fitted.transform(images)


# --- results equal the in-process transform ------------------------------------------------------


@pytest.mark.parametrize("as_frame", [False, True], ids=["series", "one-column-frame"])
def test_paths_give_the_in_process_rows_with_index_and_names(client, fitted, paths, expected,
                                                             as_frame):
    index = pd.Index([f"id{i}" for i in range(N_IMAGES)], name="image_id")
    frame = pd.DataFrame({"path": paths}, index=index)
    X = dd.from_pandas(frame if as_frame else frame["path"], npartitions=3, sort=False)

    lazy = skdask.transform(fitted, X)
    assert lazy.npartitions == X.npartitions
    assert list(lazy.columns) == list(fitted.get_feature_names_out())
    assert (lazy.dtypes == np.float32).all()
    result = lazy.compute()

    assert result.index.equals(index)  # row for row, in order, nothing duplicated or missing
    assert list(result.columns) == list(fitted.get_feature_names_out())
    assert (result.dtypes == np.float32).all()
    np.testing.assert_allclose(result.to_numpy(), expected, **TOLERANCE)
    partition_lengths = X.map_partitions(len).compute().tolist()
    assert lazy.map_partitions(len).compute().tolist() == partition_lengths


def test_image_arrays_give_the_in_process_rows(client, fitted, images, expected):
    X = da.from_array(images, chunks=(8, 8, 16, 3))  # also chunked across pixels: rechunked

    lazy = skdask.transform(fitted, X)
    assert lazy.shape == (N_IMAGES, fitted.n_features_out_)
    assert lazy.dtype == np.float32
    assert lazy.chunks[0] == X.chunks[0]
    result = lazy.compute()

    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, **TOLERANCE)


def test_arrays_of_paths_and_in_process_schedulers(client, fitted, paths, expected):
    X = da.from_array(np.asarray(paths, dtype=object), chunks=10)
    np.testing.assert_allclose(skdask.transform(fitted, X).compute(), expected, **TOLERANCE)
    for scheduler in ("sync", "threads"):  # no worker: the registry lives in this process
        result = skdask.transform(fitted, X).compute(scheduler=scheduler)
        np.testing.assert_allclose(result, expected, **TOLERANCE)


def test_an_unfitted_estimator_is_fitted_on_a_clone(client, images, expected):
    unfitted = cnn()
    lazy = skdask.transform(unfitted, da.from_array(images, chunks=12))
    with pytest.raises(NotFittedError):
        unfitted.get_feature_names_out()  # the caller's estimator is left as it was
    np.testing.assert_allclose(lazy.compute(), expected, **TOLERANCE)


def test_a_fitted_pipeline_runs_with_its_feature_names(client, images, paths):
    pipeline = Pipeline([("cnn", cnn()), ("pca", PCA(n_components=3, random_state=0))])
    pipeline.fit(images)
    X = dd.from_pandas(pd.Series(paths, name="path"), npartitions=2)
    lazy = skdask.transform(pipeline, X)
    assert list(lazy.columns) == ["pca0", "pca1", "pca2"]
    result = lazy.compute()
    assert list(result.columns) == ["pca0", "pca1", "pca2"]
    np.testing.assert_allclose(result.to_numpy(), pipeline.transform(images), rtol=1e-3, atol=1e-4)


def test_wrong_inputs_fail_on_the_client(fitted, images):
    with pytest.raises(TypeError, match="dask DataFrame, Series or Array"):
        skdask.transform(fitted, images)
    frame = dd.from_pandas(pd.DataFrame({"a": ["x"], "b": ["y"]}), npartitions=1)
    with pytest.raises(ValueError, match="2 columns"):
        skdask.transform(fitted, frame)
    with pytest.raises(ValueError, match="shape"):
        skdask.transform(fitted, da.zeros((4, 16), chunks=2))
    with pytest.raises(NotFittedError, match="fit it first"):
        skdask.transform(Pipeline([("pca", PCA())]), da.zeros((4, 16, 16), chunks=2))


# --- one network per worker, threads per worker ---------------------------------------------------


def _count_backbone_builds():
    """On a worker: wrap Backbone.build so that every network construction is counted."""
    from skdeep import backbones

    original = backbones.Backbone.build
    counter = types.SimpleNamespace(calls=0)

    def counting_build(self, *args, **kwargs):
        counter.calls += 1
        return original(self, *args, **kwargs)

    backbones.Backbone.build = counting_build
    backbones._test_build_counter = (counter, original)


def _backbone_builds_and_restore():
    from skdeep import backbones

    counter, original = backbones.__dict__.pop("_test_build_counter")
    backbones.Backbone.build = original
    return counter.calls


def test_the_network_is_built_at_most_once_per_worker(client, paths, images):
    estimator = cnn(on_error="nan").fit()  # a key no other test used
    skdask.release_models(client)
    assert set(skdask.build_counts(client).values()) == {0}
    client.run(_count_backbone_builds)
    try:
        series = dd.from_pandas(pd.Series(paths), npartitions=6)
        array = da.from_array(images, chunks=4)
        for _ in range(2):  # two computations, 12 partitions each time
            skdask.transform(estimator, series).compute()
            skdask.transform(estimator, array).compute()
    finally:
        independent = client.run(_backbone_builds_and_restore)
    counts = skdask.build_counts(client)
    assert counts == independent  # skdeep's counter agrees with counting Backbone.build itself
    assert all(count <= 1 for count in counts.values()), counts
    assert sum(counts.values()) >= 1


@pytest.mark.parametrize("kind", ["series", "array"])
def test_the_estimator_enters_the_graph_once(fitted, paths, images, kind):
    X = (dd.from_pandas(pd.Series(paths), npartitions=6) if kind == "series"
         else da.from_array(images, chunks=4))
    graph = dict(skdask.transform(fitted, X).__dask_graph__())

    def name(key):
        return key[0] if isinstance(key, tuple) else key

    estimator_keys = {key for key in graph if name(key).startswith("skdeep-estimator-")}
    tasks = [task for key, task in graph.items() if name(key).startswith("skdeep-transform-")]
    assert len(estimator_keys) == 1 and len(tasks) == 6
    assert all(estimator_keys <= set(task.dependencies) for task in tasks)  # shipped by reference


def test_sending_the_estimator_to_another_worker_keeps_the_network(fitted, images):
    shipped = pickle.loads(pickle.dumps(fitted))  # the estimator as a worker holds it
    skdask.release_models()
    skdask._run("some-key", shipped, images[:4])
    pickle.dumps(shipped)  # the worker sends it to another worker that needs it
    skdask._run("some-key", shipped, images[4:8], first=4)
    assert skdask._build_count() == 1
    skdask.release_models()


def test_torch_threads_follow_the_worker_thread_count(monkeypatch):
    assert skdask._worker_threads() is None  # in this process: torch is left alone
    worker = types.SimpleNamespace(state=types.SimpleNamespace(nthreads=1))
    monkeypatch.setattr(skdask, "_current_worker", lambda: worker)
    assert skdask._worker_threads() == 1
    worker.state.nthreads = 10_000
    assert skdask._worker_threads() == len(os.sched_getaffinity(0))


def test_models_per_worker_are_bounded(client, images):
    import dask

    skdask.release_models()
    with dask.config.set({skdask.MODELS_PER_WORKER_CONFIG: 1}):
        for pooling in ("avg", "max"):
            skdask.transform(cnn(pooling=pooling), da.from_array(images, chunks=12)).compute(
                scheduler="sync")
    assert len(skdask._models) == 1
    skdask.release_models()
    assert len(skdask._models) == 0 and skdask._build_count() == 0


def test_a_warm_feature_cache_on_shared_storage_builds_no_network(client, paths, expected, tmp_path):
    if "cache" not in PretrainedCNNFeatures().get_params():
        pytest.skip("PretrainedCNNFeatures has no feature cache in this version")
    estimator = cnn(cache=str(tmp_path / "features")).fit()
    X = dd.from_pandas(pd.Series(paths), npartitions=4)
    skdask.release_models(client)
    cold = skdask.transform(estimator, X).compute()
    assert 1 <= sum(skdask.build_counts(client).values()) <= 2
    skdask.release_models(client)  # the workers forget their networks; the cache stays on disk
    warm = skdask.transform(estimator, X).compute()
    assert set(skdask.build_counts(client).values()) == {0}
    np.testing.assert_allclose(cold.to_numpy(), expected, **TOLERANCE)
    np.testing.assert_array_equal(warm.to_numpy(), cold.to_numpy())


# --- grid search through the dask joblib backend ---------------------------------------------------


def test_grid_search_and_cross_val_score_on_the_dask_backend(client):
    rng = np.random.default_rng(1)
    labels = np.arange(24) % 2
    X = rng.integers(0, 200, (24, 16, 16, 3)).astype(np.uint8)
    X[labels == 1] += np.uint8(10)  # a weak signal: candidates score differently
    pipeline = Pipeline([("cnn", cnn()), ("clf", LogisticRegression(max_iter=500))])
    grid = {"cnn__pooling": ["avg", "max"], "clf__C": [1e-4, 1.0]}

    local = GridSearchCV(pipeline, grid, cv=3).fit(X, labels)
    local_scores = cross_val_score(pipeline, X, labels, cv=3)
    with joblib.parallel_backend("dask"):
        remote = GridSearchCV(pipeline, grid, cv=3, n_jobs=-1).fit(X, labels)
        remote_scores = cross_val_score(pipeline, X, labels, cv=3, n_jobs=-1)

    assert remote.best_params_ == local.best_params_
    np.testing.assert_allclose(remote.cv_results_["mean_test_score"],
                               local.cv_results_["mean_test_score"])
    np.testing.assert_allclose(remote_scores, local_scores)
    assert len(set(local.cv_results_["mean_test_score"])) > 1  # the grid does discriminate


# --- bad images follow on_error as in memory ---------------------------------------------------------


@pytest.fixture(scope="module")
def bad_paths(paths, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with_bad = list(paths[:12])
    with_bad[5] = str(folder / "missing.png")
    with_bad[9] = str(corrupt)
    return with_bad


def test_on_error_nan_gives_the_in_process_nan_rows_and_reports_them(client, bad_paths):
    estimator = cnn(on_error="nan").fit()
    with pytest.warns(BadImageWarning):
        expected = estimator.transform(bad_paths)
    result = skdask.transform(estimator, dd.from_pandas(pd.Series(bad_paths), npartitions=3))
    result = result.compute().to_numpy()
    assert np.isnan(result).all(axis=1).tolist() == np.isnan(expected).all(axis=1).tolist()
    assert np.isnan(result).any(axis=1).sum() == 2
    np.testing.assert_allclose(result, expected, **TOLERANCE)  # NaN where NaN, equal elsewhere
    events = " ".join(message["message"] for _, message in client.get_events(skdask.BAD_IMAGES_TOPIC))
    assert "missing.png" in events and "corrupt.png" in events


def test_on_error_nan_warns_in_process_schedulers_with_global_rows(bad_paths):
    estimator = cnn(on_error="nan").fit()
    X = da.from_array(np.asarray(bad_paths, dtype=object), chunks=4)  # rows 5, 9: blocks 1, 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skdask.transform(estimator, X).compute(scheduler="sync")
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, BadImageWarning))
    assert len(messages) == 2
    assert re.search(r"row 5\b.*missing\.png", messages[0])
    assert re.search(r"row 9\b.*corrupt\.png", messages[1])
    # the structured attributes are global too, and keep the paths
    found = sorted((w.message.rows, w.message.paths) for w in caught
                   if issubclass(w.category, BadImageWarning))
    assert found == [([5], [bad_paths[5]]), ([9], [bad_paths[9]])]
    # and each row's reason, which the CLI prints a line each, names the global row as well
    reasons = sorted(w.message.reasons for w in caught if issubclass(w.category, BadImageWarning))
    assert [len(r) for r in reasons] == [1, 1]
    assert reasons[0][0].startswith("row 5:") and reasons[1][0].startswith("row 9:")


def test_rows_read_in_dataloader_workers_keep_global_names(bad_paths):
    # The corrupt file is found while decoding, in a DataLoader worker process: its message is
    # made there, from the dataset the worker received, and must name the row globally too.
    estimator = cnn(on_error="nan", num_workers=1).fit()
    X = da.from_array(np.asarray(bad_paths, dtype=object), chunks=4)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        skdask.transform(estimator, X).compute(scheduler="sync")
    reasons = [reason for w in caught if issubclass(w.category, BadImageWarning)
               for reason in w.message.reasons]
    assert any(reason.startswith("row 9:") and "corrupt.png" in reason for reason in reasons)


@pytest.mark.parametrize("bad_row", [5, 9], ids=["missing", "corrupt"])
def test_on_error_raise_names_the_row_and_path(client, fitted, paths, bad_paths, bad_row):
    one_bad = list(paths[:12])
    one_bad[bad_row] = bad_paths[bad_row]
    name = os.path.basename(bad_paths[bad_row]).replace(".", r"\.")
    error = FileNotFoundError if bad_row == 5 else BadImageError
    with pytest.raises(error, match=rf"row {bad_row}\b.*{name}") as in_memory:
        fitted.transform(one_bad)
    assert _crosses_the_wire(in_memory.value)  # the client receives the same error type
    seen = error

    X = da.from_array(np.asarray(one_bad, dtype=object), chunks=4)
    with pytest.raises(seen, match=rf"row {bad_row}\b.*{name}") as on_cluster:
        skdask.transform(fitted, X).compute()
    assert (on_cluster.value.rows, on_cluster.value.paths) == ([bad_row], [one_bad[bad_row]])
    X = dd.from_pandas(pd.Series(one_bad), npartitions=3)  # 4 rows per partition
    where = rf"row {bad_row % 4} of partition {bad_row // 4} \(index [^)]*\b{bad_row}\b"
    with pytest.raises(seen, match=rf"{where}.*{name}"):
        skdask.transform(fitted, X).compute()


def _crosses_the_wire(error):
    """Whether ``error`` reaches the client as itself (workers send errors through tblib)."""
    import tblib.pickling_support
    from distributed.protocol import pickle as wire

    tblib.pickling_support.install(error)  # as distributed.core.error_message does
    try:
        return type(wire.loads(wire.dumps(error))) is type(error)
    except Exception:
        return False


def test_bad_pixel_values_raise_with_the_global_row(client, fitted, images):
    floats = images.astype(np.float32) / 255
    floats[13] *= 3  # outside [0, 1]
    with pytest.raises(ValueError, match=r"row 13\b") as in_process:
        fitted.transform(floats)
    with pytest.raises(ValueError, match=r"row 13\b") as on_cluster:
        skdask.transform(fitted, da.from_array(floats, chunks=5)).compute()
    assert str(on_cluster.value).split("(row")[1] == str(in_process.value).split("(row")[1]


# --- a worker dying mid-partition ----------------------------------------------------------------------


class DiesOnce(PretrainedCNNFeatures):
    """Kills its worker process the first time it sees the victim path (a marker file says so)."""

    def transform(self, X):
        rows = super().transform(X)  # the partition is computed (and cached) ... then the worker dies
        if self.victim in list(np.asarray(X)) and _first_time(self.marker):
            os._exit(1)
        return rows


def _first_time(marker):
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def test_a_worker_dying_mid_partition_still_gives_every_row_once(client, paths, tmp_path, expected):
    params = {**PARAMS}
    if "cache" in PretrainedCNNFeatures().get_params():  # the feature cache survives the death too
        params["cache"] = str(tmp_path / "cache")
    estimator = DiesOnce(**params).fit()
    estimator.victim, estimator.marker = paths[13], str(tmp_path / "died")
    X = dd.from_pandas(pd.Series(paths, name="path"), npartitions=6)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the scheduler's log of the lost worker
        result = skdask.transform(estimator, X).compute()

    assert os.path.exists(estimator.marker)  # a worker did die in the middle of a partition
    assert result.index.equals(pd.RangeIndex(N_IMAGES))
    np.testing.assert_allclose(result.to_numpy(), expected, **TOLERANCE)
    client.wait_for_workers(2, timeout=60)  # its nanny restarted it
