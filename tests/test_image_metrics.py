"""The VAE baseline, the PixelCNN decoder inside both models, and bits/dim (issue 5)."""

import math

import pytest
import torch

from vqvae import VAE, VQVAE
from vqvae.autoencoder import gaussian_kl
from vqvae.modalities.image.metrics import likelihood_metrics
from vqvae.priors import TransformerPrior

TINY = {"hidden": 16, "res_hidden": 8}
VQ = {**TINY, "codebook_size": 16, "code_dim": 4}


def _images(n=6, c=1, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, c, size, size), generator=g, dtype=torch.uint8)


def test_analytic_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mean, log_var = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 3, 2, 2, generator=g) * 0.5
    std = torch.exp(0.5 * log_var)
    z = mean + std * torch.randn(200_000, *mean.shape, generator=g)  # (S, B, D, H, W)
    log_q = torch.distributions.Normal(mean, std).log_prob(z).flatten(2).sum(2)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).flatten(2).sum(2)
    monte_carlo = (log_q - log_p).mean(0)  # (B,)
    torch.testing.assert_close(gaussian_kl(mean, log_var), monte_carlo, rtol=0.02, atol=0.05)


def test_vae_loss_is_the_negative_elbo_per_dim():
    model = VAE(in_channels=1, likelihood="categorical", latent_dim=4, **TINY)
    x = _images().float() / 255
    g = torch.Generator().manual_seed(1)
    out = model(x, generator=g)
    dims = x[0].numel()
    torch.testing.assert_close(out.loss, (out.nll_per_image + out.kl_per_image).mean() / dims)
    torch.testing.assert_close(out.kl, gaussian_kl(out.mean, out.log_var).mean())
    out.loss.backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0  # through the reparameterisation
    assert model.encode(x).shape == (6, 4, 2, 2)
    assert model.decode(model.encode(x)).shape == x.shape


@pytest.mark.parametrize("kind", ["vqvae", "vae"])
def test_bits_per_dim_is_the_sum_of_its_terms(kind):
    torch.manual_seed(0)
    model = VQVAE(in_channels=3, likelihood="logistic", **VQ) if kind == "vqvae" else \
        VAE(in_channels=3, likelihood="logistic", latent_dim=4, **TINY)
    m = likelihood_metrics(model.eval(), _images(c=3), batch_size=4)
    assert m["bits_per_dim"] == pytest.approx(m["reconstruction_bits_per_dim"] + m["latent_bits_per_dim"])
    assert m["latent_bits_per_dim"] == pytest.approx(m["latent_nats_per_image"] / (3 * 64 * math.log(2)))
    if kind == "vqvae":  # log K per latent under the uniform prior
        assert m["latent_nats_per_image"] == pytest.approx(2 * 2 * math.log(16))


def test_uniform_decoder_costs_exactly_eight_bits_per_dim():
    model = VQVAE(in_channels=1, likelihood="categorical", **VQ).eval()
    last = model.decoder.net[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)  # equal logits for all 256 levels
    m = likelihood_metrics(model, _images(), batch_size=3)
    assert m["reconstruction_bits_per_dim"] == pytest.approx(8.0, abs=1e-6)
    assert m["shuffle_gap_bits_per_dim"] == pytest.approx(0.0, abs=1e-6)


def test_prior_term_replaces_the_uniform_latent_term():
    model = VQVAE(in_channels=1, likelihood="categorical", **VQ).eval()
    prior = TransformerPrior(16, (2, 2), width=16, depth=1, heads=2, num_classes=3).eval()
    images = _images()
    m = likelihood_metrics(model, images, prior=prior)
    codes = model.encode(images.float() / 255)
    with torch.no_grad():
        per_class = torch.stack([prior.log_prob(codes, y) for y in range(3)])
    expected = -(torch.logsumexp(per_class, 0) - math.log(3)).sum() / (6 * 64 * math.log(2))
    assert m["latent_bits_per_dim_prior"] == pytest.approx(float(expected), rel=1e-5)
    assert m["bits_per_dim_prior"] == pytest.approx(m["reconstruction_bits_per_dim"] + m["latent_bits_per_dim_prior"])


def test_bits_per_dim_needs_a_discrete_likelihood():
    with pytest.raises(ValueError, match="--likelihood logistic or categorical"):
        likelihood_metrics(VQVAE(in_channels=1, **VQ), _images())
    vae = VAE(in_channels=1, likelihood="categorical", latent_dim=4, **TINY)
    with pytest.raises(ValueError, match="VQ-VAE"):
        likelihood_metrics(vae, _images(), prior=TransformerPrior(16, (2, 2), width=16, depth=1, heads=2))


@pytest.mark.parametrize("cls", [VQVAE, VAE])
def test_pixelcnn_decoder_scores_and_samples(cls):
    settings = VQ if cls is VQVAE else {**TINY, "latent_dim": 4}
    model = cls(in_channels=1, likelihood="categorical", decoder="pixelcnn", decoder_width=8,
                decoder_depth=2, **settings)
    x = _images(n=2).float() / 255
    out = model(x)
    assert out.params.shape == (2, 256, 8, 8)
    out.loss.backward()
    assert model.pixelcnn is not None and model.autoregressive
    model.eval()
    sample = model.decode(model.encode(x), generator=torch.Generator().manual_seed(0))
    assert sample.shape == x.shape
    assert torch.equal(sample * 255, (sample * 255).round())  # 8-bit levels
    m = likelihood_metrics(model, _images(n=4), batch_size=2)
    assert math.isfinite(m["bits_per_dim"])


def test_decoder_settings_are_checked():
    with pytest.raises(ValueError, match="decoder"):
        VQVAE(in_channels=1, decoder="wavenet", **VQ)
    with pytest.raises(ValueError, match="spatial_dims 2"):
        VQVAE(in_channels=1, decoder="pixelcnn", spatial_dims=1, **VQ)
    with pytest.raises(ValueError, match="mixtures"):
        VQVAE(in_channels=1, likelihood="categorical", mixtures=3, **VQ)


def test_cli_trains_both_models_and_reports_bits_per_dim(tiny_images, tmp_path, capsys):
    import json

    from vqvae.cli import main

    flags = ["--data", str(tiny_images), "--hidden", "16", "--res-hidden", "8", "--code-dim", "4",
             "--max-steps", "2", "--val-every", "2", "--batch-size", "8", "--no-progress"]
    assert main(["train", *flags, "--out", str(tmp_path / "vae"), "--model", "vae", "--likelihood", "logistic"]) == 2
    assert "--code-dim does not apply to --model vae" in capsys.readouterr().err
    flags[flags.index("--code-dim")] = "--latent-dim"
    assert main(["train", *flags, "--out", str(tmp_path / "vae"), "--model", "vae", "--likelihood", "logistic"]) == 0
    flags[flags.index("--latent-dim")] = "--code-dim"
    assert main(["train", *flags, "--out", str(tmp_path / "vq"), "--codebook-size", "8",
                 "--likelihood", "categorical"]) == 0
    assert main(["train-prior", str(tmp_path / "vq"), "--arch", "transformer", "--width", "16", "--depth", "1",
                 "--max-steps", "1", "--val-every", "1", "--no-progress"]) == 0
    capsys.readouterr()
    for name, extra in (("vae", []), ("vq", ["--prior", "transformer"])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", str(tmp_path / name), "--bits-per-dim", *extra, "--json", str(out)]) == 0
        report = json.loads(out.read_text())
        assert report["bits_per_dim"] == pytest.approx(
            report["reconstruction_bits_per_dim"] + report["latent_bits_per_dim"])
        assert report["model"] == ("vae" if name == "vae" else "vqvae")
    assert report["bits_per_dim_prior"] == pytest.approx(
        report["reconstruction_bits_per_dim"] + report["latent_bits_per_dim_prior"])
    assert main(["train", *flags, "--out", str(tmp_path / "mse"), "--codebook-size", "8"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "mse"), "--bits-per-dim"]) == 2
    assert "--likelihood mse" in capsys.readouterr().err


@pytest.mark.parametrize("mixtures", [1, 3])
def test_fresh_logistic_decoder_starts_below_the_uniform_code_length(mixtures):
    torch.manual_seed(0)
    model = VQVAE(in_channels=3, likelihood="logistic", mixtures=mixtures, **VQ).eval()
    g = torch.Generator().manual_seed(0)
    x = (0.5 + 0.2 * torch.randn(4, 3, 8, 8, generator=g)).clamp(0, 1).mul(255).round().div(255)
    assert model(x).reconstruction_loss < 8 * math.log(2)  # a zero bias (s = 1) costs ~6.9 nats
