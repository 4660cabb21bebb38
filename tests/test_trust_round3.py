"""Issue 20 ("trust, round 3"): ways a careful user could lose data or get a wrong answer.

Each test fails on the code before the fix. Item 1 (an output that is an input) is tested with
the other output checks, in test_trust_cli.py.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from PIL import Image

from skdeep.cli import main

FAST = ["--layer", "blocks.1", "--image-size", "32", "--precision", "fp32", "--no-progress"]


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _photos(root, n=3):
    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        pixels = np.full((16, 16, 3), 40 + 80 * k, dtype=np.uint8)
        pixels[::3] = 255 - 40 * k
        Image.fromarray(pixels).save(root / f"{k}.png")
    return root


class _Blocked(BaseException):
    """Raised by the alarm: not an OSError, which the code under test may catch."""


@pytest.fixture
def no_hang():
    """Fail (instead of waiting forever) if the test blocks for 30 s."""
    if not hasattr(signal, "SIGALRM"):
        pytest.skip("needs SIGALRM")

    def expire(signum, frame):
        raise _Blocked("blocked: the command waited on a special file")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# --- item 5: a FIFO where extract keeps its partial output --------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_at_the_partial_file_is_refused_not_waited_on(tmp_path, capsys, no_hang):
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "out.npy"
    os.mkfifo(tmp_path / "out.npy.partial")
    code, _, err = _run(["extract", photos, "-o", out, *FAST], capsys)
    assert code == 1 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("skdeep: error: ") and "out.npy.partial" in line
    assert "not a regular file" in line and not out.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("name", ["out.npy.partial.json", "out.npy.partial.json.tmp"])
def test_a_fifo_at_the_state_file_is_replaced_not_waited_on(tmp_path, capsys, no_hang, name):
    photos = _photos(tmp_path / "photos")
    out = tmp_path / "out.npy"
    os.mkfifo(tmp_path / name)
    code, _, err = _run(["extract", photos, "-o", out, *FAST], capsys)
    assert code == 0, err
    assert np.load(out).shape[0] == 3 and not (tmp_path / name).exists()
