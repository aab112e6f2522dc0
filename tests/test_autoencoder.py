"""The VQ-VAE model: shapes in 1-, 2- and 3-D, encode/decode, losses, bad input."""

import json

import pytest
import torch

from vqvae import VQVAE, EMAVectorQuantizer, VectorQuantizer, VQVAEConfig
from vqvae.quantize import QuantizerConfig

TINY = {"hidden": 16, "res_hidden": 8, "codebook_size": 32, "code_dim": 8}


@pytest.mark.parametrize("dims, size", [(1, (64,)), (2, (16, 12)), (3, (8, 8, 8))])
def test_shapes_round_trip_in_every_dimension(dims, size):
    model = VQVAE(in_channels=2, spatial_dims=dims, **TINY)
    x = torch.rand(3, 2, *size)
    out = model(x)
    assert out.reconstruction.shape == x.shape
    assert out.indices.shape == (3, *(s // 4 for s in size))
    assert model.latent_shape(size) == tuple(s // 4 for s in size)
    codes = model.encode(x)
    assert codes.shape == out.indices.shape and codes.dtype == torch.int64
    decoded = model.decode(codes)
    assert decoded.shape == x.shape
    assert decoded.min() >= 0 and decoded.max() <= 1


def test_downsampling_factor_is_configurable():
    model = VQVAE(in_channels=3, downsamples=3, **TINY)
    assert model(torch.rand(2, 3, 32, 32)).indices.shape == (2, 4, 4)


def test_loss_is_normalised_mse_plus_quantizer_loss():
    model = VQVAE(in_channels=1, data_variance=0.25, **TINY).eval()
    x = torch.rand(2, 1, 8, 8)
    out = model(x)
    expected = (out.params + 0.5 - x).square().mean() / 0.25
    torch.testing.assert_close(out.reconstruction_loss, expected)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + out.quantizer_loss)


def test_bernoulli_likelihood_uses_logits():
    model = VQVAE(in_channels=1, likelihood="bernoulli", **TINY).eval()
    x = (torch.rand(2, 1, 8, 8) > 0.5).float()
    out = model(x)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.params, x)
    torch.testing.assert_close(out.reconstruction_loss, expected)
    assert model.decode(out.indices).min() >= 0


def test_eval_mode_is_deterministic_and_pure():
    model = VQVAE(in_channels=1, **TINY).eval()
    x = torch.rand(4, 1, 8, 8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    a, b = model(x), model(x)
    assert torch.equal(a.indices, b.indices)
    assert torch.equal(model.encode(x), a.indices)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_gradients_reach_encoder_decoder_and_grad_codebook():
    model = VQVAE(in_channels=1, quantizer="grad", **TINY)
    model(torch.rand(4, 1, 8, 8)).loss.backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0
    assert model.decoder.net[0].weight.grad.abs().sum() > 0
    assert model.quantizer.codebook.grad.abs().sum() > 0


def test_bad_input_is_explained():
    model = VQVAE(in_channels=3, **TINY)
    with pytest.raises(ValueError, match="not divisible by 4.*--image-size"):
        model(torch.rand(1, 3, 30, 30))
    with pytest.raises(ValueError, match=r"shape \(B, 3"):
        model(torch.rand(1, 1, 32, 32))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="latent axes"):
        model.decode(torch.zeros(1, 8, dtype=torch.long))
    with pytest.raises(IndexError):
        model.decode(torch.full((1, 2, 2), 99))


def test_config_is_checked_and_round_trips():
    with pytest.raises(ValueError, match="quantizer"):
        VQVAEConfig(quantizer="kmeans")
    with pytest.raises(ValueError, match="likelihood"):
        VQVAEConfig(likelihood="laplace")
    with pytest.raises(ValueError, match="unknown model settings"):
        VQVAEConfig.from_dict({"hiden": 3})
    config = VQVAEConfig(hidden=32, quantizer="grad")
    assert VQVAEConfig.from_dict(config.to_dict()) == config


# A config.json["model"] written before the quantizer settings moved into QuantizerConfig.
OLD_FLAT_CONFIG = {
    "in_channels": 1, "hidden": 16, "res_hidden": 8, "residual_blocks": 2, "downsamples": 2,
    "likelihood": "mse", "mixtures": 1, "data_variance": 1.0, "decoder": "conv",
    "decoder_width": 64, "decoder_depth": 8, "spatial_dims": 2, "seed": 0, "codebook_size": 32,
    "code_dim": 8, "quantizer": "grad", "beta": 0.5, "decay": 0.99, "kmeans_init": False,
    "dead_code_window": None,
}
QUANTIZER_STATE = [
    "steps", "initialized", "last_used", "usage_counts", "usage_steps", "reservoir",
    "reservoir_written", "codebook",
]


def test_an_old_flat_config_loads_and_writes_the_same_keys_in_the_same_order():
    config = VQVAEConfig.from_dict(json.loads(json.dumps(OLD_FLAT_CONFIG)))
    assert isinstance(config, QuantizerConfig)
    assert (config.codebook_size, config.code_dim, config.beta, config.dead_code_window) == (32, 8, 0.5, None)
    assert list(config.to_dict().items()) == list(OLD_FLAT_CONFIG.items())
    assert VQVAEConfig(**OLD_FLAT_CONFIG) == config


@pytest.mark.parametrize("kind, cls, extra", [("ema", EMAVectorQuantizer, ["cluster_size", "embed_sum"]),
                                              ("grad", VectorQuantizer, [])])
def test_the_model_builds_its_quantizer_from_the_config_under_the_old_state_names(kind, cls, extra):
    model = VQVAE(in_channels=1, quantizer=kind, beta=0.4, decay=0.9, kmeans_init=False,
                  dead_code_window=9, seed=5, **TINY)
    q = model.quantizer
    assert type(q) is cls
    assert (q.codebook_size, q.dim, q.beta, q.dead_code_window, q.seed) == (32, 8, 0.4, 9, 5)
    assert bool(q.initialized)  # kmeans_init=False: nothing pending
    if kind == "ema":
        assert q.decay == 0.9
    names = [k.removeprefix("quantizer.") for k in model.state_dict() if k.startswith("quantizer.")]
    assert sorted(names) == sorted(QUANTIZER_STATE + extra)
    again = VQVAE(model.config)
    again.load_state_dict(model.state_dict(), strict=True)


def test_quantizer_settings_are_checked_with_their_model_names():
    for values, message in [({"codebook_size": 0}, "model.codebook_size"),
                            ({"decay": 1.5}, "model.decay"),
                            ({"beta": -1.0}, "model.beta"),
                            ({"dead_code_window": 0}, "model.dead_code_window")]:
        with pytest.raises(ValueError, match=message):
            VQVAEConfig(**values)
