"""Issue 20 ("trust, round 3"): ways a careful user could lose data or get a wrong answer.

Each test fails on the code before the fix. Item 1 (an output that is an input) is tested with
the other output checks, in test_trust_cli.py.
"""

from __future__ import annotations

import json
import os
import signal
import warnings

import numpy as np
import torch
import pytest
from PIL import Image

from _helpers import TINY, make_images
from skdeep import Callback, Checkpoint, CSVLogger, FineTunedCNNClassifier, PretrainedCNNFeatures
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


# --- item 7: paths that cannot be written, told plainly and before the work ---------------------


def _a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("a file, not a folder")
    return path


@pytest.mark.parametrize("inside", [False, True])
def test_a_feature_cache_that_is_a_file_is_named_as_such(tmp_path, inside):
    blocker = _a_file(tmp_path)
    cache = blocker / "features" if inside else blocker
    cnn = PretrainedCNNFeatures(cache=cache, image_size=32, layer="blocks.1", precision="fp32")
    with pytest.raises(NotADirectoryError) as caught:
        cnn.fit().transform(np.zeros((2, 16, 16), dtype=np.uint8))
    message = str(caught.value)
    assert f"the feature cache {str(cache)!r}" in message and "not a folder" in message
    assert ("which is a file" in message) == inside


def test_the_cli_names_a_cache_that_is_a_file_in_one_line(tmp_path, capsys):
    photos = _photos(tmp_path / "photos")
    cache = _a_file(tmp_path)
    code, _, err = _run(["extract", photos, "-o", tmp_path / "out.npy", "--cache", cache, *FAST],
                        capsys)
    assert code == 1 and "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("skdeep: error: ") and "is a file, not a folder" in line
    assert str(cache) in line


def _epochs_trained():
    """A callback that counts the epochs that ended."""
    class Count(Callback):
        def __init__(self):
            self.epochs = 0

        def on_epoch_end(self, estimator, record):
            self.epochs += 1

    return Count()


@pytest.mark.parametrize("make", [
    lambda blocker: CSVLogger(blocker / "history.csv"),
    lambda blocker: Checkpoint(blocker / "checkpoints"),
    lambda blocker: Checkpoint(blocker),
])
def test_loggers_and_checkpoints_check_their_paths_before_the_first_epoch(tmp_path, make):
    images, labels = make_images(16)
    counter = _epochs_trained()
    callback = make(_a_file(tmp_path))
    clf = FineTunedCNNClassifier(backbone=TINY, weights=None, image_size=16, epochs=2,
                                 batch_size=8, precision="fp32", random_state=0,
                                 callbacks=[counter, callback])
    with pytest.raises(NotADirectoryError) as caught:
        clf.fit(images, labels)
    assert counter.epochs == 0
    message = str(caught.value)
    assert type(callback).__name__ in message and "notes.txt" in message and "is a file" in message


def test_a_csv_logger_given_a_folder_says_so_before_training(tmp_path):
    images, labels = make_images(16)
    counter = _epochs_trained()
    clf = FineTunedCNNClassifier(backbone=TINY, weights=None, image_size=16, epochs=1,
                                 batch_size=8, precision="fp32", random_state=0,
                                 callbacks=[counter, CSVLogger(tmp_path)])
    with pytest.raises(IsADirectoryError, match="CSVLogger.*is a folder"):
        clf.fit(images, labels)
    assert counter.epochs == 0


# --- item 2: what a callable augment returns is read on its own scale ---------------------------


def _textured(seed=0, side=32):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)


def test_an_augment_returning_floats_in_0_1_gives_the_features_of_the_image_itself():
    from torchvision.transforms import v2

    images = np.stack([_textured(k) for k in range(4)])
    common = dict(image_size=32, layer="blocks.1", precision="fp32", tta=2)
    plain = PretrainedCNNFeatures(**common, augment=lambda x: x).fit().transform(images)
    scaled = PretrainedCNNFeatures(**common, augment=v2.ToDtype(torch.float32, scale=True))
    np.testing.assert_allclose(scaled.fit().transform(images), plain, rtol=1e-5, atol=1e-5)


def test_an_augment_returning_floats_in_0_255_is_rounded_not_rescaled():
    from skdeep._augment import CheckedAugment

    image = torch.from_numpy(_textured()).permute(2, 0, 1).contiguous()
    out = CheckedAugment(lambda x: x.float() + 0.2)(image)
    assert out.dtype == torch.uint8 and torch.equal(out, image)
    black = torch.zeros_like(image)
    black[0, 0, 0] = 1
    assert torch.equal(CheckedAugment(lambda x: x.float())(black), black)  # not x255


@pytest.mark.parametrize("returns, error, words", [
    (lambda x: x > 128, TypeError, "torch.bool"),
    (lambda x: x.to(torch.complex64), TypeError, "complex"),
    (lambda x: (x.float() - 128) / 64, ValueError, "Normalize"),
    (lambda x: x.float() * 2, ValueError, "values in"),
    (lambda x: x.float() + 300, ValueError, "values in"),
    (lambda x: x.float() * float("nan"), ValueError, "nan"),
])
def test_an_augment_returning_what_no_rule_can_read_is_refused_by_name(returns, error, words):
    from skdeep._augment import CheckedAugment

    image = torch.from_numpy(_textured()).permute(2, 0, 1).contiguous()
    with pytest.raises(error, match=words) as caught:
        CheckedAugment(returns)(image)
    assert "augment=" in str(caught.value)


# --- item 9: a resume with other images of the same labels is refused ---------------------------


def _tiny(**params):
    return FineTunedCNNClassifier(**{**dict(backbone=TINY, weights=None, image_size=16, epochs=2,
                                            batch_size=8, precision="fp32", random_state=0),
                                     **params})


def test_resume_refuses_other_images_with_the_same_labels(tmp_path):
    X, y = make_images(24)
    folder = tmp_path / "ckpt"
    _tiny(callbacks=[Checkpoint(folder, monitor=None)]).fit(X, y)
    other = X.copy()
    other[5] = 255 - other[5]  # one image differs
    with pytest.raises(ValueError, match="X holds other images"):
        _tiny().fit(other, y, resume=folder)
    reordered = X.copy()
    reordered[[0, 2]] = X[[2, 0]]  # two images of one class swapped: the labels are the same
    with pytest.raises(ValueError, match="X holds other images"):
        _tiny().fit(reordered, y, resume=folder)
    assert _tiny().fit(X, y, resume=folder).n_iter_ == 2  # the same images resume


def test_resume_refuses_other_files_under_the_same_names(tmp_path):
    X, y = make_images(16)
    photos = tmp_path / "photos"
    photos.mkdir()
    paths = []
    for k, image in enumerate(X):
        paths.append(str(photos / f"{k}.png"))
        Image.fromarray(image).save(paths[-1])
    folder = tmp_path / "ckpt"
    _tiny(callbacks=[Checkpoint(folder, monitor=None)]).fit(paths, y)
    Image.fromarray(255 - X[3]).save(paths[3])  # edited in place, same name
    with pytest.raises(ValueError, match="X holds other images"):
        _tiny().fit(paths, y, resume=folder)


def test_a_fit_without_checkpoints_never_reads_the_images_an_extra_time(monkeypatch):
    import skdeep.classifier

    calls = []
    monkeypatch.setattr(skdeep.classifier, "image_keys", lambda items: calls.append(1) or [])
    X, y = make_images(16)
    _tiny(epochs=1).fit(X, y)
    assert calls == []


# --- item 6: a flipped bit inside a stored cache vector is never served -------------------------


def _stored_vectors(cache_dir):
    import sqlite3

    connection = sqlite3.connect(cache_dir / "features.sqlite")
    rows = connection.execute("SELECT layer_key, image_key, vector FROM features").fetchall()
    return connection, rows


@pytest.mark.parametrize("damage", ["flip a bit", "drop the checksum"])
def test_a_damaged_vector_is_recomputed_counted_and_warned_once(tmp_path, damage):
    from skdeep import DamagedCacheWarning, FeatureCache

    images = np.stack([_textured(k, side=16) for k in range(6)])
    params = dict(image_size=32, layer="blocks.1", precision="fp32")
    expected = PretrainedCNNFeatures(**params).fit().transform(images)
    cache = FeatureCache(tmp_path / "cache")
    PretrainedCNNFeatures(**params, cache=cache).fit().transform(images)
    connection, rows = _stored_vectors(tmp_path / "cache")
    for layer_key, image_key, blob in rows[:2]:  # two entries damaged on disk
        blob = bytearray(blob)
        if damage == "flip a bit":
            blob[5] ^= 0x10
        else:  # an entry written without its checksum
            blob = blob[:-4]
        connection.execute("UPDATE features SET vector = ? WHERE layer_key = ? AND image_key = ?",
                           (bytes(blob), layer_key, image_key))
    connection.commit()
    connection.close()

    fresh = FeatureCache(tmp_path / "cache")
    with pytest.warns(DamagedCacheWarning, match="2 damaged vector") as caught:
        rows = PretrainedCNNFeatures(**params, cache=fresh).fit().transform(images)
    assert len([w for w in caught if w.category is DamagedCacheWarning]) == 1
    np.testing.assert_array_equal(rows, expected)
    assert fresh.info().damaged == 2
    assert (fresh.info().hits, fresh.info().misses) == (4, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedCacheWarning)  # replaced: served as it is now
        again = PretrainedCNNFeatures(**params, cache=fresh).fit().transform(images)
    np.testing.assert_array_equal(again, expected)
    assert fresh.info().damaged == 2 and fresh.info().hits == 10


# --- item 8: image_size="auto" depends on the images, not on the order of their names -----------


def test_auto_image_size_reads_past_the_first_sixteen_thumbnails(tmp_path):
    from skdeep._inputs import auto_image_size

    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(20):  # "a_..." sorts first: thumbnails
        Image.fromarray(np.full((32, 32, 3), k, np.uint8)).save(folder / f"a_{k:02d}.png")
    Image.fromarray(np.zeros((300, 200, 3), np.uint8)).save(folder / "z_photo.png")
    files = sorted(str(path) for path in folder.iterdir())
    assert auto_image_size(files) is None  # the photo is not shrunk to 96 px
    assert auto_image_size(files[::-1]) is None  # whatever the order
    assert auto_image_size(files[:-1]) == 96  # thumbnails alone


def test_auto_image_size_stops_at_the_first_large_image(monkeypatch):
    import skdeep._inputs as inputs

    seen = []
    monkeypatch.setattr(inputs, "_longest_side", lambda item: seen.append(item) or item)
    assert inputs.auto_image_size([20, 500, 30, 40]) is None and seen == [20, 500]


# --- item 10: a group TTA policy gives a mirrored or rotated image the same features -----------


def _fine_texture(seed, shape):
    """Fine-textured images: where a one-pixel shift of the crop changes the features most."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _cosine(a, b):
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("shape", [(28, 28, 3), (75, 50, 3), (50, 81, 3)])
def test_tta_flip_gives_a_mirrored_image_the_features_of_its_original(shape):
    images = np.stack([_fine_texture(k, shape) for k in range(3)])
    cnn = PretrainedCNNFeatures(image_size=64, precision="fp32", tta="flip").fit()
    original = cnn.transform(images)
    mirrored = cnn.transform(images[:, :, ::-1].copy())
    assert _cosine(original, mirrored).min() >= 0.999


@pytest.mark.parametrize("shape", [(29, 29, 3), (75, 50, 3)])
def test_tta_symmetric_gives_a_rotated_image_the_features_of_its_original(shape):
    images = np.stack([_fine_texture(k, shape) for k in range(3)])
    cnn = PretrainedCNNFeatures(image_size=64, precision="fp32", tta="symmetric").fit()
    original = cnn.transform(images)
    for k in (1, 2, 3):
        rotated = cnn.transform(np.rot90(images, k, axes=(1, 2)).copy())
        assert _cosine(original, rotated).min() >= 0.999


def test_the_exact_centre_crop_differs_from_timms_only_where_a_margin_is_odd():
    from skdeep._preprocessing import geometric_transform

    config = {"input_size": (3, 96, 96), "interpolation": "bicubic", "crop_pct": 0.875,
              "crop_mode": "center"}
    exact = geometric_transform(config, exact_centre=True)
    assert geometric_transform(config).resized_size((28, 28)) == (109, 109)  # timm's
    assert exact.resized_size((28, 28)) == (110, 110)  # an odd margin of 13 made even
    assert exact.resized_size((300, 400)) == (110, 146)  # 109 x 145: both margins odd
    assert exact.resized_size((220, 440)) == (110, 218)  # 109 x 218: one margin odd
    # At 224 px (scale 256) a 220 x 440 image has even margins: exactly timm's crop.
    config = {**config, "input_size": (3, 224, 224)}
    exact = geometric_transform(config, exact_centre=True)
    assert exact.resized_size((220, 440)) == (256, 512)
    image = Image.fromarray(_fine_texture(0, (440, 220, 3)))
    np.testing.assert_array_equal(exact(image).numpy(), geometric_transform(config)(image).numpy())


def test_without_a_group_tta_policy_the_crop_is_timms():
    from skdeep._preprocessing import GeometricTransform

    cnn = PretrainedCNNFeatures(image_size=96, layer="blocks.1", precision="fp32").fit()
    image = Image.fromarray(_fine_texture(0, (28, 28, 3)))
    ours = cnn._transform(False)(image).numpy().astype(int)
    timms = GeometricTransform(cnn.data_config_)(image).numpy().astype(int)  # PIL, timm's crop
    # The tensor kernels round within a level or two of Pillow's: a shifted crop would not.
    assert np.abs(ours - timms).max() <= 2
    assert cnn.set_params(tta="flip")._transform(False).exact_centre
    assert not cnn.set_params(tta=4)._transform(False).exact_centre


def test_the_classifier_predicts_a_mirrored_image_as_its_original_under_tta_flip():
    images = np.stack([_fine_texture(k, (27, 27, 3)) for k in range(8)])
    labels = np.arange(8) % 2
    clf = _tiny(image_size=24, epochs=1).fit(images, labels)
    clf.set_params(tta="flip")
    np.testing.assert_allclose(clf.predict_proba(images[:, :, ::-1].copy()),
                               clf.predict_proba(images), rtol=1e-5, atol=1e-6)


# --- item 3: skdeep never reads its own report as images ----------------------------------------


def _labelled(root):
    for label, value in (("bright", 200), ("dark", 50)):
        (root / label).mkdir(parents=True)
        for k in range(6):
            pixels = np.full((16, 16, 3), value, np.uint8)
            pixels[k::6] = 255 - value  # stripes at another place in each image
            Image.fromarray(pixels).save(root / label / f"{k}.png")
    return root


def test_evaluate_run_twice_inside_its_input_reads_no_plot_as_an_image(tmp_path, capsys,
                                                                        monkeypatch):
    photos = _labelled(tmp_path / "photos")
    monkeypatch.chdir(photos)
    argv = ["evaluate", ".", "--folds", "2", "--layers", "blocks.1", "--image-size", "32",
            "--precision", "fp32", "--no-progress", "--duplicates", "ignore"]
    code, first, err = _run(argv, capsys)
    assert code == 0, err
    assert "lies inside INPUT" in err  # the default ./skdeep-report is inside "."
    assert (photos / "skdeep-report" / ".skdeep-output").is_file()
    before = json.loads((photos / "skdeep-report" / "results.json").read_text())
    code, second, err = _run(argv, capsys)
    assert code == 0, err
    assert "12 images, 2 classes" in second and "skdeep-report" in err
    after = json.loads((photos / "skdeep-report" / "results.json").read_text())
    assert after["config"]["classes"] == ["bright", "dark"]
    assert ([row["accuracy_mean"] for row in after["scores"]]
            == [row["accuracy_mean"] for row in before["scores"]])


def test_find_images_skips_a_marked_folder_with_a_note(tmp_path):
    from skdeep.datasets import find_images, mark_output_folder

    photos = _photos(tmp_path / "photos")
    report = photos / "report"
    report.mkdir()
    Image.new("RGB", (8, 8)).save(report / "plot.png")
    mark_output_folder(report)
    with pytest.warns(UserWarning, match="skdeep's own output"):
        found = find_images(photos)
    assert [os.path.basename(path) for path in found] == ["0.png", "1.png", "2.png"]
