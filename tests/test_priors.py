"""The priors: causality, cached == uncached sampling, likelihoods, learning, filters, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

import vqvae.priors.sampling as sampling_module
from vqvae.priors import (
    PixelCNNConfig,
    PixelCNNPrior,
    TransformerConfig,
    TransformerPrior,
    draw,
    filter_logits,
    guide,
)

K = 8
TINY_PIXELCNN = {
    "width": 16,
    "depth": 3,
    "kernel_size": 3,
    "first_kernel_size": 5,
    "head_width": 32,
}
TINY_TRANSFORMER = {"width": 32, "depth": 2, "heads": 2}


def pixelcnn(shape=(4, 5), **settings) -> PixelCNNPrior:
    torch.manual_seed(0)
    return PixelCNNPrior(K, shape, **{**TINY_PIXELCNN, **settings})


def transformer(shape=(4, 5), **settings) -> TransformerPrior:
    torch.manual_seed(0)
    return TransformerPrior(K, shape, **{**TINY_TRANSFORMER, **settings})


PRIORS = {"pixelcnn": pixelcnn, "transformer": transformer}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is fastest, and stable under load


def sharpened(model: torch.nn.Module) -> torch.nn.Module:
    """Large random weights: peaked logits that hinge on the context, so wrong context shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


def random_codes(n: int, shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (n, *shape), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ causality


def assert_causal(model: torch.nn.Module, shape: tuple[int, ...], label=None) -> None:
    """Changing code i leaves logits at positions <= i unchanged and changes a later one."""
    codes = random_codes(2, shape)
    before = model(codes, label).flatten(2)  # (B, K, T)
    positions = math.prod(shape)
    for i in range(positions):
        changed = codes.clone().flatten(1)
        changed[:, i] = (changed[:, i] + 1) % K
        after = model(changed.view_as(codes), label).flatten(2)
        torch.testing.assert_close(after[..., : i + 1], before[..., : i + 1], atol=1e-5, rtol=0)
        if i + 1 < positions:
            assert (after[..., i + 1 :] - before[..., i + 1 :]).abs().max() > 1e-3, f"position {i}"


def test_pixelcnn_is_causal_in_raster_order():
    assert_causal(sharpened(pixelcnn((4, 5))), (4, 5))


def test_pixelcnn_has_no_blind_spot():
    """Code (2, 4) reaches position (3, 0) through the vertical stacks (reach 2 + 1 + 1 = 4
    columns); the same kernels as masked convolutions leave it in the blind spot (§2.2)."""
    model = sharpened(pixelcnn((4, 5)))
    codes = random_codes(1, (4, 5))
    changed = codes.clone()
    changed[0, 2, 4] = (changed[0, 2, 4] + 1) % K
    assert (model(changed) - model(codes))[..., 3, 0].abs().max() > 1e-3


@pytest.mark.parametrize("shape", [(7,), (3, 4), (2, 3, 2)])
def test_transformer_is_causal_for_1d_2d_3d_latents(shape):
    assert_causal(sharpened(transformer(shape)), shape)


@pytest.mark.parametrize("make", PRIORS.values(), ids=PRIORS.keys())
def test_conditional_prior_is_causal_and_the_label_reaches_the_first_position(make):
    model = sharpened(make((3, 4), num_classes=3))
    assert_causal(model, (3, 4), label=torch.tensor([0, 2]))
    codes = random_codes(2, (3, 4))
    delta = model(codes, 1) - model(codes, 2)
    assert delta[:, :, 0, 0].abs().max() > 1e-3


# ------------------------------------------------------------------ cached sampling


SAMPLING_OPTIONS = [
    {},
    {"temperature": 0.7},
    {"top_k": 3},
    {"top_p": 0.8},
    {"temperature": 1.3, "top_k": 5, "top_p": 0.9},
]


@pytest.mark.parametrize("options", SAMPLING_OPTIONS)
@pytest.mark.parametrize("make", PRIORS.values(), ids=PRIORS.keys())
def test_cached_sampling_gives_the_uncached_codes(make, options):
    for num_classes, label in [(None, None), (3, torch.tensor([0, 1, 2, 2, 1]))]:
        model = sharpened(make((3, 4), num_classes=num_classes))
        runs = [
            model.sample(
                5, label, generator=torch.Generator().manual_seed(7), use_cache=cache, **options
            )
            for cache in (True, False)
        ]
        assert runs[0].shape == (5, 3, 4) and runs[0].dtype == torch.int64
        torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
        assert len(runs[0].flatten(1).unique(dim=0)) > 1, "draws should differ across the batch"


@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("make", [pixelcnn, transformer], ids=PRIORS.keys())
def test_sampling_logits_equal_forward_logits(monkeypatch, make, use_cache):
    """Teacher-forced through sample(): the logits seen at each step are forward()'s.

    The grid is larger than the PixelCNN's reach (4 rows and columns), so its cached path
    crops rows and columns.
    """
    model = sharpened(make((7, 6), num_classes=2))
    target = random_codes(3, (7, 6)).flatten(1)  # (B, T)
    seen = []

    def teacher(logits, generator=None):
        seen.append(logits)
        return target[:, len(seen) - 1]

    monkeypatch.setattr(sampling_module, "draw", teacher)  # both priors draw through it
    codes = model.sample(3, label=1, use_cache=use_cache)
    torch.testing.assert_close(codes.flatten(1), target)
    expected = model(codes, 1).flatten(2).transpose(1, 2)  # (B, T, K)
    torch.testing.assert_close(torch.stack(seen, dim=1), expected, atol=1e-4, rtol=1e-4)


def test_transformer_cached_sampling_matches_on_a_1d_and_3d_grid():
    for shape in [(6,), (2, 2, 3)]:
        model = sharpened(transformer(shape))
        a, b = (
            model.sample(4, generator=torch.Generator().manual_seed(3), use_cache=c)
            for c in (True, False)
        )
        assert a.shape == (4, *shape)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("make", PRIORS.values(), ids=PRIORS.keys())
def test_same_seed_same_codes_and_training_mode_is_restored(make):
    model = sharpened(make()).train()
    a = model.sample(3, generator=torch.Generator().manual_seed(0))
    b = model.sample(3, generator=torch.Generator().manual_seed(0))
    c = model.sample(3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)
    assert model.training
    assert a.min() >= 0 and a.max() < K


# ------------------------------------------------------------------ likelihoods


@pytest.mark.parametrize("make", PRIORS.values(), ids=PRIORS.keys())
def test_log_prob_sums_log_softmax_at_the_codes_and_loss_is_its_mean_per_code(make):
    model = sharpened(make((3, 4)))
    codes = random_codes(5, (3, 4))
    log_probs = model(codes).log_softmax(dim=1)  # (B, K, H, W)
    expected = log_probs.gather(1, codes[:, None]).flatten(1).sum(1)
    log_prob = model.log_prob(codes)
    assert log_prob.shape == (5,)
    torch.testing.assert_close(log_prob, expected)
    torch.testing.assert_close(model.loss(codes), -log_prob.mean() / 12)


def train(model: torch.nn.Module, codes: torch.Tensor, labels=None, steps: int = 150) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model.loss(codes, labels).backward()
        optimizer.step()


def distinct_grids(n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """``n`` grids that differ at every position, so any one code tells which grid it is."""
    g = torch.Generator().manual_seed(0)
    per_position = [torch.randperm(K, generator=g)[:n] for _ in range(math.prod(shape))]
    return torch.stack(per_position, dim=1).view(n, *shape)


@pytest.mark.parametrize("make", PRIORS.values(), ids=PRIORS.keys())
def test_prior_overfits_four_grids_and_samples_them(make):
    grids = distinct_grids(4, (4, 4))
    model = make((4, 4))
    train(model, grids.repeat(4, 1, 1), steps=250)
    # The floor is log 4 nats per grid (which grid comes first is a fair 4-way draw); at
    # random init it is 16 log 8 = 33 nats.
    log_prob = model.eval().log_prob(grids)
    assert (log_prob > -math.log(4) - 0.25).all(), log_prob
    samples = model.sample(16, generator=torch.Generator().manual_seed(0))
    matches = (samples[:, None] == grids[None]).flatten(2).all(-1).any(1)  # (16,)
    assert matches.float().mean() >= 0.9


@pytest.mark.parametrize("make", PRIORS.values(), ids=PRIORS.keys())
def test_label_conditions_the_samples(make):
    grids = torch.stack([torch.zeros(4, 4, dtype=torch.long), torch.ones(4, 4, dtype=torch.long)])
    labels = torch.tensor([0, 1])
    model = make((4, 4), num_classes=2)
    train(model, grids.repeat(4, 1, 1), labels.repeat(4), steps=60)
    ones = model.sample(16, label=1, generator=torch.Generator().manual_seed(0))
    zeros = model.sample(
        16, label=torch.zeros(16, dtype=torch.long), generator=torch.Generator().manual_seed(0)
    )
    assert (ones == 1).float().mean() > 0.9
    assert (zeros == 0).float().mean() > 0.9


# ------------------------------------------------------------------ filters


def test_top_k_keeps_exactly_k_even_with_ties():
    logits = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    kept = filter_logits(logits, top_k=2).isfinite()
    assert kept.sum(1).tolist() == [2, 2]
    assert kept[1].tolist() == [True, True, False, False, False]
    assert filter_logits(logits, top_k=50).isfinite().all()


@pytest.mark.parametrize(
    "top_p, kept",
    [(1e-6, 1), (0.5, 1), (0.50001, 2), (0.8, 2), (0.8001, 3), (0.95, 3), (0.96, 4), (1.0, 4)],
)
def test_top_p_keeps_the_smallest_set_reaching_p(top_p, kept):
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])
    out = filter_logits(probs.log()[None], top_p=top_p)[0]
    order = [1, 3, 0, 2]  # most probable first
    assert out.isfinite().tolist() == [i in order[:kept] for i in range(4)]
    torch.testing.assert_close(out[out.isfinite()], probs.log()[out.isfinite()])


def test_temperature_divides_and_defaults_are_the_identity():
    logits = torch.randn(3, 6)
    assert filter_logits(logits) is logits
    torch.testing.assert_close(filter_logits(logits, temperature=0.5), logits * 2)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"temperature": 0.0}, ValueError),
        ({"temperature": -1.0}, ValueError),
        ({"temperature": math.inf}, ValueError),
        ({"temperature": "hot"}, TypeError),
        ({"top_k": 0}, ValueError),
        ({"top_k": 2.5}, TypeError),
        ({"top_p": 0.0}, ValueError),
        ({"top_p": 1.5}, ValueError),
        ({"top_p": True}, TypeError),
    ],
)
def test_bad_filter_arguments_raise(kwargs, error):
    with pytest.raises(error):
        filter_logits(torch.zeros(1, 4), **kwargs)
    with pytest.raises(error):
        transformer().sample(1, **kwargs)


def test_draw_respects_filtered_out_codes():
    logits = filter_logits(torch.randn(64, K), top_k=1)
    picks = draw(logits, torch.Generator().manual_seed(0))
    assert picks.shape == (64,) and picks.dtype == torch.int64
    torch.testing.assert_close(picks, logits.argmax(1))


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("make", PRIORS.values(), ids=PRIORS.keys())
def test_bad_codes_raise_clear_errors(make):
    model = make((4, 5))
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(2, 4, 5))
    with pytest.raises(ValueError, match=r"\(B, 4, 5\)"):
        model(torch.zeros(2, 5, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 4, 5\)"):
        model(torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(IndexError, match=r"\[0, 8\)"):
        model.loss(torch.full((2, 4, 5), K))
    with pytest.raises(IndexError, match=r"\[0, 8\)"):
        model.log_prob(torch.full((2, 4, 5), -1))
    with pytest.raises(TypeError):
        model([[0]])
    assert model(torch.zeros(2, 4, 5, dtype=torch.int16)).shape == (2, K, 4, 5)


@pytest.mark.parametrize("make", PRIORS.values(), ids=PRIORS.keys())
def test_label_errors(make):
    unconditional, conditional = make(), make(num_classes=3)
    codes = random_codes(2, (4, 5))
    with pytest.raises(ValueError, match="unconditional"):
        unconditional.sample(2, label=1)
    with pytest.raises(ValueError, match="unconditional"):
        unconditional(codes, label=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="pass label"):
        conditional.sample(2)
    with pytest.raises(ValueError, match="pass label"):
        conditional.loss(codes)
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        conditional.sample(2, label=3)
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        conditional.sample(2, label=torch.tensor([0, -1]))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        conditional.sample(2, label=torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError):
        conditional.sample(2, label=torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError):
        conditional.sample(2, label=True)
    with pytest.raises(ValueError, match="positive"):
        conditional.sample(0, label=1)
    assert conditional.sample(2, label=torch.tensor(2)).shape == (2, 4, 5)


def test_config_errors():
    with pytest.raises(ValueError, match="2-D"):
        PixelCNNPrior(K, (4, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        PixelCNNPrior(K, (4, 4), kernel_size=4)
    with pytest.raises(ValueError, match="codebook_size"):
        TransformerPrior(0, (4, 4))
    with pytest.raises(ValueError, match="divide"):
        TransformerPrior(K, (4, 4), width=48, heads=5)
    with pytest.raises(ValueError, match="dropout"):
        TransformerPrior(K, (4, 4), dropout=1.0)
    with pytest.raises(TypeError, match="latent_shape"):
        TransformerPrior(K)
    with pytest.raises(ValueError, match="newer"):
        TransformerConfig.from_dict({"codebook_size": K, "latent_shape": [4], "rotary": True})


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize(
    "config",
    [
        PixelCNNConfig(K, (4, 5), num_classes=3, **TINY_PIXELCNN),
        PixelCNNConfig(K, [6, 2], head_width=None, width=8, depth=2),
        TransformerConfig(K, (2, 3, 2), num_classes=4, **TINY_TRANSFORMER),
        TransformerConfig(K, [9], width=16, depth=1, tie_weights=True, dropout=0.1),
    ],
    ids=["pixelcnn", "pixelcnn-plain-head", "transformer-3d", "transformer-tied"],
)
def test_config_round_trips_through_json_and_rebuilds_the_model(config):
    prior = PixelCNNPrior if isinstance(config, PixelCNNConfig) else TransformerPrior
    restored = type(config).from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    original, rebuilt = prior(config), prior(restored)
    shapes = {name: t.shape for name, t in original.state_dict().items()}
    assert {name: t.shape for name, t in rebuilt.state_dict().items()} == shapes
    # Weights travel as safetensors (no shared tensors, even with tied weights).
    rebuilt.load_state_dict(load_safetensors(save_safetensors(original.state_dict())), strict=True)
    codes = random_codes(2, config.latent_shape)
    label = None if config.num_classes is None else 1
    torch.testing.assert_close(rebuilt.eval()(codes, label), original.eval()(codes, label))


def test_keyword_and_config_construction_agree_and_heads_default():
    assert TransformerPrior(K, (4, 4), width=256).config.num_heads == 4
    assert TransformerPrior(K, (4, 4), width=32).config.num_heads == 1
    assert TransformerPrior(K, (4, 4), width=256, heads=2).blocks[0].attention.heads == 2
    config = TransformerConfig(K, (4, 4), width=32, depth=1)
    assert TransformerPrior(config).config == config
    assert TransformerPrior(config, depth=2).config.depth == 2
    assert TransformerPrior(config, width=128).blocks[0].attention.heads == 2  # heads follow width
    assert PixelCNNPrior(PixelCNNConfig(K, (4, 4)), width=8).config.width == 8
    assert PixelCNNPrior(codebook_size=K, latent_shape=(4, 4)).config.latent_shape == (4, 4)


def test_tied_weights_share_the_code_embedding():
    tied, untied = transformer(tie_weights=True), transformer()
    assert tied.head is None and "head.weight" not in tied.state_dict()
    count = sum(p.numel() for p in untied.parameters()) - sum(p.numel() for p in tied.parameters())
    assert count == K * TINY_TRANSFORMER["width"]
    zeros = torch.zeros(2, 4, 5, dtype=torch.long)  # as input, only code 0's row is used
    for model, every_row in [(tied, True), (untied, False)]:
        model.loss(zeros).backward()
        rows_with_grad = model.code_embedding.weight.grad.abs().sum(1) > 0  # (K,)
        assert bool(rows_with_grad.all()) is every_row  # tied: the head reaches every row


def test_label_bias_reaches_every_position_and_old_configs_load_without_it():
    biased, plain = transformer(num_classes=3), transformer(num_classes=3, label_bias=False)
    assert biased.label_bias is not None and plain.label_bias is None
    assert "label_bias.weight" not in plain.state_dict()
    # With the start token fixed, the label still moves the logits of later positions.
    codes = random_codes(2, (4, 5))
    model = sharpened(biased)
    with torch.no_grad():
        model.start.weight.zero_()
    delta = (model(codes, 1) - model(codes, 2)).abs().flatten(2).amax(dim=(0, 1))  # (T,)
    assert (delta > 1e-3).all()
    # A config saved before label_bias existed describes a model trained without it.
    saved = plain.config.to_dict()
    del saved["label_bias"]
    assert TransformerConfig.from_dict(saved).label_bias is False
    assert TransformerConfig.from_dict(biased.config.to_dict()).label_bias is True
    with pytest.raises(TypeError, match="label_bias"):
        TransformerConfig(K, (4, 5), label_bias=1)


# ------------------------------------------------------------------ classifier-free guidance


@pytest.mark.parametrize("options", [{}, {"top_k": 3, "temperature": 0.8}])
@pytest.mark.parametrize("make", PRIORS.values(), ids=PRIORS.keys())
def test_guided_cached_sampling_gives_the_uncached_codes(make, options):
    model = sharpened(make((3, 4), num_classes=3))
    label = torch.tensor([0, 1, 2, 2, 1])
    runs = [
        model.sample(5, label, generator=torch.Generator().manual_seed(7), use_cache=cache,
                     guidance=2.5, **options)
        for cache in (True, False)
    ]
    assert runs[0].shape == (5, 3, 4)
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    plain = model.sample(5, label, generator=torch.Generator().manual_seed(7), **options)
    assert not torch.equal(runs[0], plain), "guidance 2.5 should change some draws"


@pytest.mark.parametrize("make", [pixelcnn, transformer], ids=PRIORS.keys())
def test_guidance_combines_the_labelled_logits_with_label_free_ones(monkeypatch, make):
    """Each step guides (label rows, no-label rows): the first are forward()'s logits for
    the label, the second do not depend on the label."""
    model = sharpened(make((3, 4), num_classes=3))
    target = random_codes(2, (3, 4)).flatten(1)  # (B, T)
    seen = []

    def recording_guide(logits, guidance):
        seen.append(logits)
        return guide(logits, guidance)

    def teacher(logits, generator=None):
        return target[:, (len(seen) - 1) % target.shape[1]]

    monkeypatch.setattr(sampling_module, "guide", recording_guide)
    monkeypatch.setattr(sampling_module, "draw", teacher)  # both priors draw through it
    for label in (0, 2):
        codes = model.sample(2, label=label, guidance=3.0)
        torch.testing.assert_close(codes.flatten(1), target)
    per_label = torch.stack(seen).view(2, 12, 4, K)  # (label, T, 2B, K)
    expected = model(target.view(2, 3, 4), 0).flatten(2).transpose(0, 2)  # (T, K, B)
    torch.testing.assert_close(per_label[0, :, :2], expected.permute(0, 2, 1), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(per_label[0, :, 2:], per_label[1, :, 2:])  # label-free rows agree
    assert (per_label[0, :, :2] - per_label[1, :, :2]).abs().max() > 1e-3  # labelled rows do not


def test_guide_is_conditional_at_one_and_unconditional_at_zero():
    conditional, unconditional = torch.randn(3, K), torch.randn(3, K)
    stacked = torch.cat([conditional, unconditional])
    torch.testing.assert_close(guide(stacked, 1.0), conditional)
    torch.testing.assert_close(guide(stacked, 0.0), unconditional)
    torch.testing.assert_close(guide(stacked, 2.0), 2 * conditional - unconditional)


@pytest.mark.parametrize("make", PRIORS.values(), ids=PRIORS.keys())
def test_labels_are_dropped_in_training_only(make):
    model = sharpened(make((3, 4), num_classes=3, label_dropout=0.5))
    codes, label = random_codes(64, (3, 4)), torch.zeros(64, dtype=torch.long)
    torch.testing.assert_close(model(codes, label), model(codes, label))  # eval: never dropped
    model.train()
    torch.manual_seed(0)
    first, second = model(codes, label), model(codes, label)
    differs = (first - second).flatten(1).abs().amax(1) > 1e-4  # (B,): dropped in one call only
    assert 0.2 < differs.float().mean() < 0.8


@pytest.mark.parametrize("make", PRIORS.values(), ids=PRIORS.keys())
def test_guidance_errors_and_old_configs_have_no_label_dropout(make):
    unconditional = make((3, 4))
    with pytest.raises(ValueError, match="class-conditional prior trained with label_dropout"):
        unconditional.sample(2, guidance=2.0)
    undropped = make((3, 4), num_classes=3, label_dropout=0.0)
    with pytest.raises(ValueError, match="--label-dropout"):
        undropped.sample(2, label=1, guidance=2.0)
    undropped.sample(2, label=1, guidance=1.0)  # plain sampling needs no label dropout
    model = make((3, 4), num_classes=3)
    with pytest.raises(ValueError, match="guidance must be >= 0"):
        model.sample(2, label=1, guidance=-1.0)
    with pytest.raises(TypeError, match="guidance"):
        model.sample(2, label=1, guidance="2")
    with pytest.raises(ValueError, match="label_dropout"):
        make((3, 4), num_classes=3, label_dropout=1.0)
    saved = model.config.to_dict()
    assert saved["label_dropout"] == 0.1
    del saved["label_dropout"]
    assert type(model.config).from_dict(saved).label_dropout == 0.0
