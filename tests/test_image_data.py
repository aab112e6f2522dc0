"""Tests of vqvae.data and image loading: file trees, sources, layouts, splits, downloads, caches."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import os
import shutil
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vqvae.modalities.image.data.folder as folder_module
import vqvae.modalities.image.data.mnist as mnist_module
from vqvae.data import DataError
from vqvae.data.cache import ArrayCache
from vqvae.data.download import fetch
from vqvae.data.files import DirTree, TarTree, open_tree, unwrap
from vqvae.data.splits import fixed_permutation, validation_indices, validation_indices_by_name
from vqvae.modalities.image.data import ImageData, available_splits, image_datasets, load_images
from vqvae.modalities.image.data.idx import parse_idx

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _shared(relative: str) -> Path:
    path = SHARED_DATA / relative
    if not path.exists():
        pytest.skip(f"{path} not found: tests that need ../shared/data skip outside the dev setup")
    return path


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the decode cache and the download folder inside tmp_path, never in $HOME."""
    monkeypatch.setenv("VQVAE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("VQVAE_DATA", str(tmp_path / "downloads"))


# --- helpers that write tiny data sets ---------------------------------------------------


def _png(path: Path, pixels: np.ndarray) -> Path:
    """Write a uint8 (H, W) grey or (H, W, 3) colour image (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return path


def _solid(value: int, size: tuple[int, int] = (4, 4), rgb: bool = False) -> np.ndarray:
    h, w = size
    return np.full((h, w, 3) if rgb else (h, w), value, dtype=np.uint8)


def _class_tree(root: Path, per_class: dict[str, int], prefix: str = "") -> Path:
    """``root/prefix/<class>/NNNN.png``: grey squares whose value encodes class and index."""
    for c, (name, count) in enumerate(sorted(per_class.items())):
        for i in range(count):
            _png(root / prefix / name / f"{i:04d}.png", _solid(40 * c + i))
    return root


def _tar(source: Path, archive: Path) -> Path:
    mode = "w:gz" if archive.name.endswith(("gz", "tgz")) else "w"
    with tarfile.open(archive, mode) as tar:
        for path in sorted(source.rglob("*")):
            tar.add(path, arcname=path.relative_to(source).as_posix(), recursive=False)
    return archive


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim])
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + dims + array.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, split: str, n: int, *, gz: bool) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in (
        (f"{prefix}-images-idx3-ubyte", images),
        (f"{prefix}-labels-idx1-ubyte", labels),
    ):
        data = _idx(array)
        (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
    return images, labels


# --- MNIST from the shared folder and from IDX files -----------------------------------


def test_shared_mnist_train_val_in_canonical_order() -> None:
    folder = _shared("mnist")
    train = load_images("mnist", "train", data_dir=folder)
    val = load_images("mnist", "val", data_dir=folder)
    assert (len(train), len(val)) == (54_000, 6_000)
    assert train.images.dtype == torch.uint8 and tuple(train.images.shape[1:]) == (1, 28, 28)
    assert train.labels is not None and val.labels is not None
    assert train.labels.dtype == torch.int64 and train.classes == tuple("0123456789")
    # Both parts keep the file's order, so the canonical sequence can be rebuilt.
    train_idx, val_idx = validation_indices(60_000)
    labels = np.empty(60_000, dtype=np.int64)
    labels[train_idx], labels[val_idx] = train.labels.numpy(), val.labels.numpy()
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert "IDX files in" in train.source and str(folder) in train.source


def test_shared_mnist_has_no_test_split() -> None:
    folder = _shared("mnist")
    assert available_splits("mnist", folder) == ("train",)
    with pytest.raises(DataError, match=r"no 'test' split; available: train, val"):
        load_images("mnist", "test", data_dir=SHARED_DATA)  # also finds SHARED_DATA/mnist


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reads_idx_files_gzipped_or_not(tmp_path: Path, gz: bool) -> None:
    train_images, _ = _write_mnist(tmp_path, "train", 20, gz=gz)
    test_images, test_labels = _write_mnist(tmp_path, "test", 7, gz=gz)
    assert available_splits("mnist", tmp_path) == ("train", "test")
    test = load_images("mnist", "test", data_dir=tmp_path)
    assert torch.equal(test.images[:, 0], torch.from_numpy(test_images))
    assert test.labels is not None and test.labels.tolist() == test_labels.tolist()
    assert len(load_images("mnist", "train", data_dir=tmp_path)) == 18
    assert len(load_images("mnist", "val", data_dir=tmp_path)) == 2


def test_mnist_image_size_resizes(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "train", 10, gz=True)
    data = load_images("mnist", data_dir=tmp_path, image_size=32)
    assert tuple(data.images.shape) == (9, 1, 32, 32)


def test_parse_idx_rejects_bad_magic_truncation_and_trailing_bytes() -> None:
    good = _idx(np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert parse_idx(good, "x").tolist() == np.arange(12).reshape(3, 4).tolist()
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"\x1f\x8b" + good[2:], "x")
    with pytest.raises(DataError, match="not an IDX file"):
        parse_idx(b"", "x")
    with pytest.raises(DataError, match="truncated inside its header"):
        parse_idx(good[:6], "x")
    with pytest.raises(DataError, match="truncated"):
        parse_idx(good[:-1], "x")
    with pytest.raises(DataError, match="longer than its header says"):
        parse_idx(good + b"\0", "x")


def test_mnist_corrupt_or_mismatched_files_raise(tmp_path: Path) -> None:
    _write_mnist(tmp_path, "train", 5, gz=False)
    images = tmp_path / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte is truncated"):
        load_images("mnist", data_dir=tmp_path)
    _write_mnist(tmp_path, "train", 5, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx(np.zeros(4, np.uint8)))
    with pytest.raises(DataError, match=r"one per image"):
        load_images("mnist", data_dir=tmp_path)
    images.write_bytes(gzip.compress(_idx(np.zeros((5, 28, 28), np.uint8)))[:-8])
    with pytest.raises(DataError, match="cannot read IDX file"):
        load_images("mnist", data_dir=tmp_path)


def test_mnist_data_dir_without_files_names_them(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no MNIST files in .*train-images-idx3-ubyte"):
        load_images("mnist", data_dir=tmp_path)
    with pytest.raises(DataError, match="not an existing folder"):
        load_images("mnist", data_dir=tmp_path / "missing")


# --- downloads from a local HTTP server ---------------------------------------------------


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Serve tmp_path/www on 127.0.0.1; yields (folder, base URL)."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _unreachable_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there once the socket is closed


def _serve_mnist_test(root: Path, monkeypatch: pytest.MonkeyPatch, *, good: bool) -> np.ndarray:
    images, _ = _write_mnist(root, "test", 6, gz=True)
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        md5 = hashlib.md5((root / name).read_bytes()).hexdigest() if good else "0" * 32
        monkeypatch.setitem(mnist_module.MNIST_MD5, name, md5)
    return images


def test_download_with_good_checksum_is_cached(
    tmp_path: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, url = http_root
    images = _serve_mnist_test(root, monkeypatch, good=True)
    monkeypatch.setattr(mnist_module, "MNIST_MIRRORS", (_unreachable_url(), url))
    data = load_images("mnist", "test")  # the first mirror fails, the second serves
    assert torch.equal(data.images[:, 0], torch.from_numpy(images))
    stored = sorted(p.name for p in (tmp_path / "downloads" / "mnist").iterdir())
    assert stored == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    monkeypatch.setattr(mnist_module, "MNIST_MIRRORS", (_unreachable_url(),))
    assert torch.equal(load_images("mnist", "test").images, data.images)  # no network needed


def test_download_with_bad_checksum_leaves_nothing(
    tmp_path: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, url = http_root
    _serve_mnist_test(root, monkeypatch, good=False)
    monkeypatch.setattr(mnist_module, "MNIST_MIRRORS", (url,))
    with pytest.raises(DataError, match="is not the expected 0000"):
        load_images("mnist", "test")
    assert list((tmp_path / "downloads" / "mnist").iterdir()) == []


def test_download_unreachable_says_where_to_put_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mnist_module, "MNIST_MIRRORS", (_unreachable_url(),))
    with pytest.raises(DataError, match=r"could not download t10k.*--data-dir DIR") as info:
        load_images("mnist", "test")
    assert "train-labels-idx1-ubyte.gz" in str(info.value)


def test_fetch_without_checksum_keeps_only_what_its_check_accepts(
    tmp_path: Path, http_root: tuple[Path, str]
) -> None:
    www, url = http_root
    (www / "f.bin").write_bytes(b"payload")

    def refuse(path: Path) -> None:
        raise DataError(f"it holds {path.read_bytes()!r},\n not the data")

    dest = tmp_path / "d"
    with pytest.raises(
        DataError,
        match=r"could not download f\.bin \(.*f\.bin: it holds b'payload', not the data\)\. go offline",
    ):
        fetch("f.bin", [url + "f.bin"], None, dest, hint="go offline", check=refuse)
    assert list(dest.iterdir()) == []  # nothing under the final name, no temporary file
    kept = fetch("f.bin", [url + "f.bin"], None, dest, hint="", check=lambda path: None)
    assert kept == dest / "f.bin" and kept.read_bytes() == b"payload"
    with pytest.raises(ValueError, match="needs an md5 or a check"):
        fetch("f.bin", [url + "f.bin"], None, dest, hint="")


def _cifar_batch(labels: list[int], seed: int) -> tuple[bytes, np.ndarray]:
    images = np.random.default_rng(seed).integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    records = [
        bytes([label]) + image.tobytes() for label, image in zip(labels, images, strict=True)
    ]
    return b"".join(records), images


def _write_cifar_bin(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """data_batch_1..5 with two images each, test_batch with three; returns test images, labels."""
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}.bin").write_bytes(_cifar_batch([i, 9 - i], seed=i)[0])
    raw, images = _cifar_batch([3, 1, 4], seed=0)
    (folder / "test_batch.bin").write_bytes(raw)
    (folder / "batches.meta.txt").write_text("\n".join(f"class{i}" for i in range(10)) + "\n\n")
    return images, np.array([3, 1, 4])


def test_download_cifar10_binary_tarball(
    tmp_path: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    root, url = http_root
    images, labels = _write_cifar_bin(tmp_path / "bin" / "cifar-10-batches-bin")
    archive = _tar(tmp_path / "bin", root / "cifar-10-binary.tar.gz")
    monkeypatch.setattr("vqvae.modalities.image.data.cifar.CIFAR10_URLS", (url + archive.name,))
    monkeypatch.setattr(
        "vqvae.modalities.image.data.cifar.CIFAR10_MD5",
        hashlib.md5(archive.read_bytes()).hexdigest(),
    )
    test = load_images("cifar10", "test")
    assert torch.equal(test.images, torch.from_numpy(images))
    assert (tmp_path / "downloads" / "cifar10" / "cifar-10-binary.tar.gz").is_file()


# --- CIFAR-10 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("packed", [False, True])
def test_cifar10_binary_batches(tmp_path: Path, packed: bool) -> None:
    images, labels = _write_cifar_bin(tmp_path / "src" / "cifar-10-batches-bin")
    data_dir = tmp_path / "src"
    if packed:
        data_dir = tmp_path / "packed"
        data_dir.mkdir()
        _tar(tmp_path / "src", data_dir / "cifar-10-binary.tar.gz")
    assert available_splits("cifar10", data_dir) == ("train", "test")
    test = load_images("cifar10", "test", data_dir=data_dir)
    assert torch.equal(test.images, torch.from_numpy(images))  # R, G, B planes, row-major
    assert test.labels is not None and test.labels.tolist() == labels.tolist()
    assert test.classes == tuple(f"class{i}" for i in range(10))
    train, val = (load_images("cifar10", s, data_dir=data_dir) for s in ("train", "val"))
    assert (len(train), len(val)) == (9, 1)


def test_cifar10_corrupt_batch_raises(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-10-batches-bin"
    _write_cifar_bin(folder)
    (folder / "test_batch.bin").write_bytes(b"\0" * 100)
    with pytest.raises(DataError, match=r"test_batch.bin has 100 bytes"):
        load_images("cifar10", "test", data_dir=tmp_path)


def test_cifar10_from_image_archive(tmp_path: Path) -> None:
    classes = {"airplane": 3, "cat": 4, "ship": 3}
    _class_tree(tmp_path / "tree", classes, prefix="train")
    data_dir = tmp_path / "data" / "cifar10"
    data_dir.mkdir(parents=True)
    _tar(tmp_path / "tree", data_dir / "cifar10-train-jpeg.tar.gz")
    parent = tmp_path / "data"  # found in its cifar10/ folder, as with ../shared/data
    assert available_splits("cifar10", parent) == ("train",)
    train = load_images("cifar10", data_dir=parent)
    val = load_images("cifar10", "val", data_dir=parent)
    assert (len(train), len(val)) == (9, 1)
    assert train.classes == ("airplane", "cat", "ship")
    assert train.source.startswith("cifar10 (image archive")
    with pytest.raises(DataError, match="no 'test' split"):
        load_images("cifar10", "test", data_dir=parent)


def test_cifar10_data_dir_without_data(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no CIFAR-10 data in .*cifar-10-batches-bin"):
        load_images("cifar10", data_dir=tmp_path)


def test_shared_cifar10_archive_loads() -> None:
    archive = _shared("cifar10/cifar10-train-jpeg.tar.gz")
    start = time.perf_counter()
    val = load_images("cifar10", "val", data_dir=archive.parent)
    cold = time.perf_counter() - start
    if cold > 20:
        pytest.skip(f"decoding the shared CIFAR-10 archive took {cold:.0f} s (> 20 s)")
    assert tuple(val.images.shape) == (5_000, 3, 32, 32) and len(val.classes) == 10
    assert val.labels is not None and val.labels.bincount().min() > 400
    train = load_images("cifar10", "train", data_dir=archive.parent)  # from the cache
    assert len(train) == 45_000


# --- image folders -------------------------------------------------------------------------


def _check_class_layout(data: ImageData) -> None:
    assert data.classes == ("cat", "dog")
    assert data.labels is not None
    assert tuple(data.images.shape[1:]) == (1, 4, 4)
    # Each image's value encodes its class (40 * c + i), so labels must match pixels.
    assert (data.images[:, 0, 0, 0] // 40 == data.labels).all()


@pytest.mark.parametrize("kind", ["dir", ".tar", ".tar.gz", ".tgz"])
def test_folder_class_layout(tmp_path: Path, kind: str) -> None:
    tree = _class_tree(tmp_path / "tree", {"cat": 6, "dog": 4})
    spec = tree if kind == "dir" else _tar(tree, tmp_path / f"images{kind}")
    train, val = load_images(spec, "train"), load_images(str(spec), "val")
    assert (len(train), len(val)) == (9, 1)
    _check_class_layout(train)
    _check_class_layout(val)
    assert available_splits(spec) == ("train",)
    assert ("archive" if kind != "dir" else "folder") in train.source


@pytest.mark.parametrize("kind", ["dir", ".tar.gz"])
def test_folder_split_layout_uses_real_splits(tmp_path: Path, kind: str) -> None:
    tree = tmp_path / "tree"
    _class_tree(tree, {"cat": 3, "dog": 2}, prefix="train")
    _class_tree(tree, {"cat": 1, "dog": 1}, prefix="val")
    _class_tree(tree, {"dog": 2}, prefix="test")
    spec = tree if kind == "dir" else _tar(tree, tmp_path / f"images{kind}")
    assert available_splits(spec) == ("train", "val", "test")
    sizes = {split: len(load_images(spec, split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 5, "val": 2, "test": 2}  # nothing carved: val is real
    test = load_images(spec, "test")
    assert test.classes == ("cat", "dog") and test.labels is not None
    assert test.labels.tolist() == [1, 1]  # class indices shared across splits


def test_folder_flat_layout_has_no_classes(tmp_path: Path) -> None:
    for i in range(5):
        _png(tmp_path / "flat" / f"{i}.png", _solid(i))
    data = load_images(tmp_path / "flat", "train")
    assert data.labels is None and data.classes == () and len(data) == 4


def test_single_wrapper_folder_is_unwrapped(tmp_path: Path) -> None:
    _class_tree(tmp_path / "tree", {"cat": 2, "dog": 2}, prefix="photos")
    data = load_images(_tar(tmp_path / "tree", tmp_path / "photos.tar.gz"))
    assert data.classes == ("cat", "dog")


def test_folder_ignores_hidden_and_non_image_files(tmp_path: Path) -> None:
    tree = _class_tree(tmp_path / "tree", {"cat": 2, "dog": 2})
    (tree / "cat" / "._0000.png").write_bytes(b"AppleDouble junk")
    (tree / "cat" / "notes.txt").write_text("not an image")
    (tree / "README").write_text("hello")
    _png(tree / ".thumbnails" / "x.png", _solid(1))
    for spec in (tree, _tar(tree, tmp_path / "tree.tar")):
        data = load_images(spec, "train")
        assert data.classes == ("cat", "dog") and len(data) + len(load_images(spec, "val")) == 4


def test_resize_and_centre_crop_non_square(tmp_path: Path) -> None:
    wide = np.zeros((4, 8), dtype=np.uint8)  # (H, W): columns 0..7 hold 0, 10, ..., 70
    wide[:] = np.arange(8) * 10
    _png(tmp_path / "a" / "wide.png", wide)
    _png(tmp_path / "a" / "tall.png", np.repeat(np.arange(16, dtype=np.uint8)[:, None] * 10, 8, 1))
    with pytest.raises(DataError, match=r"differ in size.*--image-size"):
        load_images(tmp_path / "a")
    data = load_images(tmp_path / "a", "train", image_size=4)
    val = load_images(tmp_path / "a", "val", image_size=4)
    assert tuple(data.images.shape) == (1, 1, 4, 4) == tuple(val.images.shape)
    both = torch.cat([data.images, val.images])
    crops = {tuple(img[0, 0].tolist()) for img in both}
    assert (20, 30, 40, 50) in crops  # wide: no resize (short side is 4), middle 4 columns
    small = load_images(tmp_path / "a", "train", image_size=2)
    assert tuple(small.images.shape[2:]) == (2, 2)


def test_channels_grey_rgb_and_16_bit(tmp_path: Path) -> None:
    _png(tmp_path / "grey" / "a.png", _solid(10))
    _png(tmp_path / "grey" / "b.png", _solid(20))
    assert load_images(tmp_path / "grey").images.shape[1] == 1
    _png(tmp_path / "mixed" / "a.png", _solid(10))
    _png(tmp_path / "mixed" / "b.jpg", _solid(200, rgb=True))
    both = torch.cat([load_images(tmp_path / "mixed", s).images for s in ("train", "val")])
    assert both.shape[1] == 3
    grey = both[both[:, 0, 0, 0] == 10]
    assert grey.shape[0] == 1 and (grey == 10).all()  # grey copied into R, G and B
    deep = tmp_path / "deep"
    deep.mkdir()
    for name, value in (("a.png", 0x1234), ("b.png", 0xFF00)):
        Image.fromarray(np.full((4, 4), value, dtype=np.uint16)).save(deep / name)
    pixels = torch.cat([load_images(deep, s).images for s in ("train", "val")])
    assert sorted(pixels[:, 0, 0, 0].tolist()) == [0x12, 0xFF]


def test_corrupt_image_names_the_file(tmp_path: Path) -> None:
    tree = _class_tree(tmp_path / "tree", {"cat": 2, "dog": 2})
    (tree / "dog" / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(DataError, match=r"cannot decode image .*dog/0001\.png"):
        load_images(tree)
    with pytest.raises(DataError, match=r"'dog/0001\.png' in archive .*tree\.tar\.gz"):
        load_images(_tar(tree, tmp_path / "tree.tar.gz"))


def test_corrupt_archive_names_it(tmp_path: Path) -> None:
    archive = _tar(_class_tree(tmp_path / "tree", {"a": 2}), tmp_path / "x.tar.gz")
    archive.write_bytes(archive.read_bytes()[:40])
    with pytest.raises(DataError, match=r"cannot read archive .*x\.tar\.gz"):
        load_images(archive)


def test_empty_missing_and_mixed_folders_raise(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"no images found in .*empty"):
        load_images(tmp_path / "empty")
    with pytest.raises(DataError, match=r"unknown data .*nowhere.*mnist"):
        load_images(tmp_path / "nowhere")
    with pytest.raises(DataError, match=r"is a file, not an image folder"):
        load_images(tmp_path / "empty" / "notes.txt")
    mixed = _class_tree(tmp_path / "mixed", {"cat": 2})
    _png(mixed / "loose.png", _solid(3))
    with pytest.raises(DataError, match=r"both image files, such as 'loose.png', and class"):
        load_images(mixed)


def test_bad_arguments_raise(tmp_path: Path) -> None:
    tree = _class_tree(tmp_path / "tree", {"cat": 2})
    with pytest.raises(DataError, match=r"unknown split 'valid'"):
        load_images(tree, "valid")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(DataError, match="image_size must be a positive integer"):
            load_images(tree, image_size=bad)  # type: ignore[arg-type]


# --- mnist-mini, splits, ImageData --------------------------------------------------------


def test_mnist_mini_offline_deterministic() -> None:
    train, val = load_images("mnist-mini", "train"), load_images("mnist-mini", "val")
    assert (len(train), len(val)) == (4_500, 500)
    assert train.classes == tuple("0123456789") and tuple(train.images.shape[1:]) == (1, 28, 28)
    assert train.labels is not None and set(train.labels[:100].tolist()) == set(range(10))
    again = load_images("mnist-mini", "train")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    seen = {img.numpy().tobytes() for img in train.images}
    assert not any(img.numpy().tobytes() in seen for img in val.images)
    assert available_splits("mnist-mini") == ("train",)
    with pytest.raises(DataError, match="has no 'test' split"):
        load_images("mnist-mini", "test")


def test_validation_split_is_fixed_and_disjoint() -> None:
    train, val = validation_indices(20)
    assert val.tolist() == [4, 10]  # pinned: changing the carved split breaks comparisons
    assert fixed_permutation(8, 0).tolist() == [0, 3, 5, 7, 6, 2, 1, 4]
    for n in (2, 7, 50_000):
        train, val = validation_indices(n)
        assert len(val) == max(1, round(n / 10)) and not set(train) & set(val)
        assert sorted([*train, *val]) == list(range(n))
    with pytest.raises(DataError, match="at least 2"):
        validation_indices(1)


def test_validation_by_name_depends_only_on_each_name() -> None:
    names = [f"{i:02d}.wav" for i in range(30)]
    train, val = validation_indices_by_name(names)
    assert val.tolist() == [17, 20]  # pinned: changing it moves clips between train and val
    assert train.dtype == val.dtype == np.int64
    assert sorted([*train, *val]) == list(range(30))
    # Adding names never moves an existing one: val is a per-name decision.
    more = ["new.wav", *names, "other/x.wav"]
    _, val_more = validation_indices_by_name(more)
    assert {more[i] for i in val_more} >= {names[i] for i in val}
    assert {more[i] for i in val_more} - {names[i] for i in val} <= {"new.wav", "other/x.wav"}
    assert [len(part) for part in validation_indices_by_name([])] == [0, 0]


def test_folder_val_split_disjoint_and_stable(tmp_path: Path) -> None:
    for i in range(30):
        _png(tmp_path / "flat" / f"{i:02d}.png", _solid(i * 8))
    train, val = load_images(tmp_path / "flat", "train"), load_images(tmp_path / "flat", "val")

    def values(data: ImageData) -> list[int]:
        return data.images[:, 0, 0, 0].tolist()

    assert sorted(values(train) + values(val)) == [i * 8 for i in range(30)]
    assert not set(values(train)) & set(values(val)) and len(val) == 3
    assert values(load_images(tmp_path / "flat", "val")) == values(val)


def test_image_data_float_variance_and_checks() -> None:
    images = torch.tensor([0, 51, 255, 102], dtype=torch.uint8).reshape(4, 1, 1, 1)
    data = ImageData(images, torch.tensor([0, 1, 1, 0]), ("a", "b"), "test", "train")
    assert data.to_float().dtype == torch.float32 and data.to_float().max() == 1.0
    assert tuple(data.to_float(2).shape) == (1, 1, 1, 1) and data.to_float(2).item() == 1.0
    assert tuple(data.to_float(slice(1, 3)).shape) == (2, 1, 1, 1)
    expected = (images.double() / 255).var(unbiased=False).item()
    assert data.pixel_variance() == pytest.approx(expected, rel=1e-12)
    with pytest.raises(DataError, match="uint8 tensor"):
        ImageData(images.float(), None, (), "test", "train")
    with pytest.raises(DataError, match="one per image"):
        ImageData(images, torch.tensor([0, 1]), ("a", "b"), "test", "train")
    with pytest.raises(DataError, match="2 class names"):
        ImageData(images, torch.tensor([0, 1, 2, 0]), ("a", "b"), "test", "train")
    with pytest.raises(DataError, match="split 'dev'"):
        ImageData(images, None, (), "test", "dev")


def test_image_datasets_registry() -> None:
    names = image_datasets()
    assert {"mnist", "cifar10", "mnist-mini"} <= set(names)
    assert all(isinstance(d, str) and d and "\n" not in d for d in names.values())


# --- the decode cache ---------------------------------------------------------------------


def _fail_decode(*args: object) -> None:
    raise AssertionError("decoded although the cache should have answered")


@pytest.mark.parametrize("kind", ["dir", ".tar.gz"])
def test_second_load_hits_the_cache(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    tree = _class_tree(tmp_path / "tree", {"cat": 3, "dog": 3})
    spec = tree if kind == "dir" else _tar(tree, tmp_path / f"t{kind}")
    first = load_images(spec, "val")
    with monkeypatch.context() as patch:
        patch.setattr(folder_module, "_decode_image", _fail_decode)
        cached = load_images(spec, "val")
        assert torch.equal(first.images, cached.images) and cached.classes == first.classes
        assert torch.equal(first.labels, cached.labels)
        assert available_splits(spec) == ("train",)
    if kind == "dir":  # an edited file changes the key: decoded afresh
        time.sleep(0.01)
        _png(tree / "cat" / "0000.png", _solid(77))
        both = torch.cat([load_images(tree, s).images for s in ("train", "val")])
        assert (both == 77).any()


def test_corrupt_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tree = _class_tree(tmp_path / "tree", {"cat": 3})
    first = load_images(tree)
    entries = list((tmp_path / "cache").rglob("*.npz"))
    assert len(entries) == 1
    entries[0].write_bytes(b"PK\x03\x04 not really a zip")
    again = load_images(tree)
    assert torch.equal(first.images, again.images)
    with np.load(entries[0], allow_pickle=False) as npz:  # rewritten as a valid entry
        assert "train_images" in npz["mapped"].tolist()  # the images sit beside it, memory-mapped
    monkeypatch.setattr(folder_module, "_decode_image", _fail_decode)
    assert torch.equal(load_images(tree).images, first.images)


def test_cache_never_pickles(tmp_path: Path) -> None:
    load_images(_class_tree(tmp_path / "tree", {"cat": 2, "dog": 2}))
    (entry,) = (tmp_path / "cache").rglob("*.npz")
    with np.load(entry, allow_pickle=False) as npz:
        assert all(npz[name].dtype != object for name in npz.files)


def test_array_cache_versions_and_bad_entries(tmp_path: Path) -> None:
    def unpack(arrays: dict[str, np.ndarray]) -> np.ndarray | None:
        return arrays["x"] if arrays["x"].dtype == np.int16 else None

    v1 = ArrayCache("things", 1, lambda x: {"x": x}, unpack)
    key = {"path": "/somewhere/a b.bin", "size": 3}
    decoded = []

    def decode() -> np.ndarray:
        decoded.append(True)
        return np.arange(3, dtype=np.int16)

    first, again = v1.get("a b", key, decode), v1.get("a b", key, decode)
    assert np.array_equal(first, again) and decoded == [True]  # the second came from disk
    path = v1.path("a b", key)
    assert path.parent == tmp_path / "cache" / "things" and path.name.startswith("a_b-")
    assert v1.peek("a b", {**key, "size": 4}) is None  # another key, another entry
    # A new format version neither finds the old entry nor misreads it under its own name.
    v2 = ArrayCache("things", 2, lambda x: {"x": x}, unpack)
    assert v2.path("a b", key) != path and v2.peek("a b", key) is None
    shutil.copy(path, v2.path("a b", key))
    assert v2.peek("a b", key) is None
    v1.put("a b", key, np.arange(3, dtype=np.int32))  # its unpack refuses int32
    assert v1.peek("a b", key) is None
    path.write_bytes(b"PK\x03\x04 not a zip")
    assert v1.peek("a b", key) is None
    assert np.array_equal(v1.get("a b", key, decode), first) and len(decoded) == 2
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []


# --- file trees: folders and archives read in place --------------------------------------


def _add_member(
    tar: tarfile.TarFile,
    name: str,
    kind: bytes = tarfile.REGTYPE,
    data: bytes = b"",
    link: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, len(data)
    tar.addfile(info, io.BytesIO(data) if data else None)


def test_tar_tree_lists_only_plain_visible_members_inside_the_archive(tmp_path: Path) -> None:
    archive = tmp_path / "odd.tar"
    with tarfile.open(archive, "w") as tar:
        _add_member(tar, "./set/a.png", data=b"a")
        _add_member(tar, "/set/abs.png", data=b"b")  # a leading / is dropped
        _add_member(tar, "set/../../escape.png", data=b"c")  # would land outside: ignored
        _add_member(tar, "set/.hidden.png", data=b"d")
        _add_member(tar, ".git/x.png", data=b"e")
        _add_member(tar, "set/sym.png", tarfile.SYMTYPE, link="/etc/passwd")
        _add_member(tar, "set/hard.png", tarfile.LNKTYPE, link="set/a.png")
        _add_member(tar, "set/sub", tarfile.DIRTYPE)
        _add_member(tar, "set/dev", tarfile.CHRTYPE)
    tree = open_tree(archive, "test")
    assert isinstance(tree, TarTree) and tree.description == f"test archive {archive}"
    assert [e.parts for e in tree.files] == [("set", "a.png"), ("set", "abs.png")]
    assert dict(tree.read_all(tree.files)) == {0: b"a", 1: b"b"}
    assert tree.where(tree.files[0]) == f"'./set/a.png' in archive {archive}"
    assert [e.parts for e in unwrap(tree.files)] == [("a.png",), ("abs.png",)]
    assert unwrap(tree.files, keep={"set"}) == tree.files  # a layout folder stays


def test_dir_tree_skips_hidden_follows_linked_folders_and_fingerprints_by_suffix(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"x")
    (root / "a" / ".y.png").write_bytes(b"y")
    (root / ".cache").mkdir()
    (root / ".cache" / "z.png").write_bytes(b"z")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "w.PNG").write_bytes(b"w")
    os.symlink(tmp_path / "elsewhere", root / "linked")
    tree = open_tree(root, "test")
    assert isinstance(tree, DirTree) and tree.description == f"test folder {root}"
    assert [(e.parts, e.suffix) for e in tree.files] == [
        (("a", "x.png"), ".png"),
        (("linked", "w.PNG"), ".png"),
    ]
    assert sorted(data for _, data in tree.read_all(tree.files)) == [b"w", b"x"]
    before = tree.fingerprint({".png"})
    (root / "a" / "notes.txt").write_text("not a .png: no new key")
    assert DirTree(root, "test").fingerprint({".png"}) == before
    (root / "a" / "x.png").write_bytes(b"edited")
    assert DirTree(root, "test").fingerprint({".png"}) != before
    with pytest.raises(DataError, match=r"test folder .*missing does not exist"):
        open_tree(tmp_path / "missing", "test")
    with pytest.raises(DataError, match=r"test archive .*missing\.tgz does not exist"):
        open_tree(tmp_path / "missing.tgz", "test")


# --- package hygiene ------------------------------------------------------------------------


def test_splits_with_and_without_classes_raise(tmp_path: Path) -> None:
    _class_tree(tmp_path / "tree", {"cat": 2}, prefix="train")
    _png(tmp_path / "tree" / "test" / "x.png", _solid(5))
    with pytest.raises(DataError, match=r"train hold class folders but test hold"):
        load_images(tmp_path / "tree")


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    image = Image.fromarray(np.zeros((2, 6), dtype=np.uint8))  # 6 wide, 2 high
    exif = image.getexif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    (tmp_path / "rot").mkdir()
    image.save(tmp_path / "rot" / "a.jpg", exif=exif)
    image.save(tmp_path / "rot" / "b.jpg", exif=exif)
    assert tuple(load_images(tmp_path / "rot").images.shape[2:]) == (6, 2)  # (H, W)
