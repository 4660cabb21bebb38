"""Resumable outputs for ``skdeep extract``: rows go to disk as computed, the file appears whole.

Rows are written, as they come, to a *partial file* next to the output, ``OUT.partial``: a float32
``.npy`` matrix with room for every row (made by :func:`numpy.lib.format.open_memmap`), each
block of rows written at its place and synced to disk. Memory holds one block, never the matrix,
and no mapping of the file grows the process's resident memory either. A small *state file*,
``OUT.partial.json``, says how many rows are final, which job they belong to and the CRC32 of
each committed block of rows; it is replaced (atomically) only once those rows are on disk, so it
never claims a row that is not there, and a resume reads the kept rows back and checks them
against those checksums, so that a tampered state or a partial file from another job is caught.

When every row is written, the output is made from the partial file, a block at a time, and
renamed into place: a ``.npy`` is the partial file itself (with its ``.paths.txt``), a parquet file
gets row groups of a fixed number of rows (:class:`pyarrow.parquet.ParquetWriter`), a CSV its
lines. A partial file is never mistaken for the output: it has another name until complete, and
the output, when it appears, is complete. The same job started again (same inputs, same
features) resumes after the last final row, and the output is the same, byte for byte, as an
uninterrupted run's. Parquet and CSV cannot be resumed in place (a parquet file is unreadable
until its footer is written), hence one partial format for all three.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import json
import os
import stat
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_write
from ._inputs import open_regular

PARTIAL_SUFFIX = ".partial"
#: Key of the provenance (JSON) in the schema metadata of a parquet output.
PROVENANCE_KEY = "skdeep.provenance"
_STATE_VERSION = 2  # 2: a CRC32 per committed block
_BLOCK_BYTES = 32 * 2**20  # rows per parquet row group / CSV block: about this many bytes
_READERS = {(1, 0): np.lib.format.read_array_header_1_0,
            (2, 0): np.lib.format.read_array_header_2_0}
_sync = getattr(os, "fdatasync", os.fsync)


def input_fingerprint(paths: Sequence[str], files: Sequence[str]) -> str:
    """SHA-256 of the rows of a job: each row's index path, file, size, times and inode.

    An image edited (or a file appearing or disappearing) between an interrupted run and its
    rerun changes the fingerprint, so the rerun starts afresh rather than keep stale rows.
    """
    digest = hashlib.sha256()
    for path, file in zip(paths, files, strict=True):
        try:
            status = os.stat(file)
            # ctime and inode too: an edit of the same size with its mtime put back (touch -r,
            # rsync -t) still changes them, as the feature cache's file memo knows.
            stamp = [status.st_size, status.st_mtime_ns, status.st_ctime_ns, status.st_ino]
        except (OSError, ValueError):  # a missing file: the job reports it (or a NaN row)
            stamp = None
        digest.update(json.dumps([path, file, stamp]).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def output_files(target: Path) -> list[Path]:
    """The files of the output ``target``: itself, the ``.paths.txt`` of a ``.npy``, and the
    :func:`provenance_file` of a ``.npy`` or ``.csv``."""
    suffix = target.suffix.lower()
    files = [target]
    if suffix == ".npy":
        files.append(target.with_suffix(".paths.txt"))
    if suffix != ".parquet":
        files.append(provenance_file(target))
    return files


def provenance_file(target: Path) -> Path:
    """The JSON file next to a ``.npy`` or ``.csv`` output that holds its provenance.

    ``OUT`` + ``.json`` (``features.npy.json``): a parquet file keeps its provenance in its own
    schema metadata, under :data:`PROVENANCE_KEY`, and has none.
    """
    return target.with_name(target.name + ".json")


def files_written(target: Path) -> list[Path]:
    """Every file a job writing ``target`` creates or replaces: the output's files and its partials.

    None of them may be an input of the job: writing would destroy it (see ``skdeep extract``).
    """
    return [*output_files(target), *partial_files(target)]


def partial_files(target: Path) -> list[Path]:
    """The partial file and the state file of the output ``target``."""
    partial = target.with_name(target.name + PARTIAL_SUFFIX)
    return [partial, partial.with_name(partial.name + ".json")]


class ResumableOutput:
    """The output file of one extraction job, written row block by row block, resumable.

    Parameters
    ----------
    target : Path
        The output: ``.npy`` (with a ``.paths.txt`` of the paths next to it), ``.parquet`` or
        ``.csv`` (a table indexed by path).
    paths : list of str
        One per row: the index of a table, the lines of the ``.paths.txt`` of a ``.npy``.
    columns : list of str
        The column names.
    job : dict
        JSON-able description of what the rows are (inputs, network, layers...): a partial
        file of another job is never resumed.
    paths_line : callable
        ``path -> line`` of the ``.paths.txt`` written next to a ``.npy``.
    """

    def __init__(self, target: Path, paths: list[str], columns: list[str], job: dict[str, Any],
                 paths_line) -> None:
        self.target = target
        self.paths = paths
        self.columns = columns
        job = {**job, "format": target.suffix.lower(), "rows": len(paths),
               "columns": hashlib.sha256(json.dumps(columns).encode()).hexdigest()}
        self.job = json.loads(json.dumps(job, default=str))  # as read back from the state file
        self.paths_line = paths_line
        self.partial, self.state = partial_files(target)
        self.rows_done = 0
        self.nan_rows = 0
        self._file: int | None = None  # the partial file, open and locked
        self._offset = 0  # where its rows start
        self._blocks: list[list[int]] = []  # [rows, CRC32 of their bytes] of each committed block

    # --- starting ---------------------------------------------------------------------------

    def start(self, *, overwrite: bool = False) -> tuple[int, str | None]:
        """Open the partial file: resume it if it belongs to this job, else start afresh.

        Returns
        -------
        reused : int
            Rows already written by an earlier run of this job (0 when starting afresh).
        note : str or None
            Why a partial file that was there is not resumed.
        """
        self._file = _locked(self.partial, self.target)
        note = None
        if not overwrite:
            state, reason = self._read_state()
            if state is not None:
                different = sorted(key for key in {*state["job"], *self.job}
                                   if state["job"].get(key) != self.job.get(key))
                reason = (f"made with other {', '.join(different)}" if different
                          else self._resume(state))
                if reason is None:
                    return self.rows_done, None
            if reason is not None:
                note = f"the partial output {self.partial} is {reason}: starting afresh"
        try:
            with self._about_output():
                self._fresh()
        except BaseException:
            self.discard()  # nothing in it worth keeping
            raise
        return 0, note

    def _read_state(self) -> tuple[dict | None, str | None]:
        """The state file's content if it is a valid state, else None and why (None if absent)."""
        try:  # open_regular: a FIFO in its place is refused (ValueError), never waited on
            with open_regular(self.state) as file:
                state = json.loads(file.read().decode("utf-8"))
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError):
            return None, "unreadable"
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
            return None, "from another skdeep version"
        blocks = state.get("blocks")
        valid = (isinstance(state.get("job"), dict) and isinstance(state.get("rows"), int)
                 and isinstance(blocks, list)
                 and all(isinstance(block, list) and len(block) == 2
                         and all(isinstance(v, int) and v >= 0 for v in block)
                         for block in blocks))
        return (state, None) if valid else (None, "unreadable")

    def _resume(self, state: dict) -> str | None:
        """Continue the partial file of ``state``; or why not, if its rows cannot be trusted.

        Every committed block is read back and its CRC32 compared with the one the state
        recorded when the block was written: a state claiming rows that were never written (or
        a partial file of the same shape from another job, or a damaged disk) is caught.
        Reading back costs one pass over the rows kept, far less than computing them.
        """
        shape, offset = _layout(self.partial)
        size = offset + 4 * len(self.paths) * len(self.columns)
        blocks = state["blocks"]
        if (shape != (len(self.paths), len(self.columns)) or self.partial.stat().st_size < size
                or not 0 <= state["rows"] <= len(self.paths)
                or sum(n for n, _ in blocks) != state["rows"]):
            return "not the file its state describes"
        width, start = 4 * len(self.columns), offset
        for index, (n_rows, checksum) in enumerate(blocks):
            data = os.pread(self._file, n_rows * width, start)
            if len(data) != n_rows * width or zlib.crc32(data) != checksum:
                return (f"damaged (rows {(start - offset) // width} to "
                        f"{(start - offset) // width + n_rows - 1} fail their checksum, block "
                        f"{index + 1} of {len(blocks)})")
            start += n_rows * width
        self._offset = offset
        self.rows_done, self.nan_rows = state["rows"], int(state.get("nan_rows", 0))
        self._blocks = [list(block) for block in blocks]
        return None

    def _fresh(self) -> None:
        # The header and the room for every row (a sparse file); rows are written at their place.
        shape = (len(self.paths), len(self.columns))
        # The map is dropped at once: rows are written to the file, so that resident memory
        # stays one block (pages of a mapping written to would count, up to the whole output).
        np.lib.format.open_memmap(self.partial, mode="w+", dtype=np.float32, shape=shape)
        self._offset = _layout(self.partial)[1]
        self.rows_done = self.nan_rows = 0
        self._blocks = []
        self._commit()

    # --- writing ----------------------------------------------------------------------------

    def write(self, rows: np.ndarray) -> None:
        """Append ``rows`` and commit them: on disk first, then counted in the state file."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        with self._about_output():
            start = self._offset + 4 * self.rows_done * len(self.columns)
            data = rows.tobytes()
            _write_all(self._file, data, start)
            _sync(self._file)
            self._blocks.append([len(rows), zlib.crc32(data)])
            self.rows_done += len(rows)
            self.nan_rows += int(np.isnan(rows).any(axis=1).sum())
            self._commit()

    def _commit(self) -> None:
        state = {"version": _STATE_VERSION, "job": self.job, "rows": self.rows_done,
                 "nan_rows": self.nan_rows, "blocks": self._blocks}
        temporary = self._state_temporary()
        temporary.unlink(missing_ok=True)  # whatever was there (a FIFO would block the write)
        temporary.write_text(json.dumps(state), encoding="utf-8")
        os.replace(temporary, self.state)

    def _state_temporary(self) -> Path:
        return self.state.with_name(self.state.name + ".tmp")

    @contextlib.contextmanager
    def _about_output(self):
        """An OSError on the partial or state file, told about the output the user named."""
        try:
            yield
        except OSError as exc:
            if exc.errno is None or exc.strerror is None:
                raise OSError(f"cannot write {self.target}: {exc}") from exc
            raise OSError(exc.errno, f"{exc.strerror} (writing its partial file "
                          f"{self.partial.name})", str(self.target)) from exc

    # --- finishing --------------------------------------------------------------------------

    def finish(self, provenance: dict[str, Any]) -> list[Path]:
        """Make the output from the complete partial file and put it in place; returns its files.

        ``provenance`` (JSON types: what made the rows) goes into the schema metadata of a
        parquet output, and into :func:`provenance_file` next to a ``.npy`` or ``.csv``. The
        output's files are replaced only once all are written (see
        :func:`~skdeep._atomic.atomic_write`); the partial and state files are then removed.
        """
        if self.rows_done != len(self.paths):  # pragma: no cover - a bug, not a user error
            raise RuntimeError(f"{self.rows_done} of {len(self.paths)} rows written")
        suffix = self.target.suffix.lower()
        about = json.dumps({"provenance": provenance}, indent=2) + "\n"
        files = {}
        if provenance_file(self.target) in output_files(self.target):
            files[provenance_file(self.target)] = lambda tmp: Path(tmp).write_text(about)
        if suffix == ".npy":
            sidecar = output_files(self.target)[1]
            text = "".join(f"{self.paths_line(path)}\n" for path in self.paths)
            # The paths first: a failure there leaves the partial file, still resumable.
            files[sidecar] = lambda tmp: Path(tmp).write_text(text, encoding="utf-8")
            files[self.target] = lambda tmp: os.replace(self.partial, tmp)
        else:
            blocks = _read_blocks(self.partial, self._offset, len(self.paths), len(self.columns))
            table = (self.paths, self.columns)
            files[self.target] = (
                (lambda tmp: _write_parquet(blocks, *table, tmp, json.dumps(provenance)))
                if suffix == ".parquet" else (lambda tmp: _write_csv(blocks, *table, tmp)))
        atomic_write(files)
        self.discard()
        return [self.target, *(path for path in files if path != self.target)]

    def discard(self) -> None:
        """Remove the partial and state files (after finishing, or when nothing was written)."""
        for path in (self.partial, self.state, self._state_temporary()):
            path.unlink(missing_ok=True)
        self.close()

    def close(self) -> None:
        """Release the partial file (kept on disk for a rerun) and its lock."""
        if self._file is not None:
            os.close(self._file)
            self._file = None


def _locked(partial: Path, target: Path) -> int:
    """The partial file, opened and locked: two runs writing one output would mix their rows."""
    # 0666: the umask decides, as for any file the user writes (the .npy output is this file).
    # O_NONBLOCK: a FIFO at this name would otherwise wait for a reader forever; it is refused
    # below, as inputs are (no effect on a regular file).
    descriptor = os.open(partial, os.O_RDWR | os.O_CREAT | getattr(os, "O_NONBLOCK", 0), 0o666)
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise OSError(f"cannot write {target}: its partial file {partial} is not a regular file "
                      "(a FIFO, a device or a socket); remove it, or choose another output")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory locks
        return descriptor
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(descriptor)
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        raise OSError(f"cannot write {target}: another skdeep extract is writing it (its partial "
                      f"file {partial} is locked); wait for that run to end, or choose another "
                      "output") from None
    return descriptor


def _layout(path: Path) -> tuple[tuple[int, ...] | None, int]:
    """Shape and data offset of a float32 C-order ``.npy`` file; shape None if it is not one."""
    try:
        with open(path, "rb") as file:
            read_header = _READERS.get(np.lib.format.read_magic(file))
            if read_header is None:
                return None, 0
            shape, fortran_order, dtype = read_header(file)
            offset = file.tell()
    except (OSError, ValueError):
        return None, 0
    return (shape if dtype == np.float32 and not fortran_order else None), offset


def _write_all(descriptor: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(descriptor, view, offset)
        view, offset = view[written:], offset + written


def _read_blocks(partial: Path, offset: int, n_rows: int, width: int
                 ) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, rows)`` in blocks of a fixed number of rows: the same for every run."""
    step = max(1, _BLOCK_BYTES // max(1, 4 * width))
    with open(partial, "rb") as file:
        file.seek(offset)
        for start in range(0, n_rows, step):
            count = min(step, n_rows - start)
            rows = np.fromfile(file, dtype=np.float32, count=count * width)
            yield start, rows.reshape(count, width)
    if n_rows == 0:
        yield 0, np.empty((0, width), dtype=np.float32)


def _frame(rows: np.ndarray, paths: list[str], columns: list[str], start: int):
    import pandas as pd

    index = pd.Index(np.asarray(paths[start:start + len(rows)], dtype=object), name="path")
    return pd.DataFrame(rows, columns=columns, index=index)


def _write_parquet(blocks, paths: list[str], columns: list[str], file: str,
                   provenance: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    writer = None
    try:
        for start, rows in blocks:
            table = pa.Table.from_pandas(_frame(rows, paths, columns, start), preserve_index=True)
            if writer is None:
                schema = table.schema.with_metadata(
                    {**(table.schema.metadata or {}), PROVENANCE_KEY.encode(): provenance.encode()})
                writer = pq.ParquetWriter(file, schema)
            table = table.replace_schema_metadata(schema.metadata)
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()


def _write_csv(blocks, paths: list[str], columns: list[str], file: str) -> None:
    with open(file, "w", encoding="utf-8", newline="") as handle:
        for start, rows in blocks:
            # Quoted paths: pandas reads an unquoted carriage return as the end of a row.
            _frame(rows, paths, columns, start).to_csv(handle, header=start == 0,
                                                        quoting=csv.QUOTE_NONNUMERIC)
