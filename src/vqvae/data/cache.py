"""A disk cache of decoded images as ``.npz`` (never pickled), in ``$VQVAE_CACHE``.

Decoding tens of thousands of JPEGs takes far longer than reading their pixels back
from one uncompressed ``.npz``. Entries are keyed by a fingerprint of the source (path,
size, mtime, ...) so an edited source is decoded afresh; an unreadable entry is
ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from vqvae.data.source import SPLITS, DecodedImages, SplitArrays

__all__ = ["CACHE_FORMAT_VERSION", "cache_home", "cached_decode", "peek"]

CACHE_FORMAT_VERSION = 1


def cache_home() -> Path:
    """Where decoded images are cached: ``$VQVAE_CACHE``, else ``~/.cache/vqvae``."""
    env = os.environ.get("VQVAE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vqvae"


def cached_decode(
    label: str, key: dict[str, Any], decode: Callable[[], DecodedImages]
) -> DecodedImages:
    """Return the cached result for ``key``, or run ``decode`` and cache what it returns.

    Args:
        label: readable prefix of the cache file name (e.g. the source's file name).
        key: JSON-serialisable fingerprint of the source and the decoding options.
        decode: decodes the source when the cache has no valid entry.
    """
    hit = peek(label, key)
    if hit is not None:
        return hit
    decoded = decode()
    _save(_entry_path(label, key), decoded)
    return decoded


def peek(label: str, key: dict[str, Any]) -> DecodedImages | None:
    """The cached result for ``key``, or ``None`` when there is no valid entry."""
    return _load(_entry_path(label, key))


def _entry_path(label: str, key: dict[str, Any]) -> Path:
    blob = json.dumps({"format": CACHE_FORMAT_VERSION, **key}, sort_keys=True)
    digest = hashlib.sha256(blob.encode()).hexdigest()[:20]
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:60]
    return cache_home() / "images" / f"{stem}-{digest}.npz"


def _load(path: Path) -> DecodedImages | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            return _unpack(dict(npz.items()))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # a corrupt or foreign entry: decode again and overwrite it


def _unpack(arrays: dict[str, np.ndarray]) -> DecodedImages | None:
    if int(arrays["format"]) != CACHE_FORMAT_VERSION:
        return None
    classes = tuple(str(c) for c in arrays["classes"])
    splits = {}
    for split in SPLITS:
        if f"{split}_images" not in arrays:
            continue
        images = arrays[f"{split}_images"]
        labels = arrays.get(f"{split}_labels")
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            return None
        if labels is not None and (
            labels.dtype != np.int64
            or labels.shape != images.shape[:1]
            or not 0 <= labels.min(initial=0) <= labels.max(initial=0) < len(classes)
        ):
            return None
        splits[split] = SplitArrays(images, labels)
    return DecodedImages(splits, classes) if splits else None


def _save(path: Path, decoded: DecodedImages) -> None:
    arrays = {
        "format": np.array(CACHE_FORMAT_VERSION),
        "classes": np.array(decoded.classes, dtype=np.str_),
    }
    for split, data in decoded.splits.items():
        arrays[f"{split}_images"] = data.images
        if data.labels is not None:
            arrays[f"{split}_labels"] = data.labels
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    except OSError as err:
        warnings.warn(f"not caching decoded images in {path.parent}: {err}", stacklevel=3)
        return
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)
        os.chmod(tmp_name, 0o644)  # mkstemp makes files private; decoded pixels are not secret
        os.replace(tmp_name, path)
    except OSError as err:
        warnings.warn(f"not caching decoded images at {path}: {err}", stacklevel=3)
    finally:
        Path(tmp_name).unlink(missing_ok=True)
