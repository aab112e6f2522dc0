"""Training the tokenizer: one plain loop, readable top to bottom.

Order of one step: batch (a function of the seed and the step alone) → forward →
backward → Adam step → log → validate → checkpoint → stop on max steps or time budget.
The learning rate is constant (the paper's 2e-4), so neither ``max_steps`` nor the
time budget changes the trajectory: a resumed run ends where an uninterrupted one does.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from vqvae import checkpoint as ckpt
from vqvae.autoencoder import VQVAE, VQVAEConfig
from vqvae.data import ImageData, load_images
from vqvae.evaluate import tokenizer_metrics
from vqvae.figures import plot_metrics, save_reconstruction_grid

METRICS_FILE = "metrics.jsonl"


class TrainingInterrupted(Exception):
    """Ctrl-C during training; a checkpoint was saved at ``step``."""

    def __init__(self, run: Path, step: int) -> None:
        super().__init__(f"interrupted at step {step}; checkpoint saved in {run}: continue with --resume")
        self.step = step


@dataclass(frozen=True)
class TrainConfig:
    """Settings of the training loop; saved as ``config.json["train"]``."""

    batch_size: int = 128
    lr: float = 2e-4
    max_steps: int = 250_000
    seed: int = 0
    log_every: int = 50
    val_every: int = 1000
    val_images: int = 2000
    checkpoint_every: int = 1000
    device: str = "auto"

    def __post_init__(self) -> None:
        for name in ("batch_size", "max_steps", "log_every", "val_every", "val_images", "checkpoint_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"train.{name} must be a positive integer, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"train.lr must be positive, got {self.lr}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")


@dataclass
class TrainSummary:
    run: Path
    step: int
    finished: bool  # reached max_steps (else stopped by the time budget)
    val: dict | None


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but no CUDA GPU is visible: use --device cpu")
    return torch.device(device)


# --------------------------------------------------------------------- the run


def start_run(
    out: str | Path,
    data: str,
    model_settings: dict,
    train: TrainConfig,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    force: bool = False,
) -> Path:
    """Create the run directory with its ``config.json``; the data decide C and the variance."""
    run = Path(out)
    if run.exists() and any(run.iterdir()):
        if not force:
            raise FileExistsError(
                f"{run} already exists: continue it with --resume, or overwrite it with --force"
            )
        shutil.rmtree(run)
    train_data = load_images(data, "train", data_dir=data_dir, image_size=image_size)
    variance = train_data.pixel_variance()
    model = VQVAEConfig(**{"in_channels": train_data.images.shape[1], "data_variance": variance,
                           "seed": train.seed, **model_settings})
    VQVAE(model).latent_shape(tuple(train_data.images.shape[2:]))  # fails early on bad sizes
    config = {
        "format_version": ckpt.FORMAT_VERSION,
        "kind": "vqvae",
        "model": model.to_dict(),
        "data": {
            "spec": data,
            "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
            "image_size": image_size,
            "shape": list(train_data.images.shape[1:]),
            "variance": variance,
            "train_images": len(train_data),
            "classes": list(train_data.classes),
        },
        "train": dataclasses.asdict(train),
    }
    run.mkdir(parents=True, exist_ok=True)
    ckpt.write_json(run / ckpt.CONFIG_FILE, config)
    return run


def train_tokenizer(
    run: str | Path,
    *,
    max_steps: int | None = None,
    time_budget: float | None = None,
    resume: bool = False,
    progress: bool = True,
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
    config = ckpt.read_config(run)
    train = TrainConfig(**config["train"])
    if max_steps is not None:
        train = dataclasses.replace(train, max_steps=max_steps)
        config["train"] = dataclasses.asdict(train)
        ckpt.write_json(run / ckpt.CONFIG_FILE, config)
    data = config["data"]
    device = resolve_device(train.device)

    torch.manual_seed(train.seed)
    model = VQVAE(VQVAEConfig.from_dict(config["model"]))
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
    step, elapsed = 0, 0.0
    if resume:
        step = ckpt.load_weights(model, run)
        info = ckpt.load_train_state(run, optimizer)
        if info["step"] != step:
            raise ckpt.CheckpointError(
                f"{run}: model.safetensors is at step {step} but train_state at step "
                f"{info['step']} (a crash between the two writes): restart with --force"
            )
        elapsed = info.get("elapsed", 0.0)
        _truncate_metrics(run / METRICS_FILE, step)
    model.to(device)
    _optimizer_to(optimizer, device)
    if device.type == "cpu" and model.config.spatial_dims == 2:
        model.to(memory_format=torch.channels_last)  # 2-4x faster convolutions on CPUs

    load = {"data_dir": data["data_dir"], "image_size": data["image_size"]}
    train_data = load_images(data["spec"], "train", **load)
    val_data = load_images(data["spec"], "val", **load)
    batches = _BatchOrder(len(train_data), train.batch_size, train.seed)

    state = _LoopState(run, model, optimizer, train, step, elapsed, data["variance"], device)
    return _loop(state, train_data, val_data, batches, time_budget, progress)


@dataclass
class _LoopState:
    run: Path
    model: VQVAE
    optimizer: torch.optim.Optimizer
    train: TrainConfig
    step: int
    elapsed: float  # training seconds over all invocations
    variance: float
    device: torch.device

    def save(self) -> None:
        ckpt.save_model(self.run, self.model, self.step)
        ckpt.save_train_state(self.run, self.optimizer, {"step": self.step, "elapsed": self.elapsed})


def _loop(state, train_data, val_data, batches, time_budget, progress) -> TrainSummary:
    s, cfg = state, state.train
    start = time.monotonic()
    deadline = start + time_budget * 60 if time_budget is not None else math.inf
    bar = tqdm(total=cfg.max_steps, initial=s.step, disable=not progress, unit="step",
               dynamic_ncols=True, desc="train")
    val = None
    window_start, window_images = time.monotonic(), 0
    try:
        while s.step < cfg.max_steps and time.monotonic() < deadline:
            # 1. batch, forward, backward, update
            x = _to_input(train_data.images[batches.indices(s.step)], s.device)
            out = s.model(x)
            s.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            s.optimizer.step()
            s.step += 1
            window_images += x.shape[0]
            bar.update(1)
            # 2. log
            if s.step % cfg.log_every == 0:
                now = time.monotonic()
                record = _train_record(s, out, window_images / (now - window_start))
                window_start, window_images = now, 0
                _append_metrics(s.run, record)
                bar.set_postfix(loss=f"{record['loss']:.4f}", ppl=f"{record['perplexity']:.0f}",
                                used=f"{record['codes_used']}")
            # 3. validate, 4. checkpoint
            if s.step % cfg.val_every == 0 or s.step == cfg.max_steps:
                val = _validate(s, val_data)
            if s.step % cfg.checkpoint_every == 0:
                s.elapsed += time.monotonic() - start
                start = time.monotonic()
                s.save()
    except KeyboardInterrupt:
        s.elapsed += time.monotonic() - start
        s.save()
        bar.close()
        raise TrainingInterrupted(s.run, s.step) from None
    bar.close()
    if val is None or val["step"] != s.step:
        val = _validate(s, val_data)
    s.elapsed += time.monotonic() - start
    s.save()
    return TrainSummary(run=s.run, step=s.step, finished=s.step >= cfg.max_steps, val=val)


def _to_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    x = images.to(device, non_blocking=True).float().div_(255)
    if device.type == "cpu" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _train_record(s: _LoopState, out, images_per_s: float) -> dict:
    usage = s.model.quantizer.codebook_usage(reset=True)
    return {
        "step": s.step,
        "loss": out.loss.item(),
        "reconstruction_loss": out.reconstruction_loss.item(),
        "commitment_loss": out.commitment_loss.item(),
        "perplexity": usage.perplexity,
        "codes_used": usage.codes_used,
        "dead_codes": usage.dead_codes,
        "images_per_s": images_per_s,
    }


def _validate(s: _LoopState, val_data: ImageData) -> dict:
    images = val_data.images[: s.train.val_images]
    s.model.eval()
    metrics = tokenizer_metrics(s.model, images, s.variance, device=s.device)
    s.model.train()
    recon_loss = metrics["nmse"] if s.model.config.likelihood == "mse" else None
    record = {"step": s.step, "split": "val", "reconstruction_loss": recon_loss, **metrics}
    _append_metrics(s.run, record)
    sample = images[:32].float().div(255)
    with torch.no_grad():
        s.model.eval()
        recon = s.model.reconstruct(sample.to(s.device)).cpu()
        s.model.train()
    save_reconstruction_grid(sample, recon, s.run / "reconstructions" / f"step_{s.step:07d}.png")
    save_reconstruction_grid(sample, recon, s.run / "reconstructions.png")
    plot_metrics(s.run / METRICS_FILE, s.run / "loss.png")
    return record


def _append_metrics(run: Path, record: dict) -> None:
    with open(run / METRICS_FILE, "a") as f:
        f.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop records past the checkpoint, so that a resumed log reads as one run."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= step]
    ckpt.atomic_write(path, lambda tmp: Path(tmp).write_text("".join(k + "\n" for k in kept)))


def _optimizer_to(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for entries in optimizer.state.values():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor) and name != "step":
                entries[name] = value.to(device)


class _BatchOrder:
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
