"""Crash-safe checkpoints: the weights and the training state saved as one pair.

A checkpoint is a pair of files, ``model.safetensors`` and ``train_state.safetensors``,
stamped with one id. :func:`save_checkpoint` keeps the previous complete pair in
``RUN/.previous/`` (hard links, no copy) and writes the training state before the
weights, so a process killed at any moment leaves at least one complete pair, and
``model.safetensors`` only ever holds the weights of a complete one.
:func:`load_checkpoint` loads the newest complete pair; files of different checkpoints
are never loaded together. The cost: the previous pair's disk space once the next is written.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
import warnings
from pathlib import Path

import torch
from torch import nn

from vqvae.atomic import atomic_write
from vqvae.checkpoint import (
    CONFIG_FILE,
    MODEL_FILE,
    STATE_FILE,
    CheckpointError,
    load_train_state,
    load_weights,
    save_model,
    save_train_state,
)
from vqvae.faults import check_weights

__all__ = ["PREVIOUS_DIR", "load_checkpoint", "save_checkpoint"]

PREVIOUS_DIR = ".previous"  # the previous complete pair
_MAX_HEADER = 100_000_000  # safetensors' own limit on the JSON header


def save_checkpoint(run: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer, info: dict,
                    live_weights: dict[str, torch.Tensor] | None = None) -> None:
    """Write ``model``'s weights and the training state as one checkpoint at ``info["step"]``.

    In this order: refuse non-finite weights; keep the current pair, when complete, in
    ``RUN/.previous/``; write ``train_state.safetensors``; write ``model.safetensors``.
    Both files carry one new id. Killed between any two of these, the process leaves a
    complete pair in ``RUN`` or in ``RUN/.previous`` (see :func:`load_checkpoint`).

    Raises:
        NonFiniteWeightsError: when a weight is NaN or infinite; nothing is written.
        DiskFullError: when the disk fills; the last complete pair stays loadable.
    """
    run = Path(run)
    check_weights(model, int(info["step"]))
    if _pair_id(run) is not None:
        _keep_previous(run)
    stamp = uuid.uuid4().hex
    save_train_state(run, optimizer, info, live_weights, checkpoint=stamp)
    save_model(run, model, int(info["step"]), checkpoint=stamp)


def load_checkpoint(run: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer,
                    live_model: nn.Module | None = None) -> dict | None:
    """Load the newest complete checkpoint pair into ``model`` and ``optimizer``.

    ``RUN`` is tried first, then ``RUN/.previous`` (a process killed while saving); files
    that do not belong to one checkpoint are never loaded together. Temporary files left
    by killed writes are removed: the caller must be the run's only writer (:mod:`vqvae.lock`).

    Returns:
        The ``info`` saved with the pair; None when no weights were saved yet.

    Raises:
        CheckpointError: when weights were saved but no complete pair loads.
    """
    run = Path(run)
    _remove_debris(run)
    failures = []
    for folder in (run, run / PREVIOUS_DIR):
        if _pair_id(folder) is None:
            if (folder / MODEL_FILE).exists() or (folder / STATE_FILE).exists():
                failures.append(f"{folder}: {_describe(folder)}")
            continue
        try:
            load_weights(model, folder)
            info = load_train_state(folder, optimizer, live_model)
        except CheckpointError as exc:
            failures.append(str(exc))
            continue
        if failures:
            warnings.warn(f"the newest checkpoint is incomplete ({failures[0]}); resuming from the previous "
                          f"one, at step {info['step']}", stacklevel=2)
        return info
    if not any((folder / MODEL_FILE).exists() for folder in (run, run / PREVIOUS_DIR)):
        return None
    raise CheckpointError(f"{run} holds no complete checkpoint ({'; '.join(failures)}): restart with --force")


def _metadata(path: Path) -> dict | None:
    """The ``__metadata__`` of a safetensors file from its header alone; None if unreadable."""
    try:
        with open(path, "rb") as f:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size)) if 0 < size <= _MAX_HEADER else None
    except (OSError, ValueError, RecursionError):
        return None
    metadata = header.get("__metadata__", {}) if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        return None  # safetensors itself refuses such a file
    return metadata


def _pair_id(folder: Path) -> str | None:
    """The id that the folder's weights and training state share; None unless both exist and
    belong to one checkpoint (files from before ids: the same step)."""
    model, state = _metadata(folder / MODEL_FILE), _metadata(folder / STATE_FILE)
    if model is None or state is None:
        return None
    if "checkpoint" in model or "checkpoint" in state:
        return model.get("checkpoint") if model.get("checkpoint") == state.get("checkpoint") else None
    return f"step {model.get('step')}" if _state_step(state) == model.get("step") else None


def _state_step(metadata: dict) -> str | None:
    try:
        return str(json.loads(metadata.get("info", "{}")).get("step"))
    except (ValueError, TypeError, AttributeError, RecursionError):
        return None


def _describe(folder: Path) -> str:
    model, state = _metadata(folder / MODEL_FILE), _metadata(folder / STATE_FILE)
    return ", ".join(
        f"{name} {'missing or unreadable' if meta is None else 'at step ' + str(step)}"
        for name, meta, step in ((MODEL_FILE, model, model and model.get("step")),
                                 (STATE_FILE, state, state and _state_step(state))))


def _keep_previous(run: Path) -> None:
    """Hard-link the current complete pair into ``RUN/.previous`` (copy where links fail)."""
    previous = run / PREVIOUS_DIR
    previous.mkdir(exist_ok=True)
    for name in (MODEL_FILE, STATE_FILE):  # the current pair stays whole until both are kept
        tmp = previous / f".{name}.{uuid.uuid4().hex}.tmp"
        try:
            os.link(run / name, tmp)
        except OSError:  # a file system without hard links
            src = run / name
            atomic_write(previous / name, lambda t, src=src: shutil.copyfile(src, t), size=src.stat().st_size)
            continue
        os.replace(tmp, previous / name)


def _remove_debris(run: Path) -> None:
    """Temporary files of checkpoint writes that a killed process left behind."""
    for folder in (run, run / PREVIOUS_DIR):
        for name in (MODEL_FILE, STATE_FILE, CONFIG_FILE):
            for tmp in folder.glob(f".{name}.*.tmp"):
                tmp.unlink(missing_ok=True)
