"""Using a trained tokenizer run: evaluate it, turn data into code files and back.

Each ``vqvae`` sub-command of the same name is a thin layer over one function here.
Code files are ``.npz`` with arrays ``codes`` (int16 when K ≤ 32768, else int32) and
``labels`` (int64, −1 where the data have no labels), or a bare ``.npy`` of codes;
both are always read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import torch

from vqvae.checkpoint import MODEL_FILE, load, read_config, write_bytes
from vqvae.figures import image_grid, save_png, save_reconstruction_grid, to_uint8
from vqvae.modalities.image.data import ImageData, available_splits, load_images
from vqvae.modalities.image.metrics import likelihood_metrics, reconstruct_all, tokenizer_metrics
from vqvae.precision import autocast_for


def run_data(
    run: str | os.PathLike,
    data: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    default_split: str = "eval",
) -> ImageData:
    """The data a run command works on: the run's own unless ``data`` names other data.

    ``split=None`` means ``test`` when the source has one, else ``val`` (for
    ``default_split="eval"``), or the split named by ``default_split``.
    """
    recorded = read_config(run)["data"]
    if data is None:
        data, data_dir = recorded["spec"], data_dir or recorded["data_dir"]
    if split is None:
        if default_split == "eval":
            split = "test" if "test" in available_splits(data, data_dir) else "val"
        else:
            split = default_split
    return load_images(data, split, data_dir=data_dir, image_size=recorded["image_size"])


def evaluate_run(
    run: str | os.PathLike,
    data: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    *,
    bits_per_dim: bool = False,
    prior: str | None = None,
) -> dict:
    """Reconstruction metrics (see :func:`vqvae.modalities.image.metrics.tokenizer_metrics`) on a split, and
    with ``bits_per_dim`` the negative ELBO and its terms (:func:`vqvae.modalities.image.metrics.likelihood_metrics`),
    the latent term also under the run's prior ``prior`` when named.

    A PixelCNN decoder's reconstructions are drawn pixel by pixel, so for such a run
    with ``bits_per_dim`` only the likelihood metrics are computed.
    """
    from vqvae.generate import prior_folder

    model = load(run, device)
    if prior is not None and not bits_per_dim:
        raise ValueError("--prior scores the latents under a learned prior: add --bits-per-dim")
    if bits_per_dim and not model.likelihood.discrete:
        raise ValueError(
            f"--bits-per-dim needs a discrete likelihood of 8-bit data, but {run} was trained with "
            f"--likelihood {model.config.likelihood}: train with --likelihood logistic or categorical"
        )
    prior_model = load(prior_folder(run, prior), device) if prior is not None else None
    images = run_data(run, data, data_dir, split)
    config = read_config(run)
    metrics = {"run": str(run), "model": config["kind"], "data": images.source, "split": images.split}
    if not (bits_per_dim and model.autoregressive):
        metrics.update(tokenizer_metrics(model, images.images, config["data"]["variance"], batch_size, device))
    if bits_per_dim:
        metrics.update(likelihood_metrics(model, images.images, batch_size, device, prior=prior_model))
    return metrics


def encode_run(
    run: str | os.PathLike,
    data: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    batch_size: int = 256,
    device: str = "cpu",
    precision: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes ``(N, *S')`` and labels ``(N,)`` (−1 without labels) of a split (default train).

    ``precision`` as in training: ``auto`` (the default) runs the encoder under bf16
    autocast where the hardware computes bf16 natively, as the model was trained; the
    nearest-code search stays in fp32. On this project's CPU that encodes about 1.6x
    faster than fp32 (``benchmarks/train_images.py``) and, on the trained CIFAR-10
    tokenizer, picks the fp32 code at about 98 % of the positions. ``fp32`` gives the
    exact codes.
    """
    model = load(run, device).eval()
    dataset = run_data(run, data, data_dir, split, default_split="train")
    images, labels = dataset.images, dataset.labels
    parts = []
    with autocast_for(precision, torch.device(device)):
        for start in range(0, images.shape[0], batch_size):
            x = images[start : start + batch_size].to(device).float().div_(255)
            parts.append(model.encode(x).cpu())
    codes = torch.cat(parts)
    return codes, labels if labels is not None else torch.full((len(codes),), -1)


def save_codes(path: str | os.PathLike, codes: torch.Tensor, labels: torch.Tensor, codebook_size: int) -> None:
    """Write ``codes`` and ``labels`` to an ``.npz`` file, atomically."""
    dtype = np.int16 if codebook_size <= 32768 else np.int32
    buffer = io.BytesIO()
    np.savez(buffer, codes=codes.numpy().astype(dtype), labels=labels.numpy().astype(np.int64))
    write_bytes(path, buffer.getvalue())


def load_codes(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Codes (int64) and labels (or None) from an ``.npz`` or ``.npy`` file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"code file {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{path} is not a readable .npz/.npy code file ({exc})") from exc
    if isinstance(loaded, np.ndarray):
        codes, labels = loaded, None
    else:
        if "codes" not in loaded.files:
            raise ValueError(f"{path} has no array named 'codes' (it has {loaded.files})")
        codes = loaded["codes"]
        labels = loaded["labels"] if "labels" in loaded.files else None
    if not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"codes in {path} must be integers, got {codes.dtype}")
    return torch.from_numpy(codes.astype(np.int64)), None if labels is None else torch.from_numpy(labels)


def decode_codes(run: str | os.PathLike, codes: torch.Tensor, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """Images ``(N, C, H, W)`` in [0, 1] decoded from codes ``(N, *S')``."""
    model = load(run, device)
    k = model.config.codebook_size
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= k):
        raise ValueError(
            f"codes range over [{int(codes.min())}, {int(codes.max())}] but this run's codebook "
            f"has K={k} codes: were they encoded with another run?"
        )
    out = [model.decode(codes[i : i + batch_size].to(device)).cpu() for i in range(0, len(codes), batch_size)]
    return torch.cat(out) if out else torch.empty(0)


def write_images(images: torch.Tensor, out_dir: str | os.PathLike) -> Path:
    """One PNG per image (``000000.png``...) and ``grid.png`` in ``out_dir``."""
    from PIL import Image

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arr = to_uint8(images)
    for i, image in enumerate(arr):
        picture = Image.fromarray(image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0))
        save_png(picture, out_dir / f"{i:06d}.png")
    save_png(image_grid(arr[:256]), out_dir / "grid.png")
    return out_dir / "grid.png"


def reconstruction_grid(
    run: str | os.PathLike,
    out: str | os.PathLike,
    data: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    n: int = 32,
    device: str = "cpu",
) -> Path:
    """A PNG with rows of originals, each followed by their reconstructions."""
    model = load(run, device)
    images = run_data(run, data, data_dir, split).images[:n]
    _, recon = reconstruct_all(model, images, device=device)
    save_reconstruction_grid(images.float() / 255, recon, out)
    return Path(out)


def codes_cache_path(run: str | os.PathLike, name: str, key: tuple) -> Path:
    """``RUN/codes/NAME-KEY-WEIGHTS.npz``: codes cached for the data named by ``key``, tied to
    the tokenizer's current weights, so retraining it invalidates them."""
    run = Path(run)
    weights = hashlib.sha256((run / MODEL_FILE).read_bytes()).hexdigest()[:16]
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
    return run / "codes" / f"{name}-{digest}-{weights}.npz"


def cached_codes(
    run: str | os.PathLike,
    split: str,
    data: str | None = None,
    data_dir: str | None = None,
    device: str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Codes and labels of a split, encoded once with the run's frozen tokenizer.

    The result is cached in ``RUN/codes/`` under a name that depends on the data and on
    the tokenizer's weights, so retraining the tokenizer invalidates it.

    Returns:
        ``(codes (N, *S') int64, labels (N,) int64 or None)``.
    """
    config = read_config(run)
    path = codes_cache_path(run, split, (data or config["data"]["spec"], data_dir, split))
    if path.exists():
        codes, labels = load_codes(path)
    else:
        # fp32: a prior's training data should be the exact codes, the same on any machine
        codes, labels = encode_run(run, data, data_dir, split, device=device, precision="fp32")
        save_codes(path, codes, labels, config["model"]["codebook_size"])
    if labels is not None and bool((labels < 0).all()):
        labels = None
    return codes, labels
