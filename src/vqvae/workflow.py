"""The journeys, for any modality: start and train a tokenizer run, then a prior over its codes.

These compose the registry (which modality?) with the core (the loop, priors, the run
directory); the command line and ``vqvae demo`` are thin layers over them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import torch

from vqvae import checkpoint as ckpt
from vqvae.distributed import main_first
from vqvae.lock import run_lock
from vqvae.modalities import Modality, detect, modality_of
from vqvae.priors.training import PRIOR_TRAIN, fit_prior
from vqvae.priors.training import start_prior_run as _start_prior_folder
from vqvae.runs import fresh_run, read_config, write_config
from vqvae.tensorboard import TensorBoardObserver
from vqvae.train import TrainConfig, TrainSummary, new_state, on_main, read_train_config, run_loop

__all__ = ["start_prior_run", "start_run", "train_prior", "train_tokenizer", "tokenizer_modality"]


def start_run(
    out: str | os.PathLike,
    data: str,
    model_settings: dict,
    train: TrainConfig,
    *,
    model: str | None = None,
    data_dir: str | None = None,
    options: dict | None = None,
    image_size: int | None = None,
    audio: dict | None = None,
    force: bool = False,
    modality: Modality | None = None,
) -> Path:
    """Create a run directory with its ``config.json``; the data decide the modality.

    Args:
        out: the run directory (must be empty unless ``force``).
        data: ``--data``: a registered data set name or a path.
        model_settings: model config fields (``hidden``, ``codebook_size``, ...).
        train: the loop's settings.
        model: ``--model``: one of the modality's models (images: ``vqvae`` or ``vae``);
            default its first.
        data_dir: ``--data-dir``.
        options: the modality's own train options by dest (``image_size``, ``segment``...);
            ``image_size`` and ``audio`` (``sample_rate``, ``segment``) are shorthands.
        modality: skip detection (default: :func:`vqvae.modalities.detect`).
    """
    modality = modality or detect(data, data_dir)
    options = {**(audio or {}), **({"image_size": image_size} if image_size is not None else {}), **(options or {})}
    model = model or next(iter(modality.models))
    if model not in modality.models:
        raise ValueError(f"--model {model} is not available for {modality.name} data (it trains "
                         f"{', '.join(modality.models)})")
    kind = modality.models[model]

    def create() -> None:
        run = fresh_run(out, force)
        described = modality.start(kind, data, data_dir, model_settings, train, options)
        write_config(run, {"format_version": ckpt.FORMAT_VERSION, "modality": modality.name, "kind": kind,
                           **described, "train": dataclasses.asdict(train)})

    main_first(create)  # one process writes the run directory, under torchrun too
    return Path(out)


def tokenizer_modality(run: str | os.PathLike) -> Modality:
    """The modality of a tokenizer run."""
    return modality_of(read_config(run))


def train_tokenizer(
    run: str | os.PathLike,
    *,
    max_steps: int | None = None,
    time_budget: float | None = None,
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool = False,
) -> TrainSummary:
    """Train (or continue) the tokenizer of a run directory made by :func:`start_run`.

    Args:
        run: the run directory.
        max_steps: total steps of the run (default: ``config.json["train"]["max_steps"]``).
        time_budget: minutes of wall time for this call's loop, validation included.
        resume: continue from the saved checkpoint.
        progress: show a progress bar.
    """
    run = Path(run)
    with on_main(run_lock, run, "train") or contextlib.nullcontext():  # one writer per run directory
        config, train = read_train_config(run, max_steps)
        modality = modality_of(config)
        if "modality" not in config:  # a run of an earlier release: name its modality from now on
            on_main(write_config, run, {"format_version": config["format_version"], "modality": modality.name, **config})
        torch.manual_seed(train.seed)
        state = new_state(run, modality.build(config), train, resume)
        observers = [TensorBoardObserver(run, "tokenizer", state.step)] if tensorboard else []
        return run_loop(state, modality.task(state, config), time_budget, progress, observers=observers)


def start_prior_run(
    run: str | os.PathLike,
    arch: str,
    *,
    name: str | None = None,
    model_settings: dict | None = None,
    train: TrainConfig = PRIOR_TRAIN,
    data: str | None = None,
    data_dir: str | None = None,
    options: dict | None = None,
    window: float | None = None,
    force: bool = False,
) -> Path:
    """Create ``RUN/priors/NAME/`` for a prior over the run's codes; the run's modality says
    what code grid it models (``window``: seconds of speech codes, a shorthand for ``options``)
    and what else the prior needs (:meth:`~vqvae.modalities.Modality.prior_settings`, say the
    number of actions); ``model_settings`` override those."""
    options = {**({"window": window} if window is not None else {}), **(options or {})}
    config = read_config(run)
    modality = modality_of(config)
    shape = modality.prior_shape(config, options)
    settings = {**modality.prior_settings(config), **(model_settings or {})}
    main_first(_start_prior_folder, run, arch, shape, name=name, model_settings=settings, train=train,
               data={"spec": data, "data_dir": data_dir}, force=force)
    return Path(run) / "priors" / (name or arch)


def train_prior(
    folder: str | os.PathLike,
    *,
    max_steps: int | None = None,
    time_budget: float | None = None,
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool = False,
) -> TrainSummary:
    """Train (or continue) the prior in ``RUN/priors/NAME/`` on codes of the frozen tokenizer,
    encoded once by the run's modality and cached in ``RUN/codes/`` (with their labels, and the
    actions of each code time step where the modality has them)."""
    folder = Path(folder)
    with on_main(run_lock, folder, "train-prior") or contextlib.nullcontext():  # one writer per prior
        run = folder.parent.parent
        prior = read_config(folder)
        modality = tokenizer_modality(run)
        shape = tuple(prior["model"]["latent_shape"])
        data = prior["data"]
        def codes(split: str):
            return modality.prior_codes(run, split, data.get("spec"), data.get("data_dir"), shape)

        main_first(lambda: [codes(split) for split in ("train", "val")])  # rank 0 encodes and caches them
        train_codes, val_codes = codes("train"), codes("val")
        return fit_prior(folder, train_codes, val_codes, max_steps=max_steps, time_budget=time_budget, resume=resume, progress=progress,
                         tensorboard=tensorboard)

