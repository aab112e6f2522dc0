"""The modality registry: ``MODALITIES`` maps a name to the :class:`Modality` of that kind of data.

Adding a modality is one package here and one line in ``MODALITIES``. A run's
``config.json`` names its modality (runs written before that field existed are found by
their model ``kind``); ``vqvae train --data`` asks each modality whether it recognises the
data, and the fallback modality takes the rest.
"""

from __future__ import annotations

import os

import torch
from torch import nn

from vqvae.checkpoint import CheckpointError, load_model
from vqvae.modalities.base import Modality, Option
from vqvae.modalities.image import ImageModality
from vqvae.modalities.speech import SpeechModality
from vqvae.modalities.video import VideoModality
from vqvae.priors.training import build_prior
from vqvae.runs import read_config

__all__ = ["MODALITIES", "Modality", "Option", "detect", "load", "modality_of"]

MODALITIES: dict[str, Modality] = {
    "image": ImageModality(),
    "speech": SpeechModality(),
    "video": VideoModality(),
}


def detect(spec: str, data_dir: str | None = None) -> Modality:
    """The modality of ``--data spec``: the first that recognises it, else the fallback."""
    for modality in MODALITIES.values():
        if not modality.fallback and modality.recognises(spec, data_dir):
            return modality
    for modality in MODALITIES.values():
        if modality.fallback:
            return modality
    raise ValueError(f"no modality recognises --data {spec!r}; known: {', '.join(MODALITIES)}")


def modality_of(config: dict) -> Modality:
    """The modality of a tokenizer run's config: its ``modality`` entry, or the one whose
    models include its ``kind`` (runs written before the entry existed)."""
    name = config.get("modality")
    if name is not None:
        if name not in MODALITIES:
            raise CheckpointError(f"the run's modality {name!r} is not installed; known: {', '.join(MODALITIES)}")
        return MODALITIES[name]
    for modality in MODALITIES.values():
        if config.get("kind") in modality.models.values():
            return modality
    raise CheckpointError(f"unknown model kind {config.get('kind')!r} in config.json; this vqvae knows "
                          f"{sorted(k for m in MODALITIES.values() for k in m.models.values())} and priors")


def load(run: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model of a run directory from ``config.json`` alone and load its weights.

    Args:
        run: a run directory (``vqvae train --out RUN``) or a prior folder (``RUN/priors/NAME``).
        device: where to put the model.

    Returns:
        The model in eval mode: the tokenizer of the run's modality (a :class:`~vqvae.VQVAE`
        or :class:`~vqvae.VAE` for images, a ``SpeechVQVAE`` for speech), or a
        :class:`~vqvae.PixelCNNPrior` / :class:`~vqvae.TransformerPrior` for a prior folder.
    """
    config = read_config(run)
    return load_model(run, build_prior if config["kind"] == "prior" else modality_of(config).build, device)
