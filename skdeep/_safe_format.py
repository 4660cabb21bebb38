"""A pickle-free on-disk format for fitted estimators: a folder with weights and a JSON file.

``weights.safetensors`` holds the network's state_dict (safetensors cannot carry code), and
``skdeep.json`` everything else: the estimator's parameters, its classes, the preprocessing
config and the training history. Loading reads both with no unpickling at all, so a model file
from an untrusted source cannot run code. Labels keep their type (str, int, float, bool) through
an explicit encoding of the ``classes_`` array.

A folder from an untrusted source must not be able to exhaust the machine, nor make skdeep
predict with labels or a network other than the ones saved, so :class:`SavedFolder` checks every
field (type, range, agreement with the other fields and with the weights) before anything is
built from it, and its errors name the file and the field. Writing is all-or-nothing:
:func:`write` fills a temporary sibling folder and swaps it in by renaming, so a failed save
leaves the previous model intact.
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._trainable_layers import RESOLVED_BN_MODES

FORMAT = "skdeep.estimator"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "skdeep.json"

MAX_IMAGE_SIZE = 4096  # side of the network input, in pixels: 4096^2 RGB is 50 MB per image
MAX_CONFIG_BYTES = 64 * 2**20  # a real skdeep.json is kilobytes; even 10^5 classes fit easily
CROP_PCT_RANGE = (0.5, 2.0)  # timm's configs use 0.875-1.15; resizing is to size / crop_pct
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
CROP_MODES = ("center", "squash", "border")

# Label dtypes encode_labels writes, besides str ("<U7") and "object": spelled out, never parsed
# from the file (np.dtype("(1000000000,)f8") is a valid 8 GB dtype).
_NUMERIC_DTYPES = frozenset(
    np.dtype(code).newbyteorder(order).str for code in "?bhilqBHILQefdg" for order in "<>"
)
_STR_DTYPE = re.compile(r"[<>|=]?U[0-9]{1,12}")
_SCALAR_TYPES = (str, bool, int, float)
_DAMAGED = ("The folder is damaged or was not written by skdeep's save(); save the model again "
            "from its source.")


def write(path: str | os.PathLike, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Path:
    """Write ``config`` (JSON-able) and ``state_dict`` into the folder ``path``, all or nothing.

    Both files are written into a temporary sibling folder which then replaces ``path`` by
    renaming; if anything fails, the temporary folder is removed and ``path`` is left as it was.
    An existing ``path`` is replaced only if it holds nothing but a previous save (or nothing).
    """
    from safetensors.torch import save_file

    folder = Path(os.path.abspath(path))  # "." has no name to build a sibling from
    _check_replaceable(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = _sibling(folder, "saving")
    staging.mkdir()
    try:
        tensors = {key: value.detach().cpu().contiguous().clone()
                   for key, value in state_dict.items()}
        save_file(tensors, str(staging / WEIGHTS_FILE), metadata={"format": "pt"})
        document = {"format": FORMAT, "format_version": FORMAT_VERSION, **config}
        text = json.dumps(_strict_json(document), indent=2, allow_nan=False)
        (staging / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
        _swap_in(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _check_replaceable(folder: Path) -> None:
    if not folder.exists():
        return
    cwd = Path.cwd().resolve()
    if folder.resolve() in (cwd, *cwd.parents):
        raise ValueError(f"{str(folder)!r} holds the working directory; save() replaces the whole "
                         "folder: give a new sub-folder such as 'model/'.")
    if not folder.is_dir():
        raise ValueError(f"{str(folder)!r} exists and is not a folder; save() writes a folder.")
    others = sorted(entry.name for entry in folder.iterdir()
                    if entry.name not in (WEIGHTS_FILE, CONFIG_FILE))
    if others:
        listing = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        raise ValueError(
            f"{str(folder)!r} holds other files ({listing}); save() replaces the whole folder, so "
            "it only overwrites a folder written by save(). Choose a new or empty folder."
        )


def _sibling(folder: Path, purpose: str) -> Path:
    """A hidden, unused name next to ``folder`` (rename is atomic within one file system)."""
    return folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.{purpose}")


def _swap_in(staging: Path, folder: Path) -> None:
    """Rename ``staging`` to ``folder``; an existing ``folder`` is set aside first, then removed."""
    if not (folder.exists() or folder.is_symlink()):
        os.rename(staging, folder)
        return
    aside = _sibling(folder, "old")
    os.rename(folder, aside)
    try:
        os.rename(staging, folder)
    except BaseException:
        os.rename(aside, folder)  # put the previous model back
        raise
    if aside.is_symlink():  # the link goes; the folder it pointed to is not ours to delete
        aside.unlink()
    else:
        shutil.rmtree(aside, ignore_errors=True)


class SavedFolder:
    """A folder written by :func:`write`, read with every field checked before it is used.

    Nothing in it is trusted: each accessor checks the type and range of a field and raises a
    ``ValueError`` that names the file and the field (``params.num_workers``) otherwise, and
    opening the folder checks the whole document that way (:meth:`check_document`): strict JSON
    (no NaN, no key twice), no field that format 1 does not have, and fields that agree with
    each other. Tensors are only read by :meth:`state_dict`, after :meth:`check_weights` has
    compared their names and shapes (from the safetensors header) with the network they are
    meant for. Loading reads no file and imports no module that a field names: the backbone is
    a name from skdeep's list, the head and the blocks are paths inside that network (only a
    refit would read a weights file named by ``params.weights``).

    Parameters
    ----------
    path : str or path-like
        The folder given to ``save()``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.folder = Path(path)
        self.config_path = self.folder / CONFIG_FILE
        self.weights_path = self.folder / WEIGHTS_FILE
        for required in (self.config_path, self.weights_path):
            if not required.exists():
                raise FileNotFoundError(f"{str(required)!r} not found: {str(self.folder)!r} is not "
                                        "a folder written by save().")
            if not required.is_file():  # a FIFO would block the read, a device never end
                raise ValueError(f"{str(required)!r} is not a regular file. {_DAMAGED}")
        size = self.config_path.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ValueError(f"{str(self.config_path)!r} is {size:,} bytes, more than an skdeep "
                             f"model file ever needs ({MAX_CONFIG_BYTES:,}); refusing to read it.")
        try:
            config = json.loads(self.config_path.read_text(encoding="utf-8"),
                                parse_constant=_no_constant, parse_float=_finite_float,
                                object_pairs_hook=_unique_keys)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # JSONDecodeError too
            raise ValueError(f"{str(self.config_path)!r} is not valid JSON as save() writes it: "
                             f"{exc}. {_DAMAGED}") from exc
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ValueError(f"{str(self.config_path)!r} is not an skdeep model file.")
        self.config = config
        version = self.field("format_version", int)
        if version > FORMAT_VERSION:
            raise ValueError(
                f"{str(self.folder)!r} was written by a newer skdeep (format {version}); "
                "upgrade skdeep to load it."
            )
        if version < 1:
            raise self.error("format_version", f"is {version}; formats start at 1")
        self.check_document()

    # --- fields ----------------------------------------------------------------------------------

    def where(self, field: str) -> str:
        """``'<folder>/skdeep.json', field 'params.lr'``: how messages name a field."""
        return f"{str(self.config_path)!r}, field {field!r}"

    def error(self, field: str, problem: str) -> ValueError:
        """A ValueError naming the file and ``field``, with ``problem`` and what to do."""
        return ValueError(f"{self.where(field)} {problem.rstrip('.')}. {_DAMAGED}")

    def field(self, name: str, kind: type | tuple[type, ...]) -> Any:
        """The value of the dotted field ``name``, checked to be of type(s) ``kind``.

        ``bool`` does not count as ``int`` or ``float``, ``type(None)`` allows ``null``.
        """
        value: Any = self.config
        for part in name.split("."):
            if not isinstance(value, dict) or part not in value:
                raise self.error(name, "is missing")
            value = value[part]
        return self.check_type(name, value, kind)

    def check_type(self, name: str, value: Any, kind: type | tuple[type, ...]) -> Any:
        """``value`` (from field ``name``) if it is of type(s) ``kind``, else the field's error."""
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not is_of(value, kinds):
            expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
            raise self.error(name, f"is {_shown(value)}, not a {expected}")
        return value

    def list_of(self, name: str, kind: type | tuple[type, ...]) -> list:
        """A list field whose items are of type(s) ``kind``."""
        values = self.field(name, list)
        for i, value in enumerate(values):
            self.check_type(f"{name}[{i}]", value, kind)
        return values

    def string_lists(self, name: str) -> list[tuple[str, ...]]:
        """A list of lists of str (module paths of network layers) -> list of tuples."""
        lists = self.list_of(name, list)
        for i, paths in enumerate(lists):
            for j, path in enumerate(paths):
                self.check_type(f"{name}[{i}][{j}]", path, str)
        return [tuple(paths) for paths in lists]

    def records(self, name: str) -> list[dict[str, Any]]:
        """A list of flat dicts (training history, parameter groups); ``null`` -> NaN."""
        records = self.list_of(name, dict)
        for i, record in enumerate(records):
            for key, value in record.items():
                self.check_type(f"{name}[{i}].{key}", value, (int, float, str, type(None)))
        return [{key: math.nan if value is None else value for key, value in record.items()}
                for record in records]

    def choice(self, name: str, options: tuple[str, ...]) -> str:
        """A str field that must be one of ``options``."""
        value = self.field(name, str)
        if value not in options:
            raise self.error(name, f"is {value!r}, not one of {list(options)}")
        return value

    def positive(self, name: str) -> float:
        """A number field that must be finite and > 0 (a temperature divides the logits)."""
        value = float(self.field(name, (int, float)))
        if not (math.isfinite(value) and value > 0):
            raise self.error(name, f"is {value!r}, not a finite number > 0")
        return value

    # --- the document as a whole ----------------------------------------------------------------

    def check_document(self) -> None:
        """Check every field of the format and what the fields say about each other.

        Run when the folder is opened, so nothing is built from a document that is wrong
        anywhere. Left to the estimator: the values of ``params`` (against its parameter
        constraints) and the weights (against the network the fields describe).
        """
        known = {**DOCUMENT_FIELDS, **OPTIONAL_FIELDS}
        unknown = sorted(set(self.config) - set(known))
        if unknown:
            raise self.error(unknown[0], f"is not a field of format {FORMAT_VERSION}, whose "
                                         f"fields are {list(known)}")
        for name, kind in DOCUMENT_FIELDS.items():
            self.field(name, kind)
        for name, keys in _NESTED_FIELDS.items():
            unknown = sorted(set(self.config[name]) - set(keys))
            if unknown:
                raise self.error(f"{name}.{unknown[0]}", f"is not a field of {name!r}, whose "
                                                         f"fields are {list(keys)}")
        self.field("backbone.name", str)
        self.field("backbone.weights_id", (str, type(None)))
        fitted = {item.field: item.read(self) for item in FITTED_STATE if item.field in self.config}
        if len(fitted["classes"]) < 2:
            raise self.error("classes.values", f"holds {len(fitted['classes'])} class(es); a "
                                               "fitted classifier has at least 2")
        self._check_epochs()
        for i, paths in enumerate(fitted["trained_blocks"]):
            if paths not in fitted["blocks"]:
                raise self.error(f"trained_blocks[{i}]", f"is {list(paths)}, which is not one "
                                                         "of the layers in field 'blocks'")

    def _check_epochs(self) -> None:
        """``history`` has one record per epoch 1..``n_iter``; ``best_epoch`` is one of them."""
        history = self.records("history")
        n_iter = self.field("n_iter", int)
        epochs = [record.get("epoch") for record in history]
        # Compared item by item: range(1, n_iter + 1) as a list could be any size.
        if len(epochs) != n_iter or n_iter < 1 or any(
                not is_of(epoch, (int,)) or epoch != i for i, epoch in enumerate(epochs, 1)):
            shown = epochs[:5] + (["..."] if len(epochs) > 5 else [])
            raise self.error("n_iter", f"is {n_iter}, but field 'history' records the epochs "
                                       f"{shown}; a fitted model records epochs 1 to n_iter")
        best = self.field("best_epoch", int)
        if not 1 <= best <= n_iter:
            raise self.error("best_epoch", f"is {best}, not an epoch in [1, {n_iter}] (field "
                                           "'n_iter')")

    def provenance(self, name: str) -> dict[str, Any]:
        """The record of what produced the model (versions, weights, time) at field ``name``.

        Only informative, never used to build anything; checked to be what skdeep writes: str
        keys, each value a JSON scalar or null, or an object of those and lists of scalars
        (the preprocessing).
        """
        record = self.field(name, dict)
        scalar = (*_SCALAR_TYPES, type(None))
        for key, value in record.items():
            if not isinstance(value, dict):
                self.check_type(f"{name}.{key}", value, scalar)
                continue
            for inner, item in value.items():
                items = item if isinstance(item, list) else [item]
                for i, each in enumerate(items):
                    where = f"{name}.{key}.{inner}" + (f"[{i}]" if isinstance(item, list) else "")
                    self.check_type(where, each, scalar)
        return record

    # --- labels and preprocessing ----------------------------------------------------------------

    def labels(self, name: str) -> np.ndarray:
        """The classes :func:`encode_labels` wrote at field ``name``: unique, in sorted order.

        A str dtype is rebuilt from the values (its size is the longest label's), never taken
        from the file: ``"<U400000000"`` would allocate gigabytes for two short labels. The
        values must be strictly increasing, as ``np.unique`` gives them: column ``i`` of the
        probabilities is ``classes_[i]``, so reordered or repeated labels would silently
        mislabel every prediction.
        """
        dtype = self.field(f"{name}.dtype", str)
        values = self.list_of(f"{name}.values", _SCALAR_TYPES)
        for i in range(1, len(values)):
            try:
                increasing = values[i - 1] < values[i]
            except TypeError:  # str next to a number: np.unique never gives that
                increasing = False
            if not increasing:
                raise self.error(f"{name}.values", f"is not unique and sorted: item {i - 1} "
                                 f"{_shown(values[i - 1])} comes before item {i} "
                                 f"{_shown(values[i])}; column i of the probabilities is class i, "
                                 "so the order cannot be guessed")
        if dtype == "object":
            array = np.empty(len(values), dtype=object)
            array[:] = values
            return array
        if _STR_DTYPE.fullmatch(dtype):
            return np.array(self.list_of(f"{name}.values", str), dtype=str).reshape(len(values))
        if dtype in _NUMERIC_DTYPES:
            self.list_of(f"{name}.values", (bool, int, float))
            try:
                array = np.array(values, dtype=np.dtype(dtype))
            except (OverflowError, ValueError) as exc:
                raise self.error(f"{name}.values", f"does not fit dtype {dtype}: {exc}") from exc
            if array.tolist() != values:  # 1.5 as an int label would silently become 1
                raise self.error(f"{name}.values", f"does not fit dtype {dtype} exactly")
            return array
        raise self.error(f"{name}.dtype", f"is {dtype!r}, not a label dtype that save() writes "
                                          "(str, bool, int, uint, float or object)")

    def data_config(self, name: str) -> dict[str, Any]:
        """The preprocessing config at field ``name``, every key checked; lists become tuples.

        Sizes are bounded (a 20,000 px input would need gigabytes per batch), and so is
        ``crop_pct``, since images are first resized to ``input_size / crop_pct``.
        """
        raw = self.field(name, dict)
        known = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise self.error(name, f"has unknown keys {unknown}; expected {list(known)}")
        sizes = self.list_of(f"{name}.input_size", int)
        if len(sizes) != 3 or sizes[0] != 3 or not all(8 <= s <= MAX_IMAGE_SIZE for s in sizes[1:]):
            raise self.error(f"{name}.input_size", f"is {sizes}, not [3, height, width] with "
                                                   f"sides in [8, {MAX_IMAGE_SIZE}]")
        config: dict[str, Any] = {"input_size": tuple(sizes)}
        config["interpolation"] = self.choice(f"{name}.interpolation", INTERPOLATIONS)
        for key, low in (("mean", -1e6), ("std", 1e-6)):
            values = self.list_of(f"{name}.{key}", (int, float))
            if len(values) != 3 or not all(math.isfinite(v) and low <= v <= 1e6 for v in values):
                raise self.error(f"{name}.{key}", f"is {values}, not 3 finite numbers in "
                                                  f"[{low:g}, 1e6]")
            config[key] = tuple(float(v) for v in values)
        if "crop_pct" in raw:
            crop_pct = self.field(f"{name}.crop_pct", (int, float, type(None)))
            low, high = CROP_PCT_RANGE
            if crop_pct is not None and not low <= crop_pct <= high:
                raise self.error(f"{name}.crop_pct", f"is {crop_pct}, outside [{low}, {high}] "
                                 "(images are resized to input_size / crop_pct)")
            config["crop_pct"] = crop_pct
        if "crop_mode" in raw:
            config["crop_mode"] = self.choice(f"{name}.crop_mode", CROP_MODES)
        return config

    # --- weights ---------------------------------------------------------------------------------

    def weight_shapes(self) -> dict[str, tuple[int, ...]]:
        """Tensor name -> shape, from the safetensors header alone (no tensor is read)."""
        from safetensors import safe_open

        try:
            with safe_open(str(self.weights_path), framework="pt") as handle:
                return {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}
        except Exception as exc:  # safetensors raises its own error types for damaged headers
            raise ValueError(f"{str(self.weights_path)!r} is not a readable safetensors file: "
                             f"{exc}. {_DAMAGED}") from exc

    def check_weights(self, expected: dict[str, tuple[int, ...]], network: str) -> None:
        """Refuse a weights file whose tensor names or shapes differ from ``expected``.

        ``expected`` are the shapes of the network that the config describes, and ``network``
        says so in words, naming its fields. Comparing before that network is really built means
        a tampered backbone name cannot make load allocate a network far larger than the file.
        """
        found = self.weight_shapes()
        missing = [key for key in expected if key not in found]
        unexpected = [key for key in found if key not in expected]
        reshaped = [key for key in expected if key in found and found[key] != expected[key]]
        if not (missing or unexpected or reshaped):
            return
        problems = [f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                    for what, keys in (("tensors missing", missing), ("unexpected", unexpected),
                                       ("of another shape", reshaped)) if keys]
        # The first bad tensor in the network's order (the file's, for extra tensors), spelled out.
        first = next((key for key in expected if found.get(key) != expected[key]), None)
        if first is None:
            detail = f"first unexpected: {unexpected[0]!r} {found[unexpected[0]]}"
        elif first not in found:
            detail = f"first missing: {first!r}, shape {expected[first]} in the network"
        else:
            detail = (f"first of another shape: {first!r}, {found[first]} in the file, "
                      f"{expected[first]} in the network")
        raise self.misfit(network, f"{'; '.join(problems)}; {detail}. The network has "
                                   f"{_numel(expected):,} numbers, the file {_numel(found):,}")

    def misfit(self, network: str, problem: str) -> ValueError:
        """The weights file does not fit the network described by ``network`` (its fields)."""
        return ValueError(f"{str(self.weights_path)!r} does not fit the network that "
                          f"{str(self.config_path)!r} describes ({network}): "
                          f"{problem.rstrip('.')}. {_DAMAGED}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors, on the CPU."""
        from safetensors.torch import load_file

        try:
            return load_file(str(self.weights_path), device="cpu")
        except Exception as exc:  # safetensors' own error types for a damaged file
            raise ValueError(f"{str(self.weights_path)!r} is not a readable safetensors file: "
                             f"{exc}. {_DAMAGED}") from exc


def _no_constant(name: str) -> None:
    """``json.loads`` hook: NaN and Infinity are not JSON, and save() never writes them."""
    raise ValueError(f"{name} is not a JSON number (save() writes null for it)")


def _finite_float(text: str) -> float:
    """``json.loads`` hook: ``1e400`` would silently become infinity."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is too large for a float")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: an object naming a key twice says two things; refuse it."""
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError(f"the key {key!r} appears twice in one object")
        document[key] = value
    return document


def is_of(value: Any, kinds: tuple[type, ...]) -> bool:
    """``isinstance`` where a bool is not an int (JSON ``true`` is not the number 1)."""
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def _shown(value: Any) -> str:
    text = json.dumps(value) if is_of(value, (*_SCALAR_TYPES, type(None))) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def _numel(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def encode_labels(labels: np.ndarray) -> dict[str, Any]:
    """A 1-D label array -> ``{"dtype", "values"}`` that JSON keeps exactly."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "OUbiuf":
        raise TypeError(f"labels of dtype {labels.dtype} cannot be saved; use str or int labels.")
    values = [encode_scalar(value) for value in labels.tolist()]
    return {"dtype": labels.dtype.str if labels.dtype.kind != "O" else "object", "values": values}


def encode_scalar(value: Any) -> Any:
    """A label or parameter value -> a JSON scalar (numpy scalars become Python ones)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, (os.PathLike, torch.device)):
        return str(value)
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    raise TypeError(f"{value!r} of type {type(value).__name__} cannot be saved as JSON.")


def _strict_json(value: Any) -> Any:
    """NaN and inf -> None (JSON has no such numbers), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict_json(item) for item in value]
    return value


# --- the fitted state -----------------------------------------------------------------------------


def _as_is(value: Any) -> Any:
    return value


def _path_lists(layers: list[tuple[str, ...]]) -> list[list[str]]:
    return [list(paths) for paths in layers]


def data_config_json(config: dict[str, Any]) -> dict[str, Any]:
    """A data config in JSON types (its tuples as lists)."""
    return {key: list(value) if isinstance(value, tuple) else value
            for key, value in config.items()}


@dataclass(frozen=True)
class Fitted:
    """One fitted attribute of a saved estimator and its field in ``skdeep.json``.

    ``encode`` turns the attribute into JSON types; ``decode(saved, field)`` reads the field back
    with every check (``None``: a plain ``saved.field(field, kind)``). ``optional`` fields are
    absent from saves of older fits.
    """

    attribute: str
    field: str
    kind: type
    decode: Callable[[SavedFolder, str], Any] | None = None
    encode: Callable[[Any], Any] = _as_is
    optional: bool = False

    def read(self, saved: SavedFolder) -> Any:
        """The attribute's value from ``saved``, checked."""
        if self.decode is None:
            return saved.field(self.field, self.kind)
        return self.decode(saved, self.field)


#: The fitted state FineTunedCNNClassifier saves: save, load, the checks of a loaded document
#: and the round-trip test all follow this one declaration, so a new fitted attribute is one line.
#: (``backbone_`` is not in it: a saved name and weights id are rebuilt into a Backbone.)
FITTED_STATE: tuple[Fitted, ...] = (
    Fitted("classes_", "classes", dict, SavedFolder.labels, encode_labels),
    Fitted("data_config_", "data_config", dict, SavedFolder.data_config, data_config_json),
    Fitted("head_", "head", str),
    Fitted("history_", "history", list, SavedFolder.records),
    Fitted("best_epoch_", "best_epoch", int),
    Fitted("n_iter_", "n_iter", int),
    Fitted("param_groups_", "param_groups", list, SavedFolder.records),
    Fitted("trainable_layers_", "blocks", list, SavedFolder.string_lists, _path_lists),
    Fitted("trained_layers_", "trained_blocks", list, SavedFolder.string_lists, _path_lists),
    Fitted("bn_mode_", "bn_mode", str, lambda saved, name: saved.choice(name, RESOLVED_BN_MODES)),
    Fitted("provenance_", "provenance", dict, SavedFolder.provenance, optional=True),
    Fitted("temperature_", "temperature", float, lambda saved, name: saved.positive(name), float,
           optional=True),
)

# The fields of format 1 (as FineTunedCNNClassifier.save writes them) and their JSON types. Any
# other field is refused: a folder that says more than skdeep understands is not guessed at.
DOCUMENT_FIELDS: dict[str, type] = {
    "format": str, "format_version": int, "estimator": str, "skdeep_version": str,
    "params": dict, "backbone": dict,
    **{item.field: item.kind for item in FITTED_STATE if not item.optional},
}
OPTIONAL_FIELDS: dict[str, type] = {item.field: item.kind for item in FITTED_STATE if item.optional}
_NESTED_FIELDS = {"classes": ("dtype", "values"), "backbone": ("name", "weights_id")}


def fitted_fields(estimator: Any) -> dict[str, Any]:
    """The fitted state of ``estimator`` as ``skdeep.json`` holds it: field -> JSON value."""
    return {item.field: item.encode(getattr(estimator, item.attribute)) for item in FITTED_STATE
            if not item.optional or hasattr(estimator, item.attribute)}


def restore_fitted(saved: SavedFolder, estimator: Any,
                   attributes: Sequence[str] | None = None) -> None:
    """Set the fitted attributes saved in ``saved`` on ``estimator`` (only ``attributes``, if
    given)."""
    for item in FITTED_STATE:
        if (attributes is None or item.attribute in attributes) and item.field in saved.config:
            setattr(estimator, item.attribute, item.read(saved))
