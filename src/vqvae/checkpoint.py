"""Checkpoint files: ``config.json`` + ``model.safetensors`` + ``train_state.safetensors``.

Every file is written atomically (a temporary file in the same folder, then a rename),
so a crash leaves either the old or the new file, never half of one. Nothing here
unpickles: weights, optimizer state and RNG state are safetensors, the rest is JSON.
Every file is written through :mod:`vqvae.atomic`. This module imports no model: callers say how to build one (:func:`load_model`).

The crash-safe pair of weights and training state: :mod:`vqvae.checkpoint_pair`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import safetensors.torch
import torch
from safetensors import SafetensorError
from torch import nn

from vqvae.atomic import write_bytes, write_json

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"


class CheckpointError(ValueError):
    """A run directory that cannot be read: missing, corrupt, foreign or inconsistent."""


# ------------------------------------------------------------------ files


def save_tensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    # Serialised in memory, then written by Python: a full disk then raises DiskFullError
    # with the size, where safetensors' own file writer raises a bare SafetensorError.
    write_bytes(path, safetensors.torch.save(tensors, metadata=metadata))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, nesting
        raise CheckpointError(f"{path} is not valid JSON ({exc}): the run directory is corrupt") from exc


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, with errors that name the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is this a finished vqvae run directory?")
    # Read into memory rather than mmap: a file replaced or truncated later cannot
    # pull pages out from under tensors still in use.
    data = path.read_bytes()
    try:
        tensors = safetensors.torch.load(data)
        header_len = int.from_bytes(data[:8], "little")
        metadata = json.loads(data[8 : 8 + header_len]).get("__metadata__", {}) or {}
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}): it is corrupt or was "
            f"written by something else; retrain or restore it"
        ) from exc
    return tensors, metadata


# ------------------------------------------------------------------------ models


def save_model(run: str | os.PathLike, model: nn.Module, step: int, checkpoint: str | None = None) -> None:
    """Write the plain module's weights and buffers (unwrap DDP/compile before);
    ``checkpoint``: the id shared with the training state of the same checkpoint."""
    stamp = {"checkpoint": checkpoint} if checkpoint else {}
    save_tensors(Path(run) / MODEL_FILE, model.state_dict(), {"format": "vqvae", "step": str(step), **stamp})


def read_config(run: str | os.PathLike) -> dict:
    """``config.json`` of a run, checked for format version and kind."""
    run = Path(run)
    path = run / CONFIG_FILE
    if not path.is_file():
        if not run.exists():
            raise FileNotFoundError(f"run directory {run} does not exist")
        raise CheckpointError(f"{run} has no {CONFIG_FILE}: it is not a vqvae run directory")
    config = read_json(path)
    if not isinstance(config, dict) or "kind" not in config or "model" not in config:
        raise CheckpointError(f"{path} is not a vqvae config (no 'kind' and 'model' entries)")
    version = config.get("format_version")
    if type(version) is not int or version != FORMAT_VERSION:
        newer = type(version) is int and version > FORMAT_VERSION
        raise CheckpointError(
            f"{path} has format_version {version!r}; this vqvae reads version {FORMAT_VERSION}"
            + (": upgrade vqvae to read it" if newer else "")
        )
    wrong = [f"{key!r} must be {kind.__name__}, got {type(config[key]).__name__}"
             for key, kind in (("kind", str), ("modality", str), ("arch", str), ("model", dict), ("data", dict),
                               ("train", dict))
             if key in config and not isinstance(config[key], kind)]
    if wrong:
        raise CheckpointError(f"{path} is corrupt: {'; '.join(wrong)}")
    return config


def load_weights(model: nn.Module, run: str | os.PathLike) -> int:
    """Load ``model.safetensors`` strictly into ``model``; returns the step it was saved at."""
    path = Path(run) / MODEL_FILE
    tensors, metadata = load_tensors(path)
    expected = model.state_dict()
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    types = sorted(k for k in set(expected) & set(tensors) if _dtypes_differ(expected[k], tensors[k]))
    _check_fit(path, {k: tuple(v.shape) for k, v in expected.items()}, shapes,
               [f"{k}: file {tensors[k].dtype} vs model {expected[k].dtype}" for k in types])
    model.load_state_dict(tensors, strict=True)
    return _step(metadata.get("step", 0), path)


def _check_fit(path: Path, expected: dict[str, tuple], found: dict[str, tuple], types: list[str] = ()) -> None:
    """Raise :class:`CheckpointError` unless the file's tensor names and shapes are the model's."""
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
    details = [f"missing {_few(missing)}"] if missing else []
    details += [f"unexpected {_few(unexpected)}"] if unexpected else []
    if wrong:
        details.append("shape mismatch " + ", ".join(f"{k}: file {found[k]} vs config {expected[k]}" for k in wrong[:3]))
    if types:
        details.append("dtype mismatch " + ", ".join(types[:3]))
    if details:
        raise CheckpointError(
            f"{path} does not match {CONFIG_FILE} ({'; '.join(details)}): the config was "
            f"edited or the weights come from another model"
        )


def _dtypes_differ(expected: torch.Tensor, found: torch.Tensor) -> bool:
    """Floating-point weights may change precision; anything else must keep its dtype."""
    return expected.dtype != found.dtype and not (expected.is_floating_point() and found.is_floating_point())


def _step(value: object, path: Path) -> int:
    try:
        step = int(value)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} records step {value!r}, not a number: it is corrupt") from exc
    if step < 0:
        raise CheckpointError(f"{path} records step {step}: it is corrupt")
    return step


def _few(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")


# ------------------------------------------------------------------ train state


def save_train_state(
    run: str | os.PathLike,
    optimizer: torch.optim.Optimizer,
    info: dict,
    live_weights: dict[str, torch.Tensor] | None = None,
    checkpoint: str | None = None,
) -> None:
    """Optimizer state, RNG state and ``info`` (step, elapsed time...) as safetensors + JSON.

    ``live_weights``: the state dict of the weights the optimizer steps, when
    ``model.safetensors`` holds their average instead. ``checkpoint``: the id shared with
    the weights of the same checkpoint.
    """
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng/torch": torch.get_rng_state()}
    for key, value in (live_weights or {}).items():
        tensors[f"live/{key}"] = value
    scalars: dict[str, dict] = {}
    for param_id, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{param_id}/{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    metadata = {
        "format": "vqvae-train-state",
        "info": json.dumps(info),
        "param_groups": json.dumps(state["param_groups"]),
        "scalars": json.dumps(scalars),
        **({"checkpoint": checkpoint} if checkpoint else {}),
    }
    save_tensors(Path(run) / STATE_FILE, tensors, metadata)


def load_train_state(
    run: str | os.PathLike, optimizer: torch.optim.Optimizer, live_model: nn.Module | None = None
) -> dict:
    """Restore the optimizer and RNG state saved by :func:`save_train_state`, and the live
    weights into ``live_model`` when given; returns ``info``."""
    path = Path(run) / STATE_FILE
    tensors, metadata = load_tensors(path)
    if metadata.get("format") != "vqvae-train-state":
        raise CheckpointError(f"{path} is not a vqvae training state")
    if live_model is not None:
        live = {k.removeprefix("live/"): v for k, v in tensors.items() if k.startswith("live/")}
        try:
            live_model.load_state_dict(live, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"{path} lacks the live weights of a run that averages them, or they do not "
                f"fit the model ({str(exc).splitlines()[0]}): restart with --force"
            ) from exc
    try:
        info, state = _parse_train_state(tensors, metadata, optimizer)
        _step(info.get("step"), path)
        optimizer.load_state_dict(state)
        torch.set_rng_state(tensors["rng/torch"])
    except (KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError, RecursionError) as exc:
        raise CheckpointError(
            f"{path} is corrupt or does not fit this model's optimizer ({type(exc).__name__}: {exc}): "
            f"restart with --force"
        ) from exc
    return info


def _parse_train_state(tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                       optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """``info`` and the optimizer's state dict, checked against the optimizer's parameters."""
    info = json.loads(metadata["info"])
    state: dict = {"state": {}, "param_groups": json.loads(metadata["param_groups"])}
    if not isinstance(info, dict) or not isinstance(state["param_groups"], list):
        raise TypeError("'info' must be an object and 'param_groups' a list")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, param_id, name = key.split("/", 2)
            param = params[int(param_id)]
            if name != "step" and value.shape != param.shape:
                raise ValueError(f"{key} has shape {tuple(value.shape)}, its parameter {tuple(param.shape)}")
            state["state"].setdefault(int(param_id), {})[name] = value
    for param_id, entries in json.loads(metadata["scalars"]).items():
        state["state"].setdefault(int(param_id), {}).update(entries)
    return info, state


# ------------------------------------------------------------------------ load


def load_model(run: str | os.PathLike, build: Callable[[dict], nn.Module],
               device: str | torch.device = "cpu") -> nn.Module:
    """``build(config)`` from the run's ``config.json``, its weights loaded strictly, in eval mode."""
    config = read_config(run)
    path = Path(run) / MODEL_FILE
    try:
        with torch.device("meta"):  # shapes without memory: a config can declare any size
            skeleton = build(config)
    except _BUILD_ERRORS:
        skeleton = None  # the real build below says what is wrong
    if skeleton is not None:
        _check_fit(path, {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}, _file_shapes(path))
    try:
        model = build(config)  # now no larger than the weights file
    except _BUILD_ERRORS as exc:
        raise CheckpointError(f"{Path(run) / CONFIG_FILE} does not describe a model this vqvae can build "
                              f"({type(exc).__name__}: {exc})") from exc
    load_weights(model, run)
    return model.to(device).eval()


# What building a model from a wrong config raises (RuntimeError: sizes that overflow).
_BUILD_ERRORS = (TypeError, KeyError, ValueError, AttributeError, IndexError, RuntimeError, OverflowError)


def _file_shapes(path: Path) -> dict[str, tuple]:
    """Tensor shapes of a safetensors file from its header, checked against the file's size."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is this a finished vqvae run directory?")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable safetensors file ({exc}): it is corrupt or was "
                              f"written by something else; retrain or restore it") from exc


# ------------------------------------------------------------------ judges

# Classifiers that judge a run (images, digits, speakers) live in folders of their own:
# config.json {format_version, kind, model, training, val_accuracy} + model.safetensors.


def save_judge(folder: str | os.PathLike, kind: str, model: nn.Module, val_accuracy: float | None) -> None:
    """Write a classifier's ``config.json`` (``model.config``, ``model.train_settings``) and weights."""
    folder = Path(folder)
    existing = folder / CONFIG_FILE
    if existing.is_file():
        config = read_json(existing)
        found = config.get("kind") if isinstance(config, dict) else None
        if found != kind:
            raise CheckpointError(
                f"{existing} belongs to a {found!r}, not {_article(kind)}: save the classifier in a "
                f"folder of its own, e.g. {folder / kind}"
            )
    save_tensors(folder / MODEL_FILE, model.state_dict(), {"format": f"vqvae-{kind}"})
    write_json(existing, {
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "model": model.config,
        "training": model.train_settings,
        "val_accuracy": val_accuracy,
    })


def read_judge_config(folder: str | os.PathLike, kind: str) -> dict:
    """``config.json`` of a classifier folder, checked for kind and format version."""
    folder = Path(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {folder} holds no saved {kind.replace('-', ' ')}")
    config = read_json(path)
    if not isinstance(config, dict) or config.get("kind") != kind:
        found = config.get("kind") if isinstance(config, dict) else None
        raise CheckpointError(f"{path} describes a {found!r}, not {_article(kind)}")
    if config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format_version {config.get('format_version')!r}; this vqvae reads "
            f"version {FORMAT_VERSION}: delete {folder} to retrain the classifier"
        )
    return config


def load_judge(folder: str | os.PathLike, kind: str, build: Callable[..., nn.Module],
               device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a classifier saved by :func:`save_judge` with ``build(**config["model"])``."""
    folder = Path(folder)
    config = read_judge_config(folder, kind)
    try:
        model = build(**config["model"])
    except (TypeError, ValueError, KeyError) as exc:
        raise CheckpointError(
            f"{folder / CONFIG_FILE} has an invalid model config ({exc}): delete {folder} to "
            f"retrain the classifier"
        ) from exc
    model.train_settings = dict(config.get("training") or {})
    if not (folder / MODEL_FILE).is_file():
        raise FileNotFoundError(
            f"{folder / MODEL_FILE} does not exist: the classifier in {folder} is incomplete; "
            f"delete the folder to retrain it"
        )
    tensors, _ = load_tensors(folder / MODEL_FILE)
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"{folder / MODEL_FILE} does not fit {folder / CONFIG_FILE} ({exc}): delete "
            f"{folder} to retrain the classifier"
        ) from exc
    return model.to(device).eval()


def _article(kind: str) -> str:
    """``"audio-classifier"`` → ``"an audio classifier"``."""
    words = kind.replace("-", " ")
    return ("an " if words[0] in "aeiou" else "a ") + words
