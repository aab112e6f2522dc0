"""An index on disk: one folder, written atomically, with a JSON manifest.

::

    INDEX/manifest.json   format, the tokenizer run and its weights' sha256, data, settings, files
    INDEX/codes.npz       the code grids, labels, lengths and speakers (the one code-file
                          format of :mod:`vqvae.runs`)
    INDEX/items.npz       ids and paths (unicode arrays)
    INDEX/vectors.npz     the codebook, the pooled continuous vectors, the baseline features
    INDEX/bag.npz ngram.npz pooled.npz   each representation's search structure

The folder is written under a temporary name beside ``INDEX`` and renamed into place, so
a crash leaves the old index or the new one, never a mix. Everything is read with
``allow_pickle=False``.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from vqvae.atomic import write_bytes, write_json
from vqvae.checkpoint import CheckpointError, read_json
from vqvae.retrieval.items import RetrievalError
from vqvae.runs import CodeFile, load_codes, save_codes

__all__ = ["FORMAT", "FORMAT_VERSION", "MANIFEST", "read_arrays", "read_codes", "read_manifest", "write_index_folder"]

FORMAT = "vqvae-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def write_index_folder(out: str | os.PathLike, manifest: dict, codes: CodeFile, codebook_size: int,
                       arrays: dict[str, dict[str, np.ndarray]]) -> Path:
    """Write an index folder at ``out`` atomically: ``arrays[name]`` becomes ``name.npz``.

    An existing index at ``out`` is replaced; any other non-empty folder is refused.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise FileExistsError(f"{out} exists and is not a vqvae index: choose a new folder for -o, or empty it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        rows = codes.rows() if codes.lengths is not None else codes.codes
        save_codes(tmp / "codes.npz", rows, codebook_size, codes.labels, **codes.extras)
        for name, named in arrays.items():
            write_bytes(tmp / f"{name}.npz", _npz(named))
        write_json(tmp / MANIFEST, {**manifest, "files": sorted(["codes.npz", *(f"{n}.npz" for n in arrays)])})
        os.chmod(tmp, 0o755)
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_in(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.replace(out, old / "index")  # two renames: the old index is whole until the new one is in place
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def _npz(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of an index folder, checked for its format and files."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise FileNotFoundError(f"index folder {folder} does not exist: build one with vqvae index RUN --data SPEC -o {folder}")
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {MANIFEST}: it is not a vqvae index (build one with vqvae index)")
    try:
        manifest = read_json(path)
    except CheckpointError as exc:
        raise RetrievalError(f"{exc}; rebuild the index with vqvae index") from exc
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise RetrievalError(f"{path} is not a {FORMAT} manifest of version {FORMAT_VERSION} (got "
                             f"{manifest.get('format')!r} version {manifest.get('format_version')!r}): "
                             "rebuild the index with this vqvae")
    missing = [name for name in manifest.get("files", []) if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"index {folder} is incomplete: {', '.join(missing)} missing; rebuild it with vqvae index")
    return manifest


def read_arrays(folder: Path, name: str, keys: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """The arrays of ``INDEX/NAME.npz`` (only ``keys`` when given)."""
    path = folder / f"{name}.npz"
    if not path.is_file():
        raise FileNotFoundError(f"index {folder} has no {path.name}; rebuild it with vqvae index")
    try:
        with np.load(path, allow_pickle=False) as loaded:
            names = loaded.files
            arrays = {key: loaded[key] for key in (keys or names) if key in names}
    except (ValueError, OSError, EOFError) as exc:
        raise RetrievalError(f"{path} is not a readable .npz ({exc}): rebuild the index with vqvae index") from exc
    missing = sorted(set(keys or ()) - set(arrays))
    if missing:
        raise RetrievalError(f"{path} lacks {', '.join(missing)}: rebuild the index with vqvae index")
    return arrays


def read_codes(folder: Path) -> CodeFile:
    try:
        return load_codes(folder / "codes.npz")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"index {folder} has no codes.npz; rebuild it with vqvae index") from exc

