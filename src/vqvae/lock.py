"""One writer per run directory: ``RUN/.lock`` names the process that trains in it.

A second ``vqvae train`` or ``train-prior`` on a folder in use stops with
:class:`RunInUseError`, naming the other process (pid, host, start time, command). The
lock file is made whole before it takes its name: the record is written to a temporary
file, which is locked with ``fcntl.flock`` and then hard-linked to ``.lock`` (the link
fails if a lock exists). The flock lasts as long as the process: the kernel drops it
however the process ends, SIGKILL included, so a lock file whose flock can be taken was
left by a dead process and is taken over. ``flock`` works across hosts on NFS (Linux
emulates it with NFS locks); on a system without ``fcntl`` (Windows) a lock left by a
dead process has to be deleted by hand.

Usage, around everything that writes into the folder::

    with run_lock(run, "train"):
        ...
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

__all__ = ["LOCK_FILE", "RunInUseError", "RunLock", "check_unused", "run_lock"]

LOCK_FILE = ".lock"


class RunInUseError(OSError):
    """The run directory is being written by another process; ``holder`` is its record
    (``pid``, ``host``, ``started``, ``command``)."""

    def __init__(self, folder: Path, holder: dict) -> None:
        self.holder = holder
        pid, host = holder.get("pid", "?"), holder.get("host", "?")
        here = socket.gethostname()
        where = f"on this host ({host})" if host == here else f"on host {host} (this is {here})"
        mine = " (this very process: the folder is locked twice)" if holder.get("pid") == os.getpid() and host == here else ""
        stop = f"wait for it to finish or stop it (kill {pid})" if fcntl else (
            f"wait for it to finish; if it is gone, delete {folder / LOCK_FILE}")
        super().__init__(
            f"{folder} is in use by another vqvae process{mine}: pid {pid} {where}, running "
            f"{holder.get('command', '?')!r} since {holder.get('started', '?')}; {stop}, then try again"
        )


class RunLock:
    """The lock of one run directory; see the module docstring.

    Args:
        folder: the run directory (created if missing).
        command: what the holder does (``"train"``), recorded when ``sys.argv`` is empty.

    Attributes:
        stale: the record of a dead process whose lock was taken over, else None.
    """

    def __init__(self, folder: str | os.PathLike, command: str = "train") -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.command = command
        self.stale: dict | None = None
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock.

        Raises:
            RunInUseError: when a live process holds it.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        for _ in range(10):  # each retry follows a lock released or taken over meanwhile
            if self._create() or self._take_over():
                return
        raise RunInUseError(self.folder, _record_of(self.path))

    def release(self) -> None:
        """Delete the lock file and drop the flock (nothing when not held)."""
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):  # others only replace it after our flock is gone
                self.path.unlink()
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _record(self) -> bytes:
        argv = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else []
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join(argv) if argv else self.command,
        }
        return (json.dumps(record) + "\n").encode()

    def _create(self) -> bool:
        """A new lock file, flocked and filled before it takes its name; False if one exists."""
        fd, tmp = tempfile.mkstemp(prefix=".lock.", suffix=".tmp", dir=self.folder)
        linked = no_links = False
        try:
            _flock(fd)  # a fresh file: nobody else can hold it
            os.write(fd, self._record())
            try:
                os.link(tmp, self.path)
                linked = True
            except FileExistsError:
                pass
            except OSError:  # no hard links on this file system
                no_links = True
        finally:
            os.unlink(tmp)
            if not linked:
                os.close(fd)
        if linked:
            self._fd = fd
        return linked or (no_links and self._create_in_place())

    def _create_in_place(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        _flock(fd)
        os.write(fd, self._record())
        self._fd = fd
        return True

    def _take_over(self) -> bool:
        """The existing lock if its holder is dead; False when it vanished meanwhile."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            if fcntl is None:
                raise BlockingIOError
            _flock(fd)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise RunInUseError(self.folder, holder) from None
        if not _same_file(fd, self.path):  # released and deleted between our open and flock
            os.close(fd)
            return False
        self.stale = _read(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, self._record(), 0)
        self._fd = fd
        return True


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike, command: str = "train") -> Iterator[RunLock]:
    """Hold the lock of ``folder`` for the duration of the block.

    Raises:
        RunInUseError: when another live process holds it.
    """
    lock = RunLock(folder, command)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


def check_unused(folder: str | os.PathLike) -> None:
    """Raise :class:`RunInUseError` when a live process holds ``folder``'s lock (call it
    before deleting or replacing the folder)."""
    path = Path(folder) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR)
    except (FileNotFoundError, NotADirectoryError):
        return
    try:
        if fcntl is None:
            raise BlockingIOError
        _flock(fd)
    except BlockingIOError:
        raise RunInUseError(Path(folder), _read(fd)) from None
    finally:
        os.close(fd)


def _flock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError when held elsewhere


def _same_file(fd: int, path: Path) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)


def _read(fd: int) -> dict:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _record_of(path: Path) -> dict:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return {}
    try:
        return _read(fd)
    finally:
        os.close(fd)
