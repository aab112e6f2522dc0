"""Atomic file writes: the one way every file of the project is written.

``write(tmp)`` fills a temporary file in the destination's folder; the file is flushed to
disk and renamed onto the destination, so a crash or a failed write leaves either the old
file or the new one under the final name, never part of one. Files get the usual
``rw-r--r--`` permissions (the temporary file starts private).

A write that runs out of room (a full disk, ``ENOSPC``; an exhausted quota, ``EDQUOT``; a
file-size limit, ``EFBIG``) raises :class:`DiskFullError`, which names the file and the
bytes it needed; the temporary file is removed and the old file stays whole.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["DiskFullError", "atomic_write", "disk_full_errors", "write_bytes", "write_json"]

_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class DiskFullError(OSError):
    """No room to write a file: the disk or a quota is full, or a file-size limit is hit.

    Attributes:
        path: the file that could not be written.
        needed: bytes the file needed, or None when the writer could not say in advance.
        written: bytes that fitted before the write failed.
        free: bytes free on the file system (for the user, not the quota), None if unknown.
        errno: the underlying ``ENOSPC``, ``EDQUOT`` or ``EFBIG``.
    """

    def __init__(self, path: Path, needed: int | None, written: int, free: int | None, code: int) -> None:
        self.path, self.needed, self.written, self.free = path, needed, written, free
        size = f"{needed:,} bytes" if needed is not None else f"more than the {written:,} bytes that fitted"
        room = f"; {free:,} bytes are free on its file system" if free is not None else ""
        if code == errno.EFBIG:
            why = "it would exceed the file-size limit (ulimit -f, or the file system's largest file)"
            fix = "raise the limit or write to another file system"
        elif code == errno.EDQUOT:
            why, fix = "the disk quota is exhausted", "free some of your files or write elsewhere"
        else:
            why, fix = "the disk is full", "free some space or write elsewhere"
        super().__init__(f"cannot write {path}: {why} ({os.strerror(code)}); it needs {size}{room}: "
                         f"{fix}. Nothing was written under that name")
        self.errno = code


def atomic_write(path: str | os.PathLike, write: Callable[[str], None], size: int | None = None) -> None:
    """Call ``write(tmp_path)``, then move the finished temporary file onto ``path``.

    Missing parent folders are created. If ``write`` raises, the temporary file is removed
    and ``path`` is untouched.

    Args:
        path: the file to create or replace.
        write: fills the temporary file whose path it is given.
        size: the bytes ``write`` will write, when known, for :class:`DiskFullError`.

    Raises:
        DiskFullError: when the disk, a quota or a file-size limit leaves no room.
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        with open(tmp, "rb+") as f:  # the data reach the disk before the name does
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException as err:
        written = _size(tmp)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if _no_room(err):
            raise DiskFullError(path, size, written, _free(path.parent), err.errno) from err
        raise


@contextmanager
def disk_full_errors(path: str | os.PathLike, size: int | None = None) -> Iterator[None]:
    """Turn a write error for lack of room inside the block into a :class:`DiskFullError`
    naming ``path`` and ``size`` (for writes that append rather than replace)."""
    try:
        yield
    except OSError as err:
        if _no_room(err):
            raise DiskFullError(Path(path), size, 0, _free(Path(path).parent), err.errno) from err
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), size=len(data))


def write_json(path: str | os.PathLike, obj) -> None:
    data = (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode()
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data), size=len(data))


def _no_room(err: BaseException) -> bool:
    return isinstance(err, OSError) and not isinstance(err, DiskFullError) and err.errno in _NO_ROOM


def _size(path: str | None) -> int:
    try:
        return os.path.getsize(path) if path is not None else 0
    except OSError:
        return 0


def _free(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # no statvfs on Windows
        return None
    return st.f_bavail * st.f_frsize
