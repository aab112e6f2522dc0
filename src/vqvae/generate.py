"""Generation, modality-free: sample code grids from a run's prior.

Decoding the codes into images, audio or video is the tokenizer's modality's job.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from vqvae.priors.sampling import resolve_guidance
from vqvae.priors.training import load_prior
from vqvae.priors.transformer import TransformerPrior
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
    actions: Tensor | None = None,
    prefix: Tensor | None = None,
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
        actions: ``(n, T', F)`` int64, the actions of each code time step, for a prior
            conditioned on actions (see :class:`~vqvae.priors.TransformerPrior`).
        prefix: ``(n, t0, *S'[1:])`` int64, given codes of the first ``t0`` time steps,
            kept; the prior draws the rest (a Transformer prior only).

    Returns:
        ``(codes (n, *S') int64, the guidance scale used)``.
    """
    if n < 1:
        raise ValueError(f"-n must be at least 1, got {n}")
    folder = prior_folder(run, prior)
    model = load_prior(folder, device)
    guidance = resolve_guidance(guidance, model.config.num_classes, model.config.label_dropout)
    labels = torch.full((n,), label, dtype=torch.long) if isinstance(label, int) else label
    given = {"actions": actions, "prefix": prefix}
    for name, value in given.items():
        if value is None:
            continue
        if not isinstance(model, TransformerPrior):
            raise ValueError(f"the prior {folder.name} ({type(model).__name__}) takes no {name}: "
                             f"train one with --arch transformer")
        if not isinstance(value, Tensor) or value.dim() < 1 or len(value) != n:
            shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise ValueError(f"{name} must be a tensor with one row per sample (n={n}), got {shape}")
    generator = torch.Generator(device=device).manual_seed(seed)
    codes = []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        part = None if labels is None else labels[start : start + count].to(device)
        extra = {k: v[start : start + count].to(device) for k, v in given.items() if v is not None}
        codes.append(model.sample(count, label=part, temperature=temperature, top_k=top_k, top_p=top_p,
                                  guidance=guidance, generator=generator, **extra).cpu())
    return torch.cat(codes), guidance
