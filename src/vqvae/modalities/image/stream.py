"""Image data larger than memory: WebDataset shards, streamed, and the task that trains on them.

Layout (WebDataset's): ``DIR/train-000000.tar, ...`` each hold samples ``KEY.png`` (grey or
RGB) and ``KEY.cls`` (the class index in ASCII, optional); ``DIR/val-*.tar`` hold the
validation samples; ``DIR/dataset.json`` (optional) names the classes and counts the
samples. ``vqvae shard`` writes it (:func:`write_shards`); ``--data 'DIR/train-{000000..000099}.tar'``
trains on it.

The stream. Epoch ``e`` orders the shards by a permutation seeded by ``(seed, e)``; rank
``r`` of ``R`` takes every R-th of them, and DataLoader worker ``w`` of ``W`` every W-th
of those, so each sample is read exactly once per epoch across all ranks and workers.
Each worker passes its samples through a shuffle buffer seeded by
``(seed, e, r, w)`` and cuts them into batches of ``batch / R`` images; it runs through
its epochs without end, so no batch is ever partial and the DataLoader takes batch ``k``
of a rank from worker ``k mod W``, as its ``(k div W)``-th batch.

Resume. Batch ``k`` is a function of ``(seed, k, R, W)`` and the shards, so a run resumed
at step ``S`` skips its first ``S`` batches: each worker reads (without decoding) the
samples of the batches it already gave and goes on from there. Resume is exact for the
same shards, ``--batch-size``, seed, world size and ``--workers`` (the run records
``workers``; ``--resume`` refuses another value); the skip costs reading the bytes
already trained on once.

Validation holds out the ``val-*.tar`` shards beside the training shards (the file name
with ``train`` replaced by ``val``), read into memory up to ``--val-images`` samples in
file order: the same images for every run.
"""

from __future__ import annotations

import io
import json
import random
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vqvae.atomic import atomic_write, write_json
from vqvae.autoencoder import VAE
from vqvae.data.errors import DataError
from vqvae.distributed import rank, world_size
from vqvae.modalities.image.data import ImageData
from vqvae.modalities.image.task import ImageTask, to_input
from vqvae.train import LoopState

__all__ = ["ShardStream", "StreamImageTask", "expand_shards", "file_batches", "is_shard_pattern", "read_samples",
           "shard_info", "shard_splits", "split_data", "split_shards", "val_shards", "write_shards"]

_RANGE = re.compile(r"\{\d+\.\.\d+\}")
_IMAGE_KEYS = ("png", "jpg", "jpeg", "webp", "bmp")
INFO_FILE = "dataset.json"
VARIANCE_SAMPLES = 10_000  # training samples (in shard order) that estimate the pixel variance


def is_shard_pattern(spec: object) -> bool:
    """Whether ``--data`` names WebDataset shards: a ``.tar`` path with a ``{000..099}`` range."""
    return isinstance(spec, str) and ".tar" in spec and bool(_RANGE.search(spec))


def expand_shards(pattern: str) -> list[str]:
    """The shard files of ``pattern`` (brace ranges expanded), which must all exist.

    Raises:
        DataError: when no file matches, or some are missing.
    """
    from braceexpand import braceexpand  # webdataset's dependency

    names = list(braceexpand(pattern))
    present = [n for n in names if Path(n).is_file()]
    if not present:
        raise DataError(f"no shards matched {pattern!r} ({len(names)} names, none exists); write them "
                        f"with: vqvae shard SPEC -o DIR, then pass --data 'DIR/train-{{000000..N}}.tar'")
    if len(present) < len(names):
        missing = [n for n in names if n not in set(present)]
        raise DataError(f"{len(missing)} of the {len(names)} shards of {pattern!r} are missing, e.g. "
                        f"{missing[0]}: fix the range in the pattern")
    return names


def val_shards(pattern: str) -> list[str]:
    """The validation shards beside ``pattern``: ``val-*.tar`` for ``train-{...}.tar``."""
    return split_shards(pattern, "val")


def split_shards(pattern: str, split: str) -> list[str]:
    """The shards of ``split`` for the training pattern ``pattern``: the pattern's own files for
    ``train``, else the ``val-*.tar`` or ``test-*.tar`` files beside them."""
    if split == "train":
        return expand_shards(pattern)
    directory, name = Path(pattern).parent, Path(pattern).name
    prefix = name.split("{", 1)[0]
    if "train" not in prefix:
        raise DataError(f"cannot find {split} shards for {pattern!r}: the {split} split is read from the "
                        f"{split}-*.tar shards beside train-*.tar ones; name the shards as vqvae shard does")
    found = sorted(str(p) for p in directory.glob(prefix.replace("train", split, 1) + "*.tar"))
    if not found:
        raise DataError(f"no {split} shards {directory / prefix.replace('train', split, 1)}*.tar beside "
                        f"{pattern!r}: write them with vqvae shard (it writes train-*.tar, val-*.tar and, "
                        f"when the source has one, test-*.tar)")
    return found


def shard_splits(pattern: str) -> tuple[str, ...]:
    """The splits that shards beside ``pattern`` hold (``train`` and ``val``, and ``test`` when present)."""
    prefix = Path(pattern).name.split("{", 1)[0]
    test = "train" in prefix and any(Path(pattern).parent.glob(prefix.replace("train", "test", 1) + "*.tar"))
    return ("train", "val", "test") if test else ("train", "val")


def shard_info(pattern: str) -> dict:
    """``dataset.json`` beside the shards (classes, shape, counts), or ``{}``."""
    path = Path(pattern).parent / INFO_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not readable JSON ({exc}): rewrite the shards with vqvae shard") from exc


# ------------------------------------------------------------------ reading


def _raw_samples(shards: Sequence[str]) -> Iterator[dict]:
    """Undecoded samples (``{"__key__", "png", "cls", ...}``) of the shards, in order."""
    from webdataset.tariterators import tarfile_samples

    for url in shards:
        try:
            yield from tarfile_samples([{"url": url}])
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            raise DataError(f"shard {url} is corrupt or unreadable ({type(exc).__name__}: {exc}): "
                            f"write it again with vqvae shard, or leave it out of the pattern") from exc


def _decode(sample: dict) -> tuple[np.ndarray, int]:
    """uint8 ``(C, H, W)`` and the label (-1 without ``.cls``) of one raw sample."""
    where = f"sample {sample.get('__key__')!r} of {sample.get('__url__')}"
    key = next((k for k in _IMAGE_KEYS if k in sample), None)
    if key is None:
        raise DataError(f"{where} has no image ({', '.join('.' + k for k in _IMAGE_KEYS)}); it has "
                        f"{sorted(k for k in sample if not k.startswith('__'))}")
    try:
        with Image.open(io.BytesIO(sample[key])) as img:
            img = img.convert("L" if img.mode in ("L", "1", "I;16", "I") else "RGB")
            pixels = np.asarray(img, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError(f"{where} is not a readable image ({exc})") from exc
    pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W)
    label = int(sample["cls"].decode().strip()) if "cls" in sample else -1
    return pixels, label


def read_samples(shards: Sequence[str], limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` samples of the shards, in file order, decoded into memory.

    Returns:
        uint8 images ``(N, C, H, W)`` and int64 labels ``(N,)`` (-1 where absent).
    """
    images, labels, need = [], [], limit
    for batch, batch_labels in file_batches(shards, 1000 if limit is None else max(1, min(limit, 1000))):
        images.append(batch[:need])
        labels.append(batch_labels[:need])
        need = None if need is None else need - len(images[-1])
        if need == 0:
            break
    if not images:
        raise DataError(f"the shards {shards[0]}... hold no samples")
    return np.concatenate(images), np.concatenate(labels)


def file_batches(shards: Sequence[str], batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The samples of the shards in file order, decoded ``batch_size`` at a time (the last batch
    may be smaller): uint8 images ``(b, C, H, W)`` and int64 labels ``(b,)`` (-1 where absent)."""
    images, labels, shape = [], [], None
    for sample in _raw_samples(shards):
        pixels, label = _decode(sample)
        shape = shape or pixels.shape
        if pixels.shape != shape:
            raise DataError(f"sample {sample['__key__']!r} of {sample['__url__']} is {pixels.shape}, the "
                            f"first is {shape}: shards must hold images of one size")
        images.append(pixels)
        labels.append(label)
        if len(images) == batch_size:
            yield np.stack(images), np.asarray(labels, dtype=np.int64)
            images, labels = [], []
    if images:
        yield np.stack(images), np.asarray(labels, dtype=np.int64)


@dataclass(frozen=True)
class ShardStream:
    """One rank's endless stream of batches from the shards (see the module's docstring).

    Args:
        shards: the training shard files.
        batch_size: images per batch of this rank (the global batch / world size).
        seed: the run's seed.
        rank, world: this process and the number of processes.
        workers: DataLoader worker processes (0: read in this process, as one worker).
        buffer: samples in each worker's shuffle buffer.
        shape: ``(C, H, W)`` every image must have.
    """

    shards: tuple[str, ...]
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1
    workers: int = 0
    buffer: int = 1000
    shape: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        readers = self.world * max(self.workers, 1)
        if len(self.shards) < readers:
            raise DataError(f"{len(self.shards)} shards cannot feed {self.world} process(es) x "
                            f"{max(self.workers, 1)} worker(s): write at least {readers} shards "
                            f"(a smaller vqvae shard --shard-size) or use fewer --workers")

    def assigned(self, epoch: int, worker: int) -> list[str]:
        """The shards ``worker`` of this rank reads in ``epoch``."""
        order = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        return [self.shards[i] for i in order][self.rank :: self.world][worker :: max(self.workers, 1)]

    def epoch(self, epoch: int, worker: int) -> Iterator[dict]:
        """The raw samples of ``worker`` in ``epoch``, through its seeded shuffle buffer."""
        from webdataset.filters import shuffle

        rng = random.Random(f"{self.seed}-{epoch}-{self.rank}-{worker}")
        return shuffle(self.buffer, self.buffer, rng=rng)(iter(_raw_samples(self.assigned(epoch, worker))))

    def batches(self, worker: int, skip: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Endless batches of ``worker``: uint8 ``(b, C, H, W)`` and labels ``(b,)``; the
        first ``skip`` batches are read but not decoded."""
        skip_samples, images, labels, epoch = skip * self.batch_size, [], [], 0
        while True:
            count = 0
            for sample in self.epoch(epoch, worker):
                count += 1
                if skip_samples:
                    skip_samples -= 1
                    continue
                pixels, label = _decode(sample)
                if self.shape is not None and pixels.shape != self.shape:
                    raise DataError(f"sample {sample['__key__']!r} of {sample['__url__']} is "
                                    f"{pixels.shape}, the run's images are {self.shape}")
                images.append(pixels)
                labels.append(label)
                if len(images) == self.batch_size:
                    yield torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long)
                    images, labels = [], []
            if count == 0:
                raise DataError(f"the shards {self.assigned(epoch, worker)} hold no samples")
            epoch += 1

    def loader(self, skip: int = 0, pin_memory: bool = False) -> Iterator:
        """Batch ``skip``, ``skip + 1``, ... of this rank, read by ``workers`` processes."""
        dataset = _WorkerBatches(self, skip)
        if self.workers == 0:
            return iter(dataset)
        return iter(DataLoader(dataset, batch_size=None, num_workers=self.workers, pin_memory=pin_memory,
                               prefetch_factor=4))


class _Failure:
    """A worker's data error, passed to the main process as a value (its message intact)."""

    def __init__(self, message: str) -> None:
        self.message = message


class _WorkerBatches(IterableDataset):
    def __init__(self, stream: ShardStream, skip: int) -> None:
        self.stream, self.skip = stream, skip

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        # Batch k of the rank is the (k div W)-th batch of stream worker k mod W. The loader
        # asks its worker j for its j-th, (j + W)-th, ... item, which is batch skip + j: so
        # loader worker j reads as stream worker (skip + j) mod W.
        role = (worker + self.skip) % workers
        try:
            yield from self.stream.batches(role, len(range(role, self.skip, workers)))
        except DataError as exc:
            yield _Failure(str(exc))


# ------------------------------------------------------------------ writing


def write_shards(data: ImageData, out: str | Path, prefix: str, shard_size: int) -> list[Path]:
    """Write ``data`` as ``OUT/PREFIX-000000.tar, ...`` of ``shard_size`` samples, each atomically.

    Samples are ``PREFIX-00000000.png`` (lossless) and ``.cls`` (the label, when there is one).
    """
    from webdataset import TarWriter

    if shard_size < 1:
        raise DataError(f"--shard-size must be a positive number of samples, got {shard_size}")
    out = Path(out)
    paths = []
    for shard, start in enumerate(range(0, len(data), shard_size)):
        path = out / f"{prefix}-{shard:06d}.tar"

        def write(tmp: str, start: int = start) -> None:
            with TarWriter(tmp, encoder=False) as sink:
                for i in range(start, min(start + shard_size, len(data))):
                    sample = {"__key__": f"{prefix}-{i:08d}", "png": _png(data.images[i].numpy())}
                    if data.labels is not None:
                        sample["cls"] = str(int(data.labels[i])).encode()
                    sink.write(sample)

        atomic_write(path, write)
        paths.append(path)
    return paths


def write_info(out: str | Path, info: dict) -> None:
    write_json(Path(out) / INFO_FILE, info)


def _png(pixels: np.ndarray) -> bytes:
    """PNG bytes of uint8 ``(C, H, W)``."""
    img = Image.fromarray(pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


# ------------------------------------------------------------------ training


def shard_val_data(pattern: str, limit: int) -> ImageData:
    """The held-out set of a shard run: the first ``limit`` samples of its ``val-*.tar`` shards."""
    return split_data(pattern, "val", limit)


def split_data(pattern: str, split: str, limit: int | None = None) -> ImageData:
    """The first ``limit`` samples (all: None) of a split of shard data, in file order, in memory."""
    images, labels = read_samples(split_shards(pattern, split), limit)
    classes = tuple(shard_info(pattern).get("classes", ()))
    keep = labels if classes and labels.min() >= 0 else None
    return ImageData(torch.from_numpy(images), None if keep is None else torch.from_numpy(keep), classes,
                     f"shards {pattern}", split)


class StreamImageTask(ImageTask):
    """:class:`ImageTask` on a stream of shards: batch ``step`` comes from a :class:`ShardStream`
    (already this rank's part of the global batch); validation is the in-memory one."""

    def __init__(self, state: LoopState, pattern: str, val_data: ImageData, variance: float,
                 shape: Sequence[int], workers: int) -> None:
        self.s, self.val_data, self.variance = state, val_data, variance
        self.vae = isinstance(state.model, VAE)
        second = ("kl", "KL (nats per image)") if self.vae else ("perplexity", "Codebook perplexity")
        self.panels = [("reconstruction_loss", "Reconstruction loss"), second]
        batch, world = state.train.batch_size, world_size()
        if batch % world:
            raise DataError(f"--batch-size {batch} is the global batch and must divide evenly among {world} "
                            f"processes: choose a multiple of {world}")
        self.stream = ShardStream(tuple(expand_shards(pattern)), batch // world, state.train.seed, rank(), world,
                                  workers, shape=tuple(shape))
        self._batches: Iterator | None = None
        self._next = -1
        if state.device.type == "cpu":
            state.model.to(memory_format=torch.channels_last)  # 2-4x faster convolutions on CPUs

    def forward(self, step: int):
        if self._batches is None or step != self._next:  # the first step, or a resumed run
            self._batches = self.stream.loader(skip=step, pin_memory=self.s.device.type == "cuda")
        batch = next(self._batches)
        if isinstance(batch, _Failure):
            raise DataError(batch.message)
        self._next = step + 1
        x = to_input(batch[0], self.s.device)
        out = self.s.call("forward", x)
        return out.loss, out, x.shape[0]
