"""NumPy ``.npy`` and ``.npz`` files read without trusting them.

``np.load(..., allow_pickle=False)`` never unpickles, but it believes the sizes a file
declares: a 100-byte ``.npy`` whose header says ``shape (2**40,)`` makes it allocate the
whole array before finding the data missing, and an ``.npz`` member can be a
decompression bomb. :func:`read_arrays` parses the header itself, refuses object arrays
(pickles) before reading them, checks every declared size against the bytes actually
there, and refuses compressed members that expand more than any real array of integers
does. Memory stays proportional to the data the file holds.
"""

from __future__ import annotations

import io
import lzma
import math
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

from vqvae.data.errors import DataError

__all__ = ["read_arrays"]

_NPY_MAGIC = b"\x93NUMPY"
_MAX_HEADER = 10_000  # np.load's own default limit
# A compressed member may expand this much and no more (np.savez_compressed of real codes
# expands 2-4x; only constant data expand further).
_MAX_RATIO = 100
_SMALL = 64 << 20  # below this size a member may expand without limit


def read_arrays(path: Path, what: str = "array file") -> dict[str, np.ndarray]:
    """The arrays of a ``.npy`` (named ``""``) or ``.npz`` file, never unpickled.

    Args:
        path: the file.
        what: what the file is, for messages (``"code file"``).

    Raises:
        DataError: naming the file, when it is not a readable ``.npy`` / ``.npz``, holds
            Python objects, declares more data than it holds, or is a decompression bomb.
        OSError: when the file cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(len(_NPY_MAGIC))
    if head == _NPY_MAGIC:
        with open(path, "rb") as f:
            data = bytearray(f.read())
        return {"": parse_npy(data, f"{what} {path}")}
    try:
        with zipfile.ZipFile(path) as archive:
            return {
                info.filename.removesuffix(".npy"): _member(archive, info, f"{what} {path}")
                for info in archive.infolist() if not info.is_dir()
            }
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError, EOFError, OSError,
            RuntimeError, NotImplementedError, ValueError, OverflowError) as exc:
        if isinstance(exc, DataError):
            raise
        # A forged directory makes zipfile seek before the start (OSError) or overflow.
        raise DataError(f"{what} {path} is not a readable .npz/.npy file ({_short(exc)})") from exc


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    where = f"{where} (member {info.filename!r})"
    if info.compress_type != zipfile.ZIP_STORED and info.file_size > max(_SMALL, _MAX_RATIO * info.compress_size):
        raise DataError(
            f"{where} expands from {info.compress_size:,} to {info.file_size:,} bytes, more than any "
            f"real array does: refusing a likely decompression bomb; re-save it with np.savez"
        )
    return parse_npy(bytearray(archive.read(info)), where)


def parse_npy(data: bytes | bytearray, where: str) -> np.ndarray:
    """The array in the bytes of a ``.npy`` file, sharing ``data`` (writable if it is).

    Raises:
        DataError: naming ``where``, for anything but a whole ``.npy`` of plain values.
    """
    f = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_HEADER)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError, tokenize.TokenError) as exc:
        raise DataError(f"{where} is not a readable .npy array ({_short(exc)})") from exc
    if dtype.hasobject:
        raise DataError(f"{where} holds Python objects (a pickle), which are never loaded: save plain "
                        f"numbers (e.g. integer codes) instead")
    if dtype.itemsize == 0 or any(d < 0 for d in shape):
        raise DataError(f"{where} declares an empty dtype {dtype} or a negative shape {shape}")
    count = math.prod(shape)
    needed, present = count * dtype.itemsize, len(data) - f.tell()
    if needed > present:
        raise DataError(f"{where} declares shape {shape} of {dtype} ({needed:,} bytes) but holds "
                        f"{present:,} bytes: it is truncated or corrupt")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=f.tell())
    return array.reshape(shape, order="F" if fortran else "C")


def _short(exc: BaseException) -> str:
    """The exception for a message, cut short: a corrupt header can make it long and binary."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 160 else text[:157] + "..."
