"""Speech data for the 1-D VQ-VAE (van den Oord et al. 2017, §4.3): WAV files and audio sets.

Two halves:

* :func:`read_wav` / :func:`write_wav` read mono WAV files as float32 in ``[-1, 1]``
  (resampled on request) and write 16-bit PCM atomically;
* :func:`load_audio` loads one split of a data set into memory as :class:`AudioData`.
  ``spec`` is a registered name (:func:`audio_datasets`: ``"fsdd"``) or a path to a
  folder of ``.wav`` files or a ``.tar`` / ``.tar.gz`` / ``.tgz`` of one.

A folder given by path: every ``*.wav`` below it, sorted (hidden files and folders are
ignored; an archive's single wrapper folder, as in ``speech.tar.gz`` holding
``speech/...``, is stripped). Top-level ``train`` / ``val`` / ``test`` folders, when
they hold every file, are the splits; otherwise all files are ``train``. A ``train``
split without a ``val`` folder gives up a fixed validation split: the files whose path
below the split folder hashes to ``int(sha1(path).hexdigest(), 16) % 10 == 0`` (about
10 %, the same on every machine and run). The first folder level below the split is
the speaker (``root/<speaker>/.../x.wav``); files directly in the split folder carry
no speaker. Generic folders have no labels.

Every clip is resampled to one rate, :data:`DEFAULT_SAMPLE_RATE` unless asked
otherwise, and stored as 16-bit samples; a decoded split is cached as an ``.npz``
(never pickled) under ``$VQVAE_CACHE/audio``, keyed by the source's path, size and
modification time, the split and the rate.

Shapes: N clips, T samples of one clip, B batch.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import math
import os
import re
import tarfile
import tempfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np
import torch

from vqvae.data.cache import cache_home
from vqvae.data.download import data_home
from vqvae.data.errors import DataError
from vqvae.data.source import SPLITS
from vqvae.modalities.image.data.folder import IMAGE_EXTENSIONS, is_archive

__all__ = [
    "DEFAULT_SAMPLE_RATE",
    "FSDD_URLS",
    "AudioData",
    "audio_datasets",
    "available_audio_splits",
    "is_audio",
    "load_audio",
    "read_wav",
    "write_wav",
]

DEFAULT_SAMPLE_RATE = 8000
AUDIO_CACHE_VERSION = 1
# GitHub builds these archives on the fly, so their bytes (and any checksum) are not
# guaranteed to stay fixed: a download is accepted when its file names parse as FSDD
# recordings, not by checksum.
FSDD_URLS = (
    "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
    "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.tar.gz",
)
FSDD_CLASSES = tuple(str(d) for d in range(10))
_FSDD_NAME = re.compile(r"(\d)_(.+)_(\d+)(?i:\.wav)")
_FSDD_PATTERN = "{digit}_{speaker}_{take}.wav (e.g. 3_theo_12.wav)"
_WAV_FORMATS = frozenset({"WAV", "WAVEX", "RF64"})
_PCM16_SCALE = 32768.0  # soundfile reads 16-bit PCM as int / 2**15: the exact inverse
_DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20


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
        _check_rate(self.sample_rate)
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


# --- WAV files ------------------------------------------------------------------------------


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
        _check_rate(sample_rate)
    samples, rate = _decode_wav(path, str(path))
    if sample_rate is not None and sample_rate != rate:
        samples, rate = _resample(samples, rate, sample_rate), sample_rate
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
    _check_rate(sample_rate)
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
    pcm = _to_pcm16(wave.numpy().astype(np.float64))
    sf = _soundfile()
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, pcm, sample_rate, format="WAV", subtype="PCM_16")
        os.chmod(tmp, 0o644)  # mkstemp makes files private; audio is not secret
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


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


def _decode_wav(file: Path | BinaryIO, where: str) -> tuple[np.ndarray, int]:
    """Decode a mono WAV file to float32 ``(T,)``; ValueError names ``where`` and the fix."""
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
            samples = wav.read(dtype="float32", always_2d=True)[:, 0]
            rate = wav.samplerate
    except (sf.SoundFileError, RuntimeError) as err:
        raise ValueError(f"{where} is not a readable WAV file ({err})") from err
    if samples.size == 0:
        raise ValueError(f"{where} is empty (0 samples); remove it or replace it with a recording")
    return np.clip(samples, -1.0, 1.0), rate  # float WAVs may overshoot full scale


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    from scipy.signal import resample_poly  # imported on first use: scipy.signal loads slowly

    g = math.gcd(rate, target)
    out = resample_poly(samples, target // g, rate // g)  # (ceil(T * target / rate),)
    return np.clip(out, -1.0, 1.0).astype(np.float32)  # the filter's ringing may overshoot


def _to_pcm16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples * _PCM16_SCALE), -32768, 32767).astype(np.int16)


def _check_rate(rate: object) -> None:
    if isinstance(rate, bool) or not isinstance(rate, int) or rate < 1:
        raise ValueError(
            f"sample rate must be a positive integer (samples per second), got {rate!r}"
        )


# --- registry and entry points ----------------------------------------------------------------


_REGISTRY = {
    "fsdd": "Free Spoken Digit Dataset (CC BY-SA 4.0): spoken digits 0-9, 8 kHz mono, "
    "6 speakers; test = takes 0-4, val = takes 5-9, train = takes 10-49 "
    "(WAVs or a tar of them from --data-dir, else downloaded from GitHub)",
}


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
        tree = _open_tree(path)
        return bool(tree.wavs) and not tree.has_images
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
    _check_rate(rate)
    source = _resolve(spec, data_dir)
    decoded = source.read(split, rate)
    samples = torch.from_numpy(decoded.pcm).float().div_(_PCM16_SCALE)  # (sum of T_i,)
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


def _resolve(spec: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None) -> _Source:
    name = os.fspath(spec)
    if name.lower() in _REGISTRY:
        tree = _fsdd_tree(None if data_dir is None else Path(data_dir).expanduser())
        return _Source(tree, f"fsdd ({tree.description})", _fsdd_layout)
    path = Path(name).expanduser()
    if path.is_dir() or (path.is_file() and is_archive(path)):
        tree = _open_tree(path)
        return _Source(tree, tree.description, _folder_layout)
    if path.is_file():
        raise DataError(
            f"{path} is a file, not a folder of WAV files or a .tar/.tar.gz/.tgz archive of one; "
            "pass the folder that holds the .wav files"
        )
    raise DataError(
        f"unknown audio data {name!r}: not a registered audio data set ({', '.join(_REGISTRY)}) "
        f"and no folder or archive at {path.absolute()}; pass a name or an existing path"
    )


# --- listing WAV files in a folder or a tar archive -------------------------------------------


@dataclass(frozen=True)
class _Wav:
    """One WAV file: its path inside the source, split on ``/``, and a handle to read it."""

    parts: tuple[str, ...]
    ref: Path | tarfile.TarInfo


class _Listing:
    """The non-hidden files of a folder or archive (``files``, set by a subclass)."""

    files: list[_Wav]

    @cached_property
    def wavs(self) -> list[_Wav]:
        return [w for w in self.files if w.parts[-1].lower().endswith(".wav")]

    @cached_property
    def has_images(self) -> bool:
        return any(os.path.splitext(w.parts[-1])[1].lower() in IMAGE_EXTENSIONS for w in self.files)


class _DirTree(_Listing):
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.description = f"WAV folder {self.root}"

    @cached_property
    def files(self) -> list[_Wav]:
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).parts
            files += [_Wav((*rel, f), Path(dirpath, f)) for f in filenames if not f.startswith(".")]
        return sorted(files, key=lambda w: w.parts)

    def fingerprint(self) -> dict[str, object]:
        # The folder's own mtime misses edits below it: hash every WAV file's stat.
        digest = hashlib.sha256()
        for wav in self.wavs:
            st = wav.ref.stat()
            digest.update(f"{'/'.join(wav.parts)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"path": str(self.root), "listing": digest.hexdigest()}

    def where(self, wav: _Wav) -> str:
        return str(wav.ref)

    def read_all(self, wavs: list[_Wav]) -> Iterator[tuple[int, bytes]]:
        for i, wav in enumerate(wavs):
            try:
                yield i, wav.ref.read_bytes()
            except OSError as err:
                raise DataError(f"cannot read {wav.ref}: {err}") from err


class _TarTree(_Listing):
    def __init__(self, path: Path) -> None:
        self.path = path.resolve()
        self.description = f"WAV archive {self.path}"

    @cached_property
    def files(self) -> list[_Wav]:
        with self._opened() as tar:
            members = tar.getmembers()
        files = []
        for member in members:
            parts = tuple(p for p in PurePosixPath(member.name).parts if p not in ("/", "."))
            if member.isfile() and parts and not any(p.startswith(".") for p in parts):
                files.append(_Wav(parts, member))
        return _unwrap(sorted(files, key=lambda w: w.parts))

    def fingerprint(self) -> dict[str, object]:
        st = self.path.stat()
        return {"path": str(self.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def where(self, wav: _Wav) -> str:
        return f"{'/'.join(wav.parts)!r} in archive {self.path}"

    def read_all(self, wavs: list[_Wav]) -> Iterator[tuple[int, bytes]]:
        # Archive order streams a compressed archive once, without seeking back.
        order = sorted(range(len(wavs)), key=lambda i: wavs[i].ref.offset_data)
        with self._opened() as tar:
            for i in order:
                handle = tar.extractfile(wavs[i].ref)
                assert handle is not None, "entries are regular files"
                yield i, handle.read()

    @contextmanager
    def _opened(self) -> Iterator[tarfile.TarFile]:
        try:
            with tarfile.open(self.path) as tar:
                yield tar
        except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
            raise DataError(
                f"cannot read archive {self.path}: {err}; it is corrupt or truncated: "
                "re-download or re-create it"
            ) from err


_Tree = _DirTree | _TarTree


def _open_tree(path: Path) -> _Tree:
    return _TarTree(path) if path.is_file() else _DirTree(path)


def _unwrap(files: list[_Wav]) -> list[_Wav]:
    """Strip an archive's single wrapper folders (``speech.tar.gz`` holding ``speech/...``)."""
    while files and all(len(w.parts) > 1 for w in files):
        top = {w.parts[0] for w in files}
        if len(top) != 1 or top <= set(SPLITS):
            break
        files = [_Wav(w.parts[1:], w.ref) for w in files]
    return files


# --- layouts: splits, labels and speakers from names and folders ------------------------------


@dataclass(frozen=True)
class _Item:
    wav: _Wav
    name: str
    label: int | None
    speaker: int | None


@dataclass(frozen=True)
class _Layout:
    """The non-empty splits (in SPLITS order) and the names behind label/speaker indices."""

    splits: dict[str, list[_Item]]
    classes: tuple[str, ...]
    speaker_names: tuple[str, ...]
    hint: str  # why a split may be missing, for the error that says so


def _fsdd_layout(tree: _Tree) -> _Layout:
    wavs = tree.wavs
    if any(len(w.parts) > 1 and w.parts[-2] == "recordings" for w in wavs):
        # The GitHub archive and FSDD copies keep the clips in recordings/; other WAVs
        # there are not part of the data set.
        wavs = [w for w in wavs if len(w.parts) > 1 and w.parts[-2] == "recordings"]
    parsed, seen = [], {}
    for wav in wavs:
        match = _FSDD_NAME.fullmatch(wav.parts[-1])
        if match is None:
            raise DataError(
                f"{tree.where(wav)} is not named like a Free Spoken Digit Dataset recording: "
                f"expected {_FSDD_PATTERN}; remove or rename it, or load the folder by its path "
                "as a generic WAV folder"
            )
        if wav.parts[-1] in seen:
            raise DataError(
                f"{tree.where(wav)} and {tree.where(seen[wav.parts[-1]])} are the same "
                "recording; keep one copy"
            )
        seen[wav.parts[-1]] = wav
        parsed.append((wav, int(match[1]), match[2], int(match[3])))
    if not parsed:
        raise DataError(
            f"no Free Spoken Digit Dataset recordings ({_FSDD_PATTERN}) in {tree.description}"
        )
    speakers = tuple(sorted({speaker for _, _, speaker, _ in parsed}))
    index = {name: i for i, name in enumerate(speakers)}
    groups: dict[str, list[_Item]] = {split: [] for split in SPLITS}
    for wav, digit, speaker, take in parsed:
        # The canonical split holds out takes 0-4 for testing; takes 5-9 are our fixed
        # validation split, so no training take is ever used to pick a model.
        split = "test" if take < 5 else "val" if take < 10 else "train"
        groups[split].append(_Item(wav, wav.parts[-1], digit, index[speaker]))
    hint = "takes 0-4 form the test split, takes 5-9 val, takes 10-49 train; this copy has none"
    return _Layout({s: g for s, g in groups.items() if g}, FSDD_CLASSES, speakers, hint)


def _folder_layout(tree: _Tree) -> _Layout:
    wavs = tree.wavs
    if not wavs:
        raise DataError(
            f"no WAV files found in {tree.description}: expected files ending in "
            ".wav (hidden files and folders are ignored)"
        )
    top = {w.parts[0] for w in wavs if len(w.parts) > 1}
    if all(len(w.parts) > 1 for w in wavs) and top <= set(SPLITS):
        groups = {s: [_Wav(w.parts[1:], w.ref) for w in wavs if w.parts[0] == s] for s in top}
    else:
        groups = {"train": wavs}
    hint = "there is no such split folder"
    if "train" in groups and "val" not in groups:
        groups["train"], groups["val"] = _carve_val(groups["train"])
        hint = (
            "val is carved from about 10% of train's files by a hash of their paths and "
            "picked none of them; add files or a val/ folder"
        )
    speaker_names = _speaker_names(groups, tree.description)
    index = {name: i for i, name in enumerate(speaker_names)}
    splits = {
        split: [
            _Item(w, "/".join(w.parts), None, index[w.parts[0]] if speaker_names else None)
            for w in groups[split]
        ]
        for split in SPLITS
        if groups.get(split)
    }
    return _Layout(splits, (), speaker_names, hint)


def _carve_val(wavs: list[_Wav]) -> tuple[list[_Wav], list[_Wav]]:
    """Split into (train, val) by a hash of each path: stable across runs and machines."""
    in_val = [int(hashlib.sha1("/".join(w.parts).encode()).hexdigest(), 16) % 10 == 0 for w in wavs]
    return (
        [w for w, v in zip(wavs, in_val, strict=True) if not v],
        [w for w, v in zip(wavs, in_val, strict=True) if v],
    )


def _speaker_names(groups: dict[str, list[_Wav]], where: str) -> tuple[str, ...]:
    loose = [w for group in groups.values() for w in group if len(w.parts) == 1]
    foldered = [w for group in groups.values() for w in group if len(w.parts) > 1]
    if loose and foldered:
        raise DataError(
            f"{where} holds both WAV files directly in a split folder, such as "
            f"{loose[0].parts[-1]!r}, and speaker folders, such as {foldered[0].parts[0]!r}; "
            "move every file into a speaker folder (or none, for a set without speakers)"
        )
    return tuple(sorted({w.parts[0] for w in foldered}))


# --- fsdd: where its files are, or the download ------------------------------------------------


def _fsdd_tree(data_dir: Path | None) -> _Tree:
    if data_dir is not None:
        if not data_dir.exists():
            raise DataError(
                f"data_dir {data_dir.absolute()} does not exist; pass the folder that "
                "holds the FSDD recordings or their archive"
            )
        found = _find_fsdd(data_dir)
        if found is None:
            raise DataError(f"no FSDD recordings in {data_dir.absolute()}: {_fsdd_hint()}")
        return found
    home = data_home() / "fsdd"
    return _find_fsdd(home) or _TarTree(_download_fsdd(home))


def _find_fsdd(path: Path) -> _Tree | None:
    """The WAVs below ``path``, else the one archive in it, else ``None``."""
    if path.is_file():
        return _TarTree(path) if is_archive(path) else None
    if not path.is_dir():
        return None
    tree = _DirTree(path)
    if tree.wavs:
        return tree
    archives = sorted(
        p for p in path.iterdir() if p.is_file() and is_archive(p) and not p.name.startswith(".")
    )
    if len(archives) > 1:
        raise DataError(
            f"{path} holds several archives ({', '.join(p.name for p in archives)}); "
            "pass the one with the FSDD recordings itself as the data folder"
        )
    return _TarTree(archives[0]) if archives else None


def _fsdd_hint() -> str:
    return (
        f"pass --data-dir DIR where DIR holds the FSDD WAV files (named {_FSDD_PATTERN}), "
        "a recordings/ folder of them or a .tar/.tar.gz of them (from "
        "https://github.com/Jakobovski/free-spoken-digit-dataset), or put them in "
        f"{data_home() / 'fsdd'} (set VQVAE_DATA to move that folder)"
    )


def _download_fsdd(dest_dir: Path) -> Path:
    dest = dest_dir / "free-spoken-digit-dataset.tar.gz"
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"cannot create the download folder {dest_dir}: {err}; "
            "set VQVAE_DATA to a writable folder"
        ) from err
    failures = []
    for url in FSDD_URLS:
        try:
            _download_validated(url, dest)
            return dest
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            failures.append(f"{url}: {getattr(err, 'reason', err)}")
    raise DataError(
        f"could not download the Free Spoken Digit Dataset ({'; '.join(failures)}). "
        f"Offline, {_fsdd_hint()}"
    )


def _download_validated(url: str, dest: Path) -> None:
    """Download to a temporary file; keep it only when it is an archive of FSDD recordings."""
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as resp,
        ):
            while chunk := resp.read(_CHUNK):
                out.write(chunk)
        try:
            _fsdd_layout(_TarTree(tmp))  # every recording's name must parse
        except DataError as err:
            reason = " ".join(str(err).split())  # tarfile's reasons span several lines
            raise ValueError(
                f"the file served is not an archive of FSDD recordings: {reason}"
            ) from err
        tmp.chmod(0o644)  # mkstemp makes files private; data files are not secret
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# --- decoding and the cache ------------------------------------------------------------------


@dataclass(frozen=True)
class _Decoded:
    """One decoded split: every clip's 16-bit samples back to back.

    ``pcm`` int16 ``(S,)``; clip ``i`` is ``pcm[offsets[i]:offsets[i + 1]]``, ``offsets``
    int64 ``(N + 1,)``; ``labels`` / ``speakers`` int64 ``(N,)`` or ``None``.
    """

    pcm: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray | None
    speakers: np.ndarray | None
    classes: tuple[str, ...]
    speaker_names: tuple[str, ...]
    names: tuple[str, ...]


class _Source:
    """A tree of WAV files read through a layout (fsdd names, or generic folders)."""

    def __init__(self, tree: _Tree, description: str, layout: Callable[[_Tree], _Layout]) -> None:
        self.tree = tree
        self.description = description
        self._layout_of = layout

    @cached_property
    def layout(self) -> _Layout:
        return self._layout_of(self.tree)

    def read(self, split: str, rate: int) -> _Decoded:
        key = {
            "layout": self._layout_of.__name__,
            **self.tree.fingerprint(),
            "split": split,
            "sample_rate": rate,
        }
        # A cache hit answers without listing the archive, which takes a while for .tar.gz.
        path = _cache_path(key)
        hit = _cache_load(path)
        if hit is not None:
            return hit
        available = ", ".join(self.layout.splits)
        if split not in SPLITS:
            raise DataError(f"unknown split {split!r}: {self.description} has {available}")
        if split not in self.layout.splits:
            raise DataError(
                f"{self.description} has no {split!r} split ({self.layout.hint}); "
                f"available: {available}"
            )
        decoded = self._decode(self.layout.splits[split], rate)
        _cache_save(path, decoded)
        return decoded

    def _decode(self, items: list[_Item], rate: int) -> _Decoded:
        clips: list[np.ndarray] = [np.empty(0, np.int16)] * len(items)
        for i, data in self.tree.read_all([item.wav for item in items]):
            where = self.tree.where(items[i].wav)
            try:
                samples, file_rate = _decode_wav(io.BytesIO(data), where)
            except ValueError as err:
                raise DataError(f"{err}; remove or replace the file") from err
            if file_rate != rate:
                samples = _resample(samples, file_rate, rate)
            clips[i] = _to_pcm16(samples)
        lengths = np.array([len(c) for c in clips], dtype=np.int64)
        labels = [item.label for item in items]
        speakers = [item.speaker for item in items]
        return _Decoded(
            pcm=np.concatenate(clips),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            labels=None if labels[0] is None else np.array(labels, dtype=np.int64),
            speakers=None if speakers[0] is None else np.array(speakers, dtype=np.int64),
            classes=self.layout.classes,
            speaker_names=self.layout.speaker_names,
            names=tuple(item.name for item in items),
        )


def _cache_path(key: dict[str, Any]) -> Path:
    blob = json.dumps({"format": AUDIO_CACHE_VERSION, **key}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:20]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(key["path"])).name)[:60]
    return cache_home() / "audio" / f"{stem}-{key['split']}-{digest}.npz"


def _cache_load(path: Path) -> _Decoded | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = dict(npz.items())
        return _unpack(arrays)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # a corrupt or foreign entry: decode again and overwrite it


def _unpack(arrays: dict[str, np.ndarray]) -> _Decoded | None:
    pcm, offsets, names = arrays["pcm"], arrays["offsets"], arrays["names"]
    n = names.shape[0]
    ok = (
        int(arrays["format"]) == AUDIO_CACHE_VERSION
        and pcm.dtype == np.int16
        and offsets.dtype == np.int64
        and offsets.shape == (n + 1,)
        and offsets[0] == 0
        and offsets[-1] == pcm.shape[0]
        and bool(np.all(np.diff(offsets) > 0))
    )
    labels, speakers = arrays.get("labels"), arrays.get("speakers")
    for values in (labels, speakers):
        ok = ok and (values is None or (values.dtype == np.int64 and values.shape == (n,)))
    if not ok:
        return None
    return _Decoded(
        pcm,
        offsets,
        labels,
        speakers,
        classes=tuple(str(c) for c in arrays["classes"]),
        speaker_names=tuple(str(s) for s in arrays["speaker_names"]),
        names=tuple(str(s) for s in names),
    )


def _cache_save(path: Path, decoded: _Decoded) -> None:
    arrays = {
        "format": np.array(AUDIO_CACHE_VERSION),
        "pcm": decoded.pcm,
        "offsets": decoded.offsets,
        "classes": np.array(decoded.classes, dtype=np.str_),
        "speaker_names": np.array(decoded.speaker_names, dtype=np.str_),
        "names": np.array(decoded.names, dtype=np.str_),
    }
    for key in ("labels", "speakers"):
        if getattr(decoded, key) is not None:
            arrays[key] = getattr(decoded, key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    except OSError as err:
        warnings.warn(f"not caching decoded audio in {path.parent}: {err}", stacklevel=4)
        return
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)
        os.chmod(tmp_name, 0o644)  # mkstemp makes files private; decoded audio is not secret
        os.replace(tmp_name, path)
    except OSError as err:
        warnings.warn(f"not caching decoded audio at {path}: {err}", stacklevel=4)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
