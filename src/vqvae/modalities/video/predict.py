"""Frame prediction: encode the context frames of a window, let the prior draw the codes of
the rest (conditioned on the actions), decode the whole grid (``vqvae predict``).

Only the first ``context`` frames of each window are shown to the tokenizer. They are
encoded as a whole window whose remaining frames repeat the last given one, and the codes
of the first ``context / f`` time steps become the prefix the prior continues. Encoded on
their own instead, as a short clip, their codes would be those of a clip's end (the
encoder's convolutions see about 4 code steps to either side, and zero padding past the
end): on ViZDoom only 2 % of the third step's codes then matched those of the full window
the prior was trained on, against 66 % with the last frame repeated (58 and 33 % against
90 and 82 % for the first two steps). The predicted frames are the decoded grid's frames
from ``context`` on; ``context`` must be a whole number of code time steps (a multiple of f).
For a prior with still steps (:mod:`~vqvae.modalities.video.still`) the given steps in
which nothing moved are marked as in its training data, and a predicted still step repeats
the frame before it exactly (the last given frame, when the prediction starts still).

Letters: N windows, C channels, T frames, T' code time steps, f frames per step.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vqvae.atomic import write_json
from vqvae.data.arrays import read_arrays
from vqvae.modalities.video.codes import (
    Loader,
    decode_clips,
    encode_clips,
    read_windows,
    run_videos,
    step_actions,
    time_factor,
)
from vqvae.modalities.video.data import fixed_windows
from vqvae.modalities.video.metrics import frame_psnr, frame_ssim, summarise
from vqvae.modalities.video.outputs import check_format, save_npy, to_frames, write_pairs
from vqvae.modalities.video.still import mark_still, still_steps
from vqvae.priors.training import load_prior
from vqvae.runs import prior_folder, read_config

# How predictions are drawn unless told otherwise: temperature 0.7. On ViZDoom (64 held-out
# windows, docs/video.md) it had the best PSNR (23.50 dB against 23.37 greedy, 23.34 at 0.4,
# 23.47 at 1), the best SSIM with greedy (0.432), and a gain from the actions whose
# bootstrap interval clears zero; greedy draws narrow the picture to fewer distinct codes.
PREDICTION_SAMPLING = {"temperature": 0.7, "top_k": None, "top_p": None}
# Guidance over the actions, for a prior that can use it (one trained with action dropout):
# it sharpens what the actions imply, above all whether the view stands still. On ViZDoom
# (64 training windows, docs/video.md) guidance 1 / 1.5 / 2 / 2.5 / 3 / 4 gave 23.97 / 24.38
# / 24.46 / 24.90 / 24.67 / 24.24 dB (copying the last frame: 23.41).
ACTION_GUIDANCE = 2.5
CONTEXT = 6


def prediction_sampling(prior: nn.Module, sampling: dict | None = None) -> dict:
    """How a prediction is drawn: :data:`PREDICTION_SAMPLING`, with guidance
    :data:`ACTION_GUIDANCE` for a prior trained with action dropout (1 for any other), then
    the keys of ``sampling`` that are given."""
    config = prior.config
    guided = bool(getattr(config, "num_actions", None)) and getattr(config, "action_dropout", 0) > 0
    return {**PREDICTION_SAMPLING, "guidance": ACTION_GUIDANCE if guided else 1.0, **(sampling or {})}


def check_context(context: int, frames: int, factor: int) -> None:
    """``context`` frames must be a whole, positive number of code steps, short of ``frames``."""
    if isinstance(context, bool) or not isinstance(context, int) or context < 1 or context >= frames:
        raise ValueError(f"--context must be a whole number of frames in [1, {frames - 1}] (the window has "
                         f"{frames}), got {context!r}")
    if context % factor:
        raise ValueError(f"--context {context} is not a whole number of code time steps: this tokenizer turns "
                         f"every {factor} frames into one step, so use a multiple of {factor}, e.g. "
                         f"{max(factor, context // factor * factor)}")


def prior_frames(prior: nn.Module, factor: int) -> int:
    """Frames of the windows a video prior models: its code time steps times f."""
    return prior.config.latent_shape[0] * factor


@torch.no_grad()
def predict_clips(tokenizer: nn.Module, prior: nn.Module, video: Tensor, actions: Tensor | None, context: int, *,
                  sampling: dict | None = None, seed: int = 0, device: str = "cpu", batch_size: int = 16) -> Tensor:
    """Predict frames ``context ..`` of each window from its first ``context`` frames.

    Args:
        tokenizer: the video VQ-VAE.
        prior: a Transformer prior over its code windows (action-conditioned or not).
        video: the true windows ``(N, C, T, H, W)`` in [0, 1]; only frames ``< context`` are read
            (see the module docstring for how they are encoded).
        actions: int64 ``(N, T)``, ``actions[:, t]`` takes frame t to t + 1 (None: no actions).
        context: frames given, a multiple of f.
        sampling: ``temperature``, ``top_k``, ``top_p``, ``guidance`` (default
            :func:`prediction_sampling`).
        seed: the same seed draws the same predictions.

    Returns:
        The predicted frames ``(N, C, T - context, H, W)`` in [0, 1].
    """
    factor = tokenizer.config.factors[0]
    frames = video.shape[2]
    check_context(context, frames, factor)
    if frames != prior_frames(prior, factor):
        raise ValueError(f"the prior models windows of {prior_frames(prior, factor)} frames, got {frames}: use "
                         f"--frames {prior_frames(prior, factor)}")
    num_actions = prior.config.num_actions
    if num_actions is not None and actions is None:
        raise ValueError("this prior is conditioned on actions, but the data have none: give --actions FILE")
    sampling = prediction_sampling(prior, sampling)
    generator = torch.Generator(device).manual_seed(seed)
    predicted = []
    for i in range(0, len(video), batch_size):
        given = video[i : i + batch_size, :, :context]  # (B, C, context, H, W)
        held = given[:, :, -1:].expand(-1, -1, frames - context, -1, -1)  # the last given frame, held
        prefix = encode_clips(tokenizer, torch.cat([given, held], dim=2), device)[:, : context // factor]  # (B, t0, H', W')
        if has_still_symbol(prior, tokenizer):  # the given steps in which nothing moved, as in training
            prefix = mark_still(prefix, still_steps(given, factor), tokenizer.config.codebook_size)
        steps = None
        if num_actions is not None:
            steps = step_actions(actions[i : i + batch_size], factor, num_actions).to(device)  # (B, T', f)
        codes = prior.sample(len(prefix), prefix=prefix.to(device), actions=steps, generator=generator,
                             **sampling)  # (B, T', H', W')
        predicted.append(decode_clips(tokenizer, codes.cpu(), device, given=given)[:, :, context:])
    return torch.cat(predicted)


def has_still_symbol(prior: nn.Module, tokenizer: nn.Module) -> bool:
    """Whether the prior draws still steps (:mod:`~vqvae.modalities.video.still`): K + 1 symbols.
    Priors trained before still steps existed have K."""
    return prior.config.codebook_size == tokenizer.config.codebook_size + 1


def copy_last(video: Tensor, context: int) -> Tensor:
    """The baseline that repeats the last context frame: ``(N, C, T, H, W) -> (N, C, T - context, H, W)``."""
    last = video[:, :, context - 1 : context]
    return last.expand(-1, -1, video.shape[2] - context, -1, -1).clone()


def read_actions(path: str | os.PathLike, n: int, frames: int, context: int, action_names: list[str] | None,
                 num_actions: int) -> Tensor:
    """Actions from a file for ``n`` windows: ``.npy`` of integers, or ``.json`` of a list of
    integers or action names; one sequence for every window, ``(L,)``, or one each, ``(n, L)``.

    ``L = frames``: every action of the window (``actions[t]`` takes frame t to t + 1);
    ``L = frames - context``: the action leading into each predicted frame (``actions[context - 1 ..
    frames - 2]``), the context keeping its recorded ones (marked -1 here, filled by the caller).

    Returns:
        int64 ``(n, frames)``, -1 where the caller keeps the recorded actions.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--actions file {path} does not exist")
    if path.suffix == ".json":
        values = json.loads(path.read_text())
        names = {name: i for i, name in enumerate(action_names or [])}

        def index(v):
            if isinstance(v, str) and v in names:
                return names[v]
            if isinstance(v, int) and not isinstance(v, bool):
                return v
            raise ValueError(f"--actions {path}: {v!r} is neither an action index nor one of {sorted(names)}")

        array = np.array([[index(v) for v in row] if isinstance(row, list) else index(row) for row in values])
    elif path.suffix == ".npy":
        array = read_arrays(path, "actions file")[""]
    else:
        raise ValueError(f"--actions must be a .npy or .json file, got {path}")
    if not np.issubdtype(array.dtype, np.integer) or array.ndim not in (1, 2):
        raise ValueError(f"--actions {path} must hold integers (L,) or (n, L), got {array.dtype} {array.shape}")
    if array.ndim == 1:
        array = np.broadcast_to(array, (n, len(array)))
    if array.shape[0] != n or array.shape[1] not in (frames, frames - context):
        raise ValueError(f"--actions {path} has shape {array.shape}: give {frames} actions per window (all of "
                         f"them) or {frames - context} (those leading into the predicted frames), for 1 or {n} "
                         f"windows")
    if array.size and (array.min() < 0 or array.max() >= num_actions):
        raise ValueError(f"--actions {path}: actions must lie in [0, {num_actions}), got [{array.min()}, "
                         f"{array.max()}]" + (f" (names: {action_names})" if action_names else ""))
    out = np.full((n, frames), -1, dtype=np.int64)
    if array.shape[1] == frames:
        out[:] = array
    else:  # the action into predicted frame j is actions[j - 1], j = context .. frames - 1
        out[:, context - 1 : frames - 1] = array
    return torch.from_numpy(out)


def predict_run(load: Loader, run: str | os.PathLike, out: str | os.PathLike, *, prior: str | None = None,
                context: int = CONTEXT, frames: int | None = None, n: int = 8, actions_file: str | None = None,
                sampling: dict | None = None, seed: int = 0, fmt: str = "gif", device: str = "cpu",
                data: str | None = None, data_dir: str | None = None) -> dict:
    """``vqvae predict``: predictions for ``n`` fixed held-out windows, written to ``out``:
    ``NNNNNN.gif`` (truth | prediction), ``strip.png`` (truth rows above prediction rows,
    predicted frames framed in red), ``predicted.npy`` (uint8 ``(n, T - context, C, H, W)``),
    ``actions.npy`` (the actions used, ``(n, T)``) and ``metrics.json`` (per-frame PSNR/SSIM
    against the truth and of the copy-last baseline). Returns the metrics."""
    check_format(fmt)  # before the work, not after it
    config = read_config(run)
    factor = time_factor(config)
    tokenizer = load(run, device)
    folder = prior_folder(run, prior)
    prior_model = load_prior(folder, device)
    frames = frames or prior_frames(prior_model, factor)
    check_context(context, frames, factor)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"-n must be a positive number of windows, got {n!r}")
    videos = run_videos(run, "val", data, data_dir)
    picks = fixed_windows(videos, frames, n, seed=0)
    video, actions = read_windows(videos, picks, frames)
    if actions_file is not None:
        num_actions = config["data"].get("num_actions")
        if not num_actions:
            raise ValueError(f"--actions: {run} was trained on data without actions ({config['data']['spec']})")
        given = read_actions(actions_file, len(picks), frames, context, config["data"].get("action_names"), num_actions)
        actions = torch.where(given >= 0, given, actions)
    predicted = predict_clips(tokenizer, prior_model, video, actions, context, sampling=sampling, seed=seed,
                              device=device)
    future, baseline = video[:, :, context:], copy_last(video, context)
    metrics = {"run": str(run), "prior": folder.name, "context": context, "frames": frames, "windows": len(picks),
               "held_out": [list(p) for p in picks], "actions": "file " + str(actions_file) if actions_file else
               ("recorded" if actions is not None else None), "seed": seed,
               "sampling": prediction_sampling(prior_model, sampling),
               **summarise("prediction_psnr", frame_psnr(future, predicted)),
               **summarise("prediction_ssim", frame_ssim(future, predicted)),
               **summarise("copy_last_psnr", frame_psnr(future, baseline)),
               **summarise("copy_last_ssim", frame_ssim(future, baseline))}
    out = Path(out)
    shown = torch.cat([video[:, :, :context], predicted], dim=2)  # the given context, then the prediction
    truth_frames, shown_frames = to_frames(video), to_frames(shown)
    fps = config["data"].get("fps") or 8.0
    write_pairs(truth_frames, shown_frames, out, fps, fmt=fmt, first_predicted=context)
    save_npy(out / "predicted.npy", shown_frames[:, context:])
    if actions is not None:
        save_npy(out / "actions.npy", actions.numpy())
    write_json(out / "metrics.json", metrics)
    return metrics
