"""A pickle-free on-disk format for fitted estimators: a folder with weights and a JSON file.

``weights.safetensors`` holds the network's state_dict (safetensors cannot carry code), and
``skdeep.json`` everything else: the estimator's parameters, its classes, the preprocessing
config and the training history. Loading reads both with no unpickling at all, so a model file
from an untrusted source cannot run code. Labels keep their type (str, int, float, bool) through
an explicit encoding of the ``classes_`` array.
"""

from __future__ import annotations

import json
import math
import os
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "skdeep.estimator"
FORMAT_VERSION = 1
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "skdeep.json"


def write(path: str | os.PathLike, config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Path:
    """Write ``config`` (JSON-able) and ``state_dict`` into the folder ``path`` (created)."""
    from safetensors.torch import save_file

    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{str(folder)!r} exists and is not a folder; save() writes a folder.")
    folder.mkdir(parents=True, exist_ok=True)
    tensors = {key: value.detach().cpu().contiguous().clone() for key, value in state_dict.items()}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    document = {"format": FORMAT, "format_version": FORMAT_VERSION, **config}
    text = json.dumps(_strict_json(document), indent=2, allow_nan=False)
    (folder / CONFIG_FILE).write_text(text + "\n", encoding="utf-8")
    return folder


def read(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Read what :func:`write` wrote: the JSON config and a CPU state_dict."""
    from safetensors.torch import load_file

    folder = Path(path)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    for required in (config_path, weights_path):
        if not required.is_file():
            raise FileNotFoundError(f"{str(required)!r} not found: {str(folder)!r} is not a folder "
                                    "written by save().")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("format") != FORMAT:
        raise ValueError(f"{str(config_path)!r} is not an skdeep model file.")
    if config.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"{str(folder)!r} was written by a newer skdeep (format {config['format_version']}); "
            "upgrade skdeep to load it."
        )
    return config, load_file(str(weights_path), device="cpu")


def encode_labels(labels: np.ndarray) -> dict[str, Any]:
    """A 1-D label array -> ``{"dtype", "values"}`` that JSON keeps exactly."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "OUbiuf":
        raise TypeError(f"labels of dtype {labels.dtype} cannot be saved; use str or int labels.")
    values = [encode_scalar(value) for value in labels.tolist()]
    return {"dtype": labels.dtype.str if labels.dtype.kind != "O" else "object", "values": values}


def decode_labels(encoded: dict[str, Any]) -> np.ndarray:
    """Inverse of :func:`encode_labels`."""
    dtype = encoded["dtype"]
    if dtype == "object":
        array = np.empty(len(encoded["values"]), dtype=object)
        array[:] = encoded["values"]
        return array
    return np.asarray(encoded["values"], dtype=np.dtype(dtype))


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
