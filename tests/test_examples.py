"""Every script in examples/ runs to completion at reduced size, so the examples never rot.

Each example reads ``SKDEEP_EXAMPLE_SMALL=1`` and then runs on a few images with small inputs.
The scripts run in a subprocess, as a user would run them, with network access to weight hubs
cut off: an example must work offline (``decaf_vgg16.py`` falls back to ``weights=None``).
"""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(EXAMPLES.glob("*.py"))

# What each example must print (a line that only appears once the story reached its end).
EXPECTED_OUTPUT = {
    "quickstart.py": "held-out accuracy of the fitted pipeline",
    "dataframe_paths.py": "the row without a photo was predicted",
    "grid_search_layers.py": "feature cache:",
    "decaf_vgg16.py": "DeCAF7 (fc7)",
    "finetune_steplr.py": "reloaded model predicts the same labels: True",
    "choose_strategy.py": "wins at",
    "audit_and_grouped_cv.py": "grouped 5-fold CV",
    "conformal_sets.py": "sets at 90 %: coverage",
    "activation_maps.py": "saved activation_maps.png",
}

# Public names an example imports beyond the foundation; a missing one skips with a reason.
REQUIRES = {
    "finetune_steplr.py": [("skdeep", "FineTunedCNNClassifier")],
    "choose_strategy.py": [("skdeep", "FineTunedCNNClassifier")],
    "grid_search_layers.py": [("skdeep", "FeatureCache")],
    "audit_and_grouped_cv.py": [("skdeep", "audit"), ("skdeep", "NearDuplicateGroupKFold")],
    "conformal_sets.py": [("skdeep", "FineTunedCNNClassifier"),
                          ("mapie.classification", "SplitConformalClassifier")],  # [conformal]
}
COMMON_REQUIREMENTS = [("skdeep.datasets", "load_fashion_sample")]

# An unreachable proxy: urllib (torch.hub, torchvision) cannot download anything, so a weights
# download fails fast into skdeep.WeightsUnavailableError instead of fetching hundreds of MB.
_NO_NETWORK = "http://127.0.0.1:9"


def _missing(requirements: list[tuple[str, str]]) -> str | None:
    for module_name, attribute in requirements:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            return f"{module_name} cannot be imported ({exc})"
        if not hasattr(module, attribute):
            return f"{module_name}.{attribute} does not exist yet"
    return None


def _example_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SKDEEP_EXAMPLE_SMALL": "1",
        "HF_HUB_OFFLINE": "1",
        "HTTP_PROXY": _NO_NETWORK,
        "HTTPS_PROXY": _NO_NETWORK,
        "http_proxy": _NO_NETWORK,
        "https_proxy": _NO_NETWORK,
        "NO_PROXY": "",
        "no_proxy": "",
        "MPLBACKEND": "Agg",
        # The reduced examples fit linear models on a few hundred rows, which multi-threaded BLAS
        # only slows down (its threads spin against torch's on a busy CI machine).
        "OPENBLAS_NUM_THREADS": "1",
        "TMPDIR": str(tmp_path),
    })
    return env


def test_every_example_is_covered():
    names = {script.name for script in SCRIPTS}
    assert names, "examples/ holds no script"
    assert names == set(EXPECTED_OUTPUT), (
        "examples/ and EXPECTED_OUTPUT differ: give each example the line it must print"
    )


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_example_tells_its_story_and_honours_the_small_switch(script):
    tree = ast.parse(script.read_text(encoding="utf-8"))
    docstring = ast.get_docstring(tree)
    assert docstring and len(docstring.splitlines()) >= 5, f"{script.name} needs a story docstring"
    assert "SKDEEP_EXAMPLE_SMALL" in script.read_text(encoding="utf-8")


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.stem)
def test_example_runs(script, tmp_path):
    reason = _missing(COMMON_REQUIREMENTS + REQUIRES.get(script.name, []))
    if reason:
        pytest.skip(f"{script.name} needs it: {reason}")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=_example_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"{script.name} failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-5000:]}"
    )
    assert EXPECTED_OUTPUT[script.name] in result.stdout, result.stdout[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-5000:]
