"""The traced, hook-free extractor and the compile policy (no compilation in this file: fast)."""

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from skdeep._compiled import (
    GraphExtractor,
    GraphUnavailableError,
    compile_cache_dir,
    compile_pays,
)
from skdeep._layers import FeatureExtractor
from skdeep.backbones import resolve_backbone

CPU = torch.device("cpu")


def _eager(backbone: str, layers: list[str], pooling: str = "avg") -> FeatureExtractor:
    spec = resolve_backbone(backbone, None, random_state=0, image_size=64)
    config = spec.data_config
    eager = FeatureExtractor(spec.build(), layers, pooling, config["mean"], config["std"])
    eager.probe(config["input_size"], CPU)
    return eager


@pytest.mark.parametrize(("backbone", "layers", "pooling"), [
    ("efficientnet_lite0", ["penultimate"], "avg"),
    ("efficientnet_lite0", ["blocks.2", "penultimate", "logits"], "max"),
    ("efficientnet_lite0", ["conv_stem", "blocks.5"], "gem"),
    ("resnet18", ["layer2", "penultimate"], "avgmax"),
    ("alexnet", ["pool5", "fc6", "fc7"], None),
])
def test_graph_extractor_gives_the_eager_outputs(backbone, layers, pooling):
    eager = _eager(backbone, layers, pooling)
    graph = GraphExtractor(eager)
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = eager(images), graph(images)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_graph_extractor_has_no_hooks_and_shares_the_weights():
    eager = _eager("efficientnet_lite0", ["blocks.3", "penultimate"])
    graph = GraphExtractor(eager)
    modules = list(graph.graph.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in modules)
    shared = {p.data_ptr() for p in eager.model.parameters()}
    assert all(p.data_ptr() in shared for p in graph.graph.parameters())


def test_graph_is_cut_after_the_deepest_layer():
    eager = _eager("efficientnet_lite0", ["blocks.1"])
    called = {node.target for node in GraphExtractor(eager).graph.graph.nodes
              if node.op == "call_module"}
    assert any(name.startswith("blocks.1") for name in called)
    assert not any(name.startswith(("blocks.2", "conv_head", "classifier")) for name in called)


def test_graph_extractor_stays_in_eval_mode():
    eager = _eager("resnet18", ["penultimate"])
    graph = GraphExtractor(eager).train()
    assert not graph.training and not graph.graph.training


class _DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = self.conv(x)
        if x.mean() > 0:  # control flow on values: FX cannot trace it
            x = x * 2
        return self.fc(x.mean(dim=(2, 3)))


def test_untraceable_module_raises_graph_unavailable():
    eager = FeatureExtractor(_DataDependent().eval(), ["penultimate"], "avg", (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(GraphUnavailableError, match="_DataDependent cannot be traced"):
        GraphExtractor(eager)


def _break_even(input_size) -> int:
    """The smallest number of images for which compile="auto" compiles on a CPU."""
    low, high = 1, 10**9
    while low < high:
        middle = (low + high) // 2
        low, high = (low, middle) if compile_pays("auto", middle, input_size, CPU) else (middle + 1, high)
    return low


def test_compile_pays_counts_pixels_and_respects_the_setting():
    size = (3, 224, 224)
    assert not compile_pays("auto", 100, size, CPU)  # the goal: auto never hurts small jobs
    assert compile_pays("auto", 20_000, size, CPU)
    # The saving is per pixel: at half the side, four times as many images pay for a compile.
    assert _break_even((3, 112, 112)) == pytest.approx(4 * _break_even(size), rel=1e-3)
    assert compile_pays(True, 1, size, CPU) and not compile_pays(False, 10**9, size, CPU)
    assert not compile_pays("auto", 10**9, size, torch.device("cuda"))  # not measured there


def test_compile_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    monkeypatch.setenv("SKDEEP_COMPILE_CACHE", str(tmp_path / "mine"))
    assert compile_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv("SKDEEP_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache_dir() == tmp_path / "skdeep" / "inductor"


_CACHE_PROBE = """
import sys
import torch._dynamo  # sets TORCHINDUCTOR_CACHE_DIR to inductor's /tmp default by itself
import torch
from torch._inductor.runtime.cache_dir_utils import cache_dir
import skdeep
from skdeep._compiled import compile_extractor

print(skdeep.compile_cache_dir())
compile_extractor(torch.nn.Identity(), torch.device("cpu"), "fp32")
print(cache_dir())  # where inductor will write
"""


def _probe_cache_dir(tmp_path, **env) -> list[str]:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TORCHINDUCTOR_CACHE_DIR", "SKDEEP_COMPILE_CACHE", "XDG_CACHE_HOME")}
    clean.update(HOME=str(tmp_path), **env)
    done = subprocess.run([sys.executable, "-c", _CACHE_PROBE], env=clean, capture_output=True,
                          text=True, timeout=300, check=True)
    return done.stdout.split()


def test_compile_cache_is_not_torchs_tmp_default_in_a_fresh_process(tmp_path):
    # Importing torch._dynamo sets TORCHINDUCTOR_CACHE_DIR to /tmp/torchinductor_<user>: that is
    # torch's value, not the user's, and must not win over skdeep's folder.
    mine = str(tmp_path / ".cache" / "skdeep" / "inductor")
    assert _probe_cache_dir(tmp_path) == [mine, mine]


def test_a_users_own_inductor_cache_dir_is_kept_in_a_fresh_process(tmp_path):
    theirs = str(tmp_path / "theirs")
    assert _probe_cache_dir(tmp_path, TORCHINDUCTOR_CACHE_DIR=theirs) == [theirs, theirs]
    ours = str(tmp_path / "ours")
    assert _probe_cache_dir(tmp_path, TORCHINDUCTOR_CACHE_DIR=theirs,
                            SKDEEP_COMPILE_CACHE=ours) == [ours, ours]
