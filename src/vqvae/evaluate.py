"""Honest tokenizer metrics: reconstruction error, PSNR, SSIM, codebook usage, rate."""

from __future__ import annotations

import math

import numpy as np
import torch
from skimage.metrics import structural_similarity

from vqvae.autoencoder import VQVAE
from vqvae.quantize import codebook_perplexity


@torch.no_grad()
def reconstruct_all(
    model: VQVAE, images: torch.Tensor, batch_size: int = 256, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes and reconstructions of uint8 ``images`` ``(N, C, *S)``.

    Returns:
        ``(codes (N, *S') int64, reconstructions (N, C, *S) float32 in [0, 1])`` on the CPU.
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
    model: VQVAE,
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
    against 8-bit pixels.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (N, C, H, W), got {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("no images to evaluate: the chosen split is empty")
    codes, recons = reconstruct_all(model, images, batch_size, device)
    x = images.float().div_(255)
    mse = float((recons - x).square().mean())
    k = model.config.codebook_size
    counts = torch.bincount(codes.flatten(), minlength=k)
    used = int((counts > 0).sum())
    bits = math.prod(codes.shape[1:]) * math.log2(k)
    return {
        "images": int(images.shape[0]),
        "mse": mse,
        "nmse": mse / data_variance,
        "psnr": 10 * math.log10(1.0 / mse) if mse > 0 else math.inf,
        "ssim": mean_ssim(x, recons),
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
