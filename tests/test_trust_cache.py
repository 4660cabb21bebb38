"""Issue #16, the feature cache: a cached row is always the row an uncached run would give.

Each test stores features under one setting and then asks, with a setting that must compute
different numbers, for the same images: the answer must equal an uncached run.
"""

import os

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

from skdeep import FeatureCache, PretrainedCNNFeatures
from skdeep._weights import looks_like_path
from skdeep.backbones import resolve_backbone
from skdeep.cache import image_keys

pytestmark = pytest.mark.filterwarnings("error::UserWarning")


def cnn(cache, **params):
    return PretrainedCNNFeatures(**{"image_size": 32, "cache": cache, **params})


def small(cache, **params):
    """A tiny module backbone: builds in milliseconds, so tests about keys stay fast."""
    return cnn(cache, **{"backbone": _small_net(), **params})


@pytest.fixture
def images():
    return np.random.default_rng(0).integers(0, 256, (4, 20, 20, 3), dtype=np.uint8)


def _small_net(stride=1, activation=nn.ReLU):
    torch.manual_seed(0)  # the same weights whatever the structure
    return nn.Sequential(nn.Conv2d(3, 4, 3, stride=stride), activation(), nn.AdaptiveMaxPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


# --- defect 1: the architecture is part of the layer key ----------------------------------------


@pytest.mark.parametrize("other", [{"stride": 2}, {"activation": nn.Tanh}])
def test_modules_with_equal_state_dicts_but_another_structure_do_not_collide(tmp_path, images,
                                                                              other):
    first, second = _small_net(), _small_net(**other)
    assert first.state_dict().keys() == second.state_dict().keys()
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(),
                                                 second.state_dict().values()))
    cache = FeatureCache(tmp_path)
    stale = cnn(cache, backbone=first).fit().transform(images)
    cached = cnn(cache, backbone=second).fit().transform(images)
    expected = cnn(None, backbone=second).fit().transform(images)
    assert not np.allclose(stale, expected)  # the two networks do compute different numbers
    np.testing.assert_array_equal(cached, expected)
    assert cache.info().hits == 0


def test_equal_modules_still_share_entries(tmp_path, images):
    cache = FeatureCache(tmp_path)
    cnn(cache, backbone=_small_net()).fit().transform(images)
    cnn(cache, backbone=_small_net()).fit().transform(images)  # another, identical instance
    assert (cache.info().hits, cache.info().misses) == (4, 4)


def test_one_weights_file_for_two_timm_architectures_does_not_collide(tmp_path, images):
    # One state_dict fits both; "same" padding and the BatchNorm eps differ, the preprocessing not.
    path = tmp_path / "b0.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("efficientnet_b0").state_dict(), path)
    params = {"backbone": "timm/efficientnet_b0", "weights": str(path)}
    tf_params = {"backbone": "timm/tf_efficientnet_b0", "weights": str(path)}
    cache = FeatureCache(tmp_path / "cache")
    first = cnn(cache, **params).fit()
    stale = first.transform(images)
    second = cnn(cache, **tf_params).fit()
    assert second.data_config_ == first.data_config_
    cached = second.transform(images)
    expected = cnn(None, **tf_params).fit().transform(images)
    assert not np.allclose(stale, expected)
    np.testing.assert_array_equal(cached, expected)


def test_architecture_ids_name_the_architecture():
    torchvision_id = resolve_backbone("resnet18", None, random_state=0).architecture_id
    assert torchvision_id == "torchvision:resnet18"
    tagged = resolve_backbone("timm/resnet18", "a1_in1k").architecture_id
    assert tagged == resolve_backbone("timm/resnet18").architecture_id == "timm:resnet18.a1_in1k"
    assert resolve_backbone("timm/resnet18", "a2_in1k").architecture_id == "timm:resnet18.a2_in1k"
    bundled = resolve_backbone("efficientnet_lite0").architecture_id
    assert bundled == resolve_backbone("timm/tf_efficientnet_lite0", None).architecture_id
    assert resolve_backbone(_small_net()).architecture_id.startswith("module:Sequential:sha256:")


# --- defect 5: keys come from the fitted state, not from the current parameters ---------------

_SPATIAL = "1"  # a feature map, where the pooling matters ("penultimate" is pooled already)


@pytest.mark.parametrize("fitted, changed", [("avg", "max"), ("max", "avg")])
def test_pooling_changed_after_fit_stores_nothing_under_the_wrong_key(tmp_path, images, fitted,
                                                                      changed):
    cache = FeatureCache(tmp_path)
    estimator = small(cache, layer=_SPATIAL, pooling=fitted).fit()
    estimator.set_params(pooling=changed)
    served = estimator.transform(images)  # the fitted pooling, until the next fit
    expected = small(None, layer=_SPATIAL, pooling=fitted).fit().transform(images)
    np.testing.assert_array_equal(served, expected)
    refitted = small(cache, layer=_SPATIAL, pooling=changed).fit().transform(images)
    expected = small(None, layer=_SPATIAL, pooling=changed).fit().transform(images)
    np.testing.assert_array_equal(refitted, expected)


def test_pooling_changed_after_a_warm_fit_computes_the_fitted_pooling(tmp_path, images):
    cache = FeatureCache(tmp_path)
    small(cache, layer=_SPATIAL).fit()  # records the widths: the next fit builds no network
    estimator = small(cache, layer=_SPATIAL).fit()
    estimator.set_params(pooling="max")
    served = estimator.transform(images)  # all misses: the network is built now
    np.testing.assert_array_equal(served, small(None, layer=_SPATIAL).fit().transform(images))


def test_cache_switched_after_fit_just_works(tmp_path, images):
    expected = small(None).fit().transform(images)
    cache = FeatureCache(tmp_path / "a")
    switched_on = small(None).fit().set_params(cache=cache)
    np.testing.assert_array_equal(switched_on.transform(images), expected)
    assert cache.info().entries == 4
    np.testing.assert_array_equal(small(cache).fit().transform(images), expected)
    assert cache.info().hits == 4

    # Fitted with extra cache layers: without the cache only the requested columns come out.
    switched_off = small(cache, cache_layers=[_SPATIAL]).fit().set_params(cache=None)
    np.testing.assert_array_equal(switched_off.transform(images), expected)

    other = FeatureCache(tmp_path / "b")
    moved = small(cache).fit().set_params(cache=other)
    np.testing.assert_array_equal(moved.transform(images), expected)
    np.testing.assert_array_equal(small(other).fit().transform(images), expected)
    assert (other.info().hits, other.info().misses) == (4, 4)


# --- defect 6: what a PIL image decodes to is all in its key -----------------------------------


def _palette_image(palette, transparency=None):
    indices = (np.arange(20 * 20).reshape(20, 20) % 4).astype(np.uint8)
    image = Image.fromarray(indices, "L").convert("P")
    image.putpalette(palette)
    if transparency is not None:
        image.info["transparency"] = transparency
    return image


_GRAYS = [0, 0, 0, 90, 90, 90, 180, 180, 180, 255, 255, 255]
_COLOURS = [255, 0, 0, 0, 255, 0, 0, 0, 255, 40, 40, 40]


@pytest.mark.parametrize("second", [
    _palette_image(_COLOURS),
    _palette_image(_GRAYS, transparency=0),
    _palette_image(_GRAYS, transparency=bytes([0, 128, 255, 255])),
], ids=["palette", "transparent-index", "alpha-per-index"])
def test_pil_images_with_the_same_indices_but_other_colours_do_not_collide(tmp_path, second):
    first = _palette_image(_GRAYS)
    assert first.tobytes() == second.tobytes()
    cache = FeatureCache(tmp_path)
    stale = small(cache).fit().transform([first])
    cached = small(cache).fit().transform([second])
    expected = small(None).fit().transform([second])
    assert not np.allclose(stale, expected)
    np.testing.assert_array_equal(cached, expected)


def test_a_closed_pil_image_has_no_key_and_takes_the_normal_error_path(tmp_path):
    path = tmp_path / "image.png"
    _palette_image(_GRAYS).save(path)
    closed = Image.open(path)
    closed.load()
    closed.close()
    assert image_keys([closed]) == [None]


def test_pil_key_is_stable_for_equal_images():
    assert image_keys([_palette_image(_GRAYS, 0)]) == image_keys([_palette_image(_GRAYS, 0)])
    assert len(set(image_keys([_palette_image(_GRAYS), _palette_image(_GRAYS, 1),
                               _palette_image(_GRAYS, 2)]))) == 3


# --- defect 7: a file in the working directory never shadows a weights tag --------------------


def test_a_file_named_like_a_weights_tag_is_not_read_as_weights(tmp_path, monkeypatch, images):
    monkeypatch.chdir(tmp_path)
    for name in ("DEFAULT", "IMAGENET1K_V1", "a1_in1k"):
        (tmp_path / name).write_bytes(b"not weights")
    assert resolve_backbone("efficientnet_lite0", "DEFAULT").weights_id.startswith("bundled:")
    assert resolve_backbone("resnet18", "IMAGENET1K_V1").weights_id == (
        "torchvision:resnet18-f37072fd.pth")
    assert resolve_backbone("timm/resnet18", "a1_in1k").weights_id == "timm:resnet18.a1_in1k"
    assert cnn(None).fit().transform(images).shape == (4, 1280)  # the default setup still works
    module = _small_net()
    own_weights = resolve_backbone(module, None).weights_id
    assert resolve_backbone(module, "DEFAULT").weights_id == own_weights


@pytest.mark.parametrize("backbone", ["resnet18", "timm/resnet18", "efficientnet_lite0", "module"])
def test_a_weights_name_that_is_a_file_here_says_how_to_load_the_file(tmp_path, monkeypatch,
                                                                       backbone):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").write_bytes(b"weights without a suffix")
    backbone = _small_net() if backbone == "module" else backbone
    with pytest.raises(ValueError, match=r"weights='\./mine'"):
        resolve_backbone(backbone, "mine")


def test_a_path_is_a_path_by_its_form(tmp_path, monkeypatch, images):
    monkeypatch.chdir(tmp_path)
    net = _small_net()
    trained = _small_net(activation=nn.Tanh)
    with torch.no_grad():
        trained[0].weight.mul_(-1)
    torch.save(trained.state_dict(), tmp_path / "DEFAULT")
    from_file = cnn(None, backbone=net, weights="./DEFAULT").fit().transform(images)
    reference = _small_net()
    reference.load_state_dict(trained.state_dict())
    np.testing.assert_array_equal(from_file, cnn(None, backbone=reference).fit().transform(images))
    assert not np.allclose(from_file, cnn(None, backbone=net).fit().transform(images))
    assert looks_like_path(tmp_path / "DEFAULT")
    assert looks_like_path("weights.PTH") and looks_like_path("dir/DEFAULT")
    assert not looks_like_path("DEFAULT") and not looks_like_path("IMAGENET1K_V1")
    assert not looks_like_path(None)


# --- defect 12: a file replaced in place with the same size and mtime is re-hashed ------------


def test_a_file_rewritten_with_the_same_size_and_mtime_gets_the_new_features(tmp_path, images):
    path = tmp_path / "image.bmp"
    Image.fromarray(images[0]).save(path)  # BMP: the same size on disk for any pixels
    before = os.stat(path)
    cache = FeatureCache(tmp_path / "cache")
    stale = small(cache).fit().transform([str(path)])
    Image.fromarray(images[1]).save(path)  # rewritten in place, as cp -p or rsync -t would do
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (
        before.st_size, before.st_mtime_ns, before.st_ino)
    cached = small(cache).fit().transform([str(path)])
    expected = small(None).fit().transform(images[1:2])
    assert not np.allclose(stale, expected)
    np.testing.assert_array_equal(cached, expected)
