"""The image judge: training on real digits, prediction, save/load and the cache."""

import json

import pytest
import torch

from vqvae.checkpoint import CheckpointError
from vqvae.modalities.image.data import load_images
from vqvae.modalities.image.judge import (
    ImageClassifier,
    _fingerprint,
    _shift,
    accuracy,
    cached_classifier,
    load_classifier,
    predict,
    save_classifier,
    train_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is fastest, and stable under load


# ------------------------------------------------------------------ training on digits


@pytest.fixture(scope="module")
def digits():
    return load_images("mnist-mini", "train"), load_images("mnist-mini", "val")


@pytest.fixture(scope="module")
def trained(digits):
    """About 5-10 s on one thread."""
    train, _ = digits
    return train_classifier(train.images, train.labels, 10, steps=200, batch_size=64, lr=3e-3)


def test_classifier_learns_real_digits(digits, trained):
    _, val = digits
    assert not trained.training
    assert trained.train_settings["steps_run"] == 200
    assert accuracy(trained, val.images, val.labels) >= 0.9


def test_predict_gives_labels_and_penultimate_features(digits, trained):
    _, val = digits
    labels, features = predict(trained, val.images[:70], batch_size=32)
    assert labels.dtype == torch.int64 and labels.shape == (70,)
    assert features.dtype == torch.float64 and features.shape == (70, 128)
    assert (features >= 0).all()  # after the ReLU
    logits = trained(val.to_float(slice(0, 70)))
    assert torch.equal(labels, logits.argmax(dim=1))
    torch.testing.assert_close(trained.head(features.float()), logits)
    with pytest.raises(ValueError, match="built for"):
        predict(trained, torch.zeros(2, 3, 28, 28, dtype=torch.uint8))


def test_save_load_round_trip_gives_identical_predictions(tmp_path, digits, trained):
    _, val = digits
    save_classifier(trained, tmp_path / "clf", val_accuracy=0.5)
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["kind"] == "classifier" and config["val_accuracy"] == 0.5
    assert config["model"] == trained.config and config["training"]["seed"] == 0
    loaded = load_classifier(tmp_path / "clf")
    assert loaded.config == trained.config and not loaded.training
    for a, b in zip(predict(trained, val.images), predict(loaded, val.images), strict=True):
        assert torch.equal(a, b)


# ------------------------------------------------------------------------ tiny runs


def _tiny_set(n=48, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 12, 12), dtype=torch.uint8, generator=g)
    return images, torch.arange(n) % 3


TINY = {"steps": 3, "batch_size": 16, "width": 4, "feature_dim": 8}


def test_training_is_deterministic_under_a_seed_and_leaves_global_rng_alone():
    images, labels = _tiny_set()
    rng_before = torch.get_rng_state()
    one = train_classifier(images, labels, 3, seed=7, **TINY).state_dict()
    assert torch.equal(torch.get_rng_state(), rng_before)
    torch.rand(5)  # a different global RNG state must not matter
    two = train_classifier(images, labels, 3, seed=7, **TINY).state_dict()
    other = train_classifier(images, labels, 3, seed=8, **TINY).state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not all(torch.equal(one[k], other[k]) for k in one)


def test_time_budget_stops_training():
    images, labels = _tiny_set()
    model = train_classifier(images, labels, 3, time_budget=0.0, **TINY)
    assert model.train_settings["steps_run"] == 0


def test_training_rejects_bad_labels():
    images, labels = _tiny_set()
    with pytest.raises(ValueError, match="outside 0..1"):
        train_classifier(images, labels, 2, **TINY)
    with pytest.raises(ValueError, match="int64"):
        train_classifier(images, labels.int(), 3, **TINY)


def test_shift_translates_by_at_most_two_pixels():
    x = torch.zeros(64, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0  # one bright pixel in the middle
    out = _shift(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(64))
    where = out[:, 0].flatten(1).argmax(dim=1)  # (B,)
    rows, cols = where // 9, where % 9
    assert rows.min() == 2 and rows.max() == 6 and cols.min() == 2 and cols.max() == 6


def test_tiny_images_pass_all_three_pools():
    model = ImageClassifier(3, 4, (5, 3), width=4, feature_dim=6).eval()
    assert model(torch.rand(2, 3, 5, 3)).shape == (2, 4)
    assert model.features(torch.rand(2, 3, 5, 3)).shape == (2, 6)


def test_the_data_fingerprint_is_the_one_of_older_cached_classifiers():
    # Pinned: classifiers cached in existing run directories are reused only while the
    # fingerprint of their training set hashes the same bytes as when they were saved.
    images, labels = _tiny_set()
    assert _fingerprint(images, labels) == (
        "846704c253fd0178d7596471c7017a2468d0bd762d7177ebed0fcc3835713c6b"
    )


def test_cached_classifier_trains_once_then_loads(tmp_path):
    images, labels = _tiny_set()
    folder = tmp_path / "run" / "classifier"
    first, info = cached_classifier(folder, images, labels, 3, images[:12], labels[:12], **TINY)
    assert info["trained"] is True and 0.0 <= info["val_accuracy"] <= 1.0
    second, info2 = cached_classifier(folder, images, labels, 3, images[:12], labels[:12], **TINY)
    assert info2 == {"val_accuracy": info["val_accuracy"], "trained": False}
    for a, b in zip(predict(first, images), predict(second, images), strict=True):
        assert torch.equal(a, b)
    # Without validation images the saved accuracy is reported.
    assert cached_classifier(folder, images, labels, 3, **TINY)[1] == info2
    # Other data, or another class count, retrains and replaces the cache.
    other_images, _ = _tiny_set(seed=1)
    assert cached_classifier(folder, other_images, labels, 3, **TINY)[1]["trained"] is True
    assert cached_classifier(folder, other_images, labels % 2, 2, **TINY)[1]["trained"] is True
    assert load_classifier(folder).config["num_classes"] == 2


def test_cached_classifier_never_overwrites_a_tokenizer_config(tmp_path):
    images, labels = _tiny_set()
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "kind": "vqvae"}))
    with pytest.raises(CheckpointError, match="not a classifier"):
        cached_classifier(tmp_path, images, labels, 3, **TINY)
    with pytest.raises(CheckpointError, match="folder of its own"):
        save_classifier(ImageClassifier(1, 3, (12, 12)), tmp_path)


def test_corrupt_or_missing_classifier_gives_clear_errors(tmp_path):
    images, labels = _tiny_set()
    folder = tmp_path / "clf"
    with pytest.raises(FileNotFoundError, match="holds no saved classifier"):
        load_classifier(folder)
    cached_classifier(folder, images, labels, 3, **TINY)
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a header")
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        load_classifier(folder)
    with pytest.raises(CheckpointError, match="not a readable safetensors"):
        cached_classifier(folder, images, labels, 3, **TINY)
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="incomplete"):
        load_classifier(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_classifier(folder)
