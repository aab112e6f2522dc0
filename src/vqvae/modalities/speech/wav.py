"""Mono WAV files: read as float32 in ``[-1, 1]`` (resampled on request), written as 16-bit PCM.

:func:`read_wav` and :func:`write_wav` are the public pair; the loaders of
:mod:`vqvae.modalities.speech.data` decode files and archive members with
:func:`decode_wav` and store clips with :func:`to_pcm16`. soundfile (libsndfile) is
imported on first use, scipy's resampler too.

Shapes: T samples of one clip.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from vqvae.atomic import write_bytes

__all__ = [
    "PCM16_SCALE",
    "check_rate",
    "decode_wav",
    "read_wav",
    "resample",
    "to_pcm16",
    "write_wav",
]

PCM16_SCALE = 32768.0  # soundfile reads 16-bit PCM as int / 2**15: the exact inverse
_WAV_FORMATS = frozenset({"WAV", "WAVEX", "RF64"})
_MIN_RATE, _MAX_RATE = 1_000, 768_000  # samples per second a recording may have


def read_wav(
    path: str | os.PathLike[str], sample_rate: int | None = None
) -> tuple[torch.Tensor, int]:
    """Read a mono WAV file.

    Args:
        path: the ``.wav`` file (any PCM or float encoding libsndfile reads).
        sample_rate: resample to this rate (polyphase filter, ``up / down`` reduced by
            their gcd) when the file's differs; ``None`` keeps the file's rate.

    Returns:
        ``(waveform, rate)``: float32 ``(T,)`` clipped to ``[-1, 1]``, and its rate.

    Raises:
        FileNotFoundError: when ``path`` does not exist.
        ValueError: when the file is a folder, not a readable WAV file, has more than
            one channel, or holds no samples.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"WAV file {path} does not exist; check the path")
    if not path.is_file():
        raise ValueError(f"{path} is a folder, not a WAV file; pass the path of one .wav file")
    if sample_rate is not None:
        check_rate(sample_rate)
    samples, rate = decode_wav(path, str(path))
    if sample_rate is not None and sample_rate != rate:
        samples, rate = resample(samples, rate, sample_rate), sample_rate
    return torch.from_numpy(samples), rate


def write_wav(path: str | os.PathLike[str], waveform: torch.Tensor, sample_rate: int) -> None:
    """Write a mono waveform as a 16-bit PCM WAV file, atomically.

    The samples go to a temporary file in the destination folder, which is then renamed
    onto ``path``: a crash never leaves a truncated file under the final name. Missing
    parent folders are created.

    Args:
        path: the file to create or replace.
        waveform: float ``(T,)`` or ``(1, T)``; values outside ``[-1, 1]`` are clipped.
        sample_rate: samples per second.

    Raises:
        TypeError: when ``waveform`` is not a floating-point tensor.
        ValueError: for another shape, an empty or non-finite waveform, or a bad rate.
    """
    check_rate(sample_rate)
    wave = torch.as_tensor(waveform).detach().cpu()
    if not wave.is_floating_point():
        raise TypeError(f"waveform must be a float tensor in [-1, 1], got {wave.dtype}")
    if wave.ndim == 2 and wave.shape[0] == 1:
        wave = wave[0]
    if wave.ndim != 1 or wave.numel() == 0:
        raise ValueError(
            f"waveform must be a non-empty mono (T,) or (1, T) tensor, got shape "
            f"{tuple(waveform.shape)}; write one channel per file"
        )
    if not torch.isfinite(wave).all():
        raise ValueError("waveform holds NaN or infinite values; it cannot be written as PCM")
    pcm = to_pcm16(wave.numpy().astype(np.float64))
    buffer = io.BytesIO()  # encoded in memory: a full disk then raises DiskFullError with the size
    _soundfile().write(buffer, pcm, sample_rate, format="WAV", subtype="PCM_16")
    write_bytes(Path(path).expanduser(), buffer.getvalue())


def _soundfile() -> Any:
    # Imported on first use, so image-only users of vqvae.data need neither soundfile
    # nor its libsndfile.
    try:
        import soundfile
    except (ImportError, OSError) as err:
        raise ImportError(
            f"reading and writing WAV files needs the soundfile package ({err}); "
            "install it with `pip install soundfile`"
        ) from err
    return soundfile


def decode_wav(file: Path | BinaryIO, where: str) -> tuple[np.ndarray, int]:
    """Decode a mono WAV file (a path or an open binary file) at its own rate.

    Args:
        file: the file, or its bytes as a binary stream (an archive member).
        where: how messages name the file (a path, or a member and its archive).

    Returns:
        ``(samples, rate)``: float32 ``(T,)`` clipped to ``[-1, 1]``, and the file's rate.

    Raises:
        ValueError: naming ``where`` and the fix, when the file is not a readable WAV
            file, has more than one channel, holds no samples, or declares a sample rate
            outside 1-768 kHz.
    """
    sf = _soundfile()
    try:
        with sf.SoundFile(file) as wav:
            if wav.format not in _WAV_FORMATS:
                raise ValueError(
                    f"{where} is not a readable WAV file (it is {wav.format_info}); convert it "
                    "to WAV, e.g. `sox in.flac out.wav`"
                )
            if wav.channels != 1:
                raise ValueError(
                    f"{where} has {wav.channels} channels but mono (1 channel) is required; "
                    "downmix it first, e.g. `sox in.wav -c 1 out.wav`"
                )
            rate = wav.samplerate
            if not _MIN_RATE <= rate <= _MAX_RATE:  # resampling from an absurd rate needs absurd memory
                raise ValueError(
                    f"{where} declares a sample rate of {rate:,} Hz; audio files have "
                    f"{_MIN_RATE:,}-{_MAX_RATE:,} Hz: the file is corrupt, replace it"
                )
            samples = wav.read(dtype="float32", always_2d=True)[:, 0]
    except (sf.SoundFileError, RuntimeError) as err:
        raise ValueError(f"{where} is not a readable WAV file ({err})") from err
    if samples.size == 0:
        raise ValueError(f"{where} is empty (0 samples); remove it or replace it with a recording")
    return np.clip(samples, -1.0, 1.0), rate  # float WAVs may overshoot full scale


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Resample float ``(T,)`` from ``rate`` to ``target`` with a polyphase filter.

    Returns:
        float32 ``(ceil(T * target / rate),)`` clipped to ``[-1, 1]``.
    """
    from scipy.signal import resample_poly  # imported on first use: scipy.signal loads slowly

    g = math.gcd(rate, target)
    out = resample_poly(samples, target // g, rate // g)  # (ceil(T * target / rate),)
    return np.clip(out, -1.0, 1.0).astype(np.float32)  # the filter's ringing may overshoot


def to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples in ``[-1, 1]`` as int16 PCM: ``PCM16_SCALE`` times them, rounded, clipped."""
    return np.clip(np.round(samples * PCM16_SCALE), -32768, 32767).astype(np.int16)


def check_rate(rate: object) -> None:
    """Raise ValueError naming ``rate`` unless it is a positive int (not a bool)."""
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise ValueError(
            f"sample rate must be a positive integer (samples per second), got {rate!r}"
        )
