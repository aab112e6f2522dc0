"""Generation: sample code grids from a run's prior and decode them with its tokenizer."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import torch

from vqvae.checkpoint import CONFIG_FILE, load, read_config, write_bytes
from vqvae.figures import to_uint8
from vqvae.priors.sampling import resolve_guidance
from vqvae.tokenizer import write_images


def prior_names(run: str | os.PathLike) -> list[str]:
    """Names of the priors trained in ``RUN/priors/``."""
    folder = Path(run) / "priors"
    return sorted(p.name for p in folder.iterdir() if (p / CONFIG_FILE).exists()) if folder.is_dir() else []


def prior_folder(run: str | os.PathLike, prior: str | None = None) -> Path:
    """The folder of the named prior, or of the run's only prior."""
    names = prior_names(run)
    if prior is None:
        if not names:
            raise FileNotFoundError(
                f"{run} has no prior yet: train one with vqvae train-prior {run} --arch transformer"
            )
        if len(names) > 1:
            raise ValueError(f"{run} has several priors ({', '.join(names)}): choose one with --prior NAME")
        prior = names[0]
    if prior not in names:
        raise FileNotFoundError(f"{run} has no prior named {prior!r}; it has: {', '.join(names) or 'none'}")
    return Path(run) / "priors" / prior


@torch.no_grad()
def sample_images(
    run: str | os.PathLike,
    n: int,
    *,
    prior: str | None = None,
    label: int | torch.Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance: float | None = None,
    seed: int = 0,
    batch_size: int = 128,
    device: str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample ``n`` code grids from a prior and decode them.

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
        ``(codes (n, *S') int64, images (n, C, H, W) float in [0, 1])``.
    """
    if n < 1:
        raise ValueError(f"-n must be at least 1, got {n}")
    tokenizer = load(run, device)
    model = load(prior_folder(run, prior), device)
    guidance = resolve_guidance(guidance, model.config.num_classes, model.config.label_dropout)
    labels = label
    if isinstance(label, int):
        labels = torch.full((n,), label, dtype=torch.long)
    generator = torch.Generator(device=device).manual_seed(seed)
    codes, images = [], []
    for start in range(0, n, batch_size):
        count = min(batch_size, n - start)
        part = None if labels is None else labels[start : start + count].to(device)
        c = model.sample(count, label=part, temperature=temperature, top_k=top_k, top_p=top_p,
                         guidance=guidance, generator=generator)
        codes.append(c.cpu())
        images.append(tokenizer.decode(c).float().cpu())
    return torch.cat(codes), torch.cat(images)


def write_samples(codes: torch.Tensor, images: torch.Tensor, out_dir: str | os.PathLike) -> Path:
    """``grid.png``, one PNG per sample, ``codes.npy`` and ``images.npy`` (uint8 (N, C, H, W))."""
    out_dir = Path(out_dir)
    grid = write_images(images, out_dir)
    for name, array in (("codes.npy", codes.numpy()), ("images.npy", to_uint8(images))):
        buffer = io.BytesIO()
        np.save(buffer, array, allow_pickle=False)
        write_bytes(out_dir / name, buffer.getvalue())
    return grid


def class_names(run: str | os.PathLike) -> list[str]:
    return list(read_config(run)["data"].get("classes") or [])


def evaluate_samples(
    run: str | os.PathLike,
    *,
    prior: str | None = None,
    per_class: int = 100,
    real: int = 1000,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    guidance: float | None = None,
    seed: int = 0,
    classifier_steps: int = 1500,
    device: str = "cpu",
) -> dict:
    """Sample quality judged by a classifier trained on the run's real training images.

    ``per_class`` class-conditional samples for every class are classified; the report has
    ``label_accuracy`` (the fraction classified as the requested class) and
    ``frechet_distance`` between the classifier's penultimate-layer features of the
    samples and of ``real`` held-out real images. For scale it also gives the
    classifier's accuracy on those real images and the Fréchet distance between real
    training and real held-out images.
    """
    from vqvae.modalities.image.judge import cached_classifier, frechet_distance, predict
    from vqvae.tokenizer import run_data

    classes = class_names(run)
    if not classes:
        raise ValueError(f"{run}: its data have no classes, so class-conditional samples cannot be judged")
    train = run_data(run, split="train", default_split="train")
    held_out = run_data(run)  # test when the data have one, else val
    classifier, info = cached_classifier(
        Path(run) / "classifier", train.images, train.labels, len(classes),
        val_images=held_out.images, val_labels=held_out.labels, steps=classifier_steps, device=device,
    )
    requested = torch.arange(len(classes)).repeat_interleave(per_class)
    settings = read_config(prior_folder(run, prior))["model"]  # the guidance used goes in the report
    guidance = resolve_guidance(guidance, settings.get("num_classes"), settings.get("label_dropout", 0.0))
    _, images = sample_images(run, len(requested), prior=prior, label=requested,
                              temperature=temperature, top_k=top_k, top_p=top_p, guidance=guidance,
                              seed=seed, device=device)
    predicted, sample_features = predict(classifier, torch.from_numpy(to_uint8(images)), device=device)
    real_images = held_out.images[:real]
    real_predicted, real_features = predict(classifier, real_images, device=device)
    _, train_features = predict(classifier, train.images[:real], device=device)
    return {
        "run": str(run),
        "prior": prior_folder(run, prior).name,
        "samples": len(requested),
        "samples_per_class": per_class,
        "real_images": len(real_images),
        "real_split": held_out.split,
        "label_accuracy": float((predicted == requested).float().mean()),
        "frechet_distance": frechet_distance(sample_features, real_features),
        "classifier_accuracy_real": float((real_predicted == held_out.labels[:real]).float().mean()),
        "frechet_distance_real_train_vs_held_out": frechet_distance(train_features, real_features),
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "guidance": guidance,
        "seed": seed,
    }
