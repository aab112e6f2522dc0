"""Generation, modality-free: sample code grids from a run's prior.

Decoding the codes into images, audio or video is the tokenizer's modality's job.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from vqvae.priors.sampling import resolve_guidance
from vqvae.priors.training import load_prior
from vqvae.runs import prior_folder


@torch.no_grad()
def sample_codes(
    run: str | os.PathLike,
    n: int,
    *,
    prior: str | None = None,
    label: int | Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 128,
    device: str = "cpu",
) -> tuple[Tensor, float]:
    """Sample ``n`` code grids from a prior of the run.

    Args:
        run: the tokenizer run.
        n: number of samples.
        prior: the prior's name (default: the run's only prior).
        label: a class index, or ``(n,)`` class indices, for a class-conditional prior.
        temperature, top_k, top_p: sampling filters.
        guidance: classifier-free guidance scale; 1.0 samples the prior as it is; None:
            the prior's default (see :func:`~vqvae.priors.sampling.resolve_guidance`).
        seed: the same seed gives the same samples.

    Returns:
        ``(codes (n, *S') int64, the guidance scale used)``.
    """
    if n < 1:
        raise ValueError(f"-n must be at least 1, got {n}")
    model = load_prior(prior_folder(run, prior), device)
    guidance = resolve_guidance(guidance, model.config.num_classes, model.config.label_dropout)
    labels = torch.full((n,), label, dtype=torch.long) if isinstance(label, int) else label
    generator = torch.Generator(device=device).manual_seed(seed)
    codes = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        part = None if labels is None else labels[start : start + count].to(device)
        codes.append(model.sample(count, label=part, temperature=temperature, top_k=top_k, top_p=top_p,
                                  guidance=guidance, generator=generator).cpu())
    return torch.cat(codes), guidance
