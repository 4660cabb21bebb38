"""Writing files all or nothing: each is written to a temporary beside it, then renamed over it.

Every file skdeep writes for the user (reports, extracted features and their sidecars, training
logs) goes through :func:`atomic_write`, so that an interrupted or failed write never leaves a
truncated file, nor files of two runs side by side.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path


def atomic_write(writers: Mapping[Path, Callable[[str], object]]) -> None:
    """Write files through temporaries, and put them in place only once every one is written.

    Each file is written to a hidden temporary in its own folder, then moved over the file with
    :func:`os.replace` (atomic). Files get the mode the user's umask gives (0644 for the usual
    umask 022), as with a plain ``open``. A failure while writing leaves every file as it was and
    removes the temporaries, so that files written together (a ``.npy`` and its ``.paths.txt``)
    never mix runs. Errors about the files' temporaries are raised about the files themselves.

    Parameters
    ----------
    writers : mapping of Path to callable
        ``{path: write}``: ``write(temporary)`` writes the content of ``path`` to the file
        ``temporary`` (in the same folder, with the same suffix).

    Raises
    ------
    OSError
        Naming the file of ``writers`` being written (never its temporary), e.g. when its folder
        is missing or read-only, the disk is full or the path is a folder.
    """
    temporaries: list[str] = []
    try:
        for path, write in writers.items():
            with _reported_as(path):
                if path.is_dir():  # found now, before any file is replaced
                    raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
                temporary = _new_temporary(path)
                temporaries.append(temporary)
                write(temporary)
        for path, temporary in zip(writers, temporaries):
            with _reported_as(path):
                os.replace(temporary, path)
    finally:
        for temporary in temporaries:  # those not moved into place
            Path(temporary).unlink(missing_ok=True)


def _new_temporary(path: Path) -> str:
    """Create an empty hidden file next to ``path``, with the mode the user's umask gives.

    ``tempfile.mkstemp`` would create it 0600 whatever the umask, and ``os.replace`` keeps that
    mode: teammates and web servers could not read the results. Creating the file with 0666,
    exclusively, lets the kernel apply the umask (and a folder's default ACL) exactly as for
    ``open(path, "w")``.
    """
    for _ in range(100):
        temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}{path.suffix}"
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:  # another writer drew the same name: draw again
            continue
        return str(temporary)
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(path))


@contextlib.contextmanager
def _reported_as(path: Path):
    """Re-raise an OSError as one about ``path``: the user knows that name, not the temporary's."""
    try:
        yield
    except OSError as exc:
        if exc.errno is None or exc.strerror is None:
            raise OSError(f"cannot write {path}: {exc}") from exc
        raise OSError(exc.errno, exc.strerror, str(path)) from exc
