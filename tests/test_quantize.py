"""The quantizers against the truth: brute-force search, hand-derived gradients, the paper's EMA."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vqvae import EMAVectorQuantizer, VectorQuantizer, kmeans, nearest_codes
from vqvae.quantize import QuantizerConfig, make_quantizer

QUANTIZERS = [VectorQuantizer, EMAVectorQuantizer]


def brute_force_indices(z: torch.Tensor, codebook: torch.Tensor) -> np.ndarray:
    """Nearest code per vector of z (B, D, *S), by full float64 distances in NumPy."""
    flat = np.moveaxis(z.detach().double().numpy(), 1, -1).reshape(-1, z.shape[1])  # (N, D)
    e = codebook.detach().double().numpy()  # (K, D)
    d = ((flat[:, None, :] - e[None, :, :]) ** 2).sum(-1)  # (N, K)
    return d.argmin(1).reshape(z.shape[0], *z.shape[2:])


@pytest.mark.parametrize("cls", QUANTIZERS)
@pytest.mark.parametrize("spatial", [(), (7,), (5, 6), (3, 4, 2)])
@pytest.mark.parametrize("k", [17, 300, 1024])
def test_indices_equal_brute_force(cls, spatial, k):
    q = cls(k, 8, seed=1).double().eval()
    z = torch.randn(3, 8, *spatial, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    out = q(z)
    assert out.indices.dtype == torch.int64
    assert out.indices.shape == (3, *spatial)
    np.testing.assert_array_equal(out.indices.numpy(), brute_force_indices(z, q.codebook))
    torch.testing.assert_close(out.quantized, q.decode(out.indices), rtol=0, atol=0)


@pytest.mark.parametrize("k", [100, 512, 1000])
def test_float32_choice_is_a_nearest_code(k):
    """In fp32 a near-tie may flip; the chosen code must still be at the minimum distance."""
    g = torch.Generator().manual_seed(0)
    x, e = torch.randn(4000, 16, generator=g), torch.randn(k, 16, generator=g)
    idx = nearest_codes(x, e)
    d = torch.cdist(x.double(), e.double()).square()
    chosen = d.gather(1, idx[:, None]).squeeze(1)
    torch.testing.assert_close(chosen, d.min(1).values, rtol=1e-5, atol=1e-5)
    assert (idx == d.argmin(1)).float().mean() > 0.999


@pytest.mark.parametrize("k", [3, 256, 333, 4096])
def test_chunked_search_equals_unchunked(k):
    g = torch.Generator().manual_seed(3)
    x, e = torch.randn(777, 12, generator=g).double(), torch.randn(k, 12, generator=g).double()
    whole = nearest_codes(x, e, chunk_bytes=1 << 40)
    for chunk_bytes in (1, 8 * k * 5, 8 * k * 128):
        torch.testing.assert_close(nearest_codes(x, e, chunk_bytes=chunk_bytes), whole)
    torch.testing.assert_close(whole, torch.cdist(x, e).argmin(1))


def test_ties_go_to_the_lowest_index():
    e = torch.zeros(600, 4)
    e[5:] = 10.0
    e[300] = 0.0  # duplicates of code 0 at 1..4 and 300
    x = torch.zeros(50, 4)
    assert torch.equal(nearest_codes(x, e), torch.zeros(50, dtype=torch.long))


def test_beta_sits_on_the_commitment_term():
    """Gradient of the aux loss: codebook gets (e − z)·2/n unweighted; z gets β·(z − e)·2/n."""
    for beta in (0.25, 1.0):
        q = VectorQuantizer(16, 4, beta=beta, dead_code_window=None)
        z = torch.randn(2, 4, 3, 3, requires_grad=True)
        out = q(z)
        out.loss.backward()
        e = q.codebook.detach()[out.indices]  # (B, S, S, D)
        zl = z.detach().movedim(1, -1)
        n = z.numel()
        torch.testing.assert_close(z.grad.movedim(1, -1), beta * 2 * (zl - e) / n)
        expected = torch.zeros_like(q.codebook).index_add_(
            0, out.indices.flatten(), (2 * (e - zl) / n).reshape(-1, 4)
        )
        torch.testing.assert_close(q.codebook.grad, expected)


def test_codebook_loss_moves_only_the_codebook_and_commitment_only_the_input():
    q = VectorQuantizer(16, 4, dead_code_window=None)
    z = torch.randn(2, 4, 5, requires_grad=True)
    q(z).codebook_loss.backward()
    assert z.grad is None
    assert q.codebook.grad.abs().sum() > 0

    q.zero_grad()
    q.codebook.grad = None
    out = q(z)
    out.commitment_loss.backward()
    assert q.codebook.grad is None
    assert z.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_losses_are_unweighted_means(cls):
    q = cls(8, 3, beta=0.7)
    z = torch.randn(4, 3, 6)
    out = q(z)
    mse = (z - out.quantized).square().mean()  # the codes used, before the EMA update
    torch.testing.assert_close(out.commitment_loss, mse)
    torch.testing.assert_close(out.codebook_loss, mse)
    expected = 0.7 * mse if cls is EMAVectorQuantizer else (1 + 0.7) * mse
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_straight_through_gradient_equals_upstream_gradient(cls):
    q = cls(32, 6)
    z = torch.randn(2, 6, 4, 4, requires_grad=True)
    upstream = torch.randn(2, 6, 4, 4)
    codebook = q.codebook.detach().clone()  # an EMA step moves the codes after the lookup
    out = q(z)
    torch.testing.assert_close(out.quantized, codebook[out.indices].movedim(-1, 1), rtol=0, atol=0)
    (out.quantized * upstream).sum().backward()
    torch.testing.assert_close(z.grad, upstream, rtol=0, atol=0)


def test_ema_buffers_change_in_training_not_in_eval_and_are_not_parameters():
    q = EMAVectorQuantizer(16, 4)
    assert list(q.parameters()) == []
    for name in ("codebook", "cluster_size", "embed_sum"):
        assert name in dict(q.named_buffers())
    z = torch.randn(8, 4, 5)
    before = {k: v.clone() for k, v in q.state_dict().items()}
    q.train()
    q(z)
    changed = {k for k, v in q.state_dict().items() if not torch.equal(v, before[k])}
    assert {"codebook", "cluster_size", "embed_sum"} <= changed

    q.eval()
    frozen = {k: v.clone() for k, v in q.state_dict().items()}
    q(z)
    q.encode(z)
    for k, v in q.state_dict().items():
        assert torch.equal(v, frozen[k]), k


def test_ema_update_follows_appendix_a1():
    decay, eps = 0.9, 1e-5
    q = EMAVectorQuantizer(4, 2, decay=decay, eps=eps, dead_code_window=None)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    q.embed_sum.copy_(q.codebook)
    z = torch.tensor([[1.0, 0.0], [0.0, 1.0], [9.0, 0.0], [50.0, 50.0]])  # (N, D) → codes 0 0 1 3
    n0, m0 = q.cluster_size.clone(), q.embed_sum.clone()
    q.train()
    q(z)
    counts = torch.tensor([2.0, 1.0, 0.0, 1.0])
    sums = torch.tensor([[1.0, 1.0], [9.0, 0.0], [0.0, 0.0], [50.0, 50.0]])
    n = decay * n0 + (1 - decay) * counts
    m = decay * m0 + (1 - decay) * sums
    smoothed = (n + eps) / (n.sum() + 4 * eps) * n.sum()
    torch.testing.assert_close(q.cluster_size, n)
    torch.testing.assert_close(q.embed_sum, m)
    torch.testing.assert_close(q.codebook, m / smoothed[:, None])


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_dead_code_reset_revives_a_collapsed_codebook(cls):
    torch.manual_seed(0)
    q = cls(64, 2, dead_code_window=3, seed=5)
    with torch.no_grad():
        q.codebook.copy_(torch.full((64, 2), 100.0))
        q.codebook[0] = 0.0
        if cls is EMAVectorQuantizer:
            q.embed_sum.copy_(q.codebook)
    data = torch.rand(256, 2, 8) * 4 - 2  # far from every code but code 0
    q.train()
    assert q(data[:32]).indices.unique().numel() == 1
    optimizer = torch.optim.SGD(q.parameters(), lr=0.0) if cls is VectorQuantizer else None
    for step in range(12):
        q(data[(step * 32) % 256 :][:32])
        if optimizer:
            optimizer.step()
    q.eval()
    used = q(data).indices.unique().numel()
    assert used > 40, used


def test_dead_code_reset_is_deterministic_under_a_seed_and_works_with_tiny_batches():
    def run(seed):
        q = EMAVectorQuantizer(32, 3, dead_code_window=2, seed=seed, reservoir_size=16)
        g = torch.Generator().manual_seed(0)
        q.train()
        for _ in range(10):
            q(torch.randn(1, 3, 2, generator=g))  # 2 vectors a step, 30 dead codes
        return q.codebook.clone()

    torch.testing.assert_close(run(1), run(1), rtol=0, atol=0)
    assert not torch.equal(run(1), run(2))


def test_usage_statistics_over_a_window():
    q = EMAVectorQuantizer(8, 2, dead_code_window=None)
    q.train()
    z = q.codebook[:3].detach().T.reshape(1, 2, 3).clone()  # exactly codes 0, 1, 2
    for _ in range(4):
        q(z)
    usage = q.codebook_usage()
    assert usage.steps == 4
    assert usage.codes_used == 3
    assert usage.dead_codes == 5
    assert usage.used_fraction == pytest.approx(3 / 8)
    assert usage.perplexity == pytest.approx(3.0, rel=1e-5)
    assert q.codebook_usage().steps == 0  # the window was reset


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(8, 3, generator=g) * 20
    x = (centres[:, None, :] + 0.1 * torch.randn(8, 50, 3, generator=g)).reshape(-1, 3)
    found, counts = kmeans(x, 8, iters=20, generator=torch.Generator().manual_seed(1))
    assert counts.sum() == 400
    nearest = torch.cdist(centres, found).min(1).values
    assert (nearest < 0.5).all()


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_kmeans_initialisation_on_first_batches(cls):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(16, 4, generator=g) * 10
    def batch(n):
        pick = torch.randint(16, (n,), generator=g)
        return (centres[pick] + 0.05 * torch.randn(n, 4, generator=g)).T.reshape(1, 4, n)

    q = cls(16, 4, kmeans_init=True, kmeans_iters=20, dead_code_window=None)
    q.train()
    q(batch(10))  # fewer than K vectors: keep collecting
    assert not bool(q.initialized)
    out = q(batch(200))
    assert bool(q.initialized)
    assert out.commitment_loss < 1.0
    assert torch.cdist(centres, q.codebook.detach()).min(1).values.lt(1.0).all()


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_encode_has_no_side_effects(cls):
    q = cls(8, 2).train()
    state = {k: v.clone() for k, v in q.state_dict().items()}
    q.encode(torch.randn(3, 2, 4))
    for k, v in q.state_dict().items():
        assert torch.equal(v, state[k])


def test_search_and_statistics_stay_fp32_under_bf16_autocast():
    q = EMAVectorQuantizer(64, 8, dead_code_window=None).train()
    z = torch.randn(4, 8, 6, 6)
    reference = q.encode(z)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = q(z)
    assert torch.equal(out.indices, reference)
    assert q.codebook.dtype == q.cluster_size.dtype == q.embed_sum.dtype == torch.float32

    zb = z.bfloat16()
    reference = q.encode(zb.float())
    out = q(zb)
    assert out.quantized.dtype == torch.bfloat16
    assert torch.equal(out.indices, reference)


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_bad_inputs_raise_clear_errors(cls):
    q = cls(16, 4)
    with pytest.raises(ValueError, match="channels.*dim=4"):
        q(torch.randn(2, 3, 5))
    with pytest.raises(TypeError, match="floating-point"):
        q(torch.ones(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or Inf"):
        q(torch.tensor([[1.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN or Inf"):
        q(torch.full((1, 4, 2), float("inf")))
    with pytest.raises(ValueError, match="spatial axes"):
        q(torch.randn(1, 4, 2, 2, 2, 2))
    with pytest.raises(IndexError, match=r"\[0, 16\).*\[0, 16\]"):
        q.decode(torch.tensor([[0, 16]]))
    with pytest.raises(IndexError, match="-1"):
        q.decode(torch.tensor([-1]))
    with pytest.raises(TypeError, match="integer"):
        q.decode(torch.tensor([0.0]))
    with pytest.raises(ValueError, match="codebook_size"):
        cls(0, 4)
    with pytest.raises(ValueError, match="beta"):
        cls(4, 4, beta=-1.0)


def test_bad_inputs_leave_the_state_untouched():
    q = EMAVectorQuantizer(16, 4).train()
    state = {k: v.clone() for k, v in q.state_dict().items()}
    with pytest.raises(ValueError):
        q(torch.tensor([[float("nan"), 0.0, 0.0, 0.0]]))
    for k, v in q.state_dict().items():
        assert torch.equal(v, state[k])


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    spatial=st.lists(st.integers(1, 4), min_size=0, max_size=3),
    dim=st.integers(1, 6),
    k=st.integers(1, 300),
    seed=st.integers(0, 2**16),
    ema=st.booleans(),
)
def test_property_lookup_is_exact_and_round_trips(batch, spatial, dim, k, seed, ema):
    cls = EMAVectorQuantizer if ema else VectorQuantizer
    q = cls(k, dim, seed=seed).double()
    z = torch.randn(batch, dim, *spatial, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(seed))
    q.eval()
    out = q(z)
    assert out.quantized.shape == z.shape
    np.testing.assert_array_equal(out.indices.numpy(), brute_force_indices(z, q.codebook))
    assert torch.equal(q.encode(z), out.indices)
    assert torch.equal(q.decode(out.indices), out.quantized)
    assert 1.0 - 1e-6 <= float(out.perplexity) <= min(k, out.indices.numel()) + 1e-4


# ------------------------------------------------- in-place writes to the output


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_output_can_be_modified_in_place_and_gradients_stay_exact(cls):
    """``relu_`` on ``quantized`` works; z gets the upstream gradient through the relu plus
    the commitment gradient of the codes as they were, and the codebook its own."""
    beta = 0.5
    q = cls(32, 6, beta=beta, dead_code_window=None, seed=3).train()
    g = torch.Generator().manual_seed(4)
    z = torch.randn(2, 6, 4, 4, generator=g, requires_grad=True)
    upstream = torch.randn(2, 6, 4, 4, generator=g)
    codebook = q.codebook.detach().clone()  # an EMA step moves the codes after the lookup
    out = q(z)
    e = codebook[out.indices].movedim(-1, 1)  # (B, D, S, S), the codes chosen
    activated = out.quantized.relu_()
    assert activated is out.quantized
    assert torch.equal(activated, e.clamp_min(0))
    ((activated * upstream).sum() + out.loss).backward()
    n = z.numel()
    expected = upstream * (e > 0) + beta * 2 * (z.detach() - e) / n
    torch.testing.assert_close(z.grad, expected, rtol=1e-6, atol=1e-7)
    if cls is VectorQuantizer:
        per_vector = (2 * (e - z.detach()) / n).movedim(1, -1).reshape(-1, 6)  # (N, D)
        expected = torch.zeros_like(codebook).index_add_(0, out.indices.flatten(), per_vector)
        torch.testing.assert_close(q.codebook.grad, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_straight_through_alone_passes_the_upstream_gradient_through_an_in_place_relu(cls):
    q = cls(16, 3).train()
    z = torch.randn(4, 3, 5, requires_grad=True)
    upstream = torch.randn(4, 3, 5)
    out = q(z)
    mask = out.quantized.detach() > 0
    (out.quantized.relu_() * upstream).sum().backward()
    assert torch.equal(z.grad, upstream * mask)


def test_in_place_write_under_bf16_inputs():
    q = EMAVectorQuantizer(16, 4).train()
    z = torch.randn(2, 4, 6, dtype=torch.bfloat16, requires_grad=True)
    codebook = q.codebook.clone()  # the EMA step moves the codes after the lookup
    out = q(z)
    assert out.quantized.dtype == torch.bfloat16
    out.quantized.mul_(2)
    expected = 2 * codebook[out.indices].movedim(-1, 1).bfloat16()
    assert torch.equal(out.quantized, expected)


# ------------------------------------------------- codes far from the origin


def _far_codes(offset: float, k: int, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and inputs of spread 1 (D = 8) around a centre ``offset`` from the origin."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(8, generator=g)
    centre = offset * direction / direction.norm()
    codes = centre + torch.randn(k, 8, generator=g)  # (K, D)
    x = centre + torch.randn(n, 8, generator=g)  # (N, D)
    return x.float(), codes.float()


def assert_nearest_up_to_exact_ties(x: torch.Tensor, codes: torch.Tensor, idx: torch.Tensor) -> None:
    """Every chosen code is at the float64 minimum distance; other choices only at exact ties."""
    d = ((x.double()[:, None, :] - codes.double()[None, :, :]) ** 2).sum(-1)  # (N, K)
    best = d.argmin(1)
    differ = idx != best
    chosen = d.gather(1, idx[:, None]).squeeze(1)
    assert torch.equal(chosen[differ], d.min(1).values[differ]), (
        f"{int(differ.sum())} of {len(idx)} indices are not at the minimum distance"
    )


@pytest.mark.parametrize("offset", [1e2, 1e3, 1e4])
@pytest.mark.parametrize("k", [100, 512])
def test_search_is_exact_for_codes_far_from_the_origin(offset, k):
    """Uncentred fp32 scores round at the scale offset² and got 99.8 % / 91 % / 2 % of these
    indices right at K = 512."""
    x, codes = _far_codes(offset, k, 2048)
    assert_nearest_up_to_exact_ties(x, codes, nearest_codes(x, codes))
    assert_nearest_up_to_exact_ties(x, codes, nearest_codes(x, codes, chunk_bytes=4 * k * 100))


@pytest.mark.parametrize("cls", QUANTIZERS)
def test_quantizer_lookup_is_exact_for_codes_far_from_the_origin(cls):
    x, codes = _far_codes(1e4, 64, 1000, seed=1)
    q = cls(64, 8, dead_code_window=None)
    with torch.no_grad():
        q.codebook.copy_(codes)
    z = x.T.reshape(1, 8, 1000)  # (B, D, S)
    assert_nearest_up_to_exact_ties(x, codes, q.encode(z).flatten())
    assert_nearest_up_to_exact_ties(x, codes, q.eval()(z).indices.flatten())


def test_far_search_keeps_ties_on_the_lowest_index():
    codes = torch.full((300, 4), 1e4)
    codes[:, 0] += torch.arange(300.0)
    codes[7] = codes[3]  # a duplicate of code 3, later in the codebook
    x = codes[3:4].repeat(5, 1)
    assert torch.equal(nearest_codes(x, codes), torch.full((5,), 3))


# ------------------------------------------------------------- empty batches


@pytest.mark.parametrize("cls", QUANTIZERS)
@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (2, 4, 0), (0, 4)])
def test_an_empty_batch_gives_zero_losses_and_leaves_the_state_alone(cls, shape):
    q = cls(16, 4, dead_code_window=1, reservoir_size=8).train()
    q(torch.randn(3, 4, 5))  # one real step, so that every statistic holds something
    state = {k: v.clone() for k, v in q.state_dict().items()}
    z = torch.randn(*shape, requires_grad=True)
    out = q(z)
    assert out.quantized.shape == z.shape
    assert out.indices.shape == (shape[0], *shape[2:]) and out.indices.dtype == torch.int64
    for loss in (out.loss, out.codebook_loss, out.commitment_loss, out.perplexity):
        assert loss.shape == () and loss.item() == 0.0
    out.loss.backward()
    assert z.grad.shape == z.shape
    for key, value in q.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert q.codebook_usage().steps == 1


def test_an_empty_batch_does_not_advance_kmeans_initialisation():
    q = EMAVectorQuantizer(8, 2, kmeans_init=True).train()
    state = {k: v.clone() for k, v in q.state_dict().items()}
    q(torch.randn(0, 2, 4))
    for key, value in q.state_dict().items():
        assert torch.equal(value, state[key]), key
    q(torch.randn(1, 2, 8))  # 8 vectors: now k-means runs
    assert bool(q.initialized)


# ------------------------------------------------------------ configuration


def test_quantizer_config_defaults_are_the_papers_and_bad_values_name_the_field():
    c = QuantizerConfig()
    assert (c.codebook_size, c.code_dim, c.quantizer, c.beta, c.decay) == (512, 64, "ema", 0.25, 0.99)
    bad = [
        ({"codebook_size": 0}, "model.codebook_size"),
        ({"codebook_size": True}, "model.codebook_size"),
        ({"code_dim": 2.0}, "model.code_dim"),
        ({"quantizer": "rvq"}, r"model.quantizer must be one of \('ema', 'grad'\)"),
        ({"beta": -0.1}, "model.beta"),
        ({"beta": float("nan")}, "model.beta"),
        ({"decay": 1.0}, r"model.decay must lie in \[0, 1\)"),
        ({"decay": "0.9"}, "model.decay"),
        ({"kmeans_init": 1}, "model.kmeans_init"),
        ({"dead_code_window": 0}, "model.dead_code_window"),
    ]
    for values, message in bad:
        with pytest.raises(ValueError, match=message):
            QuantizerConfig(**values)


@pytest.mark.parametrize("kind, cls", [("ema", EMAVectorQuantizer), ("grad", VectorQuantizer)])
def test_make_quantizer_builds_what_the_config_says(kind, cls):
    config = QuantizerConfig(codebook_size=24, code_dim=5, quantizer=kind, beta=0.7, decay=0.9,
                             kmeans_init=False, dead_code_window=7)
    q = make_quantizer(config, seed=11)
    assert type(q) is cls
    assert (q.codebook_size, q.dim, q.beta, q.dead_code_window, q.seed) == (24, 5, 0.7, 7, 11)
    assert q.codebook.shape == (24, 5) and bool(q.initialized)
    if cls is EMAVectorQuantizer:
        assert q.decay == 0.9
    direct = cls(24, 5, 0.7, seed=11)
    assert torch.equal(q.codebook, direct.codebook)
    assert not bool(make_quantizer(QuantizerConfig(quantizer=kind)).initialized)  # k-means pending
