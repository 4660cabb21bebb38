"""NumPy values as plain Python: for messages, tables and the JSON files skdeep writes."""

from __future__ import annotations

from typing import Any

import numpy as np


def plain(value: Any) -> Any:
    """``np.int64(3)`` -> ``3``, ``np.str_("cat")`` -> ``"cat"``; anything else as it is."""
    return value.item() if isinstance(value, np.generic) else value


def json_default(value: Any) -> Any:
    """``json.dumps(..., default=json_default)``: NumPy scalars and arrays as their values,
    anything else as its text."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
