"""The run directory: ``config.json``, ``metrics.jsonl``, ``priors/NAME/``, code caches, and
the one code-file format that every modality reads and writes.

A run directory::

    RUN/config.json        format_version, modality, kind, model, data, train
    RUN/model.safetensors  weights (see :mod:`vqvae.checkpoint`)
    RUN/metrics.jsonl      one JSON object per logged step
    RUN/priors/NAME/       a prior over the run's codes, a run directory of its own
    RUN/codes/             codes of the run's data, cached per tokenizer weights

Code files are ``.npz`` with ``codes`` ``(N, *S')`` (int16 when K <= 32768, else int32),
``labels`` ``(N,)`` (−1 where unknown) and, for rows of different lengths (audio),
``lengths`` ``(N,)`` with ``codes`` padded by −1; a modality may add more per-item arrays
(``speakers``). A bare ``.npy`` holds codes alone. Both are read with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vqvae.atomic import atomic_write, disk_full_errors, write_bytes, write_json
from vqvae.checkpoint import CONFIG_FILE, MODEL_FILE, read_config
from vqvae.data.arrays import read_arrays
from vqvae.lock import check_unused

__all__ = [
    "CodeFile",
    "METRICS_FILE",
    "append_metrics",
    "codes_cache_path",
    "fresh_run",
    "load_codes",
    "prior_folder",
    "prior_names",
    "read_config",
    "save_codes",
    "truncate_metrics",
    "write_config",
]

METRICS_FILE = "metrics.jsonl"


# ------------------------------------------------------------------ the directory


def fresh_run(out: str | os.PathLike, force: bool) -> Path:
    """``out`` emptied for a new run: an existing non-empty folder needs ``force``, and no
    live process training in it (:class:`vqvae.lock.RunInUseError`)."""
    run = Path(out)
    if run.exists() and any(run.iterdir()):
        if not force:
            raise FileExistsError(f"{run} already exists: continue it with --resume, or overwrite it with --force")
        check_unused(run)
        shutil.rmtree(run)
    return run


def write_config(run: str | os.PathLike, config: dict) -> Path:
    """Write ``RUN/config.json`` atomically, creating ``run``."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / CONFIG_FILE, config)
    return run


def prior_names(run: str | os.PathLike) -> list[str]:
    """Names of the priors trained in ``RUN/priors/``."""
    folder = Path(run) / "priors"
    return sorted(p.name for p in folder.iterdir() if (p / CONFIG_FILE).exists()) if folder.is_dir() else []


def prior_folder(run: str | os.PathLike, prior: str | None = None) -> Path:
    """The folder of the named prior, or of the run's only prior."""
    names = prior_names(run)
    if prior is None:
        if not names:
            raise FileNotFoundError(f"{run} has no prior yet: train one with vqvae train-prior {run} --arch transformer")
        if len(names) > 1:
            raise ValueError(f"{run} has several priors ({', '.join(names)}): choose one with --prior NAME")
        prior = names[0]
    if prior not in names:
        raise FileNotFoundError(f"{run} has no prior named {prior!r}; it has: {', '.join(names) or 'none'}")
    return Path(run) / "priors" / prior


# ------------------------------------------------------------------ metrics


def append_metrics(run: str | os.PathLike, record: dict) -> None:
    line = json.dumps(record) + "\n"
    path = Path(run) / METRICS_FILE
    with disk_full_errors(path, len(line.encode())), open(path, "a") as f:
        f.write(line)


def truncate_metrics(run: str | os.PathLike, step: int) -> None:
    """Drop records past ``step`` (the checkpoint), so that a resumed log reads as one run;
    a line cut short by a killed process or a full disk is dropped too."""
    path = Path(run) / METRICS_FILE
    if not path.exists():
        return
    kept = [line for line in path.read_text(errors="replace").splitlines() if _step_of(line) <= step]
    atomic_write(path, lambda tmp: Path(tmp).write_text("".join(k + "\n" for k in kept)))


def _step_of(line: str) -> float:
    """The step of a metrics line; infinity (never kept) for a broken one."""
    try:
        step = json.loads(line)["step"]
    except (ValueError, KeyError, TypeError):
        return math.inf
    return step if isinstance(step, int) else math.inf


# ------------------------------------------------------------------ code files


@dataclass
class CodeFile:
    """The contents of a code file.

    Attributes:
        codes: ``(N, *S')`` int64; rows of an audio file are padded with −1 past ``lengths``.
        labels: ``(N,)`` int64 class indices, or None when the data have none.
        lengths: ``(N,)`` valid codes per row along the first latent axis, or None when all
            rows are full.
        extras: further per-item int64 arrays ``(N,)`` of a modality (e.g. ``speakers``),
            None where an array was all −1 (unknown).
    """

    codes: Tensor
    labels: Tensor | None = None
    lengths: Tensor | None = None
    extras: dict[str, Tensor | None] = field(default_factory=dict)

    def rows(self) -> list[Tensor]:
        """Each item's codes, cut to its length."""
        if self.lengths is None:
            return list(self.codes)
        return [self.codes[i, : int(n)] for i, n in enumerate(self.lengths)]


def save_codes(
    path: str | os.PathLike,
    codes: Tensor | list[Tensor],
    codebook_size: int,
    labels: Tensor | None = None,
    **extras: Tensor | None,
) -> None:
    """Write codes (a tensor ``(N, *S')``, or rows of different lengths) to an ``.npz``, atomically."""
    dtype = np.int16 if codebook_size <= 32768 else np.int32
    arrays: dict[str, np.ndarray] = {}
    if isinstance(codes, Tensor):
        arrays["codes"] = codes.numpy().astype(dtype)
        n = len(codes)
    else:
        n = len(codes)
        width = max((c.shape[0] for c in codes), default=0)
        shape = (n, width, *(codes[0].shape[1:] if codes else ()))
        array = np.full(shape, -1, dtype=dtype)
        for i, row in enumerate(codes):
            array[i, : row.shape[0]] = row.numpy()
        arrays["codes"] = array
        arrays["lengths"] = np.array([c.shape[0] for c in codes], dtype=np.int64)
    for name, values in {"labels": labels, **extras}.items():
        arrays[name] = np.full(n, -1, dtype=np.int64) if values is None else values.numpy().astype(np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    write_bytes(path, buffer.getvalue())


def load_codes(path: str | os.PathLike) -> CodeFile:
    """A code file written by :func:`save_codes` (or any ``.npz`` with ``codes``, or a ``.npy``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"code file {path} does not exist")
    # Never unpickled, and no size the file declares is believed before its bytes are seen.
    arrays = read_arrays(path, "code file")
    if "" in arrays:  # a bare .npy
        arrays = {"codes": arrays.pop("")}
    if "codes" not in arrays:
        raise ValueError(f"{path} has no array named 'codes' (it has {sorted(arrays)})")
    codes = arrays.pop("codes")
    if not np.issubdtype(codes.dtype, np.integer) or codes.ndim == 0:
        raise ValueError(f"codes in {path} must be an (N, ...) array of integers, got {codes.dtype} {codes.shape}")
    for name, values in arrays.items():
        if values.shape != (len(codes),) or not np.issubdtype(values.dtype, np.integer):
            raise ValueError(f"{path}: array {name!r} must be ({len(codes)},) integers, got {values.dtype} {values.shape}")
    lengths = arrays.pop("lengths", None)
    if lengths is not None and (codes.ndim < 2 or (lengths < 0).any() or (lengths > codes.shape[1]).any()):
        raise ValueError(f"{path}: 'lengths' must lie in [0, {codes.shape[1] if codes.ndim > 1 else 0}]")
    tensors = {k: None if (v < 0).all() and len(v) else torch.from_numpy(v.astype(np.int64)) for k, v in arrays.items()}
    file = CodeFile(torch.from_numpy(codes.astype(np.int64)), tensors.pop("labels", None),
                    None if lengths is None else torch.from_numpy(lengths.astype(np.int64)), tensors)
    if any(bool((r < 0).any()) for r in file.rows()):
        raise ValueError(f"{path} has negative codes inside its rows: codes are indices in [0, K)")
    return file


def codes_cache_path(run: str | os.PathLike, name: str, key: tuple) -> Path:
    """``RUN/codes/NAME-KEY-WEIGHTS.npz``: codes cached for the data named by ``key``, tied to
    the tokenizer's current weights, so retraining it invalidates them."""
    run = Path(run)
    weights = hashlib.sha256((run / MODEL_FILE).read_bytes()).hexdigest()[:16]
    digest = hashlib.sha256(repr(key).encode()).hexdigest()[:8]
    return run / "codes" / f"{name}-{digest}-{weights}.npz"
