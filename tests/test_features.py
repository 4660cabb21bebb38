"""PretrainedCNNFeatures: the scikit-learn contract, layers, pooling, inputs and precision."""

import pickle
import warnings

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.svm import SVC

from skdeep import PretrainedCNNFeatures
from skdeep import _device

SMALL = {"image_size": 32}
RESNET = {"backbone": "resnet18", "weights": None, "random_state": 0, "image_size": 32}


def lite(**params):
    return PretrainedCNNFeatures(**{**SMALL, **params})


# --- the scikit-learn contract -----------------------------------------------------------------


def test_init_only_stores_parameters():
    cnn = PretrainedCNNFeatures(backbone="no-such-backbone", batch_size=-3)
    assert cnn.get_params()["backbone"] == "no-such-backbone"
    with pytest.raises(ValueError, match="batch_size"):
        cnn.fit()
    with pytest.raises(ValueError, match="Unknown backbone"):
        PretrainedCNNFeatures(backbone="no-such-backbone").fit()


def test_invalid_parameters_are_rejected_in_fit():
    with pytest.raises(ValueError, match="pooling"):
        lite(pooling="median").fit()
    with pytest.raises(ValueError, match="precision"):
        lite(precision="int8").fit()
    with pytest.raises(ValueError, match="more than once"):
        lite(layer=["penultimate", "penultimate"]).fit()


def test_transform_before_fit_raises(rgb_images):
    with pytest.raises(NotFittedError):
        lite().transform(rgb_images)
    with pytest.raises(NotFittedError):
        lite().get_feature_names_out()


def test_fit_ignores_the_data_and_is_idempotent(rgb_images):
    cnn = lite(precision="fp32")
    first = cnn.fit(rgb_images).transform(rgb_images)
    again = cnn.fit(None).transform(rgb_images)
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.float32 and first.shape == (6, 1280)
    assert cnn.n_features_out_ == 1280 and cnn.feature_widths_ == [1280]


def test_clone_and_params():
    cnn = lite(layer=["blocks.3", "penultimate"], pooling="max").fit()
    copy = clone(cnn)
    assert copy.get_params() == cnn.get_params()
    assert not hasattr(copy, "backbone_")
    copy.set_params(layer="logits", batch_size=8)
    assert (copy.layer, copy.batch_size) == ("logits", 8)


def test_pickle_is_small_and_gives_identical_features(rgb_images):
    cnn = lite(precision="fp32").fit()
    expected = cnn.transform(rgb_images)
    payload = pickle.dumps(cnn)
    assert len(payload) < 20_000  # the pretrained weights are rebuilt from the bundle, not stored
    np.testing.assert_array_equal(pickle.loads(payload).transform(rgb_images), expected)


def test_joblib_round_trip_of_a_non_reproducible_backbone_stores_its_weights(tmp_path, rgb_images):
    cnn = PretrainedCNNFeatures(backbone="resnet18", weights=None, image_size=32,
                                precision="fp32").fit()  # unseeded: cannot be rebuilt
    expected = cnn.transform(rgb_images)
    joblib.dump(cnn, tmp_path / "cnn.joblib")
    assert (tmp_path / "cnn.joblib").stat().st_size > 40_000_000  # resnet18's 11.7M params
    np.testing.assert_array_equal(joblib.load(tmp_path / "cnn.joblib").transform(rgb_images), expected)


def test_model_fitted_on_cuda_unpickles_on_a_cpu_machine(rgb_images):
    cnn = lite(precision="fp32").fit()
    expected = cnn.transform(rgb_images)
    cnn.device_ = torch.device("cuda")  # as if fitted on a GPU box
    payload = pickle.dumps(cnn)
    restored = pickle.loads(payload)  # device="auto" re-resolves to what this machine has
    assert restored.device_.type == "cpu"
    np.testing.assert_array_equal(restored.transform(rgb_images), expected)
    pinned = lite(precision="fp32", device="cuda")
    pinned.__dict__.update({k: v for k, v in cnn.__dict__.items() if k.endswith("_")})
    with pytest.warns(UserWarning, match="CUDA is not available"):
        restored = pickle.loads(pickle.dumps(pinned))
    assert restored.device_.type == "cpu"


def test_tags_say_images_not_tables():
    tags = lite().__sklearn_tags__()
    assert not tags.input_tags.two_d_array
    assert tags.input_tags.three_d_array and tags.input_tags.string
    assert tags.requires_fit


def test_subset_invariance_and_batch_size_independence(rgb_images):
    many = np.concatenate([rgb_images] * 17)[:100]
    full = lite(precision="fp32", batch_size=100).fit().transform(many)
    alone = lite(precision="fp32", batch_size=1).fit().transform(many[:1])
    np.testing.assert_allclose(alone[0], full[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(full[90:96], full[:6], rtol=1e-4, atol=1e-5)  # same images, other slots
    subset = lite(precision="fp32", batch_size=7).fit().transform(many[10:20])
    np.testing.assert_allclose(subset, full[10:20], rtol=1e-4, atol=1e-5)


def test_pipeline_grid_search_over_layer_and_svm_c(labelled_images):
    images, labels = labelled_images
    pipe = Pipeline([("cnn", lite(batch_size=40)), ("svm", SVC())])
    grid = GridSearchCV(pipe, {"cnn__layer": ["blocks.1", "penultimate"], "svm__C": [0.1, 10]}, cv=2)
    grid.fit(images, labels)
    assert set(grid.cv_results_["param_cnn__layer"]) == {"blocks.1", "penultimate"}
    assert grid.best_score_ >= 0.9  # the two classes are visually trivial
    assert grid.predict(images[:4]).shape == (4,)


def test_grid_search_over_backbone(labelled_images):
    images, labels = labelled_images
    cnn = PretrainedCNNFeatures(weights=None, random_state=0, image_size=64)
    pipe = Pipeline([("cnn", cnn), ("clf", LogisticRegression())])
    grid = GridSearchCV(pipe, {"cnn__backbone": ["resnet18", "alexnet"]}, cv=2, error_score="raise")
    grid.fit(images, labels)
    assert np.isfinite(grid.cv_results_["mean_test_score"]).all()
    assert set(grid.cv_results_["param_cnn__backbone"]) == {"resnet18", "alexnet"}


def test_too_small_an_image_size_is_a_clear_error():
    with pytest.raises(ValueError, match="larger image_size"):
        PretrainedCNNFeatures(backbone="alexnet", weights=None, image_size=32).fit()


def test_cross_val_score_on_a_pipeline(labelled_images):
    images, labels = labelled_images
    pipe = Pipeline([("cnn", lite()), ("clf", LogisticRegression(max_iter=500))])
    scores = cross_val_score(pipe, images, labels, cv=2)
    assert scores.min() >= 0.9


# --- layers ------------------------------------------------------------------------------------


def test_penultimate_and_logits_match_the_network(rgb_images):
    cnn = lite(layer=["penultimate", "logits"], precision="fp32").fit()
    features = cnn.transform(rgb_images)
    assert cnn.feature_widths_ == [1280, 1000]
    batch = _network_input(cnn, rgb_images)
    with torch.inference_mode():
        pre_logits = cnn.model_.forward_head(cnn.model_.forward_features(batch), pre_logits=True)
        logits = cnn.model_(batch)
    np.testing.assert_allclose(features[:, :1280], pre_logits.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(features[:, 1280:], logits.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("arch", "fc6", "fc7"), [("alexnet", 2, 5), ("vgg11", 1, 4)])
def test_decaf_layers_are_read_after_relu(rgb_images, arch, fc6, fc7):
    cnn = PretrainedCNNFeatures(backbone=arch, weights=None, random_state=0, image_size=64,
                                layer=["pool5", "fc6", "fc7"], pooling=None, precision="fp32").fit()
    features = cnn.transform(rgb_images)
    model = cnn.model_
    batch = _network_input(cnn, rgb_images)
    with torch.inference_mode():
        pool5 = model.features(batch)
        hidden = model.classifier[:fc6 + 1](torch.flatten(model.avgpool(pool5), 1))
        second = model.classifier[fc6 + 1:fc7 + 1](hidden)
    width5 = pool5[0].numel()
    assert cnn.feature_widths_ == [width5, 4096, 4096]
    np.testing.assert_allclose(features[:, :width5], pool5.flatten(1).numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features[:, width5:width5 + 4096], hidden.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features[:, width5 + 4096:], second.numpy(), rtol=1e-4, atol=1e-5)
    assert (features[:, width5:] >= 0).all()  # after the ReLU


def test_several_layers_come_from_one_forward_pass(rgb_images):
    cnn = lite(layer=["blocks.2", "blocks.4", "penultimate"], precision="fp32").fit()
    calls = []
    cnn.model_.conv_stem.register_forward_hook(lambda *args: calls.append(1))
    together = cnn.transform(rgb_images)
    assert len(calls) == 1
    apart = np.hstack([lite(layer=name, precision="fp32").fit().transform(rgb_images)
                       for name in ["blocks.2", "blocks.4", "penultimate"]])
    np.testing.assert_allclose(together, apart, rtol=1e-5, atol=1e-5)


def test_early_stop_skips_the_rest_of_the_network(rgb_images):
    cnn = lite(layer="blocks.1").fit()
    calls = []
    cnn.model_.conv_head.register_forward_hook(lambda *args: calls.append(1))
    cnn.transform(rgb_images)
    assert calls == []


def test_a_module_called_twice_is_read_at_its_last_call(rgb_images):
    cnn = PretrainedCNNFeatures(**{**RESNET, "layer": "layer1.0.relu", "precision": "fp32"}).fit()
    features = cnn.transform(rgb_images)
    block = cnn.model_.layer1[0]
    with torch.inference_mode():
        stem = cnn.model_.maxpool(cnn.model_.relu(cnn.model_.bn1(cnn.model_.conv1(
            _network_input(cnn, rgb_images)))))
        inner = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(stem)))))
        expected = torch.relu(inner + stem).mean(dim=(2, 3))
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-4, atol=1e-5)


def test_unknown_layer_lists_close_names():
    with pytest.raises(ValueError, match=r"blocks\.3"):
        lite(layer="block.3").fit()
    with pytest.raises(ValueError, match="Unknown layer 'fc6'"):
        lite(layer="fc6").fit()  # DeCAF names exist only for AlexNet and VGG


@pytest.mark.parametrize("pooling", ["avg", "max", "gem", "avgmax", None])
def test_pooling_of_a_feature_map(rgb_images, pooling):
    cnn = lite(layer="conv_head", pooling=pooling, precision="fp32").fit()
    features = cnn.transform(rgb_images)
    with torch.inference_mode():
        fmap = cnn.model_.conv_head(cnn.model_.blocks(cnn.model_.bn1(cnn.model_.conv_stem(
            _network_input(cnn, rgb_images)))))
    expected = {
        "avg": fmap.mean(dim=(2, 3)),
        "max": fmap.amax(dim=(2, 3)),
        "gem": fmap.clamp(min=1e-6).pow(3).mean(dim=(2, 3)).pow(1 / 3),
        "avgmax": 0.5 * (fmap.mean(dim=(2, 3)) + fmap.amax(dim=(2, 3))),
        None: fmap.flatten(1),
    }[pooling]
    np.testing.assert_allclose(features, expected.numpy(), rtol=1e-4, atol=1e-4)


# --- inputs and outputs ------------------------------------------------------------------------


def test_input_forms_give_the_same_features(tmp_path, rgb_images):
    cnn = lite(precision="fp32").fit()
    expected = cnn.transform(rgb_images)
    paths = []
    for i, image in enumerate(rgb_images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    forms = {
        "float": rgb_images.astype(np.float32) / 255,
        "tensor": torch.from_numpy(rgb_images).permute(0, 3, 1, 2).contiguous(),
        "pil": [Image.fromarray(image) for image in rgb_images],
        "paths": paths,
        "path array": np.asarray(paths, dtype=object),
        "series": pd.Series(paths, index=range(10, 16)),
        "frame": pd.DataFrame({"path": paths}),
    }
    for name, X in forms.items():
        np.testing.assert_allclose(cnn.transform(X), expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_grayscale_becomes_three_channels(rgb_images):
    gray = rgb_images[..., 0]
    cnn = lite(precision="fp32").fit()
    as_gray = cnn.transform(gray)
    as_rgb = cnn.transform(np.repeat(gray[..., None], 3, axis=-1))
    np.testing.assert_allclose(as_gray, as_rgb, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(cnn.transform(gray[..., None]), as_rgb, rtol=1e-5, atol=1e-5)


def test_column_transformer_with_a_path_column(tmp_path, rgb_images):
    paths = []
    for i, image in enumerate(rgb_images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image).save(paths[-1])
    frame = pd.DataFrame({"path": paths, "size": np.arange(6.0)})
    columns = ColumnTransformer([("cnn", lite(), "path"), ("keep", "passthrough", ["size"])])
    out = columns.fit_transform(frame)
    assert out.shape == (6, 1281)
    names = columns.get_feature_names_out()
    assert names[0] == "cnn__penultimate_0" and names[-1] == "keep__size"


def test_feature_names_and_pandas_output(rgb_images):
    cnn = lite(layer=["blocks.1", "penultimate"]).fit()
    names = cnn.get_feature_names_out()
    assert len(names) == len(set(names)) == cnn.n_features_out_
    assert names[0] == "blocks.1_0" and names[-1] == "penultimate_1279"
    frame = cnn.set_output(transform="pandas").transform(pd.Series(list(rgb_images), index=list("abcdef")))
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.index) == list("abcdef") and list(frame.columns) == list(names)


# --- precision and device ----------------------------------------------------------------------


def test_bf16_autocast_agrees_with_fp32(rgb_images):
    fp32 = lite(precision="fp32").fit().transform(rgb_images)
    bf16 = lite(precision="bf16").fit().transform(rgb_images)
    assert bf16.dtype == np.float32
    cosine = (fp32 * bf16).sum(1) / np.linalg.norm(fp32, axis=1) / np.linalg.norm(bf16, axis=1)
    assert cosine.min() > 0.98
    assert not np.array_equal(fp32, bf16)  # bf16 really ran


def test_precision_auto_follows_the_hardware(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(_device, "cpu_supports_bf16", lambda: True)
    assert _device.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(_device, "cpu_supports_bf16", lambda: False)
    assert _device.resolve_precision("auto", cpu) == "fp32"
    assert _device.resolve_precision("auto", torch.device("mps")) == "fp32"
    assert _device.resolve_precision("fp16", cpu) == "fp16"


def test_device_auto_and_missing_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _device.resolve_device("auto").type in ("cpu", "mps")
    with pytest.warns(UserWarning, match="CUDA is not available"):
        assert _device.resolve_device("cuda").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert _device.resolve_device("auto").type == "cuda"


def test_batch_size_none_follows_the_device(rgb_images):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert _device.auto_batch_size(cpu, (3, 224, 224)) == 8
    assert _device.auto_batch_size(cpu, (3, 96, 96)) == 43
    assert _device.auto_batch_size(cpu, (3, 16, 16)) == 256
    assert _device.auto_batch_size(cpu, (3, 4096, 4096)) == 1
    assert _device.auto_batch_size(cuda, (3, 224, 224)) == 256
    assert _device.auto_batch_size(cuda, (3, 448, 448)) == 64
    assert _device.auto_batch_size(cuda, (3, 32, 32)) == 1024
    assert _device.auto_batch_size(torch.device("mps"), (3, 224, 224)) == 64
    auto = lite(precision="fp32").fit()  # 32 px inputs: the cap of 256 images
    assert auto.batch_size is None and auto._inference_batch_size() == 256
    np.testing.assert_allclose(auto.transform(rgb_images),
                               lite(precision="fp32", batch_size=2).fit().transform(rgb_images),
                               rtol=1e-4, atol=1e-5)


def test_no_warnings_on_the_happy_path(rgb_images):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lite().fit().transform(rgb_images)


def _network_input(cnn, images):
    """What the network sees: the estimator's own preprocessing, normalised, as a float batch."""
    dataset = cnn._dataset(images)
    batch = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return cnn._get_extractor().normalize(batch)
