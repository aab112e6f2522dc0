"""What ``--data`` names a video data set, and opening one split of it."""

from __future__ import annotations

import os
from pathlib import Path

from vqvae.data.errors import DataError
from vqvae.modalities.video.data.episodes import VIDEO_SPLITS, VideoSet
from vqvae.modalities.video.data.moving_mnist import (
    MOVING_MNIST_FRAMES,
    MOVING_MNIST_SEQUENCES,
    MovingMnist,
)
from vqvae.modalities.video.data.shards import EpisodeFolder, looks_like_collection

__all__ = ["is_video_spec", "open_video", "video_datasets"]

MOVING_MNIST = "moving-mnist"


def video_datasets() -> dict[str, str]:
    """Registered video data set names and a one-line description of each (for ``--help``)."""
    return {
        MOVING_MNIST: (
            f"two MNIST digits bouncing in 64x64 grey frames, {MOVING_MNIST_FRAMES} frames per sequence, "
            f"{MOVING_MNIST_SEQUENCES['train']:,} train / {MOVING_MNIST_SEQUENCES['val']:,} val sequences "
            "generated on the fly (MNIST from --data-dir, else mnist-mini: offline); or pass the folder "
            "of `vqvae collect doom` as --data"
        ),
    }


def is_video_spec(spec: str | os.PathLike, data_dir: str | os.PathLike | None = None) -> bool:
    """Whether ``--data spec`` is video: ``moving-mnist``, or a folder of ``vqvae collect doom``
    (one with its ``manifest.json``, or with shards whose manifest is lost, so that opening it
    can say what is wrong)."""
    name = os.fspath(spec)
    if name.lower() == MOVING_MNIST:
        return True
    path = Path(name).expanduser()
    return path.is_dir() and looks_like_collection(path)


def open_video(spec: str | os.PathLike, split: str, data_dir: str | os.PathLike | None = None) -> VideoSet:
    """Open one split of a video data set; its episodes are read when asked for.

    Args:
        spec: ``moving-mnist``, or a collection folder written by ``vqvae collect doom``.
        split: ``"train"`` or ``"val"`` (held-out sequences, or episodes whose index is a
            multiple of 10).
        data_dir: for ``moving-mnist``, a folder holding the MNIST IDX files.

    Raises:
        DataError: an unknown name or folder, a bad split, a missing or damaged collection.
    """
    if split not in VIDEO_SPLITS:
        raise DataError(f"unknown split {split!r} for video data: choose one of {', '.join(VIDEO_SPLITS)}")
    name = os.fspath(spec)
    if name.lower() == MOVING_MNIST:
        return MovingMnist(split, data_dir)
    path = Path(name).expanduser()
    if path.is_dir():
        return EpisodeFolder(path, split)
    raise DataError(
        f"unknown video data {name!r}: not {MOVING_MNIST!r} and no folder at {path.absolute()}; "
        "record one with `vqvae collect doom --out DIR` and pass --data DIR"
    )
