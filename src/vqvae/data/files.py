"""The files of a folder, or of a ``.tar`` / ``.tar.gz`` / ``.tgz`` archive read in place.

Every modality's folder loader lists and reads its files through a :class:`FileTree`; what
the files mean (their extensions, decoding, the split / class / speaker layout) is the
loader's business. Listing rules, the same for folders and archives:

* hidden files and folders (a name starting with ``.``) are ignored, which also drops
  ``..`` parts of archive members;
* only regular files count: an archive's links, devices and folders are ignored, so a
  member never points outside the archive;
* a file's :attr:`FileEntry.parts` are its path below the root, split on ``/`` (an
  archive member's leading ``/`` and ``.`` parts are dropped).

Archives are read with :mod:`tarfile`, never extracted to disk.
"""

from __future__ import annotations

import hashlib
import lzma
import os
import tarfile
import zlib
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path, PurePosixPath

from vqvae.data.errors import DataError

__all__ = [
    "ARCHIVE_SUFFIXES",
    "MAX_MEMBER_BYTES",
    "DirTree",
    "FileEntry",
    "FileTree",
    "TarTree",
    "archive_errors",
    "is_archive",
    "open_tree",
    "read_member",
    "unwrap",
]

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz")
MAX_MEMBER_BYTES = 1 << 30  # no image or recording of a data set is near 1 GiB
_CHUNK = 1 << 20


def is_archive(path: Path) -> bool:
    """Whether ``path`` is named like a tar archive a :class:`TarTree` reads."""
    return path.name.lower().endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class FileEntry:
    """One file: its path below the tree's root, split on ``/``, and a handle to read it."""

    parts: tuple[str, ...]
    ref: Path | tarfile.TarInfo

    @property
    def suffix(self) -> str:
        """The file name's extension, lower-cased, with its dot (``".wav"``); ``""`` without."""
        return os.path.splitext(self.parts[-1])[1].lower()


class DirTree:
    """The files below a folder (symbolic links to folders are followed).

    Args:
        root: the folder.
        kind: what the files are, for messages (``"image"`` gives ``"image folder /x"``).

    Raises:
        DataError: when ``root`` is not a folder.
    """

    is_archive = False

    def __init__(self, root: Path, kind: str) -> None:
        if not root.is_dir():
            raise DataError(f"{kind} folder {root} does not exist; check the path")
        self.root = root.resolve()
        self.description = f"{kind} folder {self.root}"

    @cached_property
    def files(self) -> list[FileEntry]:
        """Every non-hidden file, sorted by path."""
        files = []
        for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = Path(dirpath).relative_to(self.root).parts
            files += [
                FileEntry((*rel, f), Path(dirpath, f)) for f in filenames if not f.startswith(".")
            ]
        return sorted(files, key=lambda e: e.parts)

    def fingerprint(self, suffixes: Collection[str]) -> dict[str, object]:
        """A cache key that changes when a file with one of ``suffixes`` is added, removed or edited.

        The folder's own mtime misses edits below it, so the size and modification time
        of every such file is hashed.

        Args:
            suffixes: lower-case extensions with their dot (``{".wav"}``), as
                :attr:`FileEntry.suffix` gives them.
        """
        digest = hashlib.sha256()
        for entry in (f for f in self.files if f.suffix in suffixes):
            st = Path(entry.ref).stat()
            digest.update(f"{'/'.join(entry.parts)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return {"path": str(self.root), "listing": digest.hexdigest()}

    def where(self, entry: FileEntry) -> str:
        """Where ``entry`` is, for messages: its path."""
        return str(entry.ref)

    def read_all(self, entries: Sequence[FileEntry]) -> Iterator[tuple[int, bytes]]:
        """Yield ``(i, bytes of entries[i])`` for every entry, in some order.

        Raises:
            DataError: when a file cannot be read.
        """
        for i, entry in enumerate(entries):
            try:
                yield i, Path(entry.ref).read_bytes()
            except OSError as err:
                raise DataError(f"cannot read {entry.ref}: {err}") from err


class TarTree:
    """The members of a tar archive, compressed or not, read without extracting it.

    Args:
        path: the archive.
        kind: what the files are, for messages (``"WAV"`` gives ``"WAV archive /x.tgz"``).

    Raises:
        DataError: when ``path`` is not a file.
    """

    is_archive = True

    def __init__(self, path: Path, kind: str) -> None:
        if not path.is_file():
            raise DataError(f"{kind} archive {path} does not exist; check the path")
        self.path = path.resolve()
        self.description = f"{kind} archive {self.path}"

    @cached_property
    def files(self) -> list[FileEntry]:
        """Every non-hidden regular member, sorted by path.

        Raises:
            DataError: when the archive is corrupt or truncated.
        """
        with self._opened() as tar:
            members = tar.getmembers()
        files = []
        for member in members:
            parts = tuple(p for p in PurePosixPath(member.name).parts if p not in ("/", "."))
            if member.isfile() and parts and not any(p.startswith(".") for p in parts):
                files.append(FileEntry(parts, member))
        return sorted(files, key=lambda e: e.parts)

    def fingerprint(self, suffixes: Collection[str]) -> dict[str, object]:
        """A cache key for the archive: its path, size and modification time.

        ``suffixes`` is accepted for symmetry with :meth:`DirTree.fingerprint`: an edited
        member rewrites the archive, so the archive's own stat covers every member, and
        the archive is not listed (which takes seconds for a large ``.tar.gz``).
        """
        st = self.path.stat()
        return {"path": str(self.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def where(self, entry: FileEntry) -> str:
        """Where ``entry`` is, for messages: its member name and the archive."""
        return f"{_member(entry).name!r} in archive {self.path}"

    def read_all(self, entries: Sequence[FileEntry]) -> Iterator[tuple[int, bytes]]:
        """Yield ``(i, bytes of entries[i])`` for every entry, in archive order.

        Archive order streams a compressed archive once, without rewinding it. The
        entries' members may come from an earlier open of the same file: extracting
        needs only their offsets and sizes.

        Raises:
            DataError: when the archive is corrupt or truncated.
        """
        members = [_member(entry) for entry in entries]
        order = sorted(range(len(members)), key=lambda i: members[i].offset_data)
        with self._opened() as tar:
            for i in order:
                yield i, read_member(tar, members[i], MAX_MEMBER_BYTES, self.where(entries[i]))

    @contextmanager
    def _opened(self) -> Iterator[tarfile.TarFile]:
        with archive_errors(self.path), tarfile.open(self.path) as tar:
            yield tar


@contextmanager
def archive_errors(path: Path) -> Iterator[None]:
    """Turn whatever a corrupt, truncated or hostile archive makes :mod:`tarfile` raise into a
    :class:`DataError` naming ``path`` (tarfile believes header sizes, so a forged header can
    exhaust memory before the data run out)."""
    try:
        yield
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError, MemoryError, OverflowError) as err:
        if isinstance(err, DataError):
            raise
        reason = "it declares absurd sizes" if isinstance(err, (MemoryError, OverflowError)) else err
        raise DataError(
            f"cannot read archive {path}: {reason}; it is corrupt or truncated: re-download or re-create it"
        ) from err


def read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, where: str) -> bytes:
    """The bytes of a regular member, read in pieces: a forged size never allocates more than
    the data present, and a member over ``limit`` bytes is refused.

    Raises:
        DataError: naming ``where``, when the member is over ``limit`` or truncated.
    """
    if member.size > limit:
        raise DataError(f"{where} declares {member.size:,} bytes, more than the {limit:,} a file of a data "
                        "set may have: the archive is corrupt or not a data set")
    handle = tar.extractfile(member)
    assert handle is not None, "members read are regular files"
    parts, left = [], member.size
    while left > 0:
        part = handle.read(min(left, _CHUNK))
        if not part:
            raise DataError(f"{where} is truncated ({member.size - left:,} of {member.size:,} bytes): "
                            "re-download or re-create the archive")
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _member(entry: FileEntry) -> tarfile.TarInfo:
    assert isinstance(entry.ref, tarfile.TarInfo), "an archive's entries hold their members"
    return entry.ref


FileTree = DirTree | TarTree


def open_tree(path: Path, kind: str) -> FileTree:
    """The :class:`TarTree` of an archive-named file, else the :class:`DirTree` of a folder.

    Args:
        path: a folder, or a file named like an archive (:func:`is_archive`).
        kind: what the files are, for messages (``"image"``, ``"WAV"``).

    Raises:
        DataError: when ``path`` does not exist.
    """
    path = path.expanduser()
    return TarTree(path, kind) if is_archive(path) and not path.is_dir() else DirTree(path, kind)


def unwrap(entries: list[FileEntry], keep: Collection[str] = ()) -> list[FileEntry]:
    """Strip single wrapper folders, as in ``photos.tar.gz`` holding only ``photos/...``.

    Args:
        entries: files of one tree.
        keep: folder names that are never stripped, being part of the layout (split
            folders: a set with only ``train/`` keeps it).

    Returns:
        The entries with the wrapper folders removed from their parts.
    """
    while entries and all(len(e.parts) > 1 for e in entries):
        top = {e.parts[0] for e in entries}
        if len(top) != 1 or top <= set(keep):
            break
        entries = [FileEntry(e.parts[1:], e.ref) for e in entries]
    return entries
