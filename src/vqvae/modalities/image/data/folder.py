"""Image folders: a directory, or a ``.tar`` / ``.tar.gz`` / ``.tgz`` of one, read in place.

Layout, after unwrapping single wrapper folders (``archive/photos/...``):

* top level holds only ``train`` / ``val`` / ``test`` folders → those are the splits,
  and the folders below each are classes;
* otherwise everything is the ``train`` split, and the top-level folders are classes;
* image files directly at the class level → no classes (labels are ``None``).

Files are listed and read by :mod:`vqvae.data.files` (hidden files and folders are
ignored, archives are never extracted to disk); files without an image extension are
ignored too. Decoded images are cached (:data:`vqvae.data.source.IMAGE_CACHE`).
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vqvae.data.errors import DataError
from vqvae.data.files import FileEntry, FileTree, open_tree, unwrap
from vqvae.data.source import IMAGE_CACHE, SPLITS, DecodedImages, SplitArrays
from vqvae.modalities.image.data.transforms import resize_and_crop

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderSource"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_GREY_MODES = frozenset({"1", "L", "LA", "La", "F"})
# The decoders of those extensions only: Pillow otherwise guesses the format from the
# bytes, and some of its formats hand the file to outside programs (EPS to Ghostscript).
_FORMATS = ("PNG", "JPEG", "MPO", "BMP", "DIB", "GIF", "WEBP", "TIFF")  # MPO: a JPEG variant in older Pillows
# What Pillow's decoders raise on corrupt or hostile bytes (its own fuzzers accept the same).
_DECODER_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, IndexError, TypeError,
                   KeyError, ZeroDivisionError, RecursionError, MemoryError, Image.DecompressionBombError,
                   Image.DecompressionBombWarning)


@dataclass(frozen=True)
class _Layout:
    """Which entries belong to which split, and their labels (``None`` without classes)."""

    splits: dict[str, list[tuple[FileEntry, int | None]]]
    classes: tuple[str, ...]


class ImageFolderSource:
    """Images from a folder or tar archive; see the module docstring for the layout.

    Args:
        path: the folder or archive.
        image_size: resize the shorter side to this, then centre-crop a square; ``None``
            requires every image to have the same size already.
        name: data-set name to show in :attr:`description` (e.g. ``"cifar10"``).
    """

    def __init__(self, path: Path, image_size: int | None, name: str | None = None) -> None:
        self._tree: FileTree = open_tree(path, "image")
        self._image_size = image_size
        self._name = name
        self._decoded: DecodedImages | None = None

    @property
    def description(self) -> str:
        where = self._tree.description
        return f"{self._name} ({where})" if self._name else where

    def splits(self) -> tuple[str, ...]:
        # A cache hit answers without listing the archive, which takes seconds.
        self._decoded = self._decoded or IMAGE_CACHE.peek(self._label, self._cache_key)
        if self._decoded is not None:
            return tuple(self._decoded.splits)
        return tuple(self._layout.splits)

    def read(self, split: str) -> tuple[SplitArrays, tuple[str, ...]]:
        if self._decoded is None:
            self._decoded = IMAGE_CACHE.get(self._label, self._cache_key, self._decode_all)
        return self._decoded.splits[split], self._decoded.classes

    @property
    def _label(self) -> str:
        return Path(str(self._cache_key["path"])).name

    @cached_property
    def _cache_key(self) -> dict[str, object]:
        return {
            "source": "image-folder",
            "image_size": self._image_size,
            **self._tree.fingerprint(IMAGE_EXTENSIONS),
        }

    @cached_property
    def _entries(self) -> list[FileEntry]:
        return [e for e in self._tree.files if e.suffix in IMAGE_EXTENSIONS]

    @cached_property
    def _layout(self) -> _Layout:
        return _layout(self._entries, self._tree.description)

    def _decode_all(self) -> DecodedImages:
        items = [(split, *item) for split, group in self._layout.splits.items() for item in group]
        entries = [entry for _, entry, _ in items]
        pixels = _decode_entries(self._tree, entries, self._image_size)
        _check_sizes(pixels, [self._tree.where(entry) for entry in entries], self._tree)
        rgb = any(p.ndim == 3 for p in pixels)  # one colour image makes the whole set RGB
        splits = {}
        for split in self._layout.splits:
            picked = [i for i, (s, _, _) in enumerate(items) if s == split]
            images = _stack([pixels[i] for i in picked], rgb)
            labels = [items[i][2] for i in picked]
            splits[split] = SplitArrays(
                images, np.array(labels, dtype=np.int64) if self._layout.classes else None
            )
        return DecodedImages(splits, self._layout.classes)


# --- layout: splits and classes from the folder structure ----------------------------


def _layout(entries: list[FileEntry], root: str) -> _Layout:
    if not entries:
        raise DataError(
            f"no images found in {root}: expected files ending in "
            f"{', '.join(sorted(IMAGE_EXTENSIONS))} (hidden files are ignored)"
        )
    entries = unwrap(entries, keep=SPLITS)  # a set with only train/ keeps it
    top = {e.parts[0] for e in entries if len(e.parts) > 1}
    if all(len(e.parts) > 1 for e in entries) and top <= set(SPLITS):
        groups = {
            s: [FileEntry(e.parts[1:], e.ref) for e in entries if e.parts[0] == s] for s in top
        }
    else:
        groups = {"train": entries}
    found = {split: _class_names(group, root, split) for split, group in groups.items()}
    if len({names is None for names in found.values()}) > 1:
        with_classes = sorted(s for s, names in found.items() if names is not None)
        without = sorted(s for s, names in found.items() if names is None)
        raise DataError(
            f"in {root}, split(s) {', '.join(with_classes)} hold class folders but "
            f"{', '.join(without)} hold(s) loose images; give every split the same class folders"
        )
    classes = tuple(sorted(set().union(*(n for n in found.values() if n is not None))))
    index = {name: i for i, name in enumerate(classes)}
    splits = {
        split: [(e, index[e.parts[0]] if classes else None) for e in group]
        for split, group in sorted(groups.items(), key=lambda kv: SPLITS.index(kv[0]))
    }
    return _Layout(splits, classes)


def _class_names(entries: list[FileEntry], root: str, split: str) -> set[str] | None:
    loose = [e for e in entries if len(e.parts) == 1]
    if len(loose) == len(entries):
        return None
    if loose:
        raise DataError(
            f"{root} (split {split!r}) holds both image files, such as {loose[0].parts[-1]!r}, "
            "and class folders at the same level; move the loose images into a class folder "
            "(or remove the folders for a data set without classes)"
        )
    return {e.parts[0] for e in entries}


# --- decoding -------------------------------------------------------------------------


def _decode_entries(
    tree: FileTree, entries: list[FileEntry], image_size: int | None
) -> list[np.ndarray]:
    pixels: list[np.ndarray] = [np.empty(0)] * len(entries)
    for i, data in tree.read_all(entries):
        pixels[i] = _decode_image(data, tree.where(entries[i]), image_size)
    return pixels


def _decode_image(data: bytes, where: str, image_size: int | None) -> np.ndarray:
    """Decode one image to uint8 ``(H, W)`` (grey) or ``(H, W, 3)`` (colour)."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a header that
            # claims so many pixels is refused before they are allocated.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=_decoders()) as image:
                image.load()
                image = _grey_or_rgb(ImageOps.exif_transpose(image))  # upright, as photos are shown
    except _DECODER_ERRORS as err:
        reason = (f"it is not a {', '.join(_decoders())} image" if isinstance(err, UnidentifiedImageError)
                  else f"{type(err).__name__}: {err}")
        raise DataError(f"cannot decode image {where}: {reason}; remove or replace the file") from err
    if image_size is not None:
        image = resize_and_crop(image, image_size)
    return np.asarray(image)


@functools.cache
def _decoders() -> tuple[str, ...]:
    Image.init()  # registers every plugin, so the names below can be checked
    return tuple(f for f in _FORMATS if f in Image.OPEN)


def _grey_or_rgb(image: Image.Image) -> Image.Image:
    if image.mode.startswith("I"):  # 16- or 32-bit grey (16-bit PNG): keep the top 8 bits
        wide = np.asarray(image).astype(np.int64).clip(0, 65535)
        return Image.fromarray((wide >> 8).astype(np.uint8), mode="L")
    return image.convert("L" if image.mode in _GREY_MODES else "RGB")


def _check_sizes(pixels: list[np.ndarray], wheres: list[str], tree: FileTree) -> None:
    first = pixels[0].shape[:2]
    for p, where in zip(pixels, wheres, strict=True):
        if p.shape[:2] != first:
            raise DataError(
                f"images in {tree.description} differ in size: {wheres[0]} is {first[1]}x{first[0]}, "
                f"{where} is {p.shape[1]}x{p.shape[0]} (width x height); pass image_size "
                "(CLI: --image-size N) to resize and centre-crop them all to NxN"
            )


def _stack(pixels: list[np.ndarray], rgb: bool) -> np.ndarray:
    """Stack ``(H, W)`` / ``(H, W, 3)`` images into uint8 ``(N, C, H, W)``."""
    h, w = pixels[0].shape[:2]
    out = np.empty((len(pixels), 3 if rgb else 1, h, w), dtype=np.uint8)
    for i, p in enumerate(pixels):
        out[i] = p.transpose(2, 0, 1) if p.ndim == 3 else p  # grey broadcasts over C
    return out
