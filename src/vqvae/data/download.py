"""Checked, atomic downloads into the data home (``$VQVAE_DATA`` or ``~/.cache/vqvae/data``).

A download is checked by its MD5 when the bytes are fixed, or by looking inside it when
they are not (GitHub builds its archives on the fly), before it gets its final name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from vqvae.atomic import atomic_write
from vqvae.data.errors import DataError

__all__ = ["data_home", "fetch"]

_CHUNK = 1 << 20
_TIMEOUT_S = 60


class _RejectedError(Exception):
    """A download whose MD5 differs from the canonical one, or that its check refused."""


def data_home() -> Path:
    """Where downloaded data sets live: ``$VQVAE_DATA``, else ``~/.cache/vqvae/data``."""
    env = os.environ.get("VQVAE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "vqvae" / "data"


def fetch(
    name: str,
    urls: Sequence[str],
    md5: str | None,
    dest_dir: Path,
    *,
    hint: str,
    check: Callable[[Path], None] | None = None,
) -> Path:
    """Download ``name`` into ``dest_dir`` from the first URL that serves the right bytes.

    The bytes go to a temporary file in ``dest_dir`` and are renamed into place only
    after their MD5 matches ``md5`` and ``check`` accepts them, so a crash or a bad
    mirror never leaves a partial or wrong file under the final name.

    Args:
        name: file name to create in ``dest_dir``.
        urls: full URLs to try in order (mirrors).
        md5: expected hex MD5 of the file; ``None`` when its bytes are not fixed, and
            ``check`` must then say whether they are right.
        dest_dir: folder to download into (created if missing).
        hint: appended to the error when every URL fails (say where to put files offline).
        check: called with the downloaded temporary file (its name is not ``name``);
            raises ValueError (DataError) saying why the file is not the expected one,
            which the error lists after the URL.

    Returns:
        The path of the verified file.

    Raises:
        DataError: when no URL gave a file with the expected checksum that ``check``
            accepts; the message gives each URL's failure, then ``hint``.
    """
    if md5 is None and check is None:
        raise ValueError(f"fetching {name} needs an md5 or a check of the file; give one")
    dest = dest_dir / name
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(
            f"cannot create the download folder {dest_dir}: {err}; "
            "set VQVAE_DATA to a writable folder"
        ) from err
    failures = []
    for url in urls:
        try:
            _download_checked(url, md5, check, dest)
            return dest
        except _RejectedError as err:
            failures.append(f"{url}: {err}")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
            failures.append(f"{url}: {getattr(err, 'reason', err)}")
    raise DataError(f"could not download {name} ({'; '.join(failures)}). {hint}")


def _download_checked(
    url: str, md5: str | None, check: Callable[[Path], None] | None, dest: Path
) -> None:
    def download(tmp: str) -> None:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=_TIMEOUT_S) as resp:
            digest = hashlib.md5(usedforsecurity=False)
            while chunk := resp.read(_CHUNK):
                digest.update(chunk)
                out.write(chunk)
        if md5 is not None and digest.hexdigest() != md5:
            raise _RejectedError(f"MD5 {digest.hexdigest()} is not the expected {md5}")
        if check is not None:
            try:
                check(Path(tmp))
            except ValueError as err:
                reason = " ".join(str(err).split())  # tarfile's reasons span several lines
                raise _RejectedError(reason) from err

    atomic_write(dest, download)  # a rejected or broken download never takes the final name
