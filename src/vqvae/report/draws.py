"""Samples from each prior of a run for its report: code grids drawn per class, modality-free.

The run's modality decodes them into images or audio.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from vqvae.checkpoint import MODEL_FILE
from vqvae.generate import sample_codes
from vqvae.runs import prior_names, read_config

__all__ = ["PriorDraw", "draw_from_priors"]


@dataclass
class PriorDraw:
    """Codes sampled from one prior.

    Attributes:
        prior: the prior's name (its folder in ``RUN/priors/``).
        codes: ``(N, *S')`` int64, ``per_class`` consecutive rows per class.
        labels: ``(N,)`` class indices, or None for a prior without classes.
        classes: the class names (empty without classes).
        per_class: rows per class (without classes: N).
        guidance: the classifier-free guidance scale the draw used.
    """

    prior: str
    codes: Tensor
    labels: Tensor | None
    classes: list[str]
    per_class: int
    guidance: float

    def groups(self) -> list[tuple[str, Tensor]]:
        """``(title, row indices)`` of each class, or one group of all rows."""
        if self.labels is None:
            return [("unconditional", torch.arange(len(self.codes)))]
        return [(str(self.classes[c]) if c < len(self.classes) else f"class {c}",
                 torch.nonzero(self.labels == c).flatten()) for c in range(int(self.labels.max()) + 1)]


def draw_from_priors(run: str | os.PathLike, per_class: int, *, seed: int = 0,
                     device: str = "cpu") -> tuple[list[PriorDraw], list[str]]:
    """``per_class`` samples of every class (or ``per_class`` unconditional ones) from each
    trained prior of the run, at temperature 1 with the prior's default guidance.

    Returns:
        ``(draws, names of priors without weights yet)``.
    """
    if per_class < 1:
        raise ValueError(f"--samples-per-class must be at least 1, got {per_class}")
    run = Path(run)
    draws, untrained = [], []
    for name in prior_names(run):
        folder = run / "priors" / name
        if not (folder / MODEL_FILE).exists():
            untrained.append(name)
            continue
        config = read_config(folder)
        num_classes = config["model"].get("num_classes")
        labels = torch.arange(num_classes).repeat_interleave(per_class) if num_classes else None
        n = per_class * num_classes if num_classes else per_class
        codes, guidance = sample_codes(run, n, prior=name, label=labels, seed=seed, device=device)
        draws.append(PriorDraw(name, codes, labels, list(config["data"].get("classes") or []), per_class, guidance))
    return draws, untrained
