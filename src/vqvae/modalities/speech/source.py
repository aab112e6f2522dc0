"""A split of WAV files decoded to 16-bit clips at one rate, and the cache that keeps them.

A :class:`WavSource` is a :class:`~vqvae.data.files.FileTree` read through a layout
(:mod:`vqvae.modalities.speech.layout`). Reading a split decodes every clip, resamples
it to the asked rate and stores it as 16-bit samples; the result is cached as an
``.npz`` (never pickled) under ``$VQVAE_CACHE/audio``, keyed by the source's path, size
and modification time (a folder's: every WAV file's), the layout, the split and the rate.

Shapes: N clips, S samples of all clips together.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from vqvae.data.cache import ArrayCache
from vqvae.data.errors import DataError
from vqvae.data.files import FileTree
from vqvae.data.source import SPLITS
from vqvae.modalities.speech.layout import Item, Layout
from vqvae.modalities.speech.wav import decode_wav, resample, to_pcm16

__all__ = ["AUDIO_CACHE", "DecodedClips", "WavSource"]


@dataclass(frozen=True)
class DecodedClips:
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

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for :data:`AUDIO_CACHE` (``labels`` / ``speakers`` only when present)."""
        arrays = {
            "pcm": self.pcm,
            "offsets": self.offsets,
            "classes": np.array(self.classes, dtype=np.str_),
            "speaker_names": np.array(self.speaker_names, dtype=np.str_),
            "names": np.array(self.names, dtype=np.str_),
        }
        for key in ("labels", "speakers"):
            if getattr(self, key) is not None:
                arrays[key] = getattr(self, key)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> DecodedClips | None:
        """The inverse of :meth:`to_arrays`; ``None`` when the arrays do not fit together."""
        pcm, offsets, names = arrays["pcm"], arrays["offsets"], arrays["names"]
        n = names.shape[0]
        ok = (
            pcm.dtype == np.int16
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
        return cls(
            pcm,
            offsets,
            labels,
            speakers,
            classes=tuple(str(c) for c in arrays["classes"]),
            speaker_names=tuple(str(s) for s in arrays["speaker_names"]),
            names=tuple(str(s) for s in names),
        )


# Version 1 is the format the audio cache has always written: older entries are still read.
AUDIO_CACHE: ArrayCache[DecodedClips] = ArrayCache(
    "audio", 1, DecodedClips.to_arrays, DecodedClips.from_arrays
)


class WavSource:
    """A tree of WAV files read through a layout (fsdd names, or generic folders).

    Args:
        tree: the folder or archive.
        description: human-readable origin, for messages and :class:`AudioData`.
        layout: makes the splits of ``tree``.
        layout_id: names ``layout`` in cache keys; keep it fixed, or every entry made
            with the layout is decoded afresh.
    """

    def __init__(
        self,
        tree: FileTree,
        description: str,
        layout: Callable[[FileTree], Layout],
        layout_id: str,
    ) -> None:
        self.tree = tree
        self.description = description
        self._layout_of = layout
        self._layout_id = layout_id

    @cached_property
    def layout(self) -> Layout:
        """The splits, label and speaker names (listing an archive on first use)."""
        return self._layout_of(self.tree)

    def read(self, split: str, rate: int) -> DecodedClips:
        """Decode one split at ``rate`` samples per second, or take it from the cache.

        Raises:
            DataError: for a split the layout lacks (naming the available ones), or an
                unreadable file.
        """
        key = {
            "layout": self._layout_id,
            **self.tree.fingerprint({".wav"}),
            "split": split,
            "sample_rate": rate,
        }
        label = f"{Path(str(key['path'])).name}-{split}"
        # A cache hit answers without listing the archive, which takes a while for .tar.gz.
        hit = AUDIO_CACHE.peek(label, key)
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
        AUDIO_CACHE.put(label, key, decoded)
        return decoded

    def _decode(self, items: list[Item], rate: int) -> DecodedClips:
        clips: list[np.ndarray] = [np.empty(0, np.int16)] * len(items)
        for i, data in self.tree.read_all([item.entry for item in items]):
            where = self.tree.where(items[i].entry)
            try:
                samples, file_rate = decode_wav(io.BytesIO(data), where)
            except ValueError as err:
                raise DataError(f"{err}; remove or replace the file") from err
            if file_rate != rate:
                samples = resample(samples, file_rate, rate)
            clips[i] = to_pcm16(samples)
        lengths = np.array([len(c) for c in clips], dtype=np.int64)
        labels = [item.label for item in items]
        speakers = [item.speaker for item in items]
        return DecodedClips(
            pcm=np.concatenate(clips),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            labels=None if labels[0] is None else np.array(labels, dtype=np.int64),
            speakers=None if speakers[0] is None else np.array(speakers, dtype=np.int64),
            classes=self.layout.classes,
            speaker_names=self.layout.speaker_names,
            names=tuple(item.name for item in items),
        )
