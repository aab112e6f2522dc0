"""The one training loop, for every model (tokenizers of any modality, the VAE, priors).

A task knows its data and its model's outputs: ``forward(step)`` returns the loss of
batch ``step``. The loop owns everything else, in this order each step:

1. learning rate (a function of the step and the horizon), 2. forward (the task, under autocast),
3. ``zero_grad`` / ``backward`` / gradient clipping / optimizer step, 4. weight average,
5. log, 6. validate, 7. checkpoint; it stops on ``max_steps``, the time budget or Ctrl-C
(which saves a checkpoint first).

The batch order is a function of the seed and the step, so a resumed run ends, on the
CPU, where an uninterrupted one does. Everything that must happen once per job (progress
bar, logs, figures, checkpoints) goes through :func:`on_main`, the single place that
decides which process does I/O.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from tqdm.auto import tqdm

from vqvae import checkpoint as ckpt
from vqvae import distributed
from vqvae.checkpoint_pair import load_checkpoint, save_checkpoint
from vqvae.distributed import agree, local_slice, on_main, stop_signals, world_size
from vqvae.faults import check_loss
from vqvae.figures import plot_metrics
from vqvae.precision import PRECISIONS, autocast_for
from vqvae.runs import append_metrics, read_config, truncate_metrics, write_config
from vqvae.schedule import SCHEDULES, Horizon, learning_rate

__all__ = [
    "BatchOrder",
    "LoopState",
    "Observer",
    "Task",
    "TrainConfig",
    "TrainSummary",
    "TrainingInterrupted",
    "on_main",  # re-exported from vqvae.distributed: the one place that decides who writes
    "read_train_config",
    "resolve_device",
    "run_loop",
]


class TrainingInterrupted(Exception):
    """Ctrl-C during training; a checkpoint was saved at ``step``."""

    def __init__(self, run: Path, step: int) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint saved in {run}: continue with --resume")
        self.step = step


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the training loop; saved as ``config.json["train"]``.

    ``ema_decay``: when set, the loop also keeps an exponential moving average of the
    weights (Polyak averaging, decay ``min(ema_decay, (1 + step) / (10 + step))``).
    Validation and ``model.safetensors`` use the average; the live weights that the
    optimizer steps are kept in the training state, so ``--resume`` continues exactly.

    ``grad_clip``: when set, the global gradient norm is clipped to it before each step.

    ``schedule``: ``constant`` (the paper's), or ``cosine`` / ``linear`` decay of ``lr`` (the
    peak) to zero at the run's horizon, after ``warmup_steps`` of linear warm-up (see
    :mod:`vqvae.schedule`).

    ``adam_beta2``: Adam's second-moment decay (PyTorch's and the paper's 0.999 unless set).

    ``compile``: run the training forward pass through ``torch.compile`` (validation and the
    saved weights stay the plain module's).
    """

    batch_size: int = 128
    lr: float = 2e-4
    max_steps: int = 250_000
    seed: int = 0
    log_every: int = 50
    val_every: int = 1000
    val_images: int = 2000
    checkpoint_every: int = 1000
    device: str = "auto"
    precision: str = "auto"
    warmup_steps: int = 0
    ema_decay: float | None = None
    grad_clip: float | None = None
    schedule: str = "constant"
    compile: bool = False  # absent from the configs of earlier releases: they load as False
    adam_beta2: float = 0.999  # likewise

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "log_every", "val_every", "val_images", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"train.warmup_steps must be a non-negative integer, got {self.warmup_steps!r}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")
        if self.ema_decay is not None and not 0 <= self.ema_decay < 1:
            raise ValueError(f"train.ema_decay must lie in [0, 1) or be null, got {self.ema_decay!r}")
        if self.grad_clip is not None and not (self.grad_clip > 0 and math.isfinite(self.grad_clip)):
            raise ValueError(f"train.grad_clip (--grad-clip) must be a positive number or null, got {self.grad_clip!r}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule (--schedule) must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if isinstance(self.adam_beta2, bool) or not isinstance(self.adam_beta2, (int, float)) or not (
            0 <= self.adam_beta2 < 1
        ):
            raise ValueError(f"train.adam_beta2 (--adam-beta2) must lie in [0, 1), got {self.adam_beta2!r}")
        if not isinstance(self.compile, bool):
            raise ValueError(f"train.compile (--compile) must be true or false, got {self.compile!r}")


@dataclass
class TrainSummary:
    run: Path
    step: int
    finished: bool  # reached max_steps (else stopped by the time budget)
    val: dict | None


class Task(Protocol):
    """What the loop needs from one kind of training (a tokenizer of a modality, a prior)."""

    name: str  # the progress bar's label
    panels: list[tuple[str, str]]  # (metric key, title) of each panel of loss.png

    def forward(self, step: int) -> tuple[Tensor, Any, int]:
        """Loss of batch ``step``, the model output for :meth:`log_record`, and items in the batch."""

    def log_record(self, output: Any, items_per_s: float) -> dict:
        """The training record of the last step (read only on logging steps)."""

    def postfix(self, record: dict) -> dict:
        """What the progress bar shows of a record."""

    def validate(self, step: int) -> dict:
        """Held-out metrics of ``state.eval_model`` (in eval mode, under no_grad)."""


class Observer(Protocol):
    """Something that watches a run from the main process (TensorBoard, say).

    ``record`` gets every record that goes to ``metrics.jsonl``; ``media`` gets what a
    task's optional ``media(step)`` returns after each validation, a name mapped to a
    ``(kind, value)`` pair, the kinds being
    ``"images"``: ``(N, C, H, W)`` floats in [0, 1];
    ``"audio"``: ``((T,) floats in [-1, 1], sample rate)``.
    """

    def record(self, record: dict) -> None: ...

    def media(self, step: int, media: dict) -> None: ...

    def close(self) -> None: ...


def resolve_device(device: str) -> torch.device:
    """``auto``: a GPU when there is one (this rank's, under torchrun), else the CPU."""
    if device in ("auto", "cuda") and torch.cuda.is_available() and distributed.is_distributed():
        return torch.device("cuda", torch.cuda.current_device())
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
    return torch.device(device)


def read_train_config(run: Path, max_steps: int | None) -> tuple[dict, TrainConfig]:
    """A run's config and training settings; a new ``max_steps`` is recorded in it."""
    config = read_config(run)
    try:
        train = TrainConfig(**config["train"])
    except (TypeError, KeyError) as exc:
        raise ckpt.CheckpointError(f"{run}/config.json has an invalid 'train' entry ({exc})") from exc
    if max_steps is not None:
        train = dataclasses.replace(train, max_steps=max_steps)
        config["train"] = dataclasses.asdict(train)
        on_main(write_config, run, config)
    return config, train


# ------------------------------------------------------------------ the state


@dataclass
class LoopState:
    """What a checkpoint holds, besides the config: model, optimizer, step, time spent,
    and the average of the weights when ``train.ema_decay`` is set."""

    run: Path
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    train: TrainConfig
    device: torch.device
    step: int = 0
    elapsed: float = 0.0  # training seconds over all invocations
    average: torch.nn.Module | None = None
    horizon: int | None = None  # the schedule's end when a time budget estimated it

    def __post_init__(self) -> None:
        if self.train.ema_decay is not None and self.average is None:
            self.average = copy.deepcopy(self.model)
            self.average.requires_grad_(False)
        self.model.to(self.device)
        self._call = None

    def call(self, method: str, *args, **kwargs):
        """``model.method(*args)`` for a training step: through DistributedDataParallel in a
        multi-process job, so the backward pass averages the gradients of all ranks.

        The wrapper is made at the first step, after the task has set the model up: DDP
        lays out its gradient buckets by the parameters' memory format at construction, and
        a later change (channels-last for CPU convolutions) would scramble the averaging.
        With ``train.compile`` the call goes through ``torch.compile``, which wraps the call and
        leaves ``self.model`` (what is saved) the plain module.
        """
        if self._call is None:
            call = distributed.wrap(self.model, self.device)
            self._call = torch.compile(call) if self.train.compile else call
        return self._call(method, *args, **kwargs)

    @staticmethod
    def local(batch: Tensor) -> Tensor:
        """This process's slice of a global batch (all of it in a single process)."""
        return local_slice(batch)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights that validation and ``model.safetensors`` use."""
        return self.model if self.average is None else self.average

    @torch.no_grad()
    def update_average(self) -> None:
        """Move the average towards the live weights after step ``self.step``; buffers
        (for example an EMA codebook) are copied, they are averages already."""
        if self.average is None:
            return
        decay = min(self.train.ema_decay, (1 + self.step) / (10 + self.step))
        for mean, live in zip(self.average.parameters(), self.model.parameters(), strict=True):
            mean.mul_(decay).add_(live, alpha=1.0 - decay)
        self._copy_buffers()

    @torch.no_grad()
    def _copy_buffers(self) -> None:
        for mean, live in zip(self.average.buffers(), self.model.buffers(), strict=True):
            mean.copy_(live)

    def save(self) -> None:
        if self.average is not None:
            self._copy_buffers()  # logging may have reset usage counters since the last step
        on_main(self._write)

    def _write(self) -> None:
        live = None if self.average is None else self.model.state_dict()
        info = {"step": self.step, "elapsed": self.elapsed, "horizon": self.horizon}
        save_checkpoint(self.run, self.eval_model, self.optimizer, info, live)

    def restore(self) -> None:
        """Load the last complete checkpoint (none saved yet: start at step 0); the metrics
        log is cut back to its step."""
        live = None if self.average is None else self.model
        info = load_checkpoint(self.run, self.eval_model, self.optimizer, live) or {}
        self.step = info.get("step", 0)
        self.elapsed = info.get("elapsed", 0.0)
        self.horizon = info.get("horizon")
        on_main(truncate_metrics, self.run, self.step)
        for module in (self.model, self.average):
            if module is not None:
                module.to(self.device)
        _optimizer_to(self.optimizer, self.device)


def new_state(run: Path, model: torch.nn.Module, train: TrainConfig, resume: bool) -> LoopState:
    """Seeded Adam over ``model``, restored from the run's checkpoint when ``resume``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, betas=(0.9, train.adam_beta2))
    state = LoopState(Path(run), model, optimizer, train, resolve_device(train.device))
    if resume:
        state.restore()
    return state


# ------------------------------------------------------------------ the loop


def run_loop(s: LoopState, task: Task, time_budget: float | None, progress: bool,
             observers: Sequence[Observer] = ()) -> TrainSummary:
    """Step until ``max_steps`` or the time budget; log, validate and checkpoint on schedule.

    ``observers`` see every logged record and the validation media (main process only).
    """
    cfg = s.train
    s.model.to(s.device).train()
    if s.average is not None:
        s.average.to(s.device).eval()
    start = time.monotonic()
    deadline = start + time_budget * 60 if time_budget is not None else math.inf
    horizon = Horizon(cfg.max_steps, deadline if time_budget is not None else None, s.step, s.horizon)
    end = (lambda: horizon.steps) if cfg.schedule != "constant" else (lambda: cfg.max_steps)
    bar = on_main(tqdm, total=cfg.max_steps, initial=s.step, disable=not progress, unit="step",
                  dynamic_ncols=True, desc=task.name)
    val = None
    window_start, window_items = time.monotonic(), 0
    try:
        with stop_signals() as signals:
            while True:
                # 0. stop? every rank agrees, on rank 0's horizon
                stop, horizon.steps = agree(s.step >= end() or time.monotonic() >= deadline or bool(signals),
                                            horizon.steps)
                if stop:
                    break
                # 1-4. rate, forward, backward, update
                rate = learning_rate(cfg.lr, cfg.schedule, cfg.warmup_steps, s.step, horizon.steps)
                output, items = _optimisation_step(s, task, rate)
                s.step += 1
                horizon.update(s.step, time.monotonic())
                s.horizon = horizon.record
                window_items += items * world_size()
                if bar is not None:
                    bar.update(1)
                # 5. log
                if s.step % cfg.log_every == 0:
                    now = time.monotonic()
                    record = {"step": s.step, **task.log_record(output, window_items / (now - window_start)),
                              "lr": rate, "horizon": horizon.steps, "world_size": world_size()}
                    window_start, window_items = now, 0
                    on_main(_log, s, record, observers)
                    if bar is not None:
                        bar.set_postfix(task.postfix(record))
                # 6. validate, 7. checkpoint
                if s.step % cfg.val_every == 0 or s.step == end():
                    val = on_main(_validate, s, task, observers)
                if s.step % cfg.checkpoint_every == 0:
                    s.elapsed += time.monotonic() - start
                    start = time.monotonic()
                    s.save()
        if signals:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        s.elapsed += time.monotonic() - start
        s.save()
        _close(bar, observers)
        distributed.barrier()
        raise TrainingInterrupted(s.run, s.step) from None
    if val is None or val["step"] != s.step:
        val = on_main(_validate, s, task, observers)
    s.elapsed += time.monotonic() - start
    s.save()
    _close(bar, observers)
    distributed.barrier()  # the checkpoint is on disk before any rank goes on
    return TrainSummary(run=s.run, step=s.step, finished=s.step >= end(), val=val)


def _close(bar, observers: Sequence[Observer]) -> None:
    if bar is not None:
        bar.close()
    for observer in observers:
        on_main(observer.close)


def _optimisation_step(s: LoopState, task: Task, rate: float) -> tuple[Any, int]:
    """One update: rate, forward, backward, clip, step, average. Returns the task's output."""
    cfg = s.train
    for group in s.optimizer.param_groups:
        group["lr"] = rate
    with autocast_for(cfg.precision, s.device):
        loss, output, items = task.forward(s.step)
    check_loss(loss, s.step)  # NaN/Inf: stop before the weights change; the last checkpoint is good
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), cfg.grad_clip)
    s.optimizer.step()
    s.update_average()
    return output, items


def _validate(s: LoopState, task: Task, observers: Sequence[Observer]) -> dict:
    s.eval_model.eval()
    with torch.no_grad():
        record = {"step": s.step, "split": "val", **task.validate(s.step), "world_size": world_size()}
        media = task.media(s.step) if observers and hasattr(task, "media") else None
    s.model.train()
    on_main(_log, s, record, observers)
    on_main(plot_metrics, s.run / "metrics.jsonl", s.run / "loss.png", task.panels)
    for observer in observers if media else ():
        on_main(observer.media, s.step, media)
    return record


def _log(s: LoopState, record: dict, observers: Sequence[Observer]) -> None:
    append_metrics(s.run, record)
    for observer in observers:
        observer.record(record)


def _optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for entries in optimizer.state.values():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor) and name != "step":
                entries[name] = value.to(device)


class BatchOrder:
    """Batch ``i`` of a run: a function of (seed, i) alone, so a resumed run sees the same data.

    Each epoch is a fresh permutation of the training set; batches run across epochs.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        if n == 0:
            raise ValueError("the training split is empty")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.long)

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        return self._perm

    def indices(self, step: int) -> torch.Tensor:
        start = step * self.batch_size
        parts, need = [], self.batch_size
        while need > 0:
            epoch, offset = divmod(start, self.n)
            part = self._permutation(epoch)[offset : offset + need]
            parts.append(part)
            start, need = start + part.numel(), need - part.numel()
        return torch.cat(parts)
