"""Still steps: one extra symbol for code time steps in which nothing moves.

In a recorded game the view often does not change at all: the agent stands still (NOOP)
or walks into a wall, and the next frames repeat the last one pixel for pixel (on ViZDoom
health_gathering, 46 % of the frames after a NOOP; 95 % of those after a still frame with
the same action). A tokenizer decodes such a frame as blurrily as any other, so a predictor
that draws codes and decodes them loses, on every still frame, to simply repeating the
last frame. A prior over video codes therefore has K + 1 symbols: the tokenizer's K codes
and ``still`` (= K). Code step ``t'`` (frames ``[t'f, t'f + f)``) is still when all of its
frames equal the frame before it, ``t'f - 1``; its codes are then all ``still`` in the
prior's training data. Decoding a grid turns a step the prior drew as still (most of its
positions ``still``) into copies of the frame before it: the last given frame, exactly,
when prediction starts still.

Letters: N windows, C channels, T frames, T' code time steps, f frames per step.
"""

from __future__ import annotations

import torch
from torch import Tensor


def still_steps(video: Tensor, factor: int) -> Tensor:
    """Which code steps of windows ``(N, C, T, H, W)`` are still: ``(N, T / f)`` bool.

    Step 0 never is: no frame of the window comes before it."""
    n, _, frames = video.shape[:3]
    if frames % factor:
        raise ValueError(f"a window of {frames} frames is not a whole number of code steps of {factor} frames")
    repeats = (video[:, :, 1:] == video[:, :, :-1]).flatten(3).all(3).all(1)  # (N, T - 1): frame j == j - 1
    repeats = torch.cat([torch.zeros(n, 1, dtype=torch.bool, device=video.device), repeats], dim=1)
    return repeats.view(n, frames // factor, factor).all(2)


def mark_still(codes: Tensor, still: Tensor, symbol: int) -> Tensor:
    """``codes`` ``(N, T', H', W')`` with every position of the ``still`` ``(N, T')`` steps set to ``symbol``."""
    return torch.where(still.view(*still.shape, 1, 1).to(codes.device), torch.full_like(codes, symbol), codes)


def fill_still(codes: Tensor, symbol: int) -> tuple[Tensor, Tensor]:
    """Codes a tokenizer can decode, and which steps are still.

    A step is still when at least half of its positions hold ``symbol``. Every ``symbol``
    takes the code of its position one step earlier (the first step's, code 0), so that a
    still step decodes to something near the step before it; its frames are then replaced
    by :func:`copy_still`.

    Returns:
        ``(codes (N, T', H', W') in [0, symbol), still (N, T') bool)``.
    """
    marked = codes == symbol
    still = marked.flatten(2).float().mean(2) >= 0.5
    still[:, 0] = False
    filled = codes.clone()
    filled[:, 0][marked[:, 0]] = 0
    for t in range(1, codes.shape[1]):
        filled[:, t] = torch.where(marked[:, t], filled[:, t - 1], filled[:, t])
    return filled, still


def copy_still(clips: Tensor, still: Tensor, factor: int, given: Tensor | None = None) -> Tensor:
    """Clips ``(N, C, T, H, W)`` whose still steps repeat the frame before them, in time order
    (so a run of still steps repeats one frame). ``given`` ``(N, C, G, H, W)``: true first
    frames, which replace the decoded ones first (a whole number of steps)."""
    clips = clips.clone()
    start = 0
    if given is not None:
        clips[:, :, : given.shape[2]] = given.to(clips.dtype)
        start = given.shape[2] // factor
    for t in range(max(start, 1), still.shape[1]):
        rows = still[:, t].nonzero().flatten().to(clips.device)
        if len(rows):
            clips[rows, :, t * factor : (t + 1) * factor] = clips[rows, :, t * factor - 1 : t * factor]
    return clips
