"""The autoregressive pixel decoder: causality, receptive field, cached sampling, learning, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vqvae.ar_decoder import PixelCNNDecoder

H, W, D = 6, 7, 3
TINY = {"width": 8, "depth": 3, "kernel_size": 3, "first_kernel_size": 5, "head_width": 16}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is fastest, and stable under load


def decoder(channels: int = 1, params: int = 4, **settings) -> PixelCNNDecoder:
    torch.manual_seed(0)
    return PixelCNNDecoder(channels, D, params, **{**TINY, **settings}).double()


def inputs(channels: int = 1, batch: int = 1, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, H, W, generator=g, dtype=torch.float64)
    cond = torch.randn(batch, D, H, W, generator=g, dtype=torch.float64)
    return x, cond


def jacobians(model: PixelCNNDecoder, x: torch.Tensor, cond: torch.Tensor):
    """d params / d x and d params / d cond, as ``(C*P, H, W, C or D, H, W)`` (batch 1)."""
    jx, jc = torch.autograd.functional.jacobian(model, (x, cond))
    return jx[0, :, :, :, 0], jc[0, :, :, :, 0]


# ------------------------------------------------------------------ causality


@pytest.mark.parametrize("channels", [1, 3])
def test_params_depend_only_on_earlier_pixels_in_raster_order(channels):
    model = decoder(channels)
    jx, jc = jacobians(model, *inputs(channels))
    # (output position, input position) pairs in raster index; all input channels at once.
    reach = jx.abs().sum(dim=(0, 3)).reshape(H * W, H * W)  # (out, in)
    allowed = torch.ones(H * W, H * W).tril(diagonal=-1).bool()  # in strictly before out
    assert (reach[~allowed] == 0).all(), "a position sees itself or a later pixel"
    for i, j in [(0, 0), (2, 3), (H - 1, W - 2), (H - 1, W - 1)]:
        src = i * W + j
        after = torch.arange(H * W) > src
        assert (reach[~after, src] == 0).all()
        if src + 1 < H * W:  # the next pixel (mask A, then the row below) does see it
            assert reach[src + 1, src] > 0
        # every channel of this pixel reaches every output channel of the next one
        if j + 1 < W:
            per_channel = jx[:, i, j + 1, :, i, j].abs()  # (C*P, C)
            assert (per_channel > 0).all()
    # The first pixel depends on cond only; cond reaches every position.
    assert (jx[:, 0, 0] == 0).all()
    assert (jc[:, 0, 0].abs().sum() > 0).item()
    assert (jc.abs().sum(dim=(0, 3, 4, 5)) > 0).all()


def test_cond_bias_is_aligned_with_the_position_it_conditions():
    # Depth 1: the head at (i, j) reads the horizontal stack at (i, j), whose bias is the
    # 1x1 conv of cond at (i, j) alone; a shifted bias would show up at (i+1, j) or (i, j+1).
    model = decoder(depth=1)
    _, jc = jacobians(model, *inputs())
    seen = jc.abs().sum(dim=(0, 3)) > 0  # (H, W, H, W)
    expected = torch.eye(H * W, dtype=torch.bool).reshape(H, W, H, W)
    assert torch.equal(seen, expected)


def test_no_blind_spot_the_last_pixel_sees_every_earlier_pixel():
    # Reach 3 + 1 + 1 + 1 = 6 = W - 1 columns, and rows above through the vertical stack.
    model = decoder(depth=4, first_kernel_size=7)
    x, cond = inputs()
    x.requires_grad_(True)
    model(x, cond)[0, :, H - 1, W - 1].sum().backward()
    seen = x.grad[0, 0].abs() > 0
    earlier = torch.ones(H * W, dtype=torch.bool)
    earlier[-1] = False
    assert torch.equal(seen.flatten(), earlier)


def test_a_shallow_decoder_does_not_see_the_far_left_of_its_row():
    # The gradient test above can fail: reach 2 + 1 = 3 < W - 1 leaves (H-1, 0..2) unseen.
    model = decoder(depth=2, first_kernel_size=5)
    x, cond = inputs()
    x.requires_grad_(True)
    model(x, cond)[0, :, H - 1, W - 1].sum().backward()
    seen = x.grad[0, 0].abs() > 0
    assert not seen[H - 1, : W - 1 - 3].any()
    assert seen[H - 1, W - 1 - 3 : W - 1].all()


# ------------------------------------------------------------------ sampling


def argmax_level(params: torch.Tensor, channels: int, levels: int) -> torch.Tensor:
    """Deterministic draw: the most likely of ``levels`` evenly spaced values in [0, 1]."""
    b, _, h, w = params.shape
    level = params.view(b, channels, levels, h, w).argmax(dim=2)  # (B, C, H, W)
    return level.to(params.dtype) / (levels - 1)


@pytest.mark.parametrize("channels, first_kernel_size", [(1, 3), (3, 5)])
def test_sample_is_greedy_teacher_forcing_and_the_cache_is_exact(channels, first_kernel_size):
    levels = 5
    model = decoder(channels, levels, depth=3, first_kernel_size=first_kernel_size)
    _, cond = inputs(channels, batch=2)
    seen = []

    def draw(params):
        seen.append(params.clone())
        return argmax_level(params, channels, levels)

    x = model.sample(cond, draw)
    assert x.shape == (2, channels, H, W) and x.dtype == cond.dtype
    full = model(x, cond)  # (B, C*P, H, W)
    assert torch.equal(argmax_level(full, channels, levels), x)
    cached = torch.cat(seen, dim=-1).view(2, channels * levels, H, W)  # raster order
    torch.testing.assert_close(cached, full, rtol=0, atol=1e-12)


def test_sampling_is_seeded_in_range_and_restores_training_mode():
    levels = 4
    model = decoder(2, levels)
    _, cond = inputs(batch=3)

    def sample(seed: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)

        def draw(params):
            probs = params.view(3 * 2, levels).softmax(-1)  # (B*C, P) at one pixel
            level = torch.multinomial(probs, 1, generator=g)
            return level.view(3, 2, 1, 1).double() / (levels - 1)

        return model.sample(cond, draw)

    model.train()
    a, b, c = sample(0), sample(0), sample(1)
    assert model.training
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert len(a.unique()) == levels  # every level gets drawn somewhere: really random


# ------------------------------------------------------------------ learning


def test_a_few_steps_reduce_the_nll_and_every_parameter_gets_a_gradient():
    levels = 256
    torch.manual_seed(0)
    model = PixelCNNDecoder(1, 2, levels, width=16, depth=2, kernel_size=3, first_kernel_size=3)
    # Structured 8-bit images: a horizontal ramp whose offset the cond tells.
    offset = torch.randint(0, 128, (8, 1, 1, 1))
    ramp = torch.arange(W).view(1, 1, 1, W) * 16
    target = (offset + ramp).expand(8, 1, H, W).clamp(max=255)  # (B, 1, H, W) levels
    x = target.float() / 255
    cond = torch.cat([offset.float().expand(8, 1, H, W) / 128, torch.ones(8, 1, H, W)], 1)

    def nll() -> torch.Tensor:
        return F.cross_entropy(model(x, cond), target[:, 0])

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = nll()
    first.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, f"no gradient reaches {missing}"
    for _ in range(30):
        optimizer.step()
        optimizer.zero_grad()
        nll().backward()
    assert nll().item() < first.item() - 1.0  # from ~log 256 = 5.5 nats


# ------------------------------------------------------------------ errors


def test_bad_inputs_raise_clear_errors():
    model = decoder(channels=1)
    x, cond = inputs()
    with pytest.raises(ValueError, match="x must have shape"):
        model(x.expand(1, 3, H, W), cond)
    with pytest.raises(ValueError, match="cond must have shape"):
        model(x, cond[:, :2])
    with pytest.raises(ValueError, match="spatial size"):
        model(x, cond[:, :, :-1])
    with pytest.raises(ValueError, match="batch size"):
        model(x, cond.expand(2, D, H, W))
    with pytest.raises(TypeError, match="x must be a float tensor"):
        model((x * 255).long(), cond)
    with pytest.raises(ValueError, match=r"shape \(B, C, 1, 1\)"):
        model.sample(cond, lambda p: p)
    with pytest.raises(TypeError, match="draw must be a callable"):
        model.sample(cond, None)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"data_channels": 0}, "data_channels"),
        ({"params_per_channel": 2.0}, "params_per_channel"),
        ({"depth": 0}, "depth"),
        ({"kernel_size": 4}, "kernel_size"),
        ({"first_kernel_size": 1}, "first_kernel_size"),
    ],
)
def test_bad_settings_raise(settings, message):
    args = {"data_channels": 1, "cond_channels": 2, "params_per_channel": 3, **settings}
    with pytest.raises(ValueError, match=message):
        PixelCNNDecoder(**args)
