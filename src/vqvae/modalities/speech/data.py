"""Speech data for the 1-D VQ-VAE (van den Oord et al. 2017, §4.3): audio sets as :class:`AudioData`.

:func:`load_audio` loads one split of a data set into memory. ``spec`` is a registered
name (:func:`audio_datasets`: ``"fsdd"``, see :mod:`vqvae.modalities.speech.fsdd`) or a
path to a folder of ``.wav`` files or a ``.tar`` / ``.tar.gz`` / ``.tgz`` of one (laid out
as :mod:`vqvae.modalities.speech.layout` describes: split folders, speaker folders and a
fixed validation split carved from train).

Every clip is resampled to one rate, :data:`DEFAULT_SAMPLE_RATE` unless asked
otherwise, and stored as 16-bit samples; decoded splits are cached
(:mod:`vqvae.modalities.speech.source`). WAV files themselves are read and written by
:mod:`vqvae.modalities.speech.wav`, whose :func:`read_wav` and :func:`write_wav` this
module re-exports.

Shapes: N clips, T samples of one clip, B batch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from vqvae.data.errors import DataError
from vqvae.data.files import is_archive, open_tree
from vqvae.data.source import SPLITS
from vqvae.modalities.image.data.folder import IMAGE_EXTENSIONS
from vqvae.modalities.speech.fsdd import FSDD_DESCRIPTION, FSDD_URLS, fsdd_layout, fsdd_tree
from vqvae.modalities.speech.layout import WAV_KIND, folder_layout, wav_files
from vqvae.modalities.speech.source import WavSource
from vqvae.modalities.speech.wav import PCM16_SCALE, check_rate, read_wav, write_wav

__all__ = [
    "DEFAULT_SAMPLE_RATE",
    "FSDD_URLS",  # to read: the download looks it up in speech.fsdd, so patch it there
    "AudioData",
    "audio_datasets",
    "available_audio_splits",
    "is_audio",
    "load_audio",
    "read_wav",
    "write_wav",
]

DEFAULT_SAMPLE_RATE = 8000


# --- the in-memory data set ---------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class AudioData:
    """One split of an audio data set, held in memory.

    Attributes:
        waveforms: one float32 ``(T_i,)`` clip in ``[-1, 1]`` per item, at ``sample_rate``.
        labels: int64 ``(N,)`` class indices (the spoken digit for fsdd), or ``None``.
        speakers: int64 ``(N,)`` indices into ``speaker_names``, or ``None``.
        classes: label names, ``classes[label]``; ``()`` without labels.
        speaker_names: sorted speaker names; ``()`` without speakers.
        names: each clip's file name (its path below the split folder for generic folders).
        sample_rate: samples per second of every clip.
        source: human-readable origin, e.g. ``"fsdd (WAV archive /x/y.tar.gz)"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
    """

    waveforms: tuple[torch.Tensor, ...]
    labels: torch.Tensor | None
    speakers: torch.Tensor | None
    classes: tuple[str, ...]
    speaker_names: tuple[str, ...]
    names: tuple[str, ...]
    sample_rate: int
    source: str
    split: str
    _lengths: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.waveforms)
        if n == 0 or len(self.names) != n:
            raise DataError(
                f"need one name per clip and at least one clip, got {n} clips and "
                f"{len(self.names)} names"
            )
        for name, wave in zip(self.names, self.waveforms, strict=True):
            if wave.dtype != torch.float32 or wave.ndim != 1 or wave.numel() == 0:
                raise DataError(
                    f"clip {name!r} must be a non-empty float32 (T,) tensor, "
                    f"got {wave.dtype} {tuple(wave.shape)}"
                )
        _check_indices_field("labels", self.labels, self.classes, n)
        _check_indices_field("speakers", self.speakers, self.speaker_names, n)
        check_rate(self.sample_rate)
        if self.split not in SPLITS:
            raise DataError(f"split {self.split!r} is not one of {', '.join(SPLITS)}")
        lengths = torch.tensor([w.shape[0] for w in self.waveforms], dtype=torch.int64)
        object.__setattr__(self, "_lengths", lengths)  # frozen: set once, here

    def __len__(self) -> int:
        return len(self.waveforms)

    def __repr__(self) -> str:
        seconds = float(self._lengths.sum()) / self.sample_rate
        return (
            f"AudioData(split={self.split!r}, clips={len(self)}, seconds={seconds:.1f}, "
            f"sample_rate={self.sample_rate}, source={self.source!r})"
        )

    def lengths(self) -> torch.Tensor:
        """Samples per clip: int64 ``(N,)``."""
        return self._lengths.clone()

    def crops(self, indices: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
        """A batch of fixed-length windows, one from each chosen clip.

        A clip longer than ``length`` gives a window at a uniform random offset; a
        shorter one is placed at a uniform random offset inside zeros. One uniform draw
        from ``generator`` per row, so the batch depends only on the generator's state.

        Args:
            indices: int64 ``(B,)`` clip indices.
            length: samples per window.
            generator: a CPU generator for the offsets.

        Returns:
            float32 ``(B, 1, length)``.
        """
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive number of samples, got {length!r}")
        index = torch.as_tensor(indices)
        if index.ndim != 1 or index.dtype not in (torch.int32, torch.int64):
            raise ValueError(
                f"indices must be a 1-D integer tensor, got {index.dtype} {tuple(index.shape)}"
            )
        if index.numel() and (index.min() < 0 or index.max() >= len(self)):
            raise ValueError(
                f"indices must lie in 0..{len(self) - 1}, got "
                f"{int(index.min())}..{int(index.max())}"
            )
        lengths = self._lengths[index]  # (B,)
        span = (lengths - length).abs()  # room to slide the window (long clip) or the clip (short)
        draws = torch.rand(index.shape[0], generator=generator, dtype=torch.float64)
        offsets = torch.minimum((draws * (span + 1)).long(), span)  # uniform over 0..span
        out = torch.zeros(index.shape[0], 1, length)
        for row, (i, t, offset) in enumerate(
            zip(index.tolist(), lengths.tolist(), offsets.tolist(), strict=True)
        ):
            if t >= length:
                out[row, 0] = self.waveforms[i][offset : offset + length]
            else:
                out[row, 0, offset : offset + t] = self.waveforms[i]
        return out


def _check_indices_field(
    what: str, values: torch.Tensor | None, names: tuple[str, ...], n: int
) -> None:
    if values is None:
        if names:
            raise DataError(
                f"{what} is None but {len(names)} names were given; give both or neither"
            )
        return
    if values.dtype != torch.int64 or tuple(values.shape) != (n,):
        raise DataError(
            f"{what} must be int64 of shape ({n},), one per clip, got "
            f"{values.dtype} {tuple(values.shape)}"
        )
    if values.min() < 0 or values.max() >= len(names):
        raise DataError(
            f"{what} span {int(values.min())}..{int(values.max())} but there are "
            f"{len(names)} names; give one name per index"
        )


# --- registry and entry points ----------------------------------------------------------------


_REGISTRY = {"fsdd": FSDD_DESCRIPTION}


def audio_datasets() -> dict[str, str]:
    """Registered audio data-set names and a one-line description of each (for ``--help``)."""
    return dict(_REGISTRY)


def is_audio(spec: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None) -> bool:
    """Whether ``spec`` names audio: a registered audio set, or a folder / archive of WAVs.

    Only file names are looked at (an archive's listing is read, nothing is decoded). A
    folder or archive that also holds images is not audio.

    Args:
        spec: a name or a path.
        data_dir: accepted so callers can pass :func:`load_audio`'s arguments unchanged;
            a registered name is audio wherever its files are.
    """
    name = os.fspath(spec)
    if name.lower() in _REGISTRY:
        return True
    path = Path(name).expanduser()
    if not (path.is_dir() or (path.is_file() and is_archive(path))):
        return False
    try:
        tree = open_tree(path, WAV_KIND)
        return bool(wav_files(tree)) and not any(f.suffix in IMAGE_EXTENSIONS for f in tree.files)
    except DataError:  # an unreadable archive: not audio we could load
        return False


def available_audio_splits(
    spec: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None
) -> tuple[str, ...]:
    """The non-empty splits ``spec`` has, in ``("train", "val", "test")`` order.

    ``"val"`` includes a carved validation split; fsdd lists ``"test"`` only when
    takes 0-4 are present.
    """
    return tuple(_resolve(spec, data_dir).layout.splits)


def load_audio(
    spec: str | os.PathLike[str],
    split: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    sample_rate: int | None = None,
) -> AudioData:
    """Load one split of an audio data set into memory.

    Args:
        spec: a registered name (:func:`audio_datasets`) or a path to a folder of WAV
            files or a ``.tar`` / ``.tar.gz`` / ``.tgz`` of one (see the module docstring).
        split: ``"train"``, ``"val"`` or ``"test"``; :func:`available_audio_splits` says
            which exist.
        data_dir: for a registered name, where its files are: a folder of the WAVs, a
            folder holding ``recordings/`` or one archive of them, or the archive itself.
            ``None`` looks in ``$VQVAE_DATA/fsdd`` and downloads when it is empty. Not
            used when ``spec`` is a path.
        sample_rate: rate to resample every clip to; ``None`` is :data:`DEFAULT_SAMPLE_RATE`.

    Returns:
        The split, every clip float32 in ``[-1, 1]`` at ``sample_rate``.

    Raises:
        DataError (a ValueError): for an unknown name or missing path, a split the
            source lacks (the message lists the available ones), missing, unreadable or
            misnamed files, or a failed download.
    """
    rate = DEFAULT_SAMPLE_RATE if sample_rate is None else sample_rate
    check_rate(rate)
    source = _resolve(spec, data_dir)
    decoded = source.read(split, rate)
    samples = torch.from_numpy(decoded.pcm).float().div_(PCM16_SCALE)  # (sum of T_i,)
    waveforms = torch.split(samples, np.diff(decoded.offsets).tolist())
    return AudioData(
        waveforms=tuple(waveforms),
        labels=None if decoded.labels is None else torch.from_numpy(decoded.labels),
        speakers=None if decoded.speakers is None else torch.from_numpy(decoded.speakers),
        classes=decoded.classes,
        speaker_names=decoded.speaker_names,
        names=decoded.names,
        sample_rate=rate,
        source=source.description,
        split=split,
    )


def _resolve(spec: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None) -> WavSource:
    # The layout ids are part of every cache key: they keep the names the layout functions
    # had when the cache was introduced, so entries written since stay valid.
    name = os.fspath(spec)
    if name.lower() in _REGISTRY:
        tree = fsdd_tree(None if data_dir is None else Path(data_dir).expanduser())
        return WavSource(tree, f"fsdd ({tree.description})", fsdd_layout, "_fsdd_layout")
    path = Path(name).expanduser()
    if path.is_dir() or (path.is_file() and is_archive(path)):
        tree = open_tree(path, WAV_KIND)
        return WavSource(tree, tree.description, folder_layout, "_folder_layout")
    if path.is_file():
        raise DataError(
            f"{path} is a file, not a folder of WAV files or a .tar/.tar.gz/.tgz archive of one; "
            "pass the folder that holds the .wav files"
        )
    raise DataError(
        f"unknown audio data {name!r}: not a registered audio data set ({', '.join(_REGISTRY)}) "
        f"and no folder or archive at {path.absolute()}; pass a name or an existing path"
    )
