"""Episodes of video and the windows a model trains and is judged on.

A :class:`VideoSet` is one split of a video data set: a list of episodes (a Moving MNIST
sequence, a recorded ViZDoom episode), each a run of frames and, for recordings, of the
actions taken. Frames are read on demand; nothing holds a whole split in memory.

A window is ``frames`` consecutive frames of one episode, channels first and time next,
``(C, T, H, W)`` float in ``[0, 1]`` (so a batch is ``(B, C, T, H, W)``, the layout of the
3-D convolutional autoencoder), with the actions of the same frames: ``actions[t]`` is
what takes frame ``t`` to frame ``t + 1``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
import torch
from torch import Tensor

from vqvae.data.errors import DataError
from vqvae.data.splits import fixed_permutation
from vqvae.modalities.video.data.hashing import hash_seed, hash_uniforms

__all__ = ["VIDEO_SPLITS", "VideoSet", "fixed_windows", "random_windows", "read_window"]

VIDEO_SPLITS = ("train", "val")


class VideoSet(ABC):
    """One split of a video data set: episodes of uint8 frames, and maybe actions.

    Attributes:
        spec: the ``--data`` value it was opened from (a name or a folder).
        split: ``"train"`` or ``"val"``.
        frame_shape: ``(C, H, W)`` of every frame.
        num_actions: size of the discrete action set, or None without actions.
        action_names: ``action_names[a]`` says what action ``a`` does, or None.
    """

    spec: str
    split: str
    frame_shape: tuple[int, int, int]
    num_actions: int | None = None
    action_names: list[str] | None = None

    @abstractmethod
    def __len__(self) -> int:
        """Number of episodes in this split."""

    @abstractmethod
    def length(self, episode: int) -> int:
        """Number of frames of ``episode`` (an index ``0 .. len(self) - 1``)."""

    @abstractmethod
    def _frames(self, episode: int, start: int, stop: int) -> np.ndarray:
        """Frames ``start:stop`` of a checked episode and range, uint8 ``(T, C, H, W)``."""

    def _actions(self, episode: int, start: int, stop: int) -> np.ndarray | None:
        return None

    @abstractmethod
    def describe(self) -> dict:
        """JSON-safe facts for a run's ``config.json``: spec, source, counts, fingerprint..."""

    def lengths(self) -> np.ndarray:
        """Frames per episode, int64 ``(len(self),)``."""
        return np.array([self.length(e) for e in range(len(self))], dtype=np.int64)

    def frames(self, episode: int, start: int, stop: int) -> np.ndarray:
        """Frames ``start .. stop - 1`` of ``episode``.

        Returns:
            uint8 ``(T, C, H, W)``, ``T = stop - start``; a copy, safe to modify.

        Raises:
            DataError: for an episode or a frame range outside the split.
        """
        self._check_range(episode, start, stop)
        return self._frames(episode, start, stop)

    def actions(self, episode: int, start: int, stop: int) -> np.ndarray | None:
        """Actions of frames ``start .. stop - 1``: ``actions[t]`` takes frame t to t + 1.

        Returns:
            int64 ``(T,)`` in ``0 .. num_actions - 1``, or None for a set without actions.
        """
        self._check_range(episode, start, stop)
        return self._actions(episode, start, stop)

    def _check_range(self, episode: int, start: int, stop: int) -> None:
        if not 0 <= episode < len(self):
            raise DataError(
                f"episode {episode} is out of range: the {self.split} split of {self.spec} "
                f"holds episodes 0..{len(self) - 1}"
            )
        length = self.length(episode)
        if not 0 <= start < stop <= length:
            raise DataError(
                f"frames {start}:{stop} are outside episode {episode} of the {self.split} split "
                f"of {self.spec}, which has {length} frames; pick 0 <= start < stop <= {length}"
            )


def _window_starts(videos: VideoSet, frames: int) -> np.ndarray:
    """How many windows of ``frames`` frames start in each episode, int64 ``(E,)``."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise DataError(f"a window needs a positive whole number of frames, got {frames!r}")
    lengths = videos.lengths()
    starts = np.maximum(lengths - frames + 1, 0)
    if starts.sum() == 0:
        longest = int(lengths.max()) if len(lengths) else 0
        raise DataError(
            f"no episode of the {videos.split} split of {videos.spec} is at least {frames} "
            f"frames long (the longest has {longest}); ask for at most {longest} frames "
            "(--frames), or record longer episodes (a larger --max-frames or another scenario)"
        )
    return starts


def read_window(videos: VideoSet, episode: int, start: int, frames: int) -> tuple[Tensor, Tensor | None]:
    """One window: ``frames`` frames of ``episode`` from ``start``, with their actions.

    Returns:
        ``(video, actions)``: float32 ``(C, T, H, W)`` in ``[0, 1]``, and int64 ``(T,)``
        (``actions[t]`` takes frame t to t + 1) or None.

    Raises:
        DataError: when the window does not lie inside the episode.
    """
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise DataError(f"a window needs a positive whole number of frames, got {frames!r}")
    if 0 <= episode < len(videos) and start + frames > videos.length(episode):
        raise DataError(
            f"a window of {frames} frames from frame {start} does not fit episode {episode} of "
            f"the {videos.split} split of {videos.spec}, which has {videos.length(episode)} "
            "frames; use fewer frames or an earlier start"
        )
    pixels = videos.frames(episode, start, start + frames)  # (T, C, H, W) uint8
    pixels = np.ascontiguousarray(pixels.transpose(1, 0, 2, 3))  # (C, T, H, W)
    video = torch.from_numpy(pixels).float().div_(255.0)
    actions = videos.actions(episode, start, start + frames)
    return video, None if actions is None else torch.from_numpy(actions)


def random_windows(
    videos: VideoSet, frames: int, batch: int, generator: torch.Generator
) -> tuple[Tensor, Tensor | None]:
    """A batch of windows drawn uniformly from every window of every long-enough episode.

    An episode of length L holds ``L - frames + 1`` windows, so long episodes are drawn
    more often than short ones and every window is equally likely.

    Args:
        videos: the split to draw from.
        frames: frames per window (T).
        batch: windows per batch (B).
        generator: the torch generator that picks them (seeded by the caller).

    Returns:
        ``(video, actions)``: float32 ``(B, C, T, H, W)`` in ``[0, 1]``, and int64 ``(B, T)``
        or None for a set without actions.

    Raises:
        DataError: when no episode has at least ``frames`` frames.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise DataError(f"a batch needs a positive whole number of windows, got {batch!r}")
    starts = _window_starts(videos, frames)
    ends = np.cumsum(starts)  # window w lies in the first episode whose end exceeds w
    picks = torch.randint(int(ends[-1]), (batch,), generator=generator).numpy()
    episodes = np.searchsorted(ends, picks, side="right")
    offsets = picks - (ends[episodes] - starts[episodes])
    windows = [read_window(videos, int(e), int(s), frames) for e, s in zip(episodes, offsets, strict=True)]
    video = torch.stack([w[0] for w in windows])  # (B, C, T, H, W)
    actions = None if windows[0][1] is None else torch.stack([w[1] for w in windows])  # (B, T)
    return video, actions


def fixed_windows(videos: VideoSet, frames: int, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """A fixed list of non-overlapping windows, spread over as many episodes as possible.

    Each long-enough episode is cut into non-overlapping windows (with a fixed random
    offset); the list takes one window from each episode in a fixed random episode order,
    then a second from each, and so on. The same ``videos``, ``frames``, ``n`` and ``seed``
    always give the same list, on every machine.

    Returns:
        ``(episode, start)`` pairs, ``min(n, available windows)`` of them.

    Raises:
        DataError: when no episode has at least ``frames`` frames, or ``n < 1``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"the number of windows must be a positive whole number, got {n!r}")
    starts = _window_starts(videos, frames)
    eligible = np.flatnonzero(starts)
    order = eligible[fixed_permutation(len(eligible), hash_seed((0x77696E, seed)))]
    per_episode = []
    for episode in order[:n]:  # the first round alone may fill the list
        length = int(videos.length(int(episode)))
        slack = (length - frames) % frames  # frames left over by back-to-back windows
        u = hash_uniforms((0x77696E, seed, int(episode)), 0, 1)[0]
        first = int(u * (slack + 1))
        cuts = list(range(first, length - frames + 1, frames))
        shuffle = fixed_permutation(len(cuts), hash_seed((0x77696E, seed, int(episode))))
        per_episode.append([(int(episode), cuts[i]) for i in shuffle])
    picked: list[tuple[int, int]] = []
    for round_ in range(max(len(c) for c in per_episode)):
        picked.extend(c[round_] for c in per_episode if round_ < len(c))
        if len(picked) >= n:
            break
    return picked[:n]
