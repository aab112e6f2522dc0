"""Classifiers trained on real speech, to judge reconstructed, converted and sampled speech.

The speech experiment of the VQ-VAE paper (§4.3) asks whether a decoded clip still says
the same word and sounds like the same speaker. On the Free Spoken Digit Dataset that is
two classifiers of real recordings: a *digit* classifier (10 classes) and a *speaker*
classifier (6 classes). Both are the same :class:`AudioClassifier`, a small 1-D CNN on
log-mel features that masks the zero padding of a batch, so that a clip gets the same
logits alone or beside a longer one.

A classifier is trained once and cached in a folder of its own (``config.json`` +
``model.safetensors``, see :func:`cached_audio_classifier`), like the image classifier of
:mod:`vqvae.modalities.image.judge`, whose :func:`~vqvae.modalities.image.judge.frechet_distance` also applies
to :func:`audio_features`.

Shapes: B batch, T samples, M mel bins, L frames, C channels, N clips, F feature width.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.checkpoint import (
    CONFIG_FILE,
    load_judge,
    read_judge_config,
    save_judge,
)
from vqvae.modalities.speech.mel import log_mel, mel_filterbank

__all__ = [
    "AudioClassifier",
    "audio_accuracy",
    "audio_features",
    "cached_audio_classifier",
    "load_audio_classifier",
    "log_mel",
    "pad_batch",
    "predict_audio",
    "save_audio_classifier",
    "train_audio_classifier",
]

KIND = "audio-classifier"
MAX_SHIFT = 0.1  # seconds of random shift or crop at each end during training
MAX_GAIN_DB = 6.0  # random gain in [-6, +6] dB during training
SNR_DB = (15.0, 45.0)  # range of the signal-to-noise ratio of the added white noise
LOWPASS_P = 0.5  # probability of a random low-pass during training ...
LOWPASS_HZ = (1500.0, 3500.0)  # ... with a cut-off frequency in this range
BUCKET_BATCHES = 16  # batches drawn together and sorted by length, see _batches


def _stft_sizes(sample_rate: int) -> tuple[int, int]:
    """``(n_fft, hop)``: a 10 ms hop and the power of two nearest to a 32 ms window."""
    hop = max(1, round(sample_rate / 100))
    return 2 ** round(math.log2(0.032 * sample_rate)), hop


def pad_batch(waveforms: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """Zero-pad clips of different lengths into one batch.

    Args:
        waveforms: ``B`` float clips, each ``(T_i,)`` (or ``(1, T_i)``).

    Returns:
        ``(batch, lengths)``: float32 ``(B, 1, max T_i)`` with zeros after each clip, and
        int64 ``(B,)`` valid samples per clip, for :meth:`AudioClassifier.forward`.
    """
    clips = _check_waveforms(waveforms)
    lengths = torch.tensor([c.shape[0] for c in clips], dtype=torch.int64)
    batch = clips[0].new_zeros(len(clips), 1, int(lengths.max()), dtype=torch.float32)
    for i, clip in enumerate(clips):
        batch[i, 0, : clip.shape[0]] = clip
    return batch, lengths


def _check_waveforms(waveforms: Sequence[Tensor]) -> list[Tensor]:
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
        train_settings: how it was trained (filled by :func:`train_audio_classifier`,
            kept by save/load); ``{}`` for an untrained model.
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


# ---------------------------------------------------------------------- training


def _check_labels(labels: Tensor, n: int, num_classes: int) -> None:
    if not isinstance(labels, Tensor) or labels.dtype != torch.int64 or tuple(labels.shape) != (n,):
        got = (
            f"{labels.dtype} {tuple(labels.shape)}" if isinstance(labels, Tensor) else type(labels)
        )
        raise ValueError(f"labels must be int64 (N,) = ({n},), one per clip, got {got}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels span {int(labels.min())}..{int(labels.max())}, outside "
            f"0..{num_classes - 1} for num_classes={num_classes}"
        )


def _batches(lengths: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless mini-batches of indices, each of clips of similar length.

    Every epoch is a fresh permutation; each run of ``BUCKET_BATCHES`` batches of it is
    sorted by length before it is cut into batches, and the batches are shuffled. Random
    batches would pad every clip to the longest of 64 (about 2 s for 0.45 s clips);
    buckets cut the padding, and with it the training time, several-fold.
    """
    n = lengths.shape[0]
    span = batch_size * BUCKET_BATCHES
    while True:
        order = torch.randperm(n, generator=generator)
        batches = []
        for start in range(0, n, span):
            chunk = order[start : start + span]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        # the short leftover of an epoch would be a noisy step; BatchNorm needs >= 2 clips
        batches = [b for b in batches if len(b) == batch_size]
        for i in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[i]


def _lowpass(x: Tensor, cutoff: Tensor, sample_rate: int) -> Tensor:
    """Zero-phase low-pass of ``(B, T)`` clips with an 8th-order Butterworth magnitude
    response at ``cutoff`` Hz ``(B,)``; the FFT is zero-padded to a power of two (fast,
    and the filter's ringing fades in the padding instead of wrapping around)."""
    T = x.shape[-1]
    n = 2 ** math.ceil(math.log2(T + sample_rate // 100))
    freqs = torch.fft.rfftfreq(n, 1.0 / sample_rate, device=x.device)  # (n // 2 + 1,)
    response = torch.rsqrt(1.0 + (freqs / cutoff[:, None]) ** 16)  # (B, n // 2 + 1)
    return torch.fft.irfft(torch.fft.rfft(x, n=n) * response, n=n)[:, :T]


def _augment(
    clips: Sequence[Tensor], sample_rate: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """A padded training batch ``((B, 1, T), lengths (B,))`` of randomly altered clips.

    Each clip gets a random shift or crop at both ends, white noise, a low-pass half of
    the time, and a gain.
    """
    B = len(clips)
    u = torch.rand(B, 6, generator=generator)  # (B, 6) uniform draws, one column per use
    max_shift = round(MAX_SHIFT * sample_rate)
    shifted = []
    for clip, (start, end) in zip(clips, (2.0 * u[:, :2] - 1.0).tolist(), strict=True):
        # each end: either up to MAX_SHIFT s of silence added, or up to 10 % of the clip cut
        cut = min(max_shift, clip.shape[0] // 10)
        ends = [round(v * max_shift) if v >= 0 else -round(-v * cut) for v in (start, end)]
        shifted.append(F.pad(clip, ends))  # negative padding crops
    x, lengths = pad_batch(shifted)  # (B, 1, T), (B,)
    x = x[:, 0]  # (B, T)
    valid = torch.arange(x.shape[1]) < lengths[:, None]  # (B, T)
    snr_db = SNR_DB[0] + u[:, 2] * (SNR_DB[1] - SNR_DB[0])  # (B,)
    rms = (x.square().sum(dim=1) / lengths).sqrt()  # (B,)
    noise = torch.randn(x.shape, generator=generator) * valid  # (B, T)
    x = x + noise * (rms * 10.0 ** (-snr_db / 20.0))[:, None]
    low = u[:, 3] < LOWPASS_P  # (B,)
    if low.any():
        # Decoders tend to lose the top band first; without this the digit classifier
        # leans on fricatives ("six", "seven") and fails on muffled but clear speech.
        cutoff = LOWPASS_HZ[0] + u[low, 4] * (LOWPASS_HZ[1] - LOWPASS_HZ[0])
        x[low] = _lowpass(x[low], cutoff, sample_rate) * valid[low]
    gain = 10.0 ** ((2.0 * u[:, 5] - 1.0) * MAX_GAIN_DB / 20.0)  # (B,)
    return (x * gain[:, None])[:, None], lengths


def _fingerprint(clips: Sequence[Tensor], labels: Tensor, sample_rate: int) -> str:
    """SHA-256 of the training set, so a cache never serves a classifier of other data."""
    digest = hashlib.sha256()
    digest.update(f"{sample_rate} {len(clips)} {tuple(labels.shape)}".encode())
    for clip in clips:
        digest.update(str(clip.shape[0]).encode())
        digest.update(clip.detach().float().cpu().contiguous().numpy().tobytes())
    digest.update(labels.cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def train_audio_classifier(
    waveforms: Sequence[Tensor],
    labels: Tensor,
    num_classes: int,
    *,
    sample_rate: int = 8000,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    time_budget: float | None = None,
    device: str | torch.device = "cpu",
    width: int = 64,
) -> AudioClassifier:
    """Train an :class:`AudioClassifier` on real recordings with Adam and a cosine lr.

    Each step draws a batch of clips of similar length (see :func:`_batches`), augments
    every clip -- a random shift or crop of up to 0.1 s at each end, white noise 15-45 dB
    below the clip, half of the time a low-pass at 1.5-3.5 kHz, and a gain of ±6 dB -- so
    that the classifier still recognises the content of degraded (reconstructed, vocoded,
    muffled) audio, pads them and takes one cross-entropy step. On the CPU, with a fixed number of threads, the result depends
    only on the arguments (``seed`` fixes the initial weights, batches and augmentation;
    the global RNG is left untouched) unless ``time_budget`` stops training early.

    Args:
        waveforms: ``N`` float clips ``(T_i,)`` at ``sample_rate``.
        labels: int64 ``(N,)`` labels in ``[0, num_classes)`` (digits or speakers).
        num_classes: number of classes.
        sample_rate: Hz of the clips.
        steps: optimizer steps (the learning rate decays to 0 over them).
        batch_size: clips per step (at most N).
        lr: peak Adam learning rate.
        seed: seed of everything random in training.
        time_budget: stop after this many seconds even if fewer than ``steps`` ran.
        device: where to train; the model is returned there.
        width: network size, see :class:`AudioClassifier`.

    Returns:
        The classifier in eval mode, with ``train_settings`` recording the arguments,
        the steps actually run, the seconds taken and a fingerprint of the data.
    """
    clips = [c.detach().float().cpu() for c in _check_waveforms(waveforms)]
    _check_labels(labels, len(clips), num_classes)
    if steps < 1 or batch_size < 2 or len(clips) < 2:
        raise ValueError(
            f"need steps >= 1, batch_size >= 2 and at least 2 clips (BatchNorm), got "
            f"steps={steps}, batch_size={batch_size}, {len(clips)} clips"
        )
    batch_size = min(batch_size, len(clips))
    lengths = torch.tensor([c.shape[0] for c in clips])
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AudioClassifier(num_classes, sample_rate, width=width)
    model.to(device).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )

    start = time.monotonic()
    batches = _batches(lengths, batch_size, generator)
    step, loss = 0, None
    while step < steps:
        if time_budget is not None and time.monotonic() - start >= time_budget:
            break
        # 1. batch + augmentation  2. forward/backward  3. optimizer and lr schedule
        index = next(batches)
        x, x_lengths = _augment([clips[i] for i in index], sample_rate, generator)
        logits = model(x.to(device), x_lengths.to(device))  # (B, num_classes)
        batch_loss = F.cross_entropy(logits, labels[index].to(device))
        optimizer.zero_grad(set_to_none=True)
        batch_loss.backward()
        optimizer.step()
        schedule.step()
        step += 1
        loss = float(batch_loss.detach())

    model.train_settings = {
        "steps": steps,
        "steps_run": step,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "time_budget": time_budget,
        "seconds": round(time.monotonic() - start, 3),
        "final_loss": loss,
        "train_clips": len(clips),
        "data_sha256": _fingerprint(clips, labels, sample_rate),
    }
    return model.eval()


# --------------------------------------------------------------------- inference


def _in_length_order(
    model: AudioClassifier,
    waveforms: Sequence[Tensor],
    batch_size: int,
    device: str | torch.device,
    output,
) -> Tensor:
    """``output(model, batch, lengths)`` for every clip, run in batches of similar length
    (less padding) and returned in input order: ``(N, ...)`` on the CPU."""
    clips = _check_waveforms(waveforms)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    model.eval()
    order = torch.argsort(torch.tensor([c.shape[0] for c in clips]), stable=True)
    results = []
    for start in range(0, len(clips), batch_size):
        x, lengths = pad_batch([clips[i] for i in order[start : start + batch_size]])
        results.append(output(model, x.to(device), lengths.to(device)).cpu())
    sorted_results = torch.cat(results)  # (N, ...) in length order
    out = torch.empty_like(sorted_results)
    out[order] = sorted_results
    return out


@torch.no_grad()
def predict_audio(
    model: AudioClassifier,
    waveforms: Sequence[Tensor],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Predicted labels of float clips ``(T_i,)``, int64 ``(N,)`` on the CPU, input order.

    The model is put in eval mode and must already be on ``device``.
    """
    return _in_length_order(
        model, waveforms, batch_size, device, lambda m, x, lengths: m(x, lengths).argmax(dim=1)
    )


@torch.no_grad()
def audio_features(
    model: AudioClassifier,
    waveforms: Sequence[Tensor],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Pooled features (:meth:`AudioClassifier.features`) of float clips, float64 ``(N, F)``
    on the CPU in input order, e.g. for :func:`vqvae.modalities.image.judge.frechet_distance`."""
    return _in_length_order(
        model, waveforms, batch_size, device, lambda m, x, lengths: m.features(x, lengths).double()
    )


def audio_accuracy(
    model: AudioClassifier, waveforms: Sequence[Tensor], labels: Tensor, **predict_kwargs
) -> float:
    """Fraction of clips whose predicted label equals ``labels`` (int64 ``(N,)``)."""
    if tuple(labels.shape) != (len(waveforms),):
        raise ValueError(
            f"need one label per clip: {len(waveforms)} clips, labels {tuple(labels.shape)}"
        )
    predicted = predict_audio(model, waveforms, **predict_kwargs)
    return float((predicted == labels.cpu()).double().mean())


# -------------------------------------------------------------------- save / load


def save_audio_classifier(
    model: AudioClassifier, folder: str | os.PathLike, *, val_accuracy: float | None = None
) -> None:
    """Write ``config.json`` and ``model.safetensors`` to ``folder``, each atomically.

    Give each classifier a folder of its own (e.g. ``RUN/digit-classifier`` and
    ``RUN/speaker-classifier``): a run directory's ``config.json`` is the model's.
    """
    save_judge(folder, KIND, model, val_accuracy)


def load_audio_classifier(
    folder: str | os.PathLike, device: str | torch.device = "cpu"
) -> AudioClassifier:
    """Rebuild a classifier saved by :func:`save_audio_classifier`, in eval mode on ``device``."""
    return load_judge(folder, KIND, AudioClassifier, device)


def cached_audio_classifier(
    folder: str | os.PathLike,
    waveforms: Sequence[Tensor],
    labels: Tensor,
    num_classes: int,
    val_waveforms: Sequence[Tensor] | None = None,
    val_labels: Tensor | None = None,
    **train_kwargs,
) -> tuple[AudioClassifier, dict]:
    """The classifier saved in ``folder`` if it fits this data, else a freshly trained one.

    A saved classifier is reused when its class count and sample rate (and ``width``
    when given) and the fingerprint of its training clips and labels match; otherwise
    one is trained with :func:`train_audio_classifier` (``train_kwargs`` go there),
    scored on the validation clips if given, and saved to ``folder``, replacing the old
    one. A corrupt saved classifier raises :class:`~vqvae.checkpoint.CheckpointError`.

    Returns:
        ``(model, info)``, ``info = {"val_accuracy": float | None, "trained": bool}``;
        ``val_accuracy`` is measured now when validation clips are given, else the
        saved value.
    """
    folder = Path(folder)
    clips = _check_waveforms(waveforms)
    _check_labels(labels, len(clips), num_classes)
    if (val_waveforms is None) != (val_labels is None):
        raise ValueError("give both val_waveforms and val_labels, or neither")
    sample_rate = int(train_kwargs.get("sample_rate", 8000))
    wanted = {"num_classes": int(num_classes), "sample_rate": sample_rate}
    if "width" in train_kwargs:
        wanted["width"] = int(train_kwargs["width"])
    device = train_kwargs.get("device", "cpu")

    def score(model: AudioClassifier) -> float:
        return audio_accuracy(model, val_waveforms, val_labels, device=device)

    if (folder / CONFIG_FILE).is_file():
        config = read_judge_config(folder, KIND)
        saved = config.get("model") or {}
        fits = all(saved.get(k) == v for k, v in wanted.items()) and (
            (config.get("training") or {}).get("data_sha256")
            == _fingerprint(clips, labels, sample_rate)
        )
        if fits:
            model = load_audio_classifier(folder, device)
            val_accuracy = config.get("val_accuracy")
            if val_waveforms is not None:
                val_accuracy = score(model)
            return model, {"val_accuracy": val_accuracy, "trained": False}

    model = train_audio_classifier(clips, labels, num_classes, **train_kwargs)
    val_accuracy = score(model) if val_waveforms is not None else None
    save_audio_classifier(model, folder, val_accuracy=val_accuracy)
    return model, {"val_accuracy": val_accuracy, "trained": True}
