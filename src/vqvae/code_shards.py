"""Code shards: the codes of a data set too large to hold, written part by part by every process.

``vqvae encode RUN --data SPEC -o DIR --shards`` (alone, or under ``torchrun``) writes::

    DIR/codes-00000-000000.npz   process 0's first shard, in the one code-file format (vqvae.runs)
    DIR/codes-00000-000001.npz   process 0's second
    DIR/codes-00001-000000.npz   process 1's first
    DIR/manifest.json            written last, by process 0: the shards in order, their item
                                 counts, the tokenizer's weights (sha256) and the data

Order. Process ``r`` of ``R`` encodes a contiguous part of the data (:func:`part`: items of
data held on disk, or whole files of sharded data) in the data's own order, so the shards
in manifest order (process, then index) hold the items in the order one process gives
them, whatever ``R`` is. Each shard is written atomically; the manifest last, so a folder
without one is an encoding that did not finish. Nothing here holds more than one shard
of codes (``shard_size`` items) in memory.

Readers: :func:`load_code_shards` (all of it, concatenated), :func:`iter_code_shards` (one
shard at a time), :func:`split_codes` (a prior's ``--data`` naming a folder of code shards).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from vqvae import distributed
from vqvae.atomic import write_json
from vqvae.runs import CodeFile, load_codes, save_codes

__all__ = ["CodeShardError", "CodeShardWriter", "concat_codes", "is_code_shards", "iter_code_shards",
           "load_code_shards", "part", "read_manifest", "split_codes", "take", "write_code_shards"]

MANIFEST = "manifest.json"
FORMAT = "vqvae code shards"
FORMAT_VERSION = 1


class CodeShardError(ValueError):
    """A folder of code shards that is incomplete, inconsistent or from another tokenizer."""


def part(n: int, rank: int, world: int) -> range:
    """The contiguous share of ``n`` items (or files) of process ``rank`` of ``world``: the
    shares differ by at most one and, in rank order, make ``range(n)``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in [0, {world})")
    return range(n * rank // world, n * (rank + 1) // world)


# ------------------------------------------------------------------ code files in pieces


def take(file: CodeFile, start: int, stop: int) -> CodeFile:
    """Items ``start:stop`` of a code file."""
    cut = slice(start, stop)
    return CodeFile(file.codes[cut], None if file.labels is None else file.labels[cut],
                    None if file.lengths is None else file.lengths[cut],
                    {k: None if v is None else v[cut] for k, v in file.extras.items()})


def concat_codes(files: Sequence[CodeFile]) -> CodeFile:
    """One code file of several, in order. Rows of different lengths (audio) are padded with
    −1 to the widest; a per-item array that one file lacks is −1 (unknown) for its items."""
    if not files:
        raise CodeShardError("there are no codes to join: the data had no items")
    codes = [f.codes for f in files]
    lengths = None
    if any(f.lengths is not None for f in files):
        width = max(c.shape[1] for c in codes)
        lengths = torch.cat([f.lengths if f.lengths is not None else torch.full((len(f.codes),), f.codes.shape[1])
                             for f in files])
        codes = [torch.nn.functional.pad(c, (0, 0) * (c.dim() - 2) + (0, width - c.shape[1]), value=-1)
                 for c in codes]  # (N, L, ...) -> (N, width, ...)
    elif len({c.shape[1:] for c in codes}) > 1:
        raise CodeShardError(f"code files of different grids cannot be joined: {sorted({tuple(c.shape[1:]) for c in codes})}")

    def joined(arrays: list[torch.Tensor | None]) -> torch.Tensor | None:
        if all(a is None for a in arrays):
            return None
        return torch.cat([torch.full((len(f.codes),), -1, dtype=torch.long) if a is None else a
                          for f, a in zip(files, arrays, strict=True)])

    names = dict.fromkeys(k for f in files for k in f.extras)
    return CodeFile(torch.cat(codes), joined([f.labels for f in files]), lengths,
                    {k: joined([f.extras.get(k) for f in files]) for k in names})


def _save(path: Path, file: CodeFile, codebook_size: int) -> None:
    codes = file.rows() if file.lengths is not None else file.codes
    save_codes(path, codes, codebook_size, file.labels, **file.extras)


class CodeShardWriter:
    """Cuts one process's stream of code files into shards of ``shard_size`` items,
    ``FOLDER/codes-{rank:05d}-{index:06d}.npz``, each written atomically as it fills.

    Args:
        folder: where the shards go.
        codebook_size: K (int16 codes when K <= 32768).
        rank: the process that writes (its shards' names start with it).
        shard_size: items per shard; the last one may hold fewer.
    """

    def __init__(self, folder: str | os.PathLike, codebook_size: int, rank: int = 0, shard_size: int = 10_000) -> None:
        if not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"--shard-size must be a positive number of items, got {shard_size!r}")
        self.folder, self.codebook_size, self.rank, self.shard_size = Path(folder), codebook_size, rank, shard_size
        self.pending: list[CodeFile] = []
        self.held = 0
        self.written: list[dict] = []

    def add(self, file: CodeFile) -> None:
        """Append the items of ``file``; full shards are written now."""
        if len(file.codes):
            self.pending.append(file)
            self.held += len(file.codes)
        while self.held >= self.shard_size:
            joined = concat_codes(self.pending)
            self._write(take(joined, 0, self.shard_size))
            rest = take(joined, self.shard_size, len(joined.codes))
            self.pending, self.held = ([rest] if len(rest.codes) else []), len(rest.codes)

    def close(self) -> list[dict]:
        """Write the last, partial shard; returns every shard written, ``{"file", "rank", "items"}``."""
        if self.held:
            self._write(concat_codes(self.pending))
            self.pending, self.held = [], 0
        return self.written

    def _write(self, file: CodeFile) -> None:
        name = f"codes-{self.rank:05d}-{len(self.written):06d}.npz"
        _save(self.folder / name, file, self.codebook_size)
        self.written.append({"file": name, "rank": self.rank, "items": len(file.codes)})


# ------------------------------------------------------------------ a folder, by every process


def _prepare(folder: Path, force: bool) -> None:
    if folder.exists() and not folder.is_dir():
        raise CodeShardError(f"-o {folder} is a file: code shards go into a folder, name a new one")
    old = ([folder / MANIFEST] if (folder / MANIFEST).exists() else []) + sorted(folder.glob("codes-*.npz"))
    if old and not force:
        raise CodeShardError(f"{folder} already holds code shards: choose another -o, or pass --force to replace them")
    for path in old:  # the manifest first, so the folder is never complete-looking with mixed shards
        path.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def write_code_shards(parts: Iterable[CodeFile], folder: str | os.PathLike, *, run: str | os.PathLike,
                      codebook_size: int, shard_size: int = 10_000, data: dict | None = None,
                      force: bool = False) -> dict:
    """Write this process's codes as shards and, on process 0, the manifest of all processes'.

    Every process of a ``torchrun`` job calls this with its own part (:func:`part`), in the
    data's order; a single process passes all of it. A process whose part fails makes every
    process fail (none waits forever), and no manifest is written.

    Args:
        parts: this process's codes, piece by piece (consumed lazily, one piece at a time).
        folder: the output folder; its earlier code shards are replaced only with ``force``.
        run: the tokenizer run that encoded them (its weights' sha256 goes in the manifest).
        codebook_size: the tokenizer's K.
        shard_size: items per shard.
        data: what was encoded (``spec``, ``data_dir``, ``split``), recorded in the manifest.

    Returns:
        The manifest (on every process).
    """
    from vqvae.retrieval.items import tokenizer_hash

    folder = Path(folder)
    sha256 = tokenizer_hash(run)  # the weights that encode, read before they could change
    distributed.main_first(_prepare, folder, force)
    writer = CodeShardWriter(folder, codebook_size, distributed.rank(), shard_size)
    error = None
    try:
        for piece in parts:
            writer.add(piece)
        written = writer.close()
    except Exception as exc:  # re-raised below, once the other processes know
        error, written = exc, []
    if distributed.is_distributed():
        failed = torch.tensor([int(error is not None)])
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)
        if failed and error is None:
            raise distributed.RankFailedError("another process failed to encode its part (its error is above); "
                                              "no manifest was written")
    if error is not None:
        raise error
    everyone = [written]
    if distributed.is_distributed():
        everyone = [None] * distributed.world_size()
        dist.all_gather_object(everyone, written)
    shards = [entry for entries in everyone for entry in entries]  # rank order: the data's order
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tokenizer": {"run": str(Path(run).resolve()), "sha256": sha256, "codebook_size": codebook_size},
        "data": data or {},
        "items": sum(s["items"] for s in shards),
        "world_size": distributed.world_size(),
        "shard_size": shard_size,
        "shards": shards,
    }
    distributed.main_first(write_json, folder / MANIFEST, manifest)  # all return once the folder is complete
    return manifest


# ------------------------------------------------------------------ reading


def is_code_shards(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder of code shards (it holds their manifest)."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return read_manifest(path).get("format") == FORMAT
    except CodeShardError:
        return False


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a folder of code shards; errors say what is missing or wrong."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        found = any(Path(folder).glob("codes-*.npz"))
        raise CodeShardError(f"{folder} has no {MANIFEST}: " + (
            "its encoding did not finish; run vqvae encode ... --shards --force again" if found else
            "it is not a folder of code shards (write one with vqvae encode RUN -o DIR --shards)"))
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CodeShardError(f"{path} is not readable JSON ({exc}): encode again with --force") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CodeShardError(f"{path} is not a code-shard manifest (format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
    if manifest.get("format_version", 0) > FORMAT_VERSION:
        raise CodeShardError(f"{path} has format version {manifest['format_version']}, newer than this vqvae "
                             f"reads ({FORMAT_VERSION}): upgrade vqvae")
    return manifest


def _check_tokenizer(folder: Path, manifest: dict, run: str | os.PathLike | None) -> None:
    if run is None:
        return
    from vqvae.retrieval.items import tokenizer_hash

    found, wrote = tokenizer_hash(run), manifest["tokenizer"]["sha256"]
    if found != wrote:
        raise CodeShardError(f"the code shards in {folder} were encoded by tokenizer weights sha256 {wrote[:12]}..., "
                             f"but {Path(run) / 'model.safetensors'} has sha256 {found[:12]}... (another or a "
                             f"retrained tokenizer): encode the data again with this run")


def iter_code_shards(folder: str | os.PathLike, run: str | os.PathLike | None = None) -> Iterator[CodeFile]:
    """The shards of a folder in manifest order, one code file at a time; with ``run``, the
    tokenizer that wrote them must be that run's (same weights)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    _check_tokenizer(folder, manifest, run)
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        if not path.is_file():
            raise CodeShardError(f"{path}, listed in {folder / MANIFEST}, is missing: copy the whole folder, "
                                 f"or encode again with --force")
        file = load_codes(path)
        if len(file.codes) != entry["items"]:
            raise CodeShardError(f"{path} holds {len(file.codes)} items, its manifest says {entry['items']}: "
                                 f"the folder mixes two encodings; encode again with --force")
        yield file


def load_code_shards(folder: str | os.PathLike, run: str | os.PathLike | None = None) -> CodeFile:
    """All the codes of a folder of code shards, in the data's order (see :func:`iter_code_shards`)."""
    return concat_codes(list(iter_code_shards(folder, run)))


def split_codes(spec: str | os.PathLike, split: str, run: str | os.PathLike) -> CodeFile | None:
    """The codes of ``split`` when a prior's ``--data`` names code shards, else None.

    ``spec`` is a folder holding ``train/`` and ``val/`` code-shard folders (``vqvae encode RUN
    --split train -o DIR/train --shards``, the same for ``val``), or one code-shard folder of
    that split; the codes must be ``run``'s.
    """
    root = Path(spec)
    if is_code_shards(root / split):
        return load_code_shards(root / split, run)
    if not is_code_shards(root):
        return None
    holds = read_manifest(root)["data"].get("split")
    if holds == split:
        return load_code_shards(root, run)
    raise CodeShardError(f"{root} holds the codes of the {holds} split, and a prior needs the {split} split too: "
                         f"encode each into its own folder (vqvae encode RUN --split train -o CODES/train --shards, "
                         f"and --split val -o CODES/val) and pass --data CODES")
