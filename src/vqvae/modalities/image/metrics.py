"""Honest autoencoder metrics: reconstruction error, PSNR, SSIM, codebook usage, rate,
and the negative ELBO in bits per dimension (the paper's CIFAR-10 table, §4.2)."""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import structural_similarity

from vqvae.autoencoder import VAE, VQVAE, gaussian_kl
from vqvae.quantize import codebook_perplexity

LN2 = math.log(2)


@torch.no_grad()
def reconstruct_all(
    model: VQVAE | VAE, images: torch.Tensor, batch_size: int = 256, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents and reconstructions of uint8 ``images`` ``(N, C, *S)``.

    Returns:
        ``(latents, reconstructions (N, C, *S) float32 in [0, 1])`` on the CPU; latents
        are codes ``(N, *S')`` int64 for a VQ-VAE, posterior means ``(N, D, *S')`` for a VAE.
    """
    model.eval()
    codes, recons = [], []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255)
        c = model.encode(x)
        codes.append(c.cpu())
        recons.append(model.decode(c).float().cpu())
    return torch.cat(codes), torch.cat(recons)


def tokenizer_metrics(
    model: VQVAE | VAE,
    images: torch.Tensor,
    data_variance: float,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
) -> dict:
    """Metrics of ``model`` on uint8 ``images`` ``(N, C, H, W)``.

    Returns a dict with ``mse``, ``nmse`` (MSE / ``data_variance``, the training data's
    pixel variance), ``psnr`` (dB, peak 1, from the mean MSE), ``ssim`` (mean over images,
    scikit-image), ``perplexity`` and ``codes_used`` over the whole set, ``dead_codes``
    (K − codes used), ``bits_per_image`` (latents × log2 K) and ``compression_ratio``
    against 8-bit pixels. A VAE has no codebook: its metrics stop at ``ssim``.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (N, C, H, W), got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("no images to evaluate: the chosen split is empty")
    codes, recons = reconstruct_all(model, images, batch_size, device)
    x = images.float().div_(255)
    mse = float((recons - x).square().mean())
    metrics = {
        "images": int(images.shape[0]),
        "mse": mse,
        "nmse": mse / data_variance,
        "psnr": 10 * math.log10(1.0 / mse) if mse > 0 else math.inf,
        "ssim": mean_ssim(x, recons),
    }
    if isinstance(model, VAE):
        return metrics
    k = model.config.codebook_size
    counts = torch.bincount(codes.flatten(), minlength=k)
    used = int((counts > 0).sum())
    bits = math.prod(codes.shape[1:]) * math.log2(k)
    return {
        **metrics,
        "perplexity": codebook_perplexity(counts),
        "codes_used": used,
        "dead_codes": k - used,
        "codebook_size": k,
        "bits_per_image": bits,
        "compression_ratio": images[0].numel() * 8 / bits,
    }


def mean_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean SSIM of image pairs ``(N, C, H, W)`` in [0, 1] (scikit-image, Gaussian-free 7x7)."""
    a, b = x.numpy().astype(np.float64), y.numpy().astype(np.float64)
    win = min(7, a.shape[-1], a.shape[-2])
    win -= 1 - win % 2  # odd
    if win < 3:
        raise ValueError(f"SSIM needs images of at least 3x3 pixels, got {a.shape[-2:]}")
    scores = [
        structural_similarity(p, q, data_range=1.0, channel_axis=0, win_size=win)
        for p, q in zip(a, b, strict=True)
    ]
    return float(np.mean(scores))


@torch.no_grad()
def likelihood_metrics(
    model: VQVAE | VAE,
    images: torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    prior: torch.nn.Module | None = None,
    seed: int = 0,
) -> dict:
    """The negative ELBO of uint8 ``images`` in bits per dimension, and its two terms.

    ``−ELBO = E_q[−log p(x | z)] + KL(q(z | x) ‖ p(z))``. For a VQ-VAE, ``q`` is one-hot
    on the nearest code, so the first term is the decoder's NLL at the codes and the
    second is ``log K`` per latent under the uniform prior of training (§3.2), or
    ``−log p(z)`` under a learned ``prior`` (a class-conditional prior is marginalised
    over uniform classes, ``p(z) = mean_y p(z | y)``, so no label is used). For a VAE
    the first term is estimated with one posterior sample per image (seeded) and the
    second is the analytic KL.

    It also reports the decoder's NLL when every image gets the latents of another
    image of its batch (``shuffled_reconstruction_bits_per_dim``): if the decoder ignored
    the latents (posterior collapse), shuffling them would cost nothing.

    Returns:
        ``bits_per_dim``, ``reconstruction_bits_per_dim``, ``latent_bits_per_dim``,
        ``latent_nats_per_image`` (the KL for a VAE), ``shuffled_reconstruction_bits_per_dim``,
        ``shuffle_gap_bits_per_dim``, and with a ``prior`` ``bits_per_dim_prior`` and
        ``latent_bits_per_dim_prior``.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (N, C, *S), got {images.dtype}")
    if not model.likelihood.discrete:
        raise ValueError(
            f"bits/dim needs a discrete likelihood of 8-bit data, but this run was trained with "
            f"--likelihood {model.config.likelihood}: train with --likelihood logistic or categorical"
        )
    if prior is not None and not isinstance(model, VQVAE):
        raise ValueError("--prior applies to a VQ-VAE run: a VAE's latent term is its analytic KL")
    if images.shape[0] < 2:
        raise ValueError(f"bits/dim needs at least 2 images (the shuffle test pairs them), got {images.shape[0]}")
    model.eval()
    generator = torch.Generator(device).manual_seed(seed)
    dims = images[0].numel()
    totals = {"recon": 0.0, "latent": 0.0, "shuffled": 0.0, "prior": 0.0}
    shuffled_images = 0
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255)
        if isinstance(model, VQVAE):
            codes = model.encode(x)
            z = model.latents(codes)
            latent = torch.full((len(x),), math.prod(codes.shape[1:]) * math.log(model.config.codebook_size))
            if prior is not None:
                totals["prior"] += float(-_marginal_log_prob(prior, codes).sum())
        else:
            mean, log_var = model.posterior(x)
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            z = mean + torch.exp(0.5 * log_var) * noise
            latent = gaussian_kl(mean.float(), log_var.float())
        totals["recon"] += float(model.likelihood.nll(model.decoder_params(z, x), x).sum())
        totals["latent"] += float(latent.sum())
        if len(x) >= 2:  # every image gets its neighbour's latents: a derangement
            params = model.decoder_params(z.roll(1, dims=0), x)
            totals["shuffled"] += float(model.likelihood.nll(params, x).sum())
            shuffled_images += len(x)
    n = images.shape[0]
    per_dim = 1.0 / (n * dims * LN2)
    recon, latent = totals["recon"] * per_dim, totals["latent"] * per_dim
    shuffled = totals["shuffled"] / (shuffled_images * dims * LN2)
    metrics = {
        "images": n,
        "dims": dims,
        "bits_per_dim": recon + latent,
        "reconstruction_bits_per_dim": recon,
        "latent_bits_per_dim": latent,
        "latent_nats_per_image": totals["latent"] / n,
        "shuffled_reconstruction_bits_per_dim": shuffled,
        "shuffle_gap_bits_per_dim": shuffled - recon,
    }
    if prior is not None:
        prior_latent = totals["prior"] * per_dim
        metrics["bits_per_dim_prior"] = recon + prior_latent
        metrics["latent_bits_per_dim_prior"] = prior_latent
    return metrics


def _marginal_log_prob(prior: torch.nn.Module, codes: torch.Tensor) -> torch.Tensor:
    """``log p(codes)`` ``(B,)`` in nats; a class-conditional prior is averaged over classes."""
    classes = prior.config.num_classes
    if not classes:
        return prior.log_prob(codes)
    per_class = torch.stack([prior.log_prob(codes, y) for y in range(classes)])  # (classes, B)
    return torch.logsumexp(per_class, dim=0) - math.log(classes)
