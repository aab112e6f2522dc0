"""A disk cache of decoded data as named NumPy arrays in ``.npz`` files (never pickled).

Decoding tens of thousands of JPEGs or WAV files takes far longer than reading the
arrays back from one uncompressed ``.npz``. Large arrays (the images of an image cache)
can instead be stored as raw ``.npy`` files beside the ``.npz`` and memory-mapped when
read, so a data set larger than memory costs only the pages a batch touches. Each
modality describes its decoded data with an :class:`ArrayCache`: a folder below
:func:`cache_home`, a format version, and how to turn the data into named arrays and
back. Entries are keyed by a fingerprint of the source (path, size, mtime, ...) and the
decoding options, so an edited source is decoded afresh; an unreadable entry, or one
written in another format version, is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from vqvae.atomic import atomic_write
from vqvae.data.arrays import read_arrays

__all__ = ["ArrayCache", "cache_home"]

T = TypeVar("T")
_FORMAT = "format"  # the array every entry holds its format version in
_MAPPED = "mapped"  # the names of the entry's arrays stored as memory-mapped .npy files


def cache_home() -> Path:
    """Where decoded data are cached: ``$VQVAE_CACHE``, else ``~/.cache/vqvae``."""
    env = os.environ.get("VQVAE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vqvae"


class ArrayCache(Generic[T]):
    """Decoded data of one kind, cached as ``cache_home() / kind / "<label>-<hash>.npz"``.

    Args:
        kind: the sub-folder of :func:`cache_home` (``"images"``, ``"audio"``).
        version: the format version; bump it whenever ``pack`` changes what it writes,
            so entries in the old format are ignored rather than misread.
        pack: the data as named arrays (no object arrays, no key named ``"format"``).
        unpack: the data back from the arrays ``pack`` wrote; ``None`` (or a
            ValueError or KeyError) when they are inconsistent, to decode afresh.
        mapped: which arrays (by name) are stored as raw ``.npy`` files and read back as
            copy-on-write memory maps (``np.memmap``): not loaded whole, and writing to
            them never touches the file. The ``.npz`` is written after them, so an entry
            exists only once all its files do.
    """

    def __init__(
        self,
        kind: str,
        version: int,
        pack: Callable[[T], Mapping[str, np.ndarray]],
        unpack: Callable[[dict[str, np.ndarray]], T | None],
        mapped: Callable[[str], bool] = lambda name: False,
    ) -> None:
        self.kind = kind
        self.version = version
        self._pack = pack
        self._unpack = unpack
        self._mapped = mapped

    def path(self, label: str, key: Mapping[str, Any]) -> Path:
        """The entry's file for ``key`` (which need not exist).

        Args:
            label: readable prefix of the file name (e.g. the source's file name).
            key: JSON-serialisable fingerprint of the source and the decoding options.
        """
        blob = json.dumps({_FORMAT: self.version, **key}, sort_keys=True)
        digest = hashlib.sha256(blob.encode()).hexdigest()[:20]
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:60]
        return cache_home() / self.kind / f"{stem}-{digest}.npz"

    def peek(self, label: str, key: Mapping[str, Any]) -> T | None:
        """The cached data for ``key``, or ``None`` when there is no valid entry."""
        path = self.path(label, key)
        if not path.is_file():
            return None
        try:
            arrays = read_arrays(path, "cache entry")
            if int(arrays.pop(_FORMAT)) != self.version:
                return None
            for name in arrays.pop(_MAPPED, np.array([], dtype=np.str_)).tolist():
                arrays[name] = np.load(_mapped_path(path, name), mmap_mode="c", allow_pickle=False)
            return self._unpack(arrays)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a corrupt or foreign entry: decode again and overwrite it

    def get(self, label: str, key: Mapping[str, Any], decode: Callable[[], T]) -> T:
        """The cached data for ``key``, or what ``decode()`` returns, which is then cached.

        A cache that cannot be written (read-only home, full disk) warns and carries on:
        the data are still returned.
        """
        hit = self.peek(label, key)
        if hit is not None:
            return hit
        data = decode()
        self.put(label, key, data)
        return data

    def put(self, label: str, key: Mapping[str, Any], data: T) -> None:
        """Cache ``data`` for ``key``, replacing any entry, atomically.

        A cache that cannot be written (read-only home, full disk) warns and carries on.
        """
        path = self.path(label, key)
        arrays = dict(self._pack(data))
        assert _FORMAT not in arrays and _MAPPED not in arrays, f"{_FORMAT!r}, {_MAPPED!r} are the cache's own"
        mapped = sorted(name for name in arrays if self._mapped(name))
        arrays[_FORMAT] = np.array(self.version)
        arrays[_MAPPED] = np.array(mapped, dtype=np.str_)
        try:
            for name in mapped:  # before the .npz, which makes the entry valid
                big = arrays.pop(name)
                atomic_write(_mapped_path(path, name), lambda tmp, big=big: _save(tmp, big), size=big.nbytes)
            atomic_write(path, lambda tmp: _savez(tmp, arrays))
        except OSError as err:
            warnings.warn(f"not caching decoded {self.kind} at {path}: {err}", stacklevel=3)


def _mapped_path(entry: Path, name: str) -> Path:
    return entry.with_name(f"{entry.stem}.{name}.npy")


def _save(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as out:  # a file object: np.save would add ".npy" to a name
        np.save(out, np.ascontiguousarray(array), allow_pickle=False)


def _savez(path: str, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as out:  # a file object: np.savez would add ".npz" to a name
        np.savez(out, **arrays)
