"""TensorBoard event files of a run: every logged record as scalars, a task's media as
image grids and audio (``vqvae train --tensorboard``; view with
``tensorboard --logdir RUN/tensorboard``).

:class:`TensorBoardObserver` is an :class:`~vqvae.train.Observer` of the training loop.
It writes through the standard ``torch.utils.tensorboard.SummaryWriter``, created on the
first record, so only the process that logs (rank 0) makes event files.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

__all__ = ["TENSORBOARD_DIR", "TensorBoardObserver"]

TENSORBOARD_DIR = "tensorboard"


class TensorBoardObserver:
    """Scalars of each record under ``SPLIT/KEY`` (``train/loss``, ``val/perplexity``) at its
    step, and each named medium of a task (image grids, audio clips: see
    :class:`~vqvae.train.Observer`) under its name.

    Args:
        run: the run directory; events go to ``RUN/tensorboard/NAME``.
        name: one sub-folder per model of the run, so that TensorBoard shows the tokenizer
            and each prior side by side (``tokenizer``, ``prior-transformer``).
        start_step: the step a resumed run continues from: events that an interrupted
            invocation wrote past it are hidden, as ``metrics.jsonl`` is cut back (0: a new run).
    """

    def __init__(self, run: str | os.PathLike, name: str = "tokenizer", start_step: int = 0) -> None:
        self.log_dir = Path(run) / TENSORBOARD_DIR / name
        self.start_step = start_step
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

            # events at steps after the checkpoint are hidden, those at its step kept, as in metrics.jsonl
            purge = self.start_step + 1 if self.start_step else None
            self._writer = SummaryWriter(str(self.log_dir), purge_step=purge)
        return self._writer

    def record(self, record: dict) -> None:
        """Every finite number of ``record`` but its step (strings and None are not scalars)."""
        step = int(record["step"])
        split = record.get("split", "train")
        for key, value in record.items():
            if key in ("step", "split") or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(f"{split}/{key}", value, step)

    def media(self, step: int, media: dict) -> None:
        for name, (kind, value) in media.items():
            if kind not in _MEDIA:
                raise ValueError(f"media {name!r} is of kind {kind!r}; an observer shows {sorted(_MEDIA)}")
            _MEDIA[kind](self.writer, name, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _add_images(writer, name: str, value, step: int) -> None:
    images = torch.as_tensor(value).detach().float().cpu().clamp(0, 1)  # (N, C, H, W)
    if images.dim() != 4:
        raise ValueError(f"media {name!r}: images must be (N, C, H, W), got shape {tuple(images.shape)}")
    writer.add_images(name, images, step, dataformats="NCHW")


def _add_audio(writer, name: str, value, step: int) -> None:
    wave, sample_rate = value
    wave = torch.as_tensor(wave).detach().float().cpu().flatten().clamp(-1, 1)  # (T,)
    writer.add_audio(name, wave, step, sample_rate=int(sample_rate))


_MEDIA = {"images": _add_images, "audio": _add_audio}  # the media kinds of vqvae.train.Observer
