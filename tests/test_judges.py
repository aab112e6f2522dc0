"""The shared judge machinery: training loop, prediction, labels, fingerprint, cache, Fréchet."""

import json

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

from vqvae.checkpoint import CheckpointError
from vqvae.judges import (
    cached_judge,
    check_labels,
    fingerprint,
    fraction_correct,
    frechet_distance,
    predict_batches,
    train_judge,
)

# ------------------------------------------------------------------ a toy judge


class Linear(nn.Module):
    """The least a judge needs: logits from inputs, a ``config`` and ``train_settings``."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.config = {"in_features": in_features, "num_classes": num_classes}
        self.train_settings: dict = {}
        self.layer = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


def _points(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 2-D points, label 1 where x > 0, with a margin: |x| in [1, 2], y in [-2, 2]."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    x = (1.0 + torch.rand(n, generator=g)) * (2.0 * labels - 1.0)
    y = 4.0 * torch.rand(n, generator=g) - 2.0
    return torch.stack([x, y], dim=1), labels


def _epochs(n: int):
    """A ``batches`` policy: fresh permutations of ``0..n-1``, remainder dropped."""

    def batches(batch_size: int, generator: torch.Generator):
        while True:
            order = torch.randperm(n, generator=generator)
            for start in range(0, n - batch_size + 1, batch_size):
                yield order[start : start + batch_size]

    return batches


def _zeroed(classes: int) -> Linear:
    model = Linear(2, classes)
    nn.init.zeros_(model.layer.weight)
    nn.init.zeros_(model.layer.bias)
    return model


def _train(points, labels, seed=0, classes=2, zero_init=False, **kwargs):
    """A linear judge trained on ``points`` jittered by noise from the loop's generator."""

    def inputs(index, generator):
        jitter = 0.1 * torch.randn(len(index), 2, generator=generator)  # (B, 2)
        return (points[index] + jitter,)

    settings = {"steps": 60, "batch_size": 16, "lr": 0.1, "time_budget": None,
                "device": "cpu", **kwargs}
    build = (lambda: _zeroed(classes)) if zero_init else (lambda: Linear(2, classes))
    return train_judge(build, labels, _epochs(len(labels)), inputs,
                       seed=seed, **settings)


def _predict(model, points, batch_size=5, order=None):
    order = torch.arange(len(points)) if order is None else order
    (predicted,) = predict_batches(model, order, batch_size, lambda index: (points[index],),
                                   lambda m, x: (m(x).argmax(dim=1),))
    return predicted


# ------------------------------------------------------------------ training loop


def test_a_linear_judge_separates_a_separable_toy_problem_exactly():
    points, labels = _points(64, seed=0)
    held_out, held_out_labels = _points(200, seed=1)
    model = _train(points, labels, record={"data_sha256": "abc"})
    assert not model.training
    assert fraction_correct(_predict(model, held_out), held_out_labels) == 1.0
    settings = model.train_settings
    assert settings["steps_run"] == 60 and settings["batch_size"] == 16 and settings["seed"] == 0
    assert settings["data_sha256"] == "abc" and settings["final_loss"] < 0.1


def test_the_same_seed_gives_identical_weights_and_the_global_rng_is_left_alone():
    points, labels = _points(64, seed=0)
    rng_before = torch.get_rng_state()
    one = _train(points, labels, seed=3, steps=5).state_dict()
    assert torch.equal(torch.get_rng_state(), rng_before)
    torch.rand(5)  # a different global RNG state must not matter
    two = _train(points, labels, seed=3, steps=5).state_dict()
    other = _train(points, labels, seed=4, steps=5).state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not any(torch.equal(one[k], other[k]) for k in one)
    # the seed drives the batch order and the augmentation too, not only the initial weights
    one = _train(points, labels, seed=3, steps=5, zero_init=True).state_dict()
    two = _train(points, labels, seed=3, steps=5, zero_init=True).state_dict()
    other = _train(points, labels, seed=4, steps=5, zero_init=True).state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not any(torch.equal(one[k], other[k]) for k in one)


def test_the_batch_size_is_capped_at_the_data_and_a_time_budget_stops_training():
    points, labels = _points(6, seed=0)
    assert _train(points, labels, batch_size=64).train_settings["batch_size"] == 6
    assert _train(points, labels, time_budget=0.0).train_settings["steps_run"] == 0
    with pytest.raises(ValueError, match="batch_size >= 2"):
        _train(points, labels, batch_size=1)
    with pytest.raises(ValueError, match="steps >= 1"):
        _train(points, labels, steps=0)


def test_check_labels_names_the_problem():
    check_labels(torch.tensor([0, 2, 1]), 3, 3)
    with pytest.raises(ValueError, match=r"int64 \(N,\) = \(3,\), one per clip"):
        check_labels(torch.tensor([0, 1, 1], dtype=torch.int32), 3, 2, per="clip")
    with pytest.raises(ValueError, match="one per example"):
        check_labels(torch.tensor([0, 1]), 3, 2)
    with pytest.raises(ValueError, match="outside 0..1 for num_classes=2"):
        check_labels(torch.tensor([0, 2, 1]), 3, 2)


# ------------------------------------------------------------------ prediction


def test_predictions_come_back_in_index_order_in_eval_mode():
    points, labels = _points(64, seed=0)
    model = _train(points, labels).train()  # predict_batches must switch it to eval
    scrambled = torch.randperm(64, generator=torch.Generator().manual_seed(0))
    predicted = _predict(model, points, batch_size=7, order=scrambled)
    assert not model.training
    assert torch.equal(predicted, model(points).argmax(dim=1))
    assert torch.equal(predicted, _predict(model, points, batch_size=64))
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        _predict(model, points, batch_size=0)
    with pytest.raises(ValueError, match="differ in shape"):
        fraction_correct(predicted, labels[:-1])


# ------------------------------------------------------------------ fingerprint + cache


def test_fingerprint_changes_with_any_value_or_size():
    points, labels = _points(8, seed=0)
    base = fingerprint(["8", points, labels])
    assert base == fingerprint(["8", points.clone(), labels.clone()])
    nudged = points.clone()
    nudged[3, 1] += 1e-6
    assert fingerprint(["8", nudged, labels]) != base
    assert fingerprint(["8", points, 1 - labels]) != base
    assert fingerprint(["9", points, labels]) != base


def _cached(folder, points, labels, calls, **kwargs):
    """A toy judge through the cache; ``calls`` counts the trainings."""
    sha = fingerprint([str(tuple(points.shape)), points, labels])

    def train():
        calls.append(1)
        return _train(points, labels, record={"data_sha256": sha})

    return cached_judge(folder, "toy-judge", Linear, {"in_features": 2, "num_classes": 2}, sha,
                        train, **kwargs)


def test_the_cache_reuses_a_judge_of_the_same_data_and_retrains_on_other_data(tmp_path):
    points, labels = _points(64, seed=0)
    held_out, held_out_labels = _points(50, seed=1)

    def score(model):
        return fraction_correct(_predict(model, held_out), held_out_labels)

    folder, calls = tmp_path / "run" / "toy", []
    first, info = _cached(folder, points, labels, calls, score=score)
    assert info == {"val_accuracy": 1.0, "trained": True} and len(calls) == 1
    assert json.loads((folder / "config.json").read_text())["kind"] == "toy-judge"
    second, info = _cached(folder, points, labels, calls, score=score)
    assert info == {"val_accuracy": 1.0, "trained": False} and len(calls) == 1
    assert all(torch.equal(a, b) for a, b in
               zip(first.state_dict().values(), second.state_dict().values(), strict=True))
    # without a score, the saved held-out accuracy is reported
    assert _cached(folder, points, labels, calls)[1] == {"val_accuracy": 1.0, "trained": False}
    # one value of the data changed: another fingerprint, so it retrains and replaces
    changed = points.clone()
    changed[0, 0] += 1e-3
    assert _cached(folder, changed, labels, calls)[1] == {"val_accuracy": None, "trained": True}
    assert len(calls) == 2
    assert _cached(folder, changed, labels, calls)[1]["trained"] is False and len(calls) == 2


def test_the_cache_retrains_when_the_settings_differ_and_refuses_a_foreign_folder(tmp_path):
    points, labels = _points(64, seed=0)
    calls = []
    _cached(tmp_path / "toy", points, labels, calls)
    sha = fingerprint([str(tuple(points.shape)), points, labels])
    # the same data, but a 3-class judge wanted: the saved 2-class one does not fit
    model, info = cached_judge(
        tmp_path / "toy", "toy-judge", Linear, {"in_features": 2, "num_classes": 3}, sha,
        lambda: _train(points, labels, classes=3, record={"data_sha256": sha}))
    assert info["trained"] is True and model.config["num_classes"] == 3
    assert _cached(tmp_path / "toy", points, labels, calls)[1]["trained"] is True
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "kind": "vqvae"}))
    with pytest.raises(CheckpointError, match="not a toy judge"):
        _cached(tmp_path, points, labels, calls)


# ------------------------------------------------------------------ Fréchet distance


def _with_moments(rng, n, mean, cov):
    """``n`` samples whose sample mean and unbiased covariance are exactly ``mean``, ``cov``."""
    z = rng.normal(size=(n, len(mean)))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # covariance I
    return z @ np.linalg.cholesky(cov).T + mean


def _psd_sqrt(s):
    w, v = np.linalg.eigh(s)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _reference(mu_a, s_a, mu_b, s_b):
    """Closed form through symmetric roots: Tr (S_a S_b)^½ = Tr (S_a^½ S_b S_a^½)^½."""
    root_a = _psd_sqrt(s_a)
    cross = np.trace(_psd_sqrt(root_a @ s_b @ root_a))
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2 * cross)


def test_frechet_identical_sets_give_zero():
    a = np.random.default_rng(0).normal(3.0, 5.0, size=(400, 16))
    scale = np.trace(np.cov(a, rowvar=False))
    assert abs(frechet_distance(a, a)) < 1e-9 * scale


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(1)
    mu_a, mu_b = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 1.0, 0.0, -0.5])
    var_a, var_b = np.array([1.0, 4.0, 0.25, 2.0]), np.array([9.0, 1.0, 0.25, 0.5])
    a = _with_moments(rng, 300, mu_a, np.diag(var_a))
    b = _with_moments(rng, 500, mu_b, np.diag(var_b))
    # Diagonal covariances commute: the trace term is sum (sqrt var_a - sqrt var_b)^2.
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_frechet_matches_closed_form_for_full_covariances_and_is_symmetric():
    rng = np.random.default_rng(2)
    f = 6
    m_a, m_b = rng.normal(size=(f, f)), rng.normal(size=(f, f))
    s_a, s_b = m_a @ m_a.T + 0.1 * np.eye(f), m_b @ m_b.T + 0.1 * np.eye(f)
    mu_a, mu_b = rng.normal(size=f), rng.normal(size=f)
    a, b = _with_moments(rng, 200, mu_a, s_a), _with_moments(rng, 300, mu_b, s_b)
    expected = _reference(mu_a, s_a, mu_b, s_b)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(frechet_distance(a, b), rel=1e-10)
    # Torch tensors in, the same number out.
    assert frechet_distance(torch.from_numpy(a), b) == pytest.approx(
        frechet_distance(a, b), rel=1e-12
    )


def test_frechet_sample_estimate_approaches_the_population_value():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, size=(20000, 3))
    b = rng.normal(0.5, 2.0, size=(20000, 3))
    expected = 3 * 0.5**2 + 3 * (1.0 - 2.0) ** 2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.05)


def test_frechet_mean_shift_adds_its_squared_norm():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5))
    v = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance(a, a + v) == pytest.approx(v @ v, rel=1e-9)


def test_frechet_survives_singular_covariances():
    rng = np.random.default_rng(5)
    mu_a, mu_b = np.zeros(4), np.ones(4)
    s_a, s_b = np.diag([1.0, 2.0, 3.0, 4.0]), np.diag([4.0, 3.0, 2.0, 1.0])
    a, b = _with_moments(rng, 100, mu_a, s_a), _with_moments(rng, 100, mu_b, s_b)
    expected = _reference(mu_a, s_a, mu_b, s_b)
    dead = np.zeros((100, 3))  # dead ReLU units: zero variance in both sets
    got = frechet_distance(np.hstack([a, dead]), np.hstack([b, dead]))
    assert got == pytest.approx(expected, rel=1e-5)
    # Fewer samples than features: rank-deficient covariances, still a finite distance.
    few = frechet_distance(rng.normal(size=(8, 32)), rng.normal(size=(8, 32)))
    assert np.isfinite(few) and few > 0


def test_frechet_retries_with_a_ridge_when_the_square_root_fails(monkeypatch):
    rng = np.random.default_rng(6)
    a, b = rng.normal(size=(50, 3)), rng.normal(1.0, 2.0, size=(60, 3))
    expected = frechet_distance(a, b)
    real_sqrtm, calls = scipy.linalg.sqrtm, []

    def flaky_sqrtm(m):
        calls.append(m)
        return np.full_like(m, np.nan) if len(calls) == 1 else real_sqrtm(m)

    monkeypatch.setattr(scipy.linalg, "sqrtm", flaky_sqrtm)
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-5)
    assert len(calls) == 2 and not np.array_equal(calls[0], calls[1])  # ridge added
    monkeypatch.setattr(scipy.linalg, "sqrtm", lambda m: real_sqrtm(m) + 1j * np.eye(len(m)))
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(a, b)


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (np.zeros((1, 4)), np.zeros((5, 4)), "N >= 2 rows"),
        (np.zeros((5, 4)), np.zeros((5, 3)), "feature widths differ"),
        (np.zeros(5), np.zeros((5, 1)), r"\(N, F\)"),
        (np.full((5, 2), np.nan), np.zeros((5, 2)), "NaN"),
    ],
)
def test_frechet_rejects_bad_input(a, b, match):
    with pytest.raises(ValueError, match=match):
        frechet_distance(a, b)
