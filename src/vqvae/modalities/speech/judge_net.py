"""The speech judges' network: a small 1-D CNN over log-mel frames that masks padding.

:class:`AudioClassifier` takes a zero-padded batch and each clip's length
(:func:`pad_batch`), so that a clip gets the same logits alone or beside a longer one.
Training, prediction and the cache live in :mod:`vqvae.modalities.speech.judge`.

Shapes: B batch, T samples, M mel bins, L frames, C channels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.modalities.speech.mel import log_mel, mel_filterbank

__all__ = ["AudioClassifier", "check_waveforms", "pad_batch"]


# ---------------------------------------------------------------- padded batches


def pad_batch(waveforms: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Zero-pad clips of different lengths into one batch.

    Args:
        waveforms: ``B`` float clips, each ``(T_i,)`` (or ``(1, T_i)``).

    Returns:
        ``(batch, lengths)``: float32 ``(B, 1, max T_i)`` with zeros after each clip, and
        int64 ``(B,)`` valid samples per clip, for :meth:`AudioClassifier.forward`.
    """
    clips = check_waveforms(waveforms)
    lengths = torch.tensor([c.shape[0] for c in clips], dtype=torch.int64)
    batch = clips[0].new_zeros(len(clips), 1, int(lengths.max()), dtype=torch.float32)
    for i, clip in enumerate(clips):
        batch[i, 0, : clip.shape[0]] = clip
    return batch, lengths


def check_waveforms(waveforms: Sequence[Tensor]) -> list[Tensor]:
    """The clips as 1-D tensors, or an error naming the first bad one."""
    if isinstance(waveforms, Tensor):
        raise TypeError(
            f"waveforms must be a sequence of (T,) tensors, got one tensor of shape "
            f"{tuple(waveforms.shape)}: pass list(batch[:, 0]) for a padded (B, 1, T) batch"
        )
    clips = list(waveforms)
    if not clips:
        raise ValueError("no waveforms: the set is empty")
    for i, clip in enumerate(clips):
        if not isinstance(clip, Tensor) or not clip.is_floating_point():
            got = clip.dtype if isinstance(clip, Tensor) else type(clip).__name__
            raise TypeError(f"waveform {i} must be a float tensor, got {got}")
        if clip.ndim == 2 and clip.shape[0] == 1:
            clips[i] = clip = clip[0]
        if clip.ndim != 1 or clip.shape[0] == 0:
            raise ValueError(
                f"waveform {i} must be a non-empty (T,) or (1, T) clip, got shape "
                f"{tuple(clip.shape)}"
            )
    return clips


# ------------------------------------------------------------------------- model


def _stft_sizes(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)``: a 10 ms hop and the power of two nearest to a 32 ms window."""
    hop = max(1, round(sample_rate / 100))
    return 2 ** round(math.log2(0.032 * sample_rate)), hop


class _MaskedBatchNorm(nn.BatchNorm1d):
    """BatchNorm whose training statistics ignore the padding frames of a batch."""

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:  # x (B, C, L), mask (B, L) bool
        if not self.training:
            return super().forward(x)
        rows = x.transpose(1, 2)[mask]  # (valid frames, C)
        out = x.new_zeros(x.shape[0], x.shape[2], x.shape[1])  # (B, L, C)
        out[mask] = F.batch_norm(
            rows,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            True,
            self.momentum,
            self.eps,
        )
        self.num_batches_tracked += 1
        return out.transpose(1, 2)  # (B, C, L)


class _Block(nn.Module):
    """Conv1d over time → masked BatchNorm → ReLU, padding frames zeroed, optional 2× pool."""

    def __init__(self, c_in: int, c_out: int, kernel: int, pool: bool) -> None:
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.norm = _MaskedBatchNorm(c_out)
        self.pool = pool

    def forward(self, h: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        # Padding frames enter every convolution as zeros, exactly like the convolution's
        # own zero padding, so a clip's frames never see how much padding follows them.
        h = F.relu(self.norm(self.conv(h), mask)) * mask[:, None]  # (B, C, L)
        if self.pool:
            # A pooled frame is valid when either input frame is; its max is then that
            # frame's value (ReLU output >= 0 = padding), whatever the padding length.
            h = F.max_pool1d(h, 2, ceil_mode=True)  # (B, C, ceil(L / 2))
            mask = F.max_pool1d(mask[:, None].float(), 2, ceil_mode=True)[:, 0].bool()
        return h, mask


class AudioClassifier(nn.Module):
    """Small 1-D CNN over log-mel frames, for clips of any length.

    :func:`log_mel` features (10 ms hop, ~32 ms window) with the clip's mean log power
    removed, so the loudness of a recording does not matter; four blocks of Conv1d over
    time (mel bins as channels) → BatchNorm → ReLU with ``width``, ``width``, ``2 width``,
    ``2 width`` channels and a 2× max-pool after the first three (receptive field about
    0.4 s, the length of a spoken digit); then the average and the maximum over the
    clip's frames, concatenated (:meth:`features`), and a linear layer to the logits.
    Frames past a clip's ``length`` are masked everywhere, including the BatchNorm
    statistics in training.

    Args:
        num_classes: number of labels (at least 2).
        sample_rate: Hz of the waveforms it will see; the STFT uses a 10 ms hop and the
            power-of-two window nearest to 32 ms (256 samples at 8 kHz).
        n_mels: mel bins M.
        width: channels of the first block.

    Attributes:
        config: the arguments above as a JSON-able dict; ``AudioClassifier(**config)``
            rebuilds the network.
        train_settings: how it was trained (filled by
            :func:`~vqvae.modalities.speech.judge.train_audio_classifier`, kept by
            save/load); ``{}`` for an untrained model.
    """

    def __init__(
        self, num_classes: int, sample_rate: int = 8000, n_mels: int = 40, width: int = 64
    ) -> None:
        super().__init__()
        for name, value, least in (
            ("num_classes", num_classes, 2),
            ("sample_rate", sample_rate, 1),
            ("n_mels", n_mels, 1),
            ("width", width, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        num_classes, sample_rate, n_mels, width = map(
            int, (num_classes, sample_rate, n_mels, width)
        )
        self.n_fft, self.hop = _stft_sizes(sample_rate)
        mel_filterbank(sample_rate, self.n_fft, n_mels)  # fails early when n_mels is too many
        self.config = {
            "num_classes": num_classes,
            "sample_rate": sample_rate,
            "n_mels": n_mels,
            "width": width,
        }
        self.train_settings: dict = {}
        channels = [n_mels, width, width, 2 * width, 2 * width]
        self.blocks = nn.ModuleList(
            _Block(c_in, c_out, 5 if i == 0 else 3, pool=i < 3)
            for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:], strict=True))
        )
        self.head = nn.Linear(2 * channels[-1], num_classes)

    @property
    def feature_dim(self) -> int:
        return self.head.in_features

    def _frames(self, waveforms: Tensor, lengths: Tensor | None) -> tuple[Tensor, Tensor]:
        """Normalised log-mel frames ``(B, M, L)`` and their validity mask ``(B, L)``."""
        if waveforms.ndim == 2:
            waveforms = waveforms[:, None]
        if waveforms.ndim != 3 or waveforms.shape[1] != 1 or waveforms.shape[2] == 0:
            raise ValueError(
                f"waveforms must be (B, 1, T) or (B, T) with T >= 1, got {tuple(waveforms.shape)}"
            )
        B, _, T = waveforms.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.int64)
        lengths = torch.as_tensor(lengths, device=waveforms.device)
        if (
            tuple(lengths.shape) != (B,)
            or lengths.is_floating_point()
            or lengths.min() < 1
            or lengths.max() > T
        ):
            raise ValueError(
                f"lengths must be integer (B,) = ({B},) valid sample counts in 1..{T}, got "
                f"{lengths.tolist() if lengths.numel() <= 8 else tuple(lengths.shape)}"
            )
        c = self.config
        x = log_mel(waveforms, c["sample_rate"], self.n_fft, self.hop, c["n_mels"])  # (B, M, L)
        # frame l is centred on sample l * hop: valid while that sample is in the clip
        valid = torch.div(lengths + self.hop - 1, self.hop, rounding_mode="floor")  # (B,)
        mask = torch.arange(x.shape[2], device=x.device) < valid[:, None]  # (B, L)
        # Subtracting the clip's mean log power makes the features blind to its gain.
        mean = (x * mask[:, None]).sum(dim=(1, 2)) / (valid * x.shape[1])  # (B,)
        return (x - mean[:, None, None]) * mask[:, None], mask

    def features(self, waveforms: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Average and max over the clip's frames of the last block: ``(B, F)``.

        Args:
            waveforms: ``(B, 1, T)`` (or ``(B, T)``) float samples at ``sample_rate``.
            lengths: int64 ``(B,)`` valid samples per clip; ``None``: all ``T``.

        Returns:
            ``(B, F)`` with ``F = 4 width`` (average, then max).
        """
        h, mask = self._frames(waveforms, lengths)
        for block in self.blocks:
            h, mask = block(h, mask)  # (B, C, L'), (B, L')
        count = mask.sum(dim=1, keepdim=True)  # (B, 1)
        average = h.sum(dim=2) / count  # (B, C): padding frames are zero
        peak = h.masked_fill(~mask[:, None], float("-inf")).amax(dim=2)  # (B, C)
        return torch.cat([average, peak], dim=1)  # (B, F)

    def forward(self, waveforms: Tensor, lengths: Tensor | None = None) -> Tensor:
        """Class logits ``(B, num_classes)`` of ``(B, 1, T)`` clips, see :meth:`features`."""
        return self.head(self.features(waveforms, lengths))
