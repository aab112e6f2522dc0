"""CIFAR-10: the canonical binary batches (a folder or the tarball), or an image folder."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np

from vqvae.data.download import data_home, fetch
from vqvae.data.errors import DataError
from vqvae.data.files import archive_errors, is_archive, read_member
from vqvae.data.source import ImageSource, SplitArrays
from vqvae.modalities.image.data.folder import ImageFolderSource

__all__ = ["CIFAR10_MD5", "CIFAR10_URLS", "Cifar10BinarySource", "cifar10_source"]

CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_URLS = ("https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",)
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_BATCH_DIR = "cifar-10-batches-bin"
_BATCHES = {
    "train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    "test": ("test_batch.bin",),
}
_META = "batches.meta.txt"
_RECORD = 1 + 3 * 32 * 32  # one label byte, then R, G and B planes of 32x32
_MAX_BATCH = 100_000 * _RECORD  # 10x the canonical batch: anything larger is not CIFAR-10
_MAX_META = 1 << 16
_EXPECTED = (
    f"{_BATCH_DIR}/ (data_batch_1..5.bin, test_batch.bin), {CIFAR10_ARCHIVE}, or an image "
    "folder or .tar/.tar.gz/.tgz of one (train/<class>/*.png)"
)


def cifar10_source(data_dir: Path | None, image_size: int | None) -> ImageSource:
    """Pick how to read CIFAR-10 from ``data_dir`` (or its ``cifar10/`` folder).

    In order: the binary batches folder, the binary tarball, a single image archive, an
    image folder with split folders. Without ``data_dir``, the binary tarball is
    downloaded (once) into the data home.
    """
    if data_dir is None:
        return Cifar10BinarySource(None)
    for folder in (data_dir, data_dir / "cifar10"):
        source = _source_in(folder, image_size)
        if source is not None:
            return source
    raise DataError(
        f"no CIFAR-10 data in {data_dir}: expected {_EXPECTED}; put one there, or leave out "
        "--data-dir to download the canonical binary version"
    )


def _source_in(folder: Path, image_size: int | None) -> ImageSource | None:
    if (folder / _BATCH_DIR).is_dir():
        return Cifar10BinarySource(folder / _BATCH_DIR)
    if (folder / "data_batch_1.bin").is_file() or (folder / "test_batch.bin").is_file():
        return Cifar10BinarySource(folder)
    if (folder / CIFAR10_ARCHIVE).is_file():
        return Cifar10BinarySource(folder / CIFAR10_ARCHIVE)
    if not folder.is_dir():
        return None
    archives = sorted(p for p in folder.iterdir() if p.is_file() and is_archive(p))
    if len(archives) > 1:
        raise DataError(
            f"{folder} holds several archives ({', '.join(p.name for p in archives)}); "
            "pass the one to use as the data path instead of the name cifar10"
        )
    if archives:
        return ImageFolderSource(archives[0], image_size, name="cifar10")
    if any((folder / split).is_dir() for split in ("train", "test")):
        return ImageFolderSource(folder, image_size, name="cifar10")
    return None


class Cifar10BinarySource:
    """The canonical binary CIFAR-10: a batches folder, or the tarball read in place.

    Args:
        location: the ``cifar-10-batches-bin`` folder or ``cifar-10-binary.tar.gz``;
            ``None`` downloads the tarball into the data home when it is not there yet.
    """

    def __init__(self, location: Path | None) -> None:
        self._location = location

    @property
    def description(self) -> str:
        kind = "binary archive" if self._is_tar() else "binary batches in"
        return f"cifar10 ({kind} {self._location or data_home() / 'cifar10' / CIFAR10_ARCHIVE})"

    def splits(self) -> tuple[str, ...]:
        if self._location is None or self._is_tar():
            return tuple(_BATCHES)  # the canonical tarball holds both
        found = tuple(
            split
            for split, names in _BATCHES.items()
            if all((self._location / n).is_file() for n in names)
        )
        if not found:
            raise DataError(
                f"CIFAR-10 batches in {self._location} are incomplete: expected {_EXPECTED}"
            )
        return found

    def read(self, split: str) -> tuple[SplitArrays, tuple[str, ...]]:
        names = (*_BATCHES[split], _META)
        files = self._read_tar(names) if self._is_tar() else self._read_dir(names)
        batches = [_parse_batch(files[n], n) for n in _BATCHES[split]]
        images = np.concatenate([b.images for b in batches])
        labels = np.concatenate([b.labels for b in batches])
        classes = _parse_meta(files.get(_META))
        return SplitArrays(images, labels), classes

    def _is_tar(self) -> bool:
        return self._location is None or self._location.is_file()

    def _read_dir(self, names: tuple[str, ...]) -> dict[str, bytes]:
        assert self._location is not None
        files = {}
        for name in names:
            path = self._location / name
            try:
                if name == _META and path.stat().st_size > _MAX_META:
                    continue  # not the class list: the default names are used
                files[name] = path.read_bytes()
            except FileNotFoundError as err:
                if name != _META:
                    raise DataError(f"missing CIFAR-10 batch {path}; expected {_EXPECTED}") from err
            except OSError as err:
                raise DataError(f"cannot read CIFAR-10 batch {path}: {err}") from err
        return files

    def _read_tar(self, names: tuple[str, ...]) -> dict[str, bytes]:
        archive = self._location or self._download()
        wanted = {f"{_BATCH_DIR}/{n}": n for n in names}
        files = {}
        with archive_errors(archive), tarfile.open(archive) as tar:
            for member in tar:  # one pass in archive order: no rewinding the gzip stream
                if member.name in wanted and member.isfile():
                    name = wanted[member.name]
                    limit = _MAX_META if name == _META else _MAX_BATCH
                    files[name] = read_member(tar, member, limit, f"{member.name!r} in archive {archive}")
        missing = [n for n in names if n not in files and n != _META]
        if missing:
            raise DataError(
                f"CIFAR-10 archive {archive} lacks {', '.join(missing)}; expected {_EXPECTED}"
            )
        return files

    def _download(self) -> Path:
        folder = data_home() / "cifar10"
        if (folder / CIFAR10_ARCHIVE).is_file():
            return folder / CIFAR10_ARCHIVE
        hint = (
            f"Without internet, get {CIFAR10_ARCHIVE} (or an image folder of CIFAR-10) "
            "elsewhere, put it in a folder DIR and pass data_dir=DIR (CLI: --data-dir DIR)."
        )
        return fetch(CIFAR10_ARCHIVE, CIFAR10_URLS, CIFAR10_MD5, folder, hint=hint)


def _parse_batch(raw: bytes, name: str) -> SplitArrays:
    if not raw or len(raw) % _RECORD:
        raise DataError(
            f"CIFAR-10 batch {name} has {len(raw)} bytes, not a positive multiple of the "
            f"{_RECORD}-byte record; the file is corrupt or truncated: replace it"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _RECORD)  # (N, 1 + 3*32*32)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        raise DataError(f"CIFAR-10 batch {name} holds label {labels.max()}; labels are 0-9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).copy()  # (N, C, H, W)
    return SplitArrays(images, labels)


def _parse_meta(raw: bytes | None) -> tuple[str, ...]:
    if raw is None:
        return CIFAR10_CLASSES
    names = tuple(line.strip() for line in raw.decode("utf-8", "replace").splitlines())
    names = tuple(n for n in names if n)
    return names if len(names) == len(CIFAR10_CLASSES) else CIFAR10_CLASSES
