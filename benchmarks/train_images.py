"""Benchmark: training and tokenizer throughput of our VQ-VAE against a plain baseline, on CPU.

What is measured (B=128 images of 3×32×32, uniform random uint8 pixels scaled to [0, 1]):

* **Ours**: ``VQVAE(in_channels=3, hidden=128, res_hidden=32, code_dim=64,
  codebook_size=512, quantizer="ema")``, other settings at their defaults (k-means
  initialisation, dead-code window 100), prepared as ``vqvae.train`` prepares it on CPU:
  model converted to ``torch.channels_last``, inputs made by the training loop's own
  ``to_input`` (float, /255, channels_last). Adam, lr 2e-4.
* **Baseline**, written here: the same architecture (encoder: conv4x4 s2 → ReLU →
  conv4x4 s2 → ReLU → conv3x3 → 2 residual blocks → ReLU → conv1x1 to D; decoder
  mirrored; same widths, same biases) from plain ``nn.Conv2d`` / ``nn.ConvTranspose2d``
  in the default memory format, and the quantizer of a typical public implementation:
  ``torch.cdist`` + ``argmin`` against an ``nn.Embedding`` codebook, codebook loss +
  0.25 · commitment loss, straight-through ``z + (q - z).detach()``. It learns its
  codebook by gradient (no EMA: the EMA bookkeeping is extra work ours does, so leaving
  it out only favours the baseline). Same inputs, batch, optimizer and measurements.

Per round and per model: **train** images/s over ``--steps`` steps of forward +
``out.loss.backward()`` + ``optimizer.step()`` (train mode); **encode** images/s over
``--steps`` calls of ``model.encode(x)`` (eval mode, no grad) under the contender's
training precision (ours: ``--precision auto``, bf16 autocast on a CPU with native bf16,
as ``vqvae encode`` runs by default; the baseline: fp32), and **encode_fp32** the same
in plain fp32 for both; **decode** images/s over
``--steps`` calls of ``model.decode(codes)``. ``--warmup`` untimed rounds first (ours'
first step runs its k-means initialisation there), then ``--rounds`` timed rounds that
alternate ours and baseline, swapping which goes first every round so that drifting
load hits both alike. Medians are reported with every round. The run is ~50 steps, short
of the 100-step dead-code window, so dead-code resets (rare in real training too) are
never timed. Targets: ours/baseline ≥ 1.0 for train, ≥ 1.3 for encode.

**Quality** (``--quality``, off by default: it takes ``--quality-minutes`` plus a few
minutes): runs ``vqvae train`` on the shared CIFAR-10 copy with a wall-time budget, then
``vqvae evaluate``, and reports NMSE, perplexity, PSNR, SSIM, codes used and steps
reached. Targets: NMSE ≤ 0.045, perplexity ≥ 300. The shared copy has no test split, so
the evaluation uses the held-out validation split, and it is JPEG, not canonical CIFAR-10
(see ``../shared/data/README.md``); both are noted in the JSON.

Timings under load are void: the JSON records the 1-minute load average at start and end.

Rerun::

    python benchmarks/train_images.py                        # throughput, ~2-5 minutes
    python benchmarks/train_images.py --quality              # + 10-minute quality run
    python benchmarks/train_images.py --rounds 2 --steps 2 --warmup 1   # smoke test

Results go to ``benchmarks/results/train_images.json``; a markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from common import COMPARISONS, fmt, machine_info, write_json_atomic
from vqvae import VQVAE
from vqvae.checkpoint import CONFIG_FILE
from vqvae.modalities.image.task import to_input  # the training loop's own input preparation
from vqvae.precision import autocast_for
from vqvae.runs import METRICS_FILE
from vqvae.train import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "train_images.json"
DEFAULT_RUN = ROOT / "runs" / "bench-cifar10"
SHARED_DATA = ROOT.parent / "shared" / "data"
CIFAR_TAR = SHARED_DATA / "cifar10" / "cifar10-train-jpeg.tar.gz"

BATCH = 128
IMAGE_SHAPE = (3, 32, 32)  # (C, H, W)
LR = 2e-4
SEED = 0
OURS_SETTINGS = {
    "in_channels": 3,
    "hidden": 128,
    "res_hidden": 32,
    "code_dim": 64,
    "codebook_size": 512,
    "quantizer": "ema",
}
MEASURES = ("train", "encode", "encode_fp32", "decode")
CONTENDERS = ("ours", "baseline")

# (name, block, metric, comparison, threshold): what the README promises.
TARGETS = [
    ("train images/s, ours/baseline", "throughput", "train", ">=", 1.0),
    ("encode images/s, ours/baseline", "throughput", "encode", ">=", 1.3),
    ("validation NMSE", "quality", "nmse", "<=", 0.045),
    ("validation perplexity", "quality", "perplexity", ">=", 300.0),
]


# ---------------------------------------------------------------- baseline


class BaselineResidualBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))``."""

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


def baseline_encoder(in_channels: int, hidden: int, res_hidden: int, code_dim: int) -> nn.Module:
    """``(B, C, H, W) -> (B, D, H/4, W/4)``, the widths of ours (first strided conv: hidden/2)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, hidden // 2, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden // 2, hidden, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(hidden, hidden, 3, padding=1),
        BaselineResidualBlock(hidden, res_hidden),
        BaselineResidualBlock(hidden, res_hidden),
        nn.ReLU(),
        nn.Conv2d(hidden, code_dim, 1),
    )


def baseline_decoder(code_dim: int, hidden: int, res_hidden: int, out_channels: int) -> nn.Module:
    """``(B, D, H/4, W/4) -> (B, C, H, W)``, the encoder mirrored."""
    return nn.Sequential(
        nn.Conv2d(code_dim, hidden, 3, padding=1),
        BaselineResidualBlock(hidden, res_hidden),
        BaselineResidualBlock(hidden, res_hidden),
        nn.ReLU(),
        nn.ConvTranspose2d(hidden, hidden // 2, 4, stride=2, padding=1),
        nn.ReLU(),
        nn.ConvTranspose2d(hidden // 2, out_channels, 4, stride=2, padding=1),
    )


@dataclass
class BaselineQuantized:
    quantized: Tensor  # (B, D, H, W), value of the codes, gradient of z
    indices: Tensor  # (B, H, W)
    loss: Tensor
    perplexity: Tensor


class BaselineQuantizer(nn.Module):
    """cdist + argmin against an ``nn.Embedding``, as typical public implementations do."""

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25) -> None:
        super().__init__()
        self.beta = beta
        self.codebook = nn.Embedding(codebook_size, dim)  # (K, D)
        self.codebook.weight.data.uniform_(-1 / codebook_size, 1 / codebook_size)

    def nearest(self, flat: Tensor) -> Tensor:
        return torch.cdist(flat.detach(), self.codebook.weight).argmin(dim=1)  # (N,)

    def forward(self, z: Tensor) -> BaselineQuantized:
        B, D, H, W = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, D)  # (N, D)
        indices = self.nearest(flat)
        codes = self.codebook(indices)  # (N, D)
        codebook_loss = F.mse_loss(codes, flat.detach())
        commitment_loss = F.mse_loss(flat, codes.detach())
        codes = flat + (codes - flat).detach()  # value of codes, gradient of z
        counts = torch.bincount(indices, minlength=self.codebook.num_embeddings)  # (K,)
        p = counts.float() / counts.sum()
        return BaselineQuantized(
            quantized=codes.view(B, H, W, D).permute(0, 3, 1, 2).contiguous(),  # (B, D, H, W)
            indices=indices.view(B, H, W),
            loss=codebook_loss + self.beta * commitment_loss,
            perplexity=torch.exp(-(p * torch.log(p + 1e-10)).sum()),
        )

    def encode(self, z: Tensor) -> Tensor:
        B, D, H, W = z.shape
        return self.nearest(z.permute(0, 2, 3, 1).reshape(-1, D)).view(B, H, W)

    def decode(self, indices: Tensor) -> Tensor:
        return self.codebook(indices).permute(0, 3, 1, 2).contiguous()  # (B, D, H, W)


@dataclass
class BaselineOutput:
    reconstruction: Tensor
    loss: Tensor
    perplexity: Tensor
    indices: Tensor


class BaselineVQVAE(nn.Module):
    """The same model written the plain way; data in [0, 1], centred as ours centres them."""

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        res_hidden: int,
        code_dim: int,
        codebook_size: int,
        beta: float = 0.25,
    ) -> None:
        super().__init__()
        self.encoder = baseline_encoder(in_channels, hidden, res_hidden, code_dim)
        self.quantizer = BaselineQuantizer(codebook_size, code_dim, beta)
        self.decoder = baseline_decoder(code_dim, hidden, res_hidden, in_channels)

    def forward(self, x: Tensor) -> BaselineOutput:
        q = self.quantizer(self.encoder(x - 0.5))
        reconstruction = self.decoder(q.quantized) + 0.5
        loss = F.mse_loss(reconstruction, x) + q.loss
        return BaselineOutput(reconstruction, loss, q.perplexity, q.indices)

    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        return self.quantizer.encode(self.encoder(x - 0.5))

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        return (self.decoder(self.quantizer.decode(codes)) + 0.5).clamp(0.0, 1.0)


# ---------------------------------------------------------------- contenders


@dataclass
class Contender:
    """A model, its optimizer and its input batch, prepared the way it would be trained."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    x: Tensor  # (B, C, H, W) in [0, 1]
    precision: str = "fp32"

    def train_step(self) -> None:
        with autocast_for(self.precision, torch.device("cpu")):
            out = self.model(self.x)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        self.optimizer.step()


def random_images(seed: int = SEED) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (BATCH, *IMAGE_SHAPE), dtype=torch.uint8, generator=g)


def make_ours(images: Tensor) -> Contender:
    torch.manual_seed(SEED)
    model = VQVAE(**OURS_SETTINGS, seed=SEED)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    model.to(memory_format=torch.channels_last)  # as vqvae.train does on CPU
    x = to_input(images, torch.device("cpu"))
    return Contender("ours", model, optimizer, x, TrainConfig().precision)


def make_baseline(images: Tensor) -> Contender:
    torch.manual_seed(SEED)
    s = OURS_SETTINGS
    model = BaselineVQVAE(
        s["in_channels"], s["hidden"], s["res_hidden"], s["code_dim"], s["codebook_size"]
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    return Contender("baseline", model, optimizer, images.float().div(255))


def conv_shapes(model: nn.Module) -> list[tuple[int, ...]]:
    """Weight shapes of every convolution, in order: equal lists mean the same architecture."""
    convs = (m for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d))
    return [tuple(m.weight.shape) for m in convs]


def describe_models(ours: Contender, baseline: Contender) -> dict:
    same = conv_shapes(ours.model) == conv_shapes(baseline.model)
    if not same:
        raise RuntimeError(
            "the baseline's convolutions differ from ours: fix baseline_encoder/decoder"
        )
    return {
        "ours_settings": OURS_SETTINGS,
        "same_convolutions": same,
        "convolutions": len(conv_shapes(ours.model)),
        "ours_trainable_parameters": sum(p.numel() for p in ours.model.parameters()),
        "baseline_trainable_parameters": sum(p.numel() for p in baseline.model.parameters()),
        "ours_memory_format": "channels_last",
        "baseline_memory_format": "contiguous (NCHW)",
        "note": "ours' codebook is an EMA buffer, the baseline's a trainable nn.Embedding "
        "(512 x 64 = 32,768 parameters): hence the parameter counts differ",
    }


# ------------------------------------------------------------------- timing


def images_per_s(call: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return BATCH * calls / (time.perf_counter() - start)


def measure_round(c: Contender, calls: int) -> dict[str, float]:
    """Train, encode and decode images/s of one contender, ``calls`` calls each."""
    c.model.train()
    train = images_per_s(c.train_step, calls)
    c.model.eval()
    codes = c.model.encode(c.x)  # (B, H', W')

    def encode_as_trained() -> Tensor:  # the contender's precision, as `vqvae encode` runs ours
        with autocast_for(c.precision, torch.device("cpu")):
            return c.model.encode(c.x)

    encode = images_per_s(encode_as_trained, calls)
    encode_fp32 = images_per_s(lambda: c.model.encode(c.x), calls)
    decode = images_per_s(lambda: c.model.decode(codes), calls)
    c.model.train()
    return {"train": train, "encode": encode, "encode_fp32": encode_fp32, "decode": decode}


def run_rounds(contenders: list[Contender], warmup: int, rounds: int, calls: int) -> dict:
    """Warm-up rounds, then timed rounds alternating the contenders' order every round."""
    for _ in range(warmup):
        for c in contenders:
            measure_round(c, calls)
    per_round: dict[str, list[dict]] = {c.name: [] for c in contenders}
    orders = []
    for i in range(rounds):
        order = contenders if i % 2 == 0 else contenders[::-1]
        orders.append([c.name for c in order])
        for c in order:
            per_round[c.name].append(measure_round(c, calls))
        print(
            f"  round {i + 1}/{rounds}: "
            + ", ".join(
                f"{name} train {r[-1]['train']:.0f} img/s" for name, r in per_round.items()
            ),
            file=sys.stderr,
            flush=True,
        )
    return {"per_round": per_round, "orders": orders}


def summarise(values: list[float]) -> dict:
    return {"median": statistics.median(values), "rounds": [round(v, 1) for v in values]}


def throughput_block(timed: dict) -> dict:
    block: dict = {}
    for name, rounds in timed["per_round"].items():
        block[name] = {m: summarise([r[m] for r in rounds]) for m in MEASURES}
    block["ratio_ours_over_baseline"] = {
        m: block["ours"][m]["median"] / block["baseline"][m]["median"] for m in MEASURES
    }
    block["round_orders"] = timed["orders"]
    return block


# ------------------------------------------------------------------ quality


def vqvae_command(*args: str) -> list[str]:
    """``vqvae ARGS`` run by this interpreter, so the benchmarked code is the code imported here."""
    return [sys.executable, "-m", "vqvae", *args]


def train_args(run: Path, minutes: float) -> list[str]:
    return [
        "train",
        "--data",
        str(CIFAR_TAR),
        "--image-size",
        "32",
        "--hidden",
        "128",
        "--res-hidden",
        "32",
        "--codebook-size",
        "512",
        "--code-dim",
        "64",
        "--quantizer",
        "ema",
        "--batch-size",
        "128",
        "--time-budget",
        f"{minutes:g}",
        "--seed",
        "0",
        "--out",
        str(run),
        "--force",
        "--no-progress",
    ]


def run_cli(args: list[str], timeout_s: float) -> str | None:
    """Run ``vqvae ARGS`` from the repo root; None on success, else why it failed."""
    print(f"[quality] vqvae {shlex.join(args)}", file=sys.stderr, flush=True)
    try:
        done = subprocess.run(
            vqvae_command(*args), cwd=ROOT, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        return f"vqvae {args[0]} timed out after {timeout_s:.0f} s"
    sys.stderr.write(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return f"vqvae {args[0]} failed: {tail[0]}"
    return None


def last_step(metrics_path: Path) -> int:
    lines = [line for line in metrics_path.read_text().splitlines() if line.strip()]
    return int(json.loads(lines[-1])["step"])


def quality_note(split: str, eval_images: int, train_images: int) -> str:
    where = (
        f"The shared CIFAR-10 copy has no test split, so `vqvae evaluate` scored the held-out "
        f"validation split: {eval_images:,} images of the fixed {train_images:,}/{eval_images:,} "
        f"split of the {train_images + eval_images:,} training images, never trained on"
        if split == "val"
        else f"`vqvae evaluate` scored the {split} split ({eval_images:,} images)"
    )
    return (
        f"{where}. The data are the shared JPEG copy (quality 75, 4:2:0 chroma), not canonical "
        f"CIFAR-10: NMSE, PSNR and SSIM are not directly comparable with published CIFAR-10 figures."
    )


def run_quality(run: Path, minutes: float) -> dict:
    """Train for ``minutes`` on the shared CIFAR-10 copy, evaluate, and collect the metrics."""
    if not CIFAR_TAR.exists():
        return {
            "skipped": f"{CIFAR_TAR} not found: the shared development data are absent "
            f"(see ../shared/data/README.md)"
        }
    train = train_args(run, minutes)
    evaluate = ["evaluate", str(run), "--json", str(run / "eval.json")]
    block = {
        "train_command": "vqvae " + shlex.join(train),
        "evaluate_command": "vqvae " + shlex.join(evaluate),
        "run": str(run),
        "time_budget_minutes": minutes,
    }
    start = time.monotonic()
    error = run_cli(train, timeout_s=2 * minutes * 60 + 1800)  # + data decoding, validation
    block["train_wall_s"] = round(time.monotonic() - start, 1)
    error = error or run_cli(evaluate, timeout_s=1800)
    if error:
        return {**block, "error": error}
    metrics = json.loads((run / "eval.json").read_text())
    train_images = json.loads((run / CONFIG_FILE).read_text())["data"]["train_images"]
    block.update(
        {key: metrics[key] for key in ("nmse", "perplexity", "psnr", "ssim", "codes_used")}
    )
    block.update(
        steps=last_step(run / METRICS_FILE),
        split=metrics["split"],
        eval_images=metrics["images"],
        train_images=train_images,
        note=quality_note(metrics["split"], metrics["images"], train_images),
    )
    return block


# ------------------------------------------------------------------ results


def target_value(report: dict, block: str, metric: str) -> float | None:
    if block == "throughput":
        return report["throughput"]["ratio_ours_over_baseline"][metric]
    value = report["quality"].get(metric)
    return None if value is None or not math.isfinite(value) else value


def check_targets(report: dict) -> list[dict]:
    """Each target with its measured value; ``pass`` is None where it was not measured."""
    checks = []
    for name, block, metric, op, threshold in TARGETS:
        value = target_value(report, block, metric)
        checks.append(
            {
                "target": name,
                "block": block,
                "metric": metric,
                "op": op,
                "threshold": threshold,
                "value": value,
                "pass": None if value is None else COMPARISONS[op](value, threshold),
            }
        )
    return checks


def throughput_table(t: dict) -> list[str]:
    lines = [
        "| images/s | ours (median) | baseline (median) | ours/baseline | ours rounds "
        "| baseline rounds |",
        "|---|--:|--:|--:|---|---|",
    ]
    for m in MEASURES:
        ours, base = t["ours"][m], t["baseline"][m]
        lines.append(
            f"| {m} | {ours['median']:.0f} | {base['median']:.0f} "
            f"| {t['ratio_ours_over_baseline'][m]:.2f}× "
            f"| {' '.join(f'{v:.0f}' for v in ours['rounds'])} "
            f"| {' '.join(f'{v:.0f}' for v in base['rounds'])} |"
        )
    return lines


def quality_lines(q: dict) -> list[str]:
    if "skipped" in q or "error" in q:
        return [f"Quality: {q.get('skipped') or q.get('error')}"]
    return [
        f"Quality after {q['time_budget_minutes']:g} min ({q['steps']} steps), {q['split']} split "
        f"({q['eval_images']:,} images): NMSE {q['nmse']:.4f}, perplexity {q['perplexity']:.1f}, "
        f"PSNR {q['psnr']:.2f} dB, SSIM {q['ssim']:.3f}, codes used {q['codes_used']}.",
        f"Note: {q['note']}",
    ]


def markdown_report(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"CPU: {m['cpu']}, {m['threads']} threads, torch {m['torch']}, 1-min load average "
        f"{m['load_average_1min']['start']:.1f} → {m['load_average_1min']['end']:.1f}",
        "",
        *throughput_table(report["throughput"]),
        "",
        *quality_lines(report["quality"]),
        "",
        "| target | value | threshold | pass |",
        "|---|--:|--:|---|",
    ]
    for c in report["targets"]:
        verdict = {True: "yes", False: "**no**", None: "not measured"}[c["pass"]]
        lines.append(
            f"| {c['target']} | {fmt(c['value'], '.3g')} | {c['op']} {c['threshold']:g} "
            f"| {verdict} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7, help="timed rounds per model (default 7)")
    p.add_argument("--warmup", type=int, default=2, help="untimed rounds first (default 2)")
    p.add_argument(
        "--steps",
        type=int,
        default=5,
        help="training steps, and encode and decode calls, timed per round (default 5)",
    )
    p.add_argument(
        "--quality",
        action="store_true",
        help="also train on the shared CIFAR-10 copy for --quality-minutes and evaluate",
    )
    p.add_argument(
        "--quality-minutes",
        type=float,
        default=10.0,
        help="time budget of the quality run (default 10)",
    )
    p.add_argument(
        "--quality-run",
        type=Path,
        default=DEFAULT_RUN,
        help="run directory of the quality run, overwritten; relative to the repo "
        "root (default runs/bench-cifar10)",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    args = p.parse_args(argv)
    if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        p.error("--rounds and --steps must be >= 1, --warmup >= 0")
    if not args.quality_minutes > 0:
        p.error("--quality-minutes must be positive")
    args.quality_run = (ROOT / args.quality_run).resolve()
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load = {"start": os.getloadavg()[0]}
    images = random_images()
    ours, baseline = make_ours(images), make_baseline(images)
    models = describe_models(ours, baseline)
    print(
        f"[throughput] {args.warmup} warm-up + {args.rounds} rounds of {args.steps} calls",
        file=sys.stderr,
        flush=True,
    )
    timed = run_rounds([ours, baseline], args.warmup, args.rounds, args.steps)
    load["end"] = os.getloadavg()[0]
    report = {
        "settings": {
            "batch": BATCH,
            "image_shape": list(IMAGE_SHAPE),
            "lr": LR,
            "seed": SEED,
            "inputs": "uniform random uint8 pixels / 255",
            "rounds": args.rounds,
            "warmup_rounds": args.warmup,
            "calls_per_round": args.steps,
        },
        "models": models,
        "throughput": throughput_block(timed),
    }
    if args.quality:
        report["quality"] = run_quality(args.quality_run, args.quality_minutes)
    else:  # keep the last quality run's figures, if there are any
        earlier = json.loads(args.out.read_text()).get("quality", {}) if args.out.exists() else {}
        report["quality"] = earlier if "nmse" in earlier else {
            "skipped": "not requested: pass --quality (takes --quality-minutes + a few minutes)"}
    report = {"machine": machine_info(load), **report}
    report["targets"] = check_targets(report)
    write_json_atomic(report, args.out)
    print(markdown_report(report))
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
