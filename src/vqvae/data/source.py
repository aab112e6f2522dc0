"""What every image source hands to the loader: decoded uint8 arrays per split, and their cache."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from vqvae.data.cache import ArrayCache

__all__ = ["IMAGE_CACHE", "SPLITS", "DecodedImages", "ImageSource", "SplitArrays"]

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitArrays:
    """One split of a source, as NumPy arrays.

    Attributes:
        images: uint8 ``(N, C, H, W)``.
        labels: int64 ``(N,)``, or ``None`` when the source has no classes.
    """

    images: np.ndarray
    labels: np.ndarray | None


@dataclass(frozen=True)
class DecodedImages:
    """Every split a source decoded in one go, sharing one class list."""

    splits: dict[str, SplitArrays]
    classes: tuple[str, ...]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named arrays for :data:`IMAGE_CACHE`: ``classes``, ``<split>_images``, ``<split>_labels``."""
        arrays = {"classes": np.array(self.classes, dtype=np.str_)}
        for split, data in self.splits.items():
            arrays[f"{split}_images"] = data.images
            if data.labels is not None:
                arrays[f"{split}_labels"] = data.labels
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> DecodedImages | None:
        """The inverse of :meth:`to_arrays`; ``None`` when the arrays do not fit together."""
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
        return cls(splits, classes) if splits else None


class ImageSource(Protocol):
    """A place images come from: a named data set or a folder given by path."""

    @property
    def description(self) -> str:
        """Human-readable description, e.g. ``"mnist (IDX files in /x)"``."""
        ...

    def splits(self) -> tuple[str, ...]:
        """The splits the source really has (before a validation split is carved)."""
        ...

    def read(self, split: str) -> tuple[SplitArrays, tuple[str, ...]]:
        """Decode one of :meth:`splits`; returns its arrays and the class names."""
        ...


# Version 2: the images of each split are memory-mapped .npy files beside the .npz, so
# resident memory does not grow with the data set; version-1 entries (images inside the
# .npz) are ignored and decoded afresh.
IMAGE_CACHE: ArrayCache[DecodedImages] = ArrayCache(
    "images", 2, DecodedImages.to_arrays, DecodedImages.from_arrays, mapped=lambda name: name.endswith("_images")
)
