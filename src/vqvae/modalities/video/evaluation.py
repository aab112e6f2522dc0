"""``vqvae evaluate`` on a video run: the tokenizer on whole held-out windows and, with a
prior, frame prediction against its baselines.

Every score is per frame (PSNR in dB, SSIM), averaged over the held-out windows; each key
holds the mean over the frames it concerns and ``KEY_per_frame`` the list beside it:

* ``reconstruction_*``: the tokenizer's reconstruction of whole windows (every frame);
* ``prediction_*``: frames ``context ..`` predicted with the windows' true actions;
* ``shuffled_actions_*``: the same with the actions of another window (window i gets
  those of window i + 1): what the actions are worth;
* ``copy_last_*``: the last context frame repeated;
* ``ceiling_*``: the tokenizer's reconstruction of the true future frames, the best a
  prior over its codes could reach (for a prior with still steps, the true future's still
  steps marked, decoded as a prediction is: after the true context frames);
* ``still_steps``: the fraction of the predicted code steps in which nothing moves;
* ``action_gain_psnr_interval``: a paired bootstrap 95 % interval, over windows, of
  prediction PSNR minus shuffled-actions PSNR;
* ``copy_last_gain_psnr_interval``: the same for prediction PSNR minus copy-last PSNR.

Data without actions (Moving MNIST) get the same keys without the action ones.
"""

from __future__ import annotations

import math
import os

import torch

from vqvae.modalities.video.codes import (
    Loader,
    decode_clips,
    encode_clips,
    read_windows,
    run_videos,
    time_factor,
)
from vqvae.modalities.video.data import fixed_windows
from vqvae.modalities.video.metrics import frame_psnr, frame_ssim, paired_bootstrap, summarise
from vqvae.modalities.video.predict import (
    CONTEXT,
    check_context,
    copy_last,
    has_still_symbol,
    predict_clips,
    prediction_sampling,
    prior_frames,
)
from vqvae.modalities.video.still import mark_still, still_steps
from vqvae.priors.training import load_prior
from vqvae.quantize import codebook_perplexity
from vqvae.runs import prior_folder, prior_names, read_config

WINDOWS = 64  # held-out windows judged


def _scores(name: str, truth: torch.Tensor, other: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """``name_psnr``, ``name_ssim`` and their per-frame lists; and the PSNR of each window ``(N,)``."""
    psnr = frame_psnr(truth, other)
    return {**summarise(f"{name}_psnr", psnr), **summarise(f"{name}_ssim", frame_ssim(truth, other))}, psnr.mean(1)


def evaluate_video(load: Loader, run: str | os.PathLike, *, data: str | None = None, data_dir: str | None = None,
                   split: str | None = None, prior: str | None = None, windows: int = WINDOWS,
                   context: int = CONTEXT, sampling: dict | None = None, seed: int = 0, device: str = "cpu",
                   batch_size: int = 16) -> dict:
    """The metrics of the module docstring on ``windows`` fixed windows of the held-out split.

    ``prior`` None picks the run's only prior. Without one (none trained, or several and
    none named) only the tokenizer's metrics are reported (``reconstruction_*``, perplexity,
    codes used, compression ratio) and ``prediction`` says why. With a prior the windows are
    as long as the prior's.
    """
    config = read_config(run)
    factor = time_factor(config)
    tokenizer = load(run, device)
    trained = prior_names(run)
    if prior is None and len(trained) == 1:  # the run's only prior
        prior = trained[0]
    prior_model = load_prior(prior_folder(run, prior), device) if prior is not None else None
    frames = config["data"]["frames"] if prior_model is None else prior_frames(prior_model, factor)
    if prior_model is not None:
        check_context(context, frames, factor)
    videos = run_videos(run, split or "val", data, data_dir)
    picks = fixed_windows(videos, frames, windows, seed=0)
    video, actions = read_windows(videos, picks, frames)
    codes = encode_clips(tokenizer, video, device, batch_size)
    recon = decode_clips(tokenizer, codes, device, batch_size)
    k = tokenizer.config.codebook_size
    counts = torch.bincount(codes.flatten(), minlength=k)
    bits = math.prod(codes.shape[1:]) * math.log2(k)
    metrics = {"run": str(run), "data": videos.spec, "split": videos.split, "windows": len(picks), "frames": frames,
               "latent_shape": list(codes.shape[1:]), "perplexity": codebook_perplexity(counts),
               "codes_used": int((counts > 0).sum()), "codebook_size": k, "bits_per_window": bits,
               "compression_ratio": video[0].numel() * 8 / bits, **_scores("reconstruction", video, recon)[0]}
    if prior_model is None:
        metrics["prediction"] = (f"several priors ({', '.join(trained)}): choose one with --prior NAME for the "
                                 f"prediction keys" if trained else "no prior: train one with vqvae train-prior RUN "
                                 "--arch transformer for the prediction keys")
        return metrics
    future = video[:, :, context:]
    sampling = prediction_sampling(prior_model, sampling)
    predicted = predict_clips(tokenizer, prior_model, video, actions, context, sampling=sampling, seed=seed,
                              device=device, batch_size=batch_size)
    scores, prediction_psnr = _scores("prediction", future, predicted)
    metrics.update(prior=prior_folder(run, prior).name, context=context, predicted_frames=frames - context,
                   sampling=sampling, seed=seed, **scores)
    if prior_model.config.num_actions is not None:
        if len(picks) < 2:
            raise ValueError("shuffled actions need at least 2 held-out windows: raise --windows")
        shuffled = predict_clips(tokenizer, prior_model, video, actions.roll(-1, dims=0), context,
                                 sampling=sampling, seed=seed, device=device, batch_size=batch_size)
        scores, shuffled_psnr = _scores("shuffled_actions", future, shuffled)
        metrics.update(scores)
        metrics["action_gain_psnr_interval"] = paired_bootstrap(prediction_psnr, shuffled_psnr, seed=seed)
    scores, copy_last_psnr = _scores("copy_last", future, copy_last(video, context))
    metrics.update(scores)
    metrics["copy_last_gain_psnr_interval"] = paired_bootstrap(prediction_psnr, copy_last_psnr, seed=seed)
    if has_still_symbol(prior_model, tokenizer):
        still = still_steps(video, factor)
        marked = mark_still(codes, still, tokenizer.config.codebook_size)
        recon = decode_clips(tokenizer, marked, device, batch_size, given=video[:, :, :context])
        metrics["still_steps"] = float(still[:, context // factor :].float().mean())
    metrics.update(_scores("ceiling", future, recon[:, :, context:])[0])
    return metrics

