"""Judges: classifiers trained on real data, to score generated or reconstructed data.

What every judge shares, whatever its data: the seeded training loop, batched prediction,
the label checks, the fingerprint of a training set, the folder cache that reuses a saved
judge when its settings and that fingerprint match, and the Fréchet distance between two
sets of judge features. Nothing here knows what the data are; a modality's judge module
(e.g. :mod:`vqvae.modalities.image.judge`) brings its network and two small callables:

* ``batches(batch_size, generator)``: an endless iterator of index tensors ``(B,)``, the
  order in which training visits the examples (its batching policy);
* ``inputs(index, generator)``: the network's positional inputs for those examples,
  augmented (for prediction, ``inputs(index)`` without augmentation).

Both draw their randomness from the loop's ``generator``, seeded by ``seed``, so a judge
depends only on its arguments and the global RNG is left alone.

Shapes: N examples, B batch, K classes, F feature width.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.checkpoint import CONFIG_FILE, load_judge, read_judge_config, save_judge

__all__ = [
    "cached_judge",
    "check_labels",
    "fingerprint",
    "fraction_correct",
    "frechet_distance",
    "predict_batches",
    "train_judge",
]

Batches = Callable[[int, torch.Generator], Iterator[Tensor]]
TrainInputs = Callable[[Tensor, torch.Generator], tuple[Tensor, ...]]


# ---------------------------------------------------------------------- training


def check_labels(labels: Tensor, n: int, num_classes: int, per: str = "example") -> None:
    """Raise unless ``labels`` is int64 ``(n,)`` with values in ``[0, num_classes)``.

    ``per`` names one example in the message ("image", "clip").
    """
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (n,):
        got = f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels)
        raise ValueError(f"labels must be int64 (N,) = ({n},), one per {per}, got {got}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels span {int(labels.min())}..{int(labels.max())}, outside "
            f"0..{num_classes - 1} for num_classes={num_classes}"
        )


def train_judge(
    build: Callable[[], nn.Module],
    labels: Tensor,
    batches: Batches,
    inputs: TrainInputs,
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    time_budget: float | None,
    device: str | torch.device,
    record: dict | None = None,
) -> nn.Module:
    """Train ``build()`` to predict ``labels`` with Adam, a cosine learning rate and cross-entropy.

    The network is built under ``torch.manual_seed(seed)`` in a forked RNG, and one
    ``torch.Generator`` seeded by ``seed`` drives ``batches`` and ``inputs``: on the CPU,
    with a fixed number of threads, the result depends only on the arguments, unless
    ``time_budget`` stops training early.

    Args:
        build: makes the untrained network; it maps ``*inputs(...)`` to logits ``(B, K)``.
        labels: int64 ``(N,)`` targets (checked by the caller, e.g. with :func:`check_labels`).
        batches: ``batches(batch_size, generator)``, endless index batches ``(B,)``.
        inputs: ``inputs(index, generator)``, the network's inputs for a batch; they are
            moved to ``device`` if they are not there yet.
        steps: optimizer steps (the learning rate decays to 0 over them).
        batch_size: examples per step, at least 2 (the judges use BatchNorm); capped at N.
        lr: peak Adam learning rate.
        seed: seed of everything random in training.
        time_budget: stop after this many seconds even if fewer than ``steps`` ran.
        device: where to train; the network is returned there.
        record: more entries for ``train_settings`` (e.g. the data's fingerprint).

    Returns:
        The network in eval mode, its ``train_settings`` holding the arguments, the steps
        actually run, the seconds taken, the last batch loss and ``record``.
    """
    n = labels.shape[0]
    if steps < 1 or batch_size < 2 or n < 2:
        raise ValueError(
            f"need steps >= 1, batch_size >= 2 and at least 2 training examples (BatchNorm), "
            f"got steps={steps}, batch_size={batch_size}, {n} examples"
        )
    batch_size = min(batch_size, n)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build()
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )

    start = time.monotonic()
    order = batches(batch_size, generator)
    step, loss = 0, None
    while step < steps:
        if time_budget is not None and time.monotonic() - start >= time_budget:
            break
        # 1. batch + augmentation  2. forward/backward  3. optimizer and lr schedule
        index = next(order)  # (B,)
        x = [t.to(device) for t in inputs(index, generator)]
        logits = model(*x)  # (B, K)
        batch_loss = F.cross_entropy(logits, labels[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        loss = float(batch_loss.detach())

    model.train_settings = {
        "steps": steps,
        "steps_run": step,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "time_budget": time_budget,
        "seconds": round(time.monotonic() - start, 3),
        "final_loss": loss,
        **(record or {}),
    }
    return model.eval()


# --------------------------------------------------------------------- inference


@torch.no_grad()
def predict_batches(
    model: nn.Module,
    order: Tensor,
    batch_size: int,
    inputs: Callable[[Tensor], tuple[Tensor, ...]],
    outputs: Callable[..., tuple[Tensor, ...]],
) -> tuple[Tensor, ...]:
    """``outputs(model, *inputs(index))`` for every example, in eval mode without gradients.

    Args:
        model: the judge, already on the device ``inputs`` puts the data on.
        order: int64 ``(N,)``, a permutation of ``0..N-1``: the examples are run in this
            order, ``batch_size`` at a time (e.g. sorted by length, for less padding).
        batch_size: examples per forward pass, at least 1.
        inputs: the network's inputs for a batch of indices ``(B,)``.
        outputs: per-example results of one batch, each ``(B, ...)``.

    Returns:
        Each result for all examples, ``(N, ...)`` on the CPU, in index order (not ``order``).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    chunks = order.split(batch_size)
    results = [tuple(r.cpu() for r in outputs(model, *inputs(index))) for index in chunks]
    order = torch.cat(chunks)
    placed = []
    for parts in zip(*results, strict=True):
        ordered = torch.cat(parts)  # (N, ...) in run order
        out = torch.empty_like(ordered)
        out[order] = ordered
        placed.append(out)
    return tuple(placed)


def fraction_correct(predicted: Tensor, labels: Tensor) -> float:
    """Fraction of predicted labels ``(N,)`` equal to ``labels`` ``(N,)``."""
    if predicted.shape != labels.shape:
        raise ValueError(
            f"predicted labels {tuple(predicted.shape)} and labels {tuple(labels.shape)} "
            f"differ in shape: give one label per example"
        )
    return float((predicted == labels.cpu()).double().mean())


# ------------------------------------------------------------------------- cache


def fingerprint(parts: Iterable[str | Tensor]) -> str:
    """SHA-256 of a training set given as strings (sizes, shapes) and tensors (values).

    Stored with a judge, so that a cache never serves a judge of other data.
    """
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, str):
            digest.update(part.encode())
        else:
            digest.update(part.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cached_judge(
    folder: str | os.PathLike,
    kind: str,
    build: Callable[..., nn.Module],
    wanted: dict,
    data_sha256: str,
    train: Callable[[], nn.Module],
    score: Callable[[nn.Module], float] | None = None,
    device: str | torch.device = "cpu",
) -> tuple[nn.Module, dict]:
    """The judge saved in ``folder`` if it fits, else ``train()``'s, saved there.

    A saved judge fits when its config is of ``kind``, its model config agrees with
    ``wanted`` on every key there, and the fingerprint of its training data is
    ``data_sha256``. Otherwise ``train()`` makes one, which replaces the saved one. A
    corrupt saved judge raises :class:`~vqvae.checkpoint.CheckpointError`.

    Args:
        folder: the judge's own folder (``config.json`` + ``model.safetensors``).
        kind: the ``kind`` of its ``config.json``, e.g. ``"classifier"``.
        build: rebuilds the network from its saved model config (``build(**config)``).
        wanted: model-config entries the saved judge must have.
        data_sha256: :func:`fingerprint` of the training data.
        train: trains a new judge whose ``train_settings`` record ``data_sha256``.
        score: held-out accuracy of a judge, measured now; ``None``: none is measured.
        device: where a saved judge is loaded.

    Returns:
        ``(model, {"val_accuracy": float | None, "trained": bool})``; ``val_accuracy`` is
        ``score(model)``, or without ``score`` the saved value (``None`` once retrained).
    """
    folder = Path(folder)
    if (folder / CONFIG_FILE).is_file():
        config = read_judge_config(folder, kind)
        saved = config.get("model") or {}
        fits = all(saved.get(k) == v for k, v in wanted.items()) and (
            (config.get("training") or {}).get("data_sha256") == data_sha256
        )
        if fits:
            model = load_judge(folder, kind, build, device)
            val_accuracy = config.get("val_accuracy") if score is None else score(model)
            return model, {"val_accuracy": val_accuracy, "trained": False}

    model = train()
    val_accuracy = None if score is None else score(model)
    save_judge(folder, kind, model, val_accuracy)
    return model, {"val_accuracy": val_accuracy, "trained": True}


# -------------------------------------------------------------- Fréchet distance


def _as_features(x, name: str) -> np.ndarray:
    x = x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)
    x = x.astype(np.float64, copy=False)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(
            f"{name} must be (N, F) features with N >= 2 rows (a covariance needs two), "
            f"got shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ValueError(f"{name} has NaN or infinite features")
    return x


def _sqrtm_product(s_a: np.ndarray, s_b: np.ndarray) -> np.ndarray:
    """``(S_a S_b)^{1/2}``, regularising both factors when the product is near-singular."""
    product = s_a @ s_b
    with warnings.catch_warnings():
        # a singular product warns here; the residual check below decides what to do
        warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
        root = scipy.linalg.sqrtm(product)
    scale = max(np.abs(product).max(), np.finfo(np.float64).tiny)
    if not np.isfinite(root).all() or np.abs(root @ root - product).max() > 1e-6 * scale:
        # Singular covariances (dead ReLU units, fewer samples than features) break the
        # square root; pytorch-fid's remedy is a small ridge on both factors.
        eps = 1e-6 * max(np.trace(s_a), np.trace(s_b), 1.0) / s_a.shape[0]
        ridge = eps * np.eye(s_a.shape[0])
        root = scipy.linalg.sqrtm((s_a + ridge) @ (s_b + ridge))
    if np.iscomplexobj(root):
        imag = np.abs(np.diagonal(root).imag).max()
        if imag > 1e-3 * max(np.abs(np.diagonal(root).real).max(), 1.0):
            raise ValueError(
                f"the matrix square root has a large imaginary part ({imag:.3g}): the "
                f"covariances are too ill-conditioned; use more samples"
            )
        root = root.real
    return root


def frechet_distance(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets.

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` in float64, with sample
    means and unbiased covariances (Heusel et al. 2017, eq. 6 of the FID paper). With a
    judge's features in place of Inception's it is *not* FID: it compares only runs that
    share one judge.

    Args:
        a: ``(N, F)`` features, e.g. of generated samples (tensor or array).
        b: ``(M, F)`` features, e.g. of held-out real data.

    Returns:
        The distance (0 for identical sets, up to rounding).
    """
    a, b = _as_features(a, "a"), _as_features(b, "b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature widths differ: a has {a.shape[1]}, b has {b.shape[1]}")
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)  # (F,)
    s_a = np.atleast_2d(np.cov(a, rowvar=False))  # (F, F)
    s_b = np.atleast_2d(np.cov(b, rowvar=False))  # (F, F)
    root = _sqrtm_product(s_a, s_b)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(root))
