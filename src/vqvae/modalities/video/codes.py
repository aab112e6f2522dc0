"""Video windows as code grids: encoding them, and the actions of each code time step.

A tokenizer that halves time ``k`` times turns a window of T frames into ``T' = T / f``
code time steps, ``f = 2**k``; step ``t'`` covers frames ``[t'f, t'f + f)``. The prior is
conditioned, at step ``t'``, on the actions that lead *into* those frames: ``actions[t]``
takes frame t to frame t + 1, so frame j is reached by ``actions[j - 1]`` and step t' gets
``actions[t'f - 1 .. t'f + f - 2]``. Nothing leads into a window's first frame; it gets
"no action", the index ``num_actions`` (the padding row of the prior's action table).

Letters: N windows, C channels, T frames, T' code time steps, f frames per step, H' W'
the code grid of one step.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vqvae.atomic import write_bytes
from vqvae.data.arrays import read_arrays
from vqvae.modalities.video.data import VideoSet, open_video, read_window
from vqvae.modalities.video.still import copy_still, fill_still, mark_still, still_steps
from vqvae.runs import codes_cache_path, read_config

Loader = Callable[[str | os.PathLike, str], nn.Module]  # (run, device) -> the run's tokenizer


def time_factor(config: dict) -> int:
    """f: frames per code time step of a video run (its ``model`` config)."""
    model = config["model"]
    halvings = model.get("time_downsamples")
    return 1 << (model["downsamples"] if halvings is None else halvings)


def step_actions(actions: Tensor, factor: int, num_actions: int) -> Tensor:
    """The actions of each code time step: those that lead into the step's frames.

    Args:
        actions: int64 ``(N, T)``; ``actions[:, t]`` takes frame t to frame t + 1.
        factor: f, frames per code time step; T must be a multiple of it.
        num_actions: the size of the action set; this index means "no action".

    Returns:
        int64 ``(N, T / f, f)``: entry ``[n, t', i]`` is ``actions[n, t'f + i - 1]``, and
        ``num_actions`` for the window's first frame, which no recorded action leads into.
    """
    if actions.dim() != 2 or actions.shape[1] % factor:
        raise ValueError(f"actions must be (N, T) with T a multiple of {factor} frames per code step, "
                         f"got shape {tuple(actions.shape)}")
    n, t = actions.shape
    none = torch.full((n, 1), num_actions, dtype=torch.long, device=actions.device)
    into = torch.cat([none, actions[:, :-1].long()], dim=1)  # (N, T): into[:, j] leads into frame j
    return into.view(n, t // factor, factor)


def run_videos(run: str | os.PathLike, split: str, data: str | None = None, data_dir: str | None = None) -> VideoSet:
    """A split of the run's own video data, or of ``data`` when given."""
    recorded = read_config(run)["data"]
    if data is None:
        data, data_dir = recorded["spec"], data_dir or recorded["data_dir"]
    return open_video(data, split, data_dir)


def read_windows(videos: VideoSet, picks: list[tuple[int, int]], frames: int) -> tuple[Tensor, Tensor | None]:
    """The windows ``(episode, start)`` of ``frames`` frames: ``(N, C, T, H, W)`` floats in
    [0, 1] and their actions ``(N, T)`` (None for data without actions)."""
    windows = [read_window(videos, episode, start, frames) for episode, start in picks]
    video = torch.stack([w[0] for w in windows])
    actions = None if windows[0][1] is None else torch.stack([w[1] for w in windows])
    return video, actions


def strided_windows(videos: VideoSet, frames: int, stride: int) -> list[tuple[int, int]]:
    """Every window of ``frames`` frames starting at multiples of ``stride`` in every episode."""
    picks = [(e, s) for e in range(len(videos)) for s in range(0, videos.length(e) - frames + 1, stride)]
    if not picks:
        longest = max((videos.length(e) for e in range(len(videos))), default=0)
        raise ValueError(f"no episode of the {videos.split} split of {videos.spec} holds a window of {frames} "
                         f"frames (the longest has {longest}): use fewer --frames, or record longer episodes")
    return picks


@torch.no_grad()
def encode_clips(model: nn.Module, video: Tensor, device: str | torch.device = "cpu", batch_size: int = 16) -> Tensor:
    """Codes ``(N, T', H', W')`` of clips ``(N, C, T, H, W)`` in [0, 1]."""
    model.eval()
    parts = [model.encode(video[i : i + batch_size].to(device)).cpu() for i in range(0, len(video), batch_size)]
    return torch.cat(parts)


@torch.no_grad()
def decode_clips(model: nn.Module, codes: Tensor, device: str | torch.device = "cpu", batch_size: int = 16,
                 given: Tensor | None = None) -> Tensor:
    """Clips ``(N, C, T, H, W)`` in [0, 1] decoded from codes ``(N, T', H', W')``: the
    tokenizer's K codes, and K for a still step (:mod:`~vqvae.modalities.video.still`), which
    repeats the frame before it. ``given`` ``(N, C, G, H, W)``: the true first frames (a
    prediction's context), shown instead of their decoding and copied by still steps."""
    k = model.config.codebook_size
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) > k):
        raise ValueError(f"codes range over [{int(codes.min())}, {int(codes.max())}] but this run's codebook "
                         f"has K={k} codes (and {k} for a still step): were they encoded with another run?")
    if codes.dim() != 4:
        raise ValueError(f"video codes must be (N, T', H', W'), got shape {tuple(codes.shape)}")
    model.eval()
    filled, still = fill_still(codes, k)
    parts = [model.decode(filled[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(codes), batch_size)]
    clips = torch.cat(parts)
    if given is None and not still.any():
        return clips
    return copy_still(clips, still, model.config.factors[0], given)


def window_codes(model: nn.Module, video: Tensor, device: str | torch.device = "cpu") -> Tensor:
    """What a prior learns from windows ``(N, C, T, H, W)``: their codes ``(N, T', H', W')``,
    with K at every position of their still steps (:mod:`~vqvae.modalities.video.still`)."""
    still = still_steps(video, model.config.factors[0])
    return mark_still(encode_clips(model, video, device), still, model.config.codebook_size)


def prior_windows(load: Loader, run: str | os.PathLike, split: str, steps: int, data: str | None = None,
                  data_dir: str | None = None, device: str = "cpu") -> tuple[Tensor, Tensor | None]:
    """Codes of the split's windows of ``steps`` code time steps, and each step's actions, for a
    prior. Windows start every half window in every episode (overlapping halves double what a
    prior sees of a small collection); encoded once and cached in ``RUN/codes/``. Still steps
    hold K at every position (:mod:`~vqvae.modalities.video.still`).

    Returns:
        ``(codes (N, T', H', W') int64 in [0, K], actions (N, T', f) int64 or None)``.
    """
    config = read_config(run)
    factor = time_factor(config)
    frames = steps * factor
    stride = max(factor, frames // 2 // factor * factor)
    # "still": steps whose frames repeat the one before them are marked (K), see still.py
    path = codes_cache_path(run, f"video-{split}", (data or config["data"]["spec"], data_dir, split, frames, stride,
                                                     "still"))
    if not path.exists():
        videos = run_videos(run, split, data, data_dir)
        model = load(run, device)
        codes, actions = [], []
        picks = strided_windows(videos, frames, stride)
        for i in range(0, len(picks), 64):  # a few windows at a time: the split never sits in memory
            video, acts = read_windows(videos, picks[i : i + 64], frames)
            codes.append(window_codes(model, video, device))
            actions.append(acts)
        arrays = {"codes": torch.cat(codes).numpy().astype(np.int16 if model.config.codebook_size < 32768 else np.int32)}
        if actions[0] is not None:
            arrays["actions"] = torch.cat(actions).numpy()
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        write_bytes(path, buffer.getvalue())
    arrays = read_arrays(Path(path), "video code cache")
    codes = torch.from_numpy(arrays["codes"].astype(np.int64))
    if "actions" not in arrays:
        return codes, None
    num_actions = config["data"]["num_actions"]
    return codes, step_actions(torch.from_numpy(arrays["actions"].astype(np.int64)), factor, num_actions)
