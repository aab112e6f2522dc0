"""Decoder likelihoods against the truth: exact normalisation over the 256 levels, float64
CDF differences, float64 finite differences, and the VQ-VAE's old mse/bernoulli losses."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from vqvae.likelihood import (
    DISCRETE,
    LEVELS,
    LIKELIHOODS,
    MIN_LOG_SCALE,
    Likelihood,
    bits_per_dim,
    make_likelihood,
    to_levels,
)

SHAPES = [(1, (7,)), (3, (7,)), (1, (4, 5)), (3, (4, 5)), (3, (2, 3, 2))]  # (C, S)
ALL = [("mse", 1), ("bernoulli", 1), ("logistic", 1), ("logistic", 3), ("categorical", 1)]
EXTREME_MEANS = [-1e5, -1e3, -50.0, -0.3, 0.0, 0.5 / 255, 0.5, 0.5 + 0.3 / 255, 1.0, 2.0, 50.0, 1e3]
EXTREME_LOG_SCALES = [
    -50.0,
    MIN_LOG_SCALE - 1,
    MIN_LOG_SCALE,
    -7.0,
    -5.5,
    -3.0,
    0.0,
    3.0,
    30.0,
    87.0,
    100.0,
]


def levels_data(c: int, spatial: tuple[int, ...], seed: int = 0, batch: int = 2) -> torch.Tensor:
    """8-bit data k/255 (B, C, *S), with both edge levels present."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, LEVELS, (batch, c, *spatial), generator=g)
    k.view(-1)[:2] = torch.tensor([0, LEVELS - 1])
    return k / (LEVELS - 1)


def random_params(lik: Likelihood, c: int, spatial: tuple[int, ...], seed: int = 1, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, c * lik.params_per_channel, *spatial, generator=g)


def every_level(lik: Likelihood, per_channel: torch.Tensor):
    """Params (N, P) repeated over a 1-D axis of all 256 levels, and x = k/255 on that axis."""
    n = per_channel.shape[0]
    params = per_channel.view(n, lik.params_per_channel, 1).expand(-1, -1, LEVELS).contiguous()
    x = (torch.arange(LEVELS) / (LEVELS - 1)).expand(n, 1, LEVELS)
    return params, x


def logistic_reference_mass(mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """P(k) for k = 0..255 by float64 CDF differences, edge bins open: (N,) -> (N, 256).

    Bins below the mean subtract CDFs, bins above subtract survival functions, so that
    both tails keep their relative precision."""
    mean, scale = mean.double()[:, None], log_scale.double().clamp(min=MIN_LOG_SCALE).exp()[:, None]
    k = torch.arange(LEVELS, dtype=torch.float64)
    upper = ((k + 0.5) / (LEVELS - 1) - mean) / scale  # (N, 256)
    lower = ((k - 0.5) / (LEVELS - 1) - mean) / scale
    upper[:, -1], lower[:, 0] = math.inf, -math.inf
    below = k / (LEVELS - 1) < mean
    return torch.where(
        below,
        torch.sigmoid(upper) - torch.sigmoid(lower),
        torch.sigmoid(-lower) - torch.sigmoid(-upper),
    )


# ---- categorical -------------------------------------------------------------------


@pytest.mark.parametrize("c,spatial", SHAPES)
def test_uniform_categorical_is_exactly_8_bits_per_dim(c, spatial):
    lik = make_likelihood("categorical")
    x = levels_data(c, spatial)
    nll = lik.nll(torch.zeros(2, c * LEVELS, *spatial), x)
    assert nll.shape == x.shape
    assert abs(float(nll.mean()) / math.log(2) - 8.0) < 1e-6
    per_example = nll.flatten(1).sum(1).mean()
    assert abs(bits_per_dim(per_example, x[0].numel()) - 8.0) < 1e-6


def test_categorical_nll_is_cross_entropy_of_the_level():
    lik = make_likelihood("categorical")
    x = levels_data(3, (4, 5))
    params = random_params(lik, 3, (4, 5)) * 3
    logp = params.double().unflatten(1, (3, LEVELS)).log_softmax(2)  # (B, C, K, H, W)
    expected = -logp.gather(2, (x * 255).round().long().unsqueeze(2)).squeeze(2)
    torch.testing.assert_close(lik.nll(params, x).double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lik.loss(params, x), lik.nll(params, x).mean())


def test_categorical_mean_is_the_expected_level():
    lik = make_likelihood("categorical")
    params = random_params(lik, 3, (5,))
    probs = params.unflatten(1, (3, LEVELS)).softmax(2)  # (B, C, K, T)
    expected = torch.einsum("bckt,k->bct", probs, torch.arange(LEVELS) / 255.0)
    torch.testing.assert_close(lik.mean(params), expected)


# ---- discretised logistic ----------------------------------------------------------


def extreme_per_channel(mixtures: int, seed: int = 0) -> torch.Tensor:
    """(N, P): every extreme (mean, log-scale) pair; for mixtures random logits and
    the pairs spread over the components."""
    pairs = torch.tensor(list(itertools.product(EXTREME_MEANS, EXTREME_LOG_SCALES)))  # (N, 2)
    raw_means, log_scales = pairs[:, 0] - 0.5, pairs[:, 1]
    if mixtures == 1:
        return torch.stack([raw_means, log_scales], 1)
    g = torch.Generator().manual_seed(seed)
    n = pairs.shape[0]
    pick = lambda v: v[torch.randint(0, n, (n, mixtures), generator=g)]  # noqa: E731
    logits = torch.randn(n, mixtures, generator=g) * 3
    return torch.cat([logits, pick(raw_means), pick(log_scales)], 1)


def random_per_channel(mixtures: int, n: int = 2000, seed: int = 0) -> torch.Tensor:
    """(N, P) random params: means N(0.5, 2²), log-scales uniform in [-12, 8]."""
    g = torch.Generator().manual_seed(seed)
    m = mixtures
    raw_means = torch.randn(n, m, generator=g) * 2
    log_scales = torch.rand(n, m, generator=g) * 20 - 12
    if m == 1:
        return torch.cat([raw_means, log_scales], 1)
    return torch.cat([torch.randn(n, m, generator=g) * 3, raw_means, log_scales], 1)


@pytest.mark.parametrize("mixtures", [1, 3])
@pytest.mark.parametrize("source", [extreme_per_channel, random_per_channel])
def test_logistic_masses_sum_to_one_over_the_256_levels(mixtures, source):
    lik = make_likelihood("logistic", mixtures=mixtures)
    params, x = every_level(lik, source(mixtures))
    nll = lik.nll(params, x)  # (N, 1, 256)
    assert torch.isfinite(nll).all() and (nll >= -1e-6).all()
    total = nll.double().neg().exp().sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-5)


def test_logistic_masses_equal_float64_cdf_differences():
    lik = make_likelihood("logistic")
    g = torch.Generator().manual_seed(4)
    n = 300
    raw_means = torch.rand(n, generator=g, dtype=torch.float64) * 1.4 - 0.7
    log_scales = torch.rand(n, generator=g, dtype=torch.float64) * 8 - 9
    params, x = every_level(lik, torch.stack([raw_means, log_scales], 1))
    reference = logistic_reference_mass(raw_means + 0.5, log_scales)  # (N, 256)
    log_mass = -lik.nll(params, x.double()).squeeze(1)  # float64 in, float64 out
    torch.testing.assert_close(log_mass.exp(), reference, rtol=0, atol=1e-14)
    # far into the tails, in the log domain
    kept = reference > 1e-300
    assert kept.float().mean() > 0.5
    torch.testing.assert_close(log_mass[kept], reference[kept].log(), rtol=1e-9, atol=1e-9)
    # fp32 differs by the rounding of its inputs: an edge moves by ~eps / s, s >= e^-9
    mass32 = lik.nll(params.float(), x).squeeze(1).double().neg().exp()
    torch.testing.assert_close(mass32, reference, rtol=0, atol=1e-4)


def test_logistic_mixture_is_the_weighted_sum_of_its_components():
    m = 3
    lik, single = make_likelihood("logistic", mixtures=m), make_likelihood("logistic")
    per_channel = random_per_channel(m, n=50, seed=5)
    params, x = every_level(lik, per_channel)
    weights = per_channel[:, :m].softmax(1)  # (N, M)
    mixture = torch.zeros(50, LEVELS, dtype=torch.float64)
    for j in range(m):
        comp, _ = every_level(single, per_channel[:, [m + j, 2 * m + j]])
        mixture += (
            weights[:, j : j + 1].double() * single.nll(comp, x).squeeze(1).double().neg().exp()
        )
    mass = lik.nll(params, x).squeeze(1).double().neg().exp()
    torch.testing.assert_close(mass, mixture, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("mixtures", [1, 3])
def test_logistic_nll_and_gradients_stay_finite_for_extreme_params(mixtures):
    lik = make_likelihood("logistic", mixtures=mixtures)
    params, x = every_level(lik, extreme_per_channel(mixtures, seed=2))
    params.requires_grad_(True)
    nll = lik.nll(params, x)
    assert torch.isfinite(nll).all()
    nll.sum().backward()
    assert torch.isfinite(params.grad).all()
    assert params.grad.abs().sum() > 0


def test_logistic_log_scales_are_clamped_at_the_floor():
    lik = make_likelihood("logistic")
    x = levels_data(1, (9,))
    at_floor = torch.cat([x - 0.5 + 0.2 / 255, torch.full_like(x, MIN_LOG_SCALE)], 1)
    below = torch.cat([x - 0.5 + 0.2 / 255, torch.full_like(x, MIN_LOG_SCALE - 20)], 1)
    torch.testing.assert_close(lik.nll(below, x), lik.nll(at_floor, x), rtol=0, atol=0)
    # at the floor a mean inside the right bin already gets all of its mass
    assert lik.nll(at_floor, x).max() < 1e-6


@pytest.mark.parametrize("mixtures", [1, 2])
@pytest.mark.parametrize("log_scale_range", [(-6.0, -2.0), (5.0, 7.0)])  # wide and narrow bins
def test_logistic_gradcheck_in_float64(mixtures, log_scale_range):
    lik = make_likelihood("logistic", mixtures=mixtures)
    g = torch.Generator().manual_seed(6)
    m, t = mixtures, 6
    low, high = log_scale_range
    x = levels_data(1, (t,), seed=6, batch=1).double()
    raw_means = torch.rand(1, m, t, generator=g, dtype=torch.float64) * 1.6 - 0.8
    log_scales = torch.rand(1, m, t, generator=g, dtype=torch.float64) * (high - low) + low
    parts = (
        [raw_means, log_scales]
        if m == 1
        else [torch.randn(1, m, t, generator=g, dtype=torch.float64), raw_means, log_scales]
    )
    params = torch.cat(parts, 1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: lik.nll(p, x), (params,))


def test_logistic_mean_is_the_clamped_mixture_mean():
    one, three = make_likelihood("logistic"), make_likelihood("logistic", mixtures=3)
    params = random_params(one, 3, (4, 5))
    torch.testing.assert_close(one.mean(params), (params[:, 0::2] + 0.5).clamp(0, 1))
    params = random_params(three, 1, (6,))
    expected = (params[:, :3].softmax(1) * (params[:, 3:6] + 0.5)).sum(1, keepdim=True).clamp(0, 1)
    torch.testing.assert_close(three.mean(params), expected)


# ---- all four: shapes, ranges, samples, dtypes ----------------------------------------


@pytest.mark.parametrize("name,mixtures", ALL)
@pytest.mark.parametrize("c,spatial", SHAPES)
def test_shapes_and_ranges(name, mixtures, c, spatial):
    lik = make_likelihood(name, mixtures=mixtures, data_variance=0.06)
    x = levels_data(c, spatial)
    params = random_params(lik, c, spatial) * 2
    nll, loss = lik.nll(params, x), lik.loss(params, x)
    assert nll.shape == x.shape and nll.dtype == torch.float32 and torch.isfinite(nll).all()
    assert loss.shape == () and torch.isfinite(loss)
    mean = lik.mean(params)
    assert mean.shape == x.shape and mean.min() >= 0 and mean.max() <= 1
    draw = lik.sample(params, torch.Generator().manual_seed(0))
    assert draw.shape == x.shape and draw.min() >= 0 and draw.max() <= 1
    if lik.discrete:
        assert torch.equal(draw, to_levels(draw) / 255.0)
    if name == "bernoulli":
        assert set(draw.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("name,mixtures", ALL)
def test_sampling_is_deterministic_with_a_seeded_generator(name, mixtures):
    lik = make_likelihood(name, mixtures=mixtures, data_variance=0.06)
    params = random_params(lik, 3, (4, 5))
    a = lik.sample(params, torch.Generator().manual_seed(7))
    b = lik.sample(params, torch.Generator().manual_seed(7))
    c = lik.sample(params, torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("mixtures", [1, 3])
def test_peaked_logistic_samples_its_level(mixtures):
    lik = make_likelihood("logistic", mixtures=mixtures)
    x = levels_data(3, (4, 5), seed=9)
    raw_means = x - 0.5 + 0.3 / 255  # off centre, still inside the bin
    tiny = torch.full_like(x, -30.0)  # clamped to the floor
    if mixtures == 1:
        params = torch.stack([raw_means, tiny], 2).flatten(1, 2)  # (B, C*2, H, W)
    else:
        other = torch.rand_like(x) - 0.5
        logits = [torch.full_like(x, 60.0), torch.zeros_like(x), torch.zeros_like(x)]
        params = torch.stack([*logits, raw_means, other, other, tiny, tiny, tiny], 2).flatten(1, 2)
    for seed in range(3):
        assert torch.equal(lik.sample(params, torch.Generator().manual_seed(seed)), x)
    # the edge bins are open: a mean far outside [0, 1] samples 0 or 255
    far_means = torch.tensor([-40.0, 40.0]).expand(mixtures, 2)  # (M, T)
    log_scales = torch.full((mixtures, 2), -3.0)
    parts = (
        [far_means, log_scales]
        if mixtures == 1
        else [torch.zeros(mixtures, 2), far_means, log_scales]
    )
    far = torch.cat(parts)[None]  # (1, P, T)
    assert lik.sample(far).flatten().tolist() == [0.0, 1.0]


def test_peaked_categorical_samples_its_level():
    lik = make_likelihood("categorical")
    x = levels_data(3, (7,), seed=10)
    params = F.one_hot(to_levels(x), LEVELS).movedim(-1, 2).float() * 50  # (B, C, K, T)
    params = params.flatten(1, 2)  # (B, C*K, T)
    assert torch.equal(lik.sample(params, torch.Generator().manual_seed(0)), x)
    torch.testing.assert_close(lik.mean(params), x)


@pytest.mark.parametrize("name,mixtures", ALL)
def test_computes_in_fp32_under_bf16_autocast(name, mixtures):
    lik = make_likelihood(name, mixtures=mixtures)
    x = levels_data(3, (4, 5))
    params = random_params(lik, 3, (4, 5)).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        nll, loss, mean = lik.nll(params, x), lik.loss(params, x), lik.mean(params)
    assert nll.dtype == loss.dtype == mean.dtype == torch.float32
    torch.testing.assert_close(nll, lik.nll(params.float(), x), rtol=0, atol=0)
    torch.testing.assert_close(mean, lik.mean(params.float()), rtol=0, atol=0)


# ---- backward compatibility of mse and bernoulli ---------------------------------------


@pytest.mark.parametrize("spatial", [(7,), (4, 5)])
def test_mse_is_the_old_normalised_mse(spatial):
    lik = make_likelihood("mse", data_variance=0.06)
    assert not lik.discrete and lik.params_per_channel == 1
    x = levels_data(3, spatial)
    raw = random_params(lik, 3, spatial) * 0.3
    assert torch.equal(lik.loss(raw, x), F.mse_loss(raw + 0.5, x) / 0.06)
    torch.testing.assert_close(lik.nll(raw, x), 0.5 * (x - raw - 0.5) ** 2 / 0.06)
    torch.testing.assert_close(2 * lik.nll(raw, x).mean(), lik.loss(raw, x))
    assert torch.equal(lik.mean(raw), (raw + 0.5).clamp(0, 1))


@pytest.mark.parametrize("spatial", [(7,), (4, 5)])
def test_bernoulli_is_binary_cross_entropy_with_logits(spatial):
    lik = make_likelihood("bernoulli")
    x = (levels_data(1, spatial) > 0.5).float()
    logits = random_params(lik, 1, spatial) * 3
    assert torch.equal(lik.loss(logits, x), F.binary_cross_entropy_with_logits(logits, x))
    assert torch.equal(
        lik.nll(logits, x), F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    )
    assert torch.equal(lik.mean(logits), torch.sigmoid(logits))


# ---- helpers and validation ------------------------------------------------------------


def test_bits_per_dim_arithmetic():
    assert bits_per_dim(3072 * math.log(2) * 4.5, 3072) == pytest.approx(4.5, abs=1e-12)
    assert bits_per_dim(torch.tensor(math.log(256.0)), 1) == pytest.approx(8.0, abs=1e-6)
    assert bits_per_dim(0.0, 10) == 0.0
    with pytest.raises(ValueError, match="dims"):
        bits_per_dim(1.0, 0)
    with pytest.raises(ValueError, match="one number"):
        bits_per_dim(torch.ones(3), 3)


def test_to_levels_round_trips_and_rejects_values_outside_0_1():
    k = torch.arange(LEVELS)
    levels = to_levels(k / 255.0)
    assert levels.dtype == torch.int64 and torch.equal(levels, k)
    assert torch.equal(to_levels(k.double() / 255), k)
    assert torch.equal(to_levels(torch.tensor([0.3 / 255, 254.6 / 255])), torch.tensor([0, 255]))
    for bad in (-1e-3, 1.001, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            to_levels(torch.tensor([0.5, bad]))
    with pytest.raises(TypeError, match="1/255"):
        to_levels(torch.tensor([0, 255], dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        make_likelihood("categorical").nll(torch.zeros(1, LEVELS, 2), torch.tensor([[[0.0, 1.5]]]))


def test_make_likelihood_attributes_and_errors():
    expected_p = {"mse": 1, "bernoulli": 1, "logistic": 2, "categorical": 256}
    for name in LIKELIHOODS:
        lik = make_likelihood(name)
        assert lik.name == name and lik.discrete == (name in DISCRETE)
        assert lik.params_per_channel == expected_p[name]
    assert make_likelihood("logistic", mixtures=3).params_per_channel == 9
    assert make_likelihood("mse", data_variance=0.5) == make_likelihood("mse", data_variance=0.5)
    with pytest.raises(ValueError, match="categorical"):
        make_likelihood("gaussian")
    with pytest.raises(ValueError, match="logistic"):
        make_likelihood("categorical", mixtures=3)
    for bad in (0, -1):
        with pytest.raises(ValueError, match="mixtures"):
            make_likelihood("logistic", mixtures=bad)
    for bad in (1.5, True, "3"):
        with pytest.raises(TypeError, match="mixtures"):
            make_likelihood("logistic", mixtures=bad)
    for bad in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="data_variance"):
            make_likelihood("mse", data_variance=bad)


def test_shape_mismatches_name_the_expected_shape():
    lik = make_likelihood("logistic", mixtures=3)
    x = levels_data(3, (4, 5))
    with pytest.raises(ValueError, match=r"\(B, C\*9, \*S\)"):
        lik.nll(torch.zeros(2, 3 * 2, 4, 5), x)
    with pytest.raises(ValueError, match="27"):
        lik.nll(torch.zeros(2, 27, 4, 6), x)
    with pytest.raises(ValueError, match=r"C\*256"):
        make_likelihood("categorical").mean(torch.zeros(2, 300, 4))
    with pytest.raises(TypeError, match="floating-point"):
        lik.nll(torch.zeros(2, 27, 4, 5, dtype=torch.long), x)
