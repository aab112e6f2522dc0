"""What every image source hands to the loader: decoded uint8 arrays per split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = ["SPLITS", "DecodedImages", "ImageSource", "SplitArrays"]

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
