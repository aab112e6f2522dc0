"""A strict reader of the IDX format (LeCun's MNIST files), gzipped or not."""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np

from vqvae.data.errors import DataError

__all__ = ["parse_idx", "read_idx"]

# The third magic byte names the element type; values are big-endian.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIMS = 32  # NumPy's limit is 64; MNIST uses 3
_MAX_RATIO = 100  # gzipped MNIST expands about 5x; only constant data expand 100x
_SMALL = 64 << 20  # below this, any expansion is allowed
_CHUNK = 1 << 20


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file, decompressing it first when it is gzipped (detected by content).

    Returns:
        The array with the shape and element type the header declares (native byte order).

    Raises:
        DataError: when the file is missing, unreadable, not IDX, truncated or too long.
    """
    try:
        raw = path.read_bytes()
        if raw[:2] == _GZIP_MAGIC:
            raw = _gunzip(raw, path)
    except (OSError, EOFError, zlib.error) as err:
        raise DataError(f"cannot read IDX file {path}: {err}; re-download or replace it") from err
    return parse_idx(raw, str(path))


def _gunzip(raw: bytes, path: Path) -> bytes:
    """Decompress in pieces, never past the size the IDX header declares (plus one byte, to
    see a file longer than that), nor past what any real IDX file expands to."""
    limit = max(_SMALL, _MAX_RATIO * len(raw))
    out = bytearray()
    with gzip.GzipFile(fileobj=io.BytesIO(raw)) as gz:
        out += gz.read(4)
        if len(out) == 4 and out[2] in _IDX_DTYPES:
            out += gz.read(4 * out[3])
            if len(out) == 4 + 4 * out[3]:
                limit = min(limit, _declared_size(bytes(out)) + 1)
        while len(out) < limit and (piece := gz.read(min(_CHUNK, limit - len(out)))):
            out += piece
        if len(out) >= limit and gz.read(1):
            raise DataError(f"IDX file {path} expands past {limit:,} bytes, more than its header declares or "
                            f"any real IDX file does: refusing it; re-download or replace it")
    return bytes(out)


def _declared_size(header: bytes) -> int:
    dims = [int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(header[3])]
    return 4 + 4 * header[3] + math.prod(dims) * np.dtype(_IDX_DTYPES[header[2]]).itemsize


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Parse the bytes of an (uncompressed) IDX file; ``name`` is used in error messages."""
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        raise DataError(
            f"{name} is not an IDX file: its magic number {raw[:4].hex() or '(empty)'} should be "
            "0000 followed by a type byte (08-0e) and a dimension count; replace the file"
        )
    ndim, header = raw[3], 4 + 4 * raw[3]
    if ndim > _MAX_DIMS:
        raise DataError(f"IDX file {name} declares {ndim} dimensions; arrays have at most {_MAX_DIMS}: replace it")
    if len(raw) < header:
        raise DataError(f"IDX file {name} is truncated inside its header; re-download it")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = header + math.prod(dims) * dtype.itemsize
    if len(raw) != expected:
        state = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"IDX file {name} is {state}: shape {dims} needs {expected} bytes, found {len(raw)}; "
            "re-download it"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # a writable copy in native byte order
