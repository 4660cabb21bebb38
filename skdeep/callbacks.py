"""Training callbacks for :class:`~skdeep.FineTunedCNNClassifier`: hooks into ``fit``, checkpoints
to resume an interrupted fit from, and a CSV log of the epochs.

A callback is any object with one or more of these methods, which ``fit`` calls in the order of
its ``callbacks`` parameter:

- ``on_train_begin(estimator)``: before the first epoch (the network is built, ``history_``
  holds the epochs of earlier fits with ``warm_start``, or those of the checkpoint resumed from);
- ``on_epoch_end(estimator, record) -> bool``: after each epoch, with the epoch's record (also
  the last item of ``estimator.history_``); return ``True`` to stop training;
- ``on_train_end(estimator)``: once the network holds its final weights.

Subclass :class:`Callback` to get all three as no-ops, and parameters that
:func:`~sklearn.base.clone` copies: take them in ``__init__`` and store them unchanged, as
scikit-learn estimators do, and keep what a fit computes in attributes ending in ``_``.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any

from sklearn.base import BaseEstimator

from ._atomic import atomic_write
from ._training import TRAINING_STATE

HOOKS = ("on_train_begin", "on_epoch_end", "on_train_end")

_CHECKPOINT = re.compile(r"epoch-(\d+)")
_PARTIAL = re.compile(r"\.epoch-\d+\.[0-9a-f]+\.partial")


class Callback(BaseEstimator):
    """Base class of training callbacks: override any of the three hooks.

    Examples
    --------
    >>> from skdeep import Callback
    >>> class StopAtAccuracy(Callback):
    ...     def __init__(self, accuracy=0.95):
    ...         self.accuracy = accuracy
    ...
    ...     def on_epoch_end(self, estimator, record):
    ...         return record["valid_accuracy"] >= self.accuracy
    """

    def on_train_begin(self, estimator: Any) -> None:
        """Called by ``fit`` before the first epoch."""

    def on_epoch_end(self, estimator: Any, record: dict[str, Any]) -> bool | None:
        """Called by ``fit`` after each epoch; return ``True`` to stop training.

        Parameters
        ----------
        estimator : FineTunedCNNClassifier
            Its ``history_`` ends with ``record``; its network holds this epoch's weights.
        record : dict
            ``epoch``, ``train_loss``, ``valid_loss``, ``valid_accuracy``, ``lr``, ``seconds``.
        """
        return None

    def on_train_end(self, estimator: Any) -> None:
        """Called by ``fit`` once the network holds its final weights."""


class Checkpoint(Callback):
    """Save the fit in progress after an epoch, so that an interrupted fit can resume.

    Each save is a folder ``dirname/epoch-NNNN`` written under a temporary name and renamed when
    complete, so a fit killed while saving leaves the previous checkpoint intact; then the
    previous checkpoint is removed. It holds ``model/`` (the safe format of
    :meth:`~skdeep.FineTunedCNNClassifier.save`: ``FineTunedCNNClassifier.load(path / "model")``
    reads it) and the training state (optimizer, schedule, early stopping, random streams; see
    :meth:`~skdeep.FineTunedCNNClassifier.save_checkpoint`). ``fit(X, y, resume=dirname)`` with
    the same parameters, ``X`` and ``y`` continues from it and ends with the weights of an
    uninterrupted fit.

    A fit that starts afresh (not resumed, not a ``warm_start`` continuation) removes the
    checkpoints another fit left in ``dirname``. The backbone must be given by name (a module
    instance cannot be saved in the safe format). In a grid search, give each search its own
    ``dirname``: the candidates' fits would share it.

    Parameters
    ----------
    dirname : str or path-like, default="checkpoints"
        Folder of the checkpoints (created if needed).
    monitor : str or None, default="valid_loss"
        Save when this entry of the epoch's record reaches a new minimum (an epoch without
        validation, whose ``valid_loss`` is NaN, is always saved); None saves every epoch, which
        loses the least work when a fit is killed.

    Attributes
    ----------
    best_ : float
        The lowest value of ``monitor`` seen (in ``history_``, including the epochs of the fit
        resumed from).
    last_ : pathlib.Path or None
        The checkpoint written last by this fit.

    Examples
    --------
    >>> from skdeep import FineTunedCNNClassifier
    >>> from skdeep import Checkpoint
    >>> clf = FineTunedCNNClassifier(callbacks=[Checkpoint("run1/", monitor=None)],
    ...                              random_state=0)
    >>> # clf.fit(X, y) is killed at epoch 6; later, in a new process:
    >>> # clf.fit(X, y, resume="run1/")  # runs epochs 7-10 only
    """

    def __init__(self, dirname: str | os.PathLike = "checkpoints",
                 monitor: str | None = "valid_loss") -> None:
        self.dirname = dirname
        self.monitor = monitor

    def on_train_begin(self, estimator: Any) -> None:
        if not isinstance(estimator.backbone, str):
            raise ValueError(
                "Checkpoint saves the safe format, which needs backbone given by name; a module "
                "instance is code, not data. Pickle the estimator from a callback of your own."
            )
        folder = _writable_folder(Path(self.dirname), f"Checkpoint({str(self.dirname)!r})")
        done = len(estimator.history_)
        for path in folder.iterdir():
            match = _CHECKPOINT.fullmatch(path.name)
            stale = match is not None and int(match.group(1)) > done  # not a past of this fit
            if stale or _PARTIAL.fullmatch(path.name):  # or a save killed half-way
                shutil.rmtree(path, ignore_errors=True)
        seen = [record.get(self.monitor, math.nan) for record in estimator.history_]
        self.best_ = min((value for value in seen if math.isfinite(value)), default=math.inf)
        self.last_ = None

    def on_epoch_end(self, estimator: Any, record: dict[str, Any]) -> None:
        if self.monitor is not None:
            if self.monitor not in record:
                raise ValueError(f"Checkpoint(monitor={self.monitor!r}): the epoch records have "
                                 f"no such entry; choose from {sorted(record)} or None.")
            value = record[self.monitor]
            if math.isfinite(value):
                if not value < self.best_:
                    return None
                self.best_ = value
        folder = Path(self.dirname)
        target = folder / f"epoch-{record['epoch']:04d}"
        staging = folder / f".{target.name}.{secrets.token_hex(4)}.partial"
        try:
            estimator.save_checkpoint(staging)
            if target.exists():  # left by a fit killed after this epoch's save: the same state
                shutil.rmtree(target)
            os.rename(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        for path in folder.iterdir():
            if path != target and _CHECKPOINT.fullmatch(path.name):
                shutil.rmtree(path, ignore_errors=True)
        self.last_ = target
        return None


class CSVLogger(Callback):
    """Write the training history to a CSV file after every epoch (one row per epoch).

    The whole of ``history_`` is rewritten each time, atomically, so the file always holds every
    epoch so far, also of a resumed or ``warm_start`` fit, and a reader never sees half a row.

    Parameters
    ----------
    path : str or path-like, default="history.csv"
        The CSV file (its folder is created if needed). Columns: ``epoch``, ``train_loss``,
        ``valid_loss``, ``valid_accuracy``, ``lr``, ``seconds`` and any entry a callback added
        to the records.
    """

    def __init__(self, path: str | os.PathLike = "history.csv") -> None:
        self.path = path

    def on_train_begin(self, estimator: Any) -> None:
        # Before the first epoch trains, not after it: a path that cannot be written fails now.
        owner = f"CSVLogger({str(self.path)!r})"
        path = Path(self.path)
        if path.is_dir():
            raise IsADirectoryError(f"{owner}: {str(path)!r} is a folder; give the CSV file's "
                                    "path, such as 'history.csv'")
        _writable_folder(path.parent, owner)

    def on_epoch_end(self, estimator: Any, record: dict[str, Any]) -> None:
        import pandas as pd

        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        frame = pd.DataFrame(estimator.history_)
        atomic_write({path: lambda temporary: frame.to_csv(temporary, index=False)})
        return None


def latest_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint that ``fit(resume=path)`` continues from.

    Parameters
    ----------
    path : str or path-like
        A :class:`Checkpoint`'s ``dirname`` (its latest ``epoch-NNNN`` folder is taken) or one
        checkpoint folder.

    Returns
    -------
    pathlib.Path
    """
    path = Path(path)
    if (path / TRAINING_STATE).is_file():
        return path
    found = []
    if path.is_dir():
        for child in path.iterdir():
            match = _CHECKPOINT.fullmatch(child.name)
            if match and (child / TRAINING_STATE).is_file():
                found.append((int(match.group(1)), child))
    if not found:
        raise FileNotFoundError(
            f"no checkpoint in {str(path)!r}: resume= takes the dirname of a Checkpoint callback "
            "that saved at least one epoch (folders epoch-NNNN), or one such folder."
        )
    return max(found)[1]


def _writable_folder(folder: Path, owner: str) -> Path:
    """``folder``, created if missing; an error naming ``owner`` if files cannot be made in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except (FileExistsError, NotADirectoryError) as exc:
        blocker = next((p for p in (folder, *folder.parents) if p.is_file()), folder)
        raise NotADirectoryError(f"{owner}: cannot write into {str(folder)!r}: "
                                 f"{str(blocker)!r} is a file, not a folder") from exc
    except OSError as exc:
        raise type(exc)(f"{owner}: cannot write into {str(folder)!r} "
                        f"({exc.strerror or exc})") from exc
    return folder
