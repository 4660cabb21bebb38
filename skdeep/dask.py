"""Scale-out on Dask: the same fitted estimators over a cluster, one model load per worker.

:func:`transform` runs a fitted (or, for :class:`~skdeep.PretrainedCNNFeatures`, unfitted)
transformer over a Dask collection of images and returns a Dask collection of embeddings,
partition-aligned with the input. Nothing else changes in the user's pipeline: the estimator is
the one used in memory, and ``GridSearchCV`` / ``cross_val_score`` use a cluster through
``joblib.parallel_backend("dask")`` as they would any joblib backend.

How the work is laid out on the cluster:

- The fitted estimator pickles small (its network is rebuilt from ``backbone_``, not shipped), and
  enters the task graph ONCE, as a single key that every partition task depends on: each worker
  receives it once per computation, not once per task.
- Each worker process keeps a small registry of ready estimators keyed by a fingerprint of the
  fitted estimator (:func:`dask.base.tokenize`). The first partition on a worker builds the network;
  every later partition, in this computation and the next ones, reuses it.
  :func:`build_counts` reports how many networks each worker built, :func:`release_models` frees
  them.
- A worker runs one partition at a time through its network (a forward pass is not thread-safe,
  and one process is one compute resource), with torch's intra-op threads set to the worker's
  thread count, so that ``n_workers x threads_per_worker = cores`` never oversubscribes the CPU.
  On GPU workers (``dask-cuda``'s ``LocalCUDACluster`` or ``dask-cuda-worker``), every worker
  process sees its own device as ``cuda``, and ``device="auto"`` resolves there, on the worker.
- A feature cache configured on the estimator is simply used by every worker: the estimator
  carries its path (storage shared by the workers of one machine; one cache per node across
  machines, see the "Scaling out" page of the documentation).

Failure behaviour follows from Dask's: a task whose worker dies is recomputed elsewhere (up to
``distributed.scheduler.allowed-failures`` times), and since a partition is a pure function of its
rows, the result has every row exactly once. With a feature cache, the dead worker's features were
committed as they were computed (a chunk of batches every few seconds), so a retry on a worker
sharing the cache directory reads them back and computes only the chunk that was not committed.
Unreadable images follow ``on_error`` as they do in memory: ``"raise"`` fails the computation with
the error raised in memory (same type, message, attributes and traceback), naming the row as the
collection knows it (its global position for arrays; its position in its partition, the partition
and its index label for DataFrames) and its path; ``"nan"`` gives NaN rows and a
:class:`~skdeep.BadImageWarning` on the worker, also logged as a Dask event under
:data:`BAD_IMAGES_TOPIC` (``client.get_events(BAD_IMAGES_TOPIC)``) and to the ``skdeep.dask``
logger (``client.forward_logging("skdeep.dask")`` shows it on the client).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import warnings
from collections import OrderedDict
from typing import Any

import numpy as np
import pandas as pd

try:
    import cloudpickle
    import dask
    from dask.base import tokenize
    from dask.delayed import delayed
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "skdeep.dask needs Dask with its distributed scheduler: pip install 'skdeep[dask]'"
    ) from exc

from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import check_is_fitted

from ._base import CNNEstimatorMixin
from ._device import torch_threads
from ._inputs import BadImageWarning, numbered_rows
from .features import PretrainedCNNFeatures

__all__ = ["BAD_IMAGES_TOPIC", "build_counts", "release_models", "transform"]

#: Topic of the Dask events logged by workers for images that became NaN rows (``on_error="nan"``).
BAD_IMAGES_TOPIC = "skdeep-bad-images"

#: Dask config key: how many ready estimators a worker process keeps (least recently used goes).
MODELS_PER_WORKER_CONFIG = "skdeep.models-per-worker"
_DEFAULT_MODELS_PER_WORKER = 2

_logger = logging.getLogger(__name__)

# --- the per-process registry -----------------------------------------------------------------
# One of each per worker process (module globals live as long as the process). The lock is held
# while a network is built and while a partition runs through it: one partition at a time.
_models: OrderedDict[str, Any] = OrderedDict()
_lock = threading.RLock()
_builds = 0


def transform(estimator: Any, X: Any) -> Any:
    """Embed a Dask collection of images on a Dask cluster, one network per worker.

    Parameters
    ----------
    estimator : transformer
        A fitted :class:`~skdeep.PretrainedCNNFeatures`, or any fitted scikit-learn transformer
        with ``get_feature_names_out`` (e.g. a ``Pipeline`` starting with one). An unfitted
        ``PretrainedCNNFeatures`` is fitted first, here on the client (it learns nothing from
        images); ``estimator`` itself is left untouched (a clone is fitted).
    X : dask DataFrame, Series or Array
        Dask Series or one-column DataFrame of image paths, or a Dask array of images
        ``(N, H, W)`` / ``(N, H, W, C)`` (uint8, or floats in [0, 1]), or a 1-D object array of
        paths. Arrays are rechunked to hold whole images (chunks along axis 0 only).

    Returns
    -------
    embeddings : dask DataFrame or dask Array, float32
        Lazy, one row per input row and one partition (or block) per input partition. For a
        DataFrame or Series: a DataFrame with the input's index and the estimator's feature
        names as columns. For an array: ``(N, n_features)``, chunked like ``X`` along axis 0.

    See Also
    --------
    build_counts : how many networks each worker built.
    release_models : free the networks held by the workers.

    Notes
    -----
    Partition size and ``batch_size`` are separate knobs: a task embeds its whole partition in
    batches of ``estimator.batch_size``, so partitions should hold many batches (thousands of
    images) to amortise task overhead, and few enough rows that their paths and embeddings fit
    a worker's memory comfortably.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> from skdeep import PretrainedCNNFeatures
    >>> from skdeep.dask import transform
    >>> images = np.random.default_rng(0).integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8)
    >>> cnn = PretrainedCNNFeatures(image_size=32, precision="fp32").fit()
    >>> lazy = transform(cnn, da.from_array(images, chunks=(3, 16, 16, 3)))
    >>> lazy.shape, lazy.dtype, lazy.numblocks
    ((6, 1280), dtype('float32'), (2, 1))
    >>> np.allclose(lazy.compute(scheduler="sync"), cnn.transform(images), atol=1e-5)
    True
    """
    import dask.array as da
    import dask.dataframe as dd

    fitted = _fitted(estimator)
    names = [str(name) for name in fitted.get_feature_names_out()]
    key = tokenize(fitted)
    # One key in the graph for the estimator: shipped once per worker, not embedded in each task.
    shipped = delayed(fitted, name=f"skdeep-estimator-{key}", pure=True, traverse=False)

    if isinstance(X, (dd.DataFrame, dd.Series)):
        if isinstance(X, dd.DataFrame) and len(X.columns) != 1:
            raise ValueError(
                f"X is a DataFrame with {len(X.columns)} columns {list(X.columns)[:10]}; pass the "
                "one column that holds the images, e.g. X['path']."
            )
        meta = pd.DataFrame(np.empty((0, len(names)), dtype=np.float32), columns=names,
                            index=X._meta.index)
        return X.map_partitions(_transform_partition, shipped, key, meta=meta,
                                token="skdeep-transform")
    if isinstance(X, da.Array):
        if X.ndim not in (1, 3, 4):
            raise ValueError(
                f"X has shape {X.shape}: expected images (N, H, W) or (N, H, W, C), or a 1-D "
                "array of paths."
            )
        if X.ndim > 1 and any(len(chunks) > 1 for chunks in X.chunks[1:]):
            X = X.rechunk({axis: -1 for axis in range(1, X.ndim)})  # whole images per block
        return da.map_blocks(
            _transform_block, X, shipped, key,
            name=f"skdeep-transform-{tokenize(X.name, key)}",
            chunks=(X.chunks[0], (len(names),)),
            drop_axis=list(range(1, X.ndim)),
            new_axis=[1],
            dtype=np.float32,
            meta=np.empty((0, 0), dtype=np.float32),
        )
    raise TypeError(
        f"X must be a dask DataFrame, Series or Array; got {type(X).__name__}. For data in "
        "memory call estimator.transform(X)."
    )


def build_counts(client: Any = None) -> dict[str, int]:
    """How many networks each worker process has built for :func:`transform`.

    Parameters
    ----------
    client : dask.distributed.Client or None
        The cluster to ask. ``None`` uses the current client if there is one, else reports this
        process (the threaded and synchronous schedulers run here), under the key ``"local"``.

    Returns
    -------
    dict
        ``{worker address: number of networks built}``. A worker restarted by its nanny starts
        again from zero.

    Examples
    --------
    >>> from skdeep.dask import build_counts
    >>> sorted(build_counts(client=None))  # doctest: +SKIP
    ['local']
    """
    client = _client(client)
    if client is None:
        return {"local": _builds}
    return client.run(_build_count)


def release_models(client: Any = None) -> None:
    """Free the networks that worker processes keep for :func:`transform`.

    Build counts are reset too. Workers also drop their least recently used network on their
    own when they hold more than the ``skdeep.models-per-worker`` Dask config value (2).

    Parameters
    ----------
    client : dask.distributed.Client or None
        The cluster to clear. ``None`` uses the current client if there is one; this process's
        registry (threaded and synchronous schedulers) is cleared in every case.

    Examples
    --------
    >>> from skdeep.dask import release_models
    >>> release_models(client=None)  # doctest: +SKIP
    """
    _release()
    client = _client(client)
    if client is not None:
        client.run(_release)


# --- the tasks ---------------------------------------------------------------------------------


def _transform_partition(part: pd.DataFrame | pd.Series, estimator: Any, key: str,
                         partition_info: dict | None = None) -> pd.DataFrame:
    """One DataFrame/Series partition of image paths -> one DataFrame of embeddings."""
    columns = [str(name) for name in estimator.get_feature_names_out()]
    if len(part) == 0:
        rows = np.empty((0, len(columns)), dtype=np.float32)
    else:
        # A partition's global positions are unknown without a pass over the data: its rows
        # are named within it ("row 3 of partition 2"), with their index label, which skdeep adds.
        number = partition_info["number"] if partition_info else None
        rows = _run(key, estimator, part, partition=number)
    return pd.DataFrame(rows, index=part.index, columns=columns)


def _transform_block(block: np.ndarray, estimator: Any, key: str,
                     block_info: dict | None = None) -> np.ndarray:
    """One block of images (or of paths) -> one block of embeddings."""
    if block.shape[0] == 0:
        return np.empty((0, len(estimator.get_feature_names_out())), dtype=np.float32)
    start = block_info[0]["array-location"][0][0] if block_info else 0
    return _run(key, estimator, block, first=start)  # rows named as in the whole array


def _run(key: str, shipped: Any, items: Any, *, first: int = 0,
         partition: int | None = None) -> np.ndarray:
    """``transform`` of this process's estimator for ``key`` on one block or partition.

    skdeep's messages, errors and warnings name the rows as the collection knows them: from
    ``first`` on for an array block, within the partition (``"row 3 of partition 2"``) for a
    DataFrame partition. An error also gets a note saying which block raised it, so that one
    from another estimator (a Pipeline step) can be placed too.
    """
    global _builds
    suffix = "" if partition is None else f" of partition {partition}"
    where = (f"partition {partition}" if partition is not None
             else f"the block of rows {first} to {first + len(items) - 1}")
    with _lock:
        estimator = _ready(key, shipped)
        unbuilt = [cnn for cnn in _cnn_estimators(estimator) if not cnn.network_built]
        with torch_threads(_worker_threads()), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with numbered_rows(first, suffix):
                    rows = estimator.transform(items)
            except Exception as exc:
                exc.add_note(f"(skdeep.dask: raised while transforming {where})")
                raise
            finally:  # the network is built lazily, on the first miss of a feature cache
                _builds += sum(cnn.network_built for cnn in unbuilt)
    _reemit(caught)
    return np.asarray(rows, dtype=np.float32)


def _ready(key: str, shipped: Any) -> Any:
    """This process's estimator for ``key``: a private copy of the first one shipped.

    Its network is built on first use (so a warm feature cache builds none) and then reused.
    The copy matters: the shipped object also lives in the worker's data store, and pickling it
    (to send it to another worker) drops its network.
    """
    estimator = _models.get(key)
    if estimator is not None:
        _models.move_to_end(key)
        return estimator
    estimator = cloudpickle.loads(cloudpickle.dumps(shipped))
    if multiprocessing.current_process().daemon:
        _without_loader_processes(estimator)
    _models[key] = estimator
    limit = max(1, int(dask.config.get(MODELS_PER_WORKER_CONFIG, _DEFAULT_MODELS_PER_WORKER)))
    while len(_models) > limit:
        _models.popitem(last=False)
    return estimator


def _cnn_estimators(estimator: Any) -> list[CNNEstimatorMixin]:
    """The skdeep estimators inside ``estimator`` (itself, or the steps of a Pipeline...)."""
    found = [estimator] if isinstance(estimator, CNNEstimatorMixin) else []
    if hasattr(estimator, "get_params"):
        found += [value for value in estimator.get_params(deep=True).values()
                  if isinstance(value, CNNEstimatorMixin)]
    unique: dict[int, CNNEstimatorMixin] = {id(item): item for item in found}
    return list(unique.values())


def _without_loader_processes(estimator: Any) -> None:
    # Dask worker processes are daemonic by default, and daemonic processes cannot start the
    # DataLoader's decoding processes: decode in the task's thread instead (same output).
    for cnn in _cnn_estimators(estimator):
        if getattr(cnn, "num_workers", 0):
            _logger.warning(
                "num_workers=%d ignored on this Dask worker: its process is daemonic and cannot "
                "start DataLoader workers (set the Dask config distributed.worker.daemon=False "
                "to allow them).", cnn.num_workers,
            )
            cnn.set_params(num_workers=0)


def _worker_threads() -> int | None:
    """torch intra-op threads for this worker: its thread count, capped by its usable cores."""
    worker = _current_worker()
    if worker is None:
        return None  # in-process schedulers: leave torch as the user configured it
    nthreads = int(getattr(worker.state, "nthreads", 1))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(nthreads, cores or 1))


def _from_distributed(getter: str) -> Any:
    """``distributed.get_worker()`` or ``get_client()``, or None outside a worker/client."""
    try:
        import distributed
    except ImportError:  # pragma: no cover - dask without distributed
        return None
    try:
        return getattr(distributed, getter)()
    except ValueError:
        return None


def _current_worker() -> Any:
    return _from_distributed("get_worker")


def _build_count() -> int:
    return _builds


def _release() -> None:
    global _builds
    with _lock:
        _models.clear()
        _builds = 0


# --- errors and warnings name global rows -----------------------------------------------------


def _reemit(caught: list[warnings.WarningMessage]) -> None:
    """Warnings recorded during a partition, re-issued; bad-image ones also logged."""
    for record in caught:
        if issubclass(record.category, BadImageWarning):
            text = str(record.message)
            warnings.warn(record.message, stacklevel=2)
            _logger.warning(text)
            worker = _current_worker()
            if worker is not None:
                worker.log_event(BAD_IMAGES_TOPIC, {"message": text})
        else:
            warnings.warn_explicit(record.message, record.category, record.filename,
                                   record.lineno, source=record.source)


def _client(client: Any) -> Any:
    return client if client is not None else _from_distributed("get_client")


def _fitted(estimator: Any) -> Any:
    if not (hasattr(estimator, "transform") and hasattr(estimator, "get_feature_names_out")):
        raise TypeError(
            f"{type(estimator).__name__} is not a transformer with get_feature_names_out; "
            "skdeep.dask.transform runs one, e.g. PretrainedCNNFeatures."
        )
    try:
        check_is_fitted(estimator)
    except NotFittedError:
        if isinstance(estimator, PretrainedCNNFeatures):
            return clone(estimator).fit()
        raise NotFittedError(
            f"This {type(estimator).__name__} is not fitted: fit it first (only "
            "PretrainedCNNFeatures, which learns nothing from images, is fitted for you)."
        ) from None
    return estimator
