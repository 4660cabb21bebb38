"""The backbone registry: bundled weights, torchvision and timm caches, local files, offline errors."""

import time

import numpy as np
import pytest
import timm
import torch
from sklearn.datasets import load_sample_image
from torch import nn

import skdeep
from skdeep import PretrainedCNNFeatures, WeightsUnavailableError, resolve_backbone
from skdeep import _weights
from skdeep.backbones import _bundled_path

PALACE, DAISY = 698, 985  # ImageNet class indices


def test_bundled_lite0_state_dict_loads_strictly_into_tf_efficientnet_lite0_by_position():
    state = torch.load(_bundled_path("efficientnet_lite0"), weights_only=True)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    target = model.state_dict()
    assert len(state) == len(target) == 296
    assert [tuple(v.shape) for v in state.values()] == [tuple(v.shape) for v in target.values()]
    model.load_state_dict(dict(zip(target.keys(), state.values())), strict=True)
    built = resolve_backbone("efficientnet_lite0").build()
    for ours, theirs in zip(built.state_dict().values(), state.values()):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize(("photo", "expected"), [("china.jpg", PALACE), ("flower.jpg", DAISY)])
def test_bundled_lite0_recognises_sklearn_sample_photos(photo, expected):
    image = load_sample_image(photo)
    logits = PretrainedCNNFeatures(layer="logits", precision="fp32").fit().transform([image])
    assert logits.shape == (1, 1000)
    assert int(np.argmax(logits[0])) == expected


def test_data_config_comes_from_the_weights_not_from_constants():
    lite = resolve_backbone("efficientnet_lite0").data_config
    assert lite["mean"] == (0.5, 0.5, 0.5) and lite["interpolation"] == "bicubic"
    resnet = resolve_backbone("resnet18", "IMAGENET1K_V1").data_config
    assert resnet["mean"] == pytest.approx((0.485, 0.456, 0.406))
    assert resnet["interpolation"] == "bilinear"
    assert resnet["input_size"] == (3, 224, 224) and resnet["crop_pct"] == pytest.approx(224 / 256)
    vit = resolve_backbone("vit_b_16", "IMAGENET1K_SWAG_E2E_V1").data_config
    assert vit["input_size"] == (3, 384, 384) and vit["interpolation"] == "bicubic"
    small = resolve_backbone("efficientnet_lite0", image_size=64).data_config
    assert small["input_size"] == (3, 64, 64) and small["crop_pct"] == lite["crop_pct"]


def test_resolving_builds_nothing_and_touches_no_network(monkeypatch):
    monkeypatch.setattr(_weights, "host_reachable", _fail)
    monkeypatch.setattr(timm, "create_model", _fail)
    spec = resolve_backbone("resnet50", "DEFAULT")
    assert spec.weights_id == "torchvision:resnet50-11ad3fa6.pth"
    assert resolve_backbone("timm/resnet18").weights_id == "timm:resnet18.a1_in1k"


def test_random_init_is_seeded_and_identified():
    a = resolve_backbone("resnet18", None, random_state=3).build()
    b = resolve_backbone("resnet18", None, random_state=3).build()
    c = resolve_backbone("resnet18", None, random_state=4).build()
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    assert not torch.equal(a.conv1.weight, c.conv1.weight)
    assert resolve_backbone("resnet18", None, random_state=3).reproducible
    unseeded = resolve_backbone("resnet18", None)
    assert unseeded.weights_id is None and not unseeded.reproducible


def test_seeded_random_init_is_torch_seeded_init_and_leaves_the_global_rng_alone():
    from torchvision.models import resnet18

    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    built = resolve_backbone("resnet18", None, random_state=3).build()
    assert torch.equal(torch.rand(3), expected_next)  # the caller's stream goes on unchanged
    torch.manual_seed(3)  # the weights a weights_id "random:resnet18:seed=3" has always named
    for ours, reference in zip(built.state_dict().values(), resnet18().state_dict().values()):
        assert torch.equal(ours, reference)


def test_build_architecture_has_the_structure_without_the_weights():
    spec = resolve_backbone("efficientnet_lite0")
    pretrained, bare = spec.build(), spec.build_architecture()
    shapes = {name: value.shape for name, value in pretrained.state_dict().items()}
    assert {name: value.shape for name, value in bare.state_dict().items()} == shapes
    assert not torch.equal(bare.conv_stem.weight, pretrained.conv_stem.weight)
    assert not bare.training and not any(p.requires_grad for p in bare.parameters())


def test_built_backbone_is_frozen_in_eval_mode():
    model = resolve_backbone("resnet18", None, random_state=0).build()
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_a_local_file(tmp_path, suffix):
    source = resolve_backbone("resnet18", None, random_state=7).build()
    path = tmp_path / f"mine{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.state_dict(), str(path))
    else:
        torch.save({"state_dict": source.state_dict()}, path)  # a wrapped checkpoint
    spec = resolve_backbone("resnet18", str(path))
    assert spec.weights_id.startswith("file:sha256:") and not spec.reproducible
    loaded = spec.build()
    assert torch.equal(loaded.fc.weight, source.fc.weight)


def test_a_pickled_object_is_refused_not_unpickled(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weights": _Unsafe()}, path)
    with pytest.raises(ValueError, match="weights-only"):
        resolve_backbone("resnet18", str(path)).build()


def test_a_file_for_another_architecture_names_the_file(tmp_path):
    path = tmp_path / "alexnet.pth"
    torch.save(resolve_backbone("alexnet", None, random_state=0).build().state_dict(), path)
    with pytest.raises(ValueError, match="alexnet.pth"):
        resolve_backbone("resnet18", str(path)).build()


def test_missing_weights_file():
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        resolve_backbone("resnet18", "/nowhere.pth")


def test_torchvision_weights_are_read_from_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(_weights, "host_reachable", _fail)
    saved = resolve_backbone("resnet18", None, random_state=11).build().state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(saved, cache / "resnet18-f37072fd.pth")
    model = resolve_backbone("resnet18", "IMAGENET1K_V1").build()
    assert torch.equal(model.fc.weight, saved["fc.weight"])


def test_torchvision_offline_error_is_fast_and_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(_weights, "host_reachable", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        PretrainedCNNFeatures(backbone="resnet18").fit()
    assert time.perf_counter() - start < 30
    message = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "weights=" in message


def test_timm_weights_are_read_from_the_hugging_face_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from safetensors.torch import save_file

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(_weights, "host_reachable", _fail)
    saved = resolve_backbone("timm/resnet10t", None, random_state=5).build().state_dict()
    repo = tmp_path / "models--timm--resnet10t.c3_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in saved.items()}, str(snapshot / "model.safetensors"))
    model = resolve_backbone("timm/resnet10t").build()
    assert torch.equal(model.fc.weight, saved["fc.weight"])


def test_timm_offline_error_is_fast(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(_weights, "host_reachable", lambda *a, **k: False)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="models--timm--resnet10t"):
        resolve_backbone("timm/resnet10t").build()
    assert time.perf_counter() - start < 30


def test_module_instance_as_backbone():
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                           nn.Linear(4, 2))
    spec = resolve_backbone(module)
    assert spec.source == "module" and spec.weights_id.startswith("module:sha256:")
    built = spec.build()
    assert built is not module and torch.equal(built[0].weight, module[0].weight)
    assert module.training  # the user's module is not touched
    features = PretrainedCNNFeatures(backbone=module, image_size=16).fit().transform(
        np.zeros((2, 16, 16, 3), np.uint8))
    assert features.shape == (2, 4)


def test_unknown_backbone_suggests_close_names():
    with pytest.raises(ValueError, match="resnet18"):
        resolve_backbone("resnet-18")
    with pytest.raises(ValueError, match="timm has no model"):
        resolve_backbone("timm/not_a_model_at_all")


def test_unknown_torchvision_weights_name_lists_choices():
    with pytest.raises(ValueError, match="IMAGENET1K_V1"):
        resolve_backbone("resnet18", "IMAGENET22K")


def test_list_backbones_and_layers():
    names = skdeep.list_backbones()
    assert names[0] == "efficientnet_lite0"
    assert {"resnet18", "vgg16", "alexnet", "googlenet", "inception_v3"} <= set(names)
    assert "timm/seresnet50" in names
    assert skdeep.list_backbones("bundled", available_offline=True)[0] == "efficientnet_lite0"
    with pytest.raises(ValueError, match="source"):
        skdeep.list_backbones("hub")
    assert skdeep.list_layers("vgg16")[:5] == ["penultimate", "logits", "pool5", "fc6", "fc7"]
    layers = skdeep.list_layers("efficientnet_lite0")
    assert "blocks.3" in layers and "conv_head" in layers


def _fail(*args, **kwargs):
    raise AssertionError("must not be called")


class _Unsafe:
    pass
