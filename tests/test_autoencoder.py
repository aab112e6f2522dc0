"""The VQ-VAE model: shapes in 1-, 2- and 3-D, encode/decode, losses, bad input."""

import pytest
import torch

from vqvae import VQVAE, VQVAEConfig

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
