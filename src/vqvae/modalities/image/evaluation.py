"""Using a trained image run: its data, evaluation, encoding, decoding, sample judging.

Each ``vqvae`` sub-command on an image run is a thin layer over one function here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from vqvae.code_shards import concat_codes, part, split_codes
from vqvae.generate import sample_codes
from vqvae.modalities.image import stream
from vqvae.modalities.image.data import ImageData, available_splits, load_images
from vqvae.modalities.image.judge import cached_classifier, frechet_distance, predict
from vqvae.modalities.image.metrics import likelihood_metrics, reconstruct_all, tokenizer_metrics
from vqvae.modalities.image.outputs import save_reconstruction_grid, to_uint8
from vqvae.precision import autocast_for
from vqvae.priors.training import load_prior
from vqvae.runs import CodeFile, codes_cache_path, load_codes, prior_folder, read_config, save_codes

CLASSIFIER_STEPS = 1500  # training steps of the judge of samples
Loader = Callable[[str | os.PathLike, str], nn.Module]  # (run, device) -> the run's model


def run_data(
    run: str | os.PathLike,
    data: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    default_split: str = "eval",
    limit: int | None = None,
) -> ImageData:
    """The data a run command works on: the run's own unless ``data`` names other data.

    ``split=None`` means ``test`` when the source has one, else ``val`` (for
    ``default_split="eval"``), or the split named by ``default_split``. Shard data
    (``DIR/train-{...}.tar``) are read into memory up to ``limit`` images (all: None).
    """
    data, data_dir, split = _run_split(run, data, data_dir, split, default_split)
    if stream.is_shard_pattern(data):
        return stream.split_data(data, split, limit)
    return load_images(data, split, data_dir=data_dir, image_size=read_config(run)["data"]["image_size"])


def _run_split(run, data: str | None, data_dir: str | None, split: str | None,
               default_split: str) -> tuple[str, str | None, str]:
    """``(data, data_dir, split)`` a run command works on, the defaults resolved."""
    if data is None:
        recorded = read_config(run)["data"]
        data, data_dir = recorded["spec"], data_dir or recorded["data_dir"]
    if split is None and default_split != "eval":
        split = default_split
    elif split is None:
        splits = stream.shard_splits(data) if stream.is_shard_pattern(data) else available_splits(data, data_dir)
        split = "test" if "test" in splits else "val"
    return data, data_dir, split


def evaluate_run(load: Loader, run: str | os.PathLike, data: str | None = None, data_dir: str | None = None,
                 split: str | None = None, batch_size: int = 256, device: str = "cpu", *,
                 bits_per_dim: bool = False, prior: str | None = None) -> dict:
    """Reconstruction metrics (see :func:`~vqvae.modalities.image.metrics.tokenizer_metrics`)
    on a split, and with ``bits_per_dim`` the negative ELBO and its terms, the latent term
    also under the run's prior ``prior`` when named.

    A PixelCNN decoder's reconstructions are drawn pixel by pixel, so for such a run
    with ``bits_per_dim`` only the likelihood metrics are computed.
    """
    model = load(run, device)
    if prior is not None and not bits_per_dim:
        raise ValueError("--prior scores the latents under a learned prior: add --bits-per-dim")
    if bits_per_dim and not model.likelihood.discrete:
        raise ValueError(
            f"--bits-per-dim needs a discrete likelihood of 8-bit data, but {run} was trained with "
            f"--likelihood {model.config.likelihood}: train with --likelihood logistic or categorical"
        )
    prior_model = load_prior(prior_folder(run, prior), device) if prior is not None else None
    images = run_data(run, data, data_dir, split)
    config = read_config(run)
    metrics = {"run": str(run), "model": config["kind"], "data": images.source, "split": images.split}
    if not (bits_per_dim and model.autoregressive):
        metrics.update(tokenizer_metrics(model, images.images, config["data"]["variance"], batch_size, device))
    if bits_per_dim:
        metrics.update(likelihood_metrics(model, images.images, batch_size, device, prior=prior_model))
    return metrics


def encode_images(model: nn.Module, images: torch.Tensor, batch_size: int = 256, device: str = "cpu",
                  precision: str = "auto") -> torch.Tensor:
    """Codes ``(N, *S')`` of uint8 images ``(N, C, H, W)``.

    ``precision`` as in training: ``auto`` runs the encoder under bf16 autocast where the
    hardware computes bf16 natively, as the model was trained; the nearest-code search
    stays in fp32. On this project's CPU that encodes about 1.6x faster than fp32
    (``benchmarks/train_images.py``) and, on the trained CIFAR-10 tokenizer, picks the
    fp32 code at about 98 % of the positions. ``fp32`` gives the exact codes.
    """
    parts = []
    with autocast_for(precision, torch.device(device)):
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device).float().div_(255)
            parts.append(model.encode(x).cpu())
    return torch.cat(parts)


def encode_part(load: Loader, run: str | os.PathLike, data: str | None, data_dir: str | None,
                split: str | None, device: str, precision: str, rank: int, world: int,
                batch_size: int = 256) -> Iterator[CodeFile]:
    """Codes of part ``rank`` of ``world`` of a split (default ``train``), ``batch_size`` images at
    a time in the data's order, holding one batch of images at once: shard data are streamed,
    each process reading a contiguous run of whole shard files; other sources (memory-mapped
    once decoded) are cut into contiguous runs of images."""
    model = load(run, device)
    data, data_dir, split = _run_split(run, data, data_dir, split, "train")
    if stream.is_shard_pattern(data):
        files = stream.split_shards(data, split)
        batches = ((torch.from_numpy(x), torch.from_numpy(y)) for x, y in
                   stream.file_batches([files[i] for i in part(len(files), rank, world)], batch_size))
    else:
        dataset = run_data(run, data, data_dir, split)
        mine = part(len(dataset), rank, world)
        labels = dataset.labels if dataset.labels is not None else torch.full((len(dataset),), -1)
        cuts = [slice(i, min(i + batch_size, mine.stop)) for i in range(mine.start, mine.stop, batch_size)]
        batches = ((dataset.images[cut], labels[cut]) for cut in cuts)
    for images, batch_labels in batches:
        yield CodeFile(encode_images(model, images, batch_size, device, precision), batch_labels)


def decode_codes(model: nn.Module, codes: torch.Tensor, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """Images ``(N, C, H, W)`` in [0, 1] decoded from codes ``(N, *S')``."""
    k = model.config.codebook_size
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= k):
        raise ValueError(
            f"codes range over [{int(codes.min())}, {int(codes.max())}] but this run's codebook "
            f"has K={k} codes: were they encoded with another run?"
        )
    out = [model.decode(codes[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(codes), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def reconstruction_grid(model: nn.Module, images: torch.Tensor, out: str | os.PathLike, device: str = "cpu") -> Path:
    """A PNG with rows of originals, each followed by their reconstructions."""
    _, recon = reconstruct_all(model, images, device=device)
    save_reconstruction_grid(images.float() / 255, recon, out)
    return Path(out)


def cached_codes(load: Loader, run: str | os.PathLike, split: str, data: str | None = None,
                 data_dir: str | None = None, device: str = "cpu") -> tuple[torch.Tensor, torch.Tensor | None]:
    """Codes ``(N, *S')`` and labels (or None) of a split, encoded once with the run's frozen
    tokenizer and cached in ``RUN/codes/`` under a name tied to the data and the weights; or
    read from code shards when ``data`` names them (:func:`vqvae.code_shards.split_codes`)."""
    shards = split_codes(data, split, run) if data is not None else None
    if shards is not None:
        return shards.codes, shards.labels
    config = read_config(run)
    path = codes_cache_path(run, split, (data or config["data"]["spec"], data_dir, split))
    if not path.exists():
        # streamed, one batch of images at a time; fp32: a prior's training data should be the
        # exact codes, the same on any machine
        file = concat_codes(list(encode_part(load, run, data, data_dir, split, device, "fp32", 0, 1)))
        save_codes(path, file.codes, config["model"]["codebook_size"], file.labels)
    file = load_codes(path)
    return file.codes, file.labels


def evaluate_samples(load: Loader, run: str | os.PathLike, *, prior: str | None = None, per_class: int = 100,
                     real: int = 1000, sampling: dict | None = None, seed: int = 0,
                     classifier_steps: int | None = None, device: str = "cpu") -> dict:
    """Sample quality judged by a classifier trained on the run's real training images.

    ``per_class`` class-conditional samples for every class are classified; the report has
    ``label_accuracy`` (the fraction classified as the requested class) and
    ``frechet_distance`` between the classifier's penultimate-layer features of the
    samples and of ``real`` held-out real images. For scale it also gives the
    classifier's accuracy on those real images and the Fréchet distance between real
    training and real held-out images.

    ``sampling``: ``temperature``, ``top_k``, ``top_p``, ``guidance`` of the draws.
    """
    sampling = {"temperature": 1.0, "top_k": None, "top_p": None, "guidance": None, **(sampling or {})}
    classifier_steps = classifier_steps or CLASSIFIER_STEPS
    classes = list(read_config(run)["data"].get("classes") or [])
    if not classes:
        raise ValueError(f"{run}: its data have no classes, so class-conditional samples cannot be judged")
    train = run_data(run, split="train", default_split="train")
    held_out = run_data(run)  # test when the data have one, else val
    classifier, _ = cached_classifier(
        Path(run) / "classifier", train.images, train.labels, len(classes),
        val_images=held_out.images, val_labels=held_out.labels, steps=classifier_steps, device=device,
    )
    requested = torch.arange(len(classes)).repeat_interleave(per_class)
    codes, guidance = sample_codes(run, len(requested), prior=prior, label=requested, seed=seed, device=device,
                                   **sampling)
    images = decode_codes(load(run, device), codes, device=device)
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
        **sampling,
        "guidance": guidance,
        "seed": seed,
    }
