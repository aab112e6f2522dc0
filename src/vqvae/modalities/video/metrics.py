"""Per-frame quality of video clips: PSNR and SSIM of every frame of every clip, their
means, and a paired bootstrap interval of the difference between two methods.

Clips are floats in [0, 1], channels first then time: ``(N, C, T, H, W)``. Scores are
``(N, T)``: one per clip and frame. A clip's score is the mean over its frames; a method's
per-frame score is the mean over clips (the usual video-prediction protocol: the PSNR of
each frame, averaged, not the PSNR of the pooled error).
"""

from __future__ import annotations

import numpy as np
import torch
from skimage.metrics import structural_similarity

# A frame reproduced exactly has infinite PSNR; its error is floored at the variance of
# 8-bit rounding noise (one step of 1/255, uniform), which caps a frame at 58.9 dB.
MSE_FLOOR = 1.0 / (12 * 255**2)


def _check_pair(truth: torch.Tensor, other: torch.Tensor) -> None:
    if truth.shape != other.shape or truth.dim() != 5:
        raise ValueError(f"clips must both be (N, C, T, H, W) of one shape, got {tuple(truth.shape)} "
                         f"and {tuple(other.shape)}")


def frame_psnr(truth: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """PSNR in dB (peak 1) of every frame: ``(N, C, T, H, W) x 2 -> (N, T)``."""
    _check_pair(truth, other)
    mse = (truth.float() - other.float()).square().mean(dim=(1, 3, 4))  # (N, T)
    return 10 * torch.log10(1.0 / mse.clamp_min(MSE_FLOOR))


def frame_ssim(truth: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """SSIM of every frame (scikit-image, 7x7 uniform window, colour channels averaged):
    ``(N, C, T, H, W) x 2 -> (N, T)``."""
    _check_pair(truth, other)
    a = truth.float().permute(0, 2, 1, 3, 4).cpu().numpy().astype(np.float64)  # (N, T, C, H, W)
    b = other.float().permute(0, 2, 1, 3, 4).cpu().numpy().astype(np.float64)
    win = min(7, a.shape[-1], a.shape[-2])
    win -= 1 - win % 2  # odd
    if win < 3:
        raise ValueError(f"SSIM needs frames of at least 3x3 pixels, got {a.shape[-2:]}")
    scores = np.array([[structural_similarity(p, q, data_range=1.0, channel_axis=0, win_size=win)
                        for p, q in zip(clip_a, clip_b, strict=True)]
                       for clip_a, clip_b in zip(a, b, strict=True)])
    return torch.from_numpy(scores.reshape(a.shape[:2])).float()


def summarise(name: str, scores: torch.Tensor) -> dict:
    """``{name: mean, name_per_frame: [mean over clips of each frame]}`` of scores ``(N, T)``;
    the per-frame values are rounded to 4 decimals (they are printed in tables)."""
    per_frame = scores.mean(dim=0)
    return {name: float(per_frame.mean()), f"{name}_per_frame": [round(float(v), 4) for v in per_frame]}


def paired_bootstrap(a: torch.Tensor, b: torch.Tensor, *, rounds: int = 10_000, level: float = 0.95,
                     seed: int = 0) -> list[float]:
    """Percentile bootstrap interval of ``mean(a) - mean(b)`` over paired items.

    ``a`` and ``b`` are per-item scores ``(N,)`` of two methods on the same items (a clip's
    mean PSNR with true and with shuffled actions); each round resamples the items with
    replacement, keeping the pairs, so the interval reflects how the difference varies
    from clip to clip rather than how the two methods vary separately.

    Returns:
        ``[low, high]``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles.
    """
    if a.shape != b.shape or a.dim() != 1 or len(a) < 2:
        raise ValueError(f"a paired bootstrap needs two (N,) score vectors over the same N >= 2 items, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    diff = (a.double() - b.double()).numpy()
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(rounds, len(diff)))].mean(axis=1)  # (rounds,)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return [float(low), float(high)]

