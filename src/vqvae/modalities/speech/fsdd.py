"""The Free Spoken Digit Dataset: where its recordings are, how their names split them, the download.

A copy is a folder of the WAVs, a folder holding ``recordings/`` (as the GitHub archive
does) or one archive of them, or the archive itself; without one, the archive is
downloaded from GitHub into ``$VQVAE_DATA/fsdd``. Recordings are named
``{digit}_{speaker}_{take}.wav``: the digit is the label, takes 0-4 are the test split,
5-9 our validation split and 10-49 train.
"""

from __future__ import annotations

import re
from pathlib import Path

from vqvae.data.download import data_home, fetch
from vqvae.data.errors import DataError
from vqvae.data.files import DirTree, FileTree, TarTree, is_archive
from vqvae.data.source import SPLITS
from vqvae.modalities.speech.layout import WAV_KIND, Item, Layout, wav_files

__all__ = [
    "FSDD_ARCHIVE",
    "FSDD_CLASSES",
    "FSDD_DESCRIPTION",
    "FSDD_URLS",
    "fsdd_hint",
    "fsdd_layout",
    "fsdd_tree",
]

FSDD_DESCRIPTION = (
    "Free Spoken Digit Dataset (CC BY-SA 4.0): spoken digits 0-9, 8 kHz mono, "
    "6 speakers; test = takes 0-4, val = takes 5-9, train = takes 10-49 "
    "(WAVs or a tar of them from --data-dir, else downloaded from GitHub)"
)
FSDD_ARCHIVE = "free-spoken-digit-dataset.tar.gz"
# GitHub builds these archives on the fly, so their bytes (and any checksum) are not
# guaranteed to stay fixed: a download is accepted when its file names parse as FSDD
# recordings, not by checksum.
FSDD_URLS = (
    "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
    "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/heads/master.tar.gz",
)
FSDD_CLASSES = tuple(str(d) for d in range(10))
_NAME = re.compile(r"(\d)_(.+)_(\d+)(?i:\.wav)")
_PATTERN = "{digit}_{speaker}_{take}.wav (e.g. 3_theo_12.wav)"


def fsdd_layout(tree: FileTree) -> Layout:
    """Splits, digit labels and speakers from the recordings' names.

    Raises:
        DataError: when a WAV file is misnamed, a recording is there twice, or there
            is none.
    """
    wavs = wav_files(tree)
    if any(len(w.parts) > 1 and w.parts[-2] == "recordings" for w in wavs):
        # The GitHub archive and FSDD copies keep the clips in recordings/; other WAVs
        # there are not part of the data set.
        wavs = [w for w in wavs if len(w.parts) > 1 and w.parts[-2] == "recordings"]
    parsed, seen = [], {}
    for wav in wavs:
        match = _NAME.fullmatch(wav.parts[-1])
        if match is None:
            raise DataError(
                f"{tree.where(wav)} is not named like a Free Spoken Digit Dataset recording: "
                f"expected {_PATTERN}; remove or rename it, or load the folder by its path "
                "as a generic WAV folder"
            )
        if wav.parts[-1] in seen:
            raise DataError(
                f"{tree.where(wav)} and {tree.where(seen[wav.parts[-1]])} are the same "
                "recording; keep one copy"
            )
        seen[wav.parts[-1]] = wav
        parsed.append((wav, int(match[1]), match[2], int(match[3])))
    if not parsed:
        raise DataError(
            f"no Free Spoken Digit Dataset recordings ({_PATTERN}) in {tree.description}"
        )
    speakers = tuple(sorted({speaker for _, _, speaker, _ in parsed}))
    index = {name: i for i, name in enumerate(speakers)}
    groups: dict[str, list[Item]] = {split: [] for split in SPLITS}
    for wav, digit, speaker, take in parsed:
        # The canonical split holds out takes 0-4 for testing; takes 5-9 are our fixed
        # validation split, so no training take is ever used to pick a model.
        split = "test" if take < 5 else "val" if take < 10 else "train"
        groups[split].append(Item(wav, wav.parts[-1], digit, index[speaker]))
    hint = "takes 0-4 form the test split, takes 5-9 val, takes 10-49 train; this copy has none"
    return Layout({s: g for s, g in groups.items() if g}, FSDD_CLASSES, speakers, hint)


def fsdd_tree(data_dir: Path | None) -> FileTree:
    """The FSDD recordings in ``data_dir``, else in the data home, else downloaded there.

    Raises:
        DataError: when ``data_dir`` is missing or holds no recordings, or the download
            fails (the message says where to put the files offline).
    """
    if data_dir is not None:
        if not data_dir.exists():
            raise DataError(
                f"data_dir {data_dir.absolute()} does not exist; pass the folder that "
                "holds the FSDD recordings or their archive"
            )
        found = _find(data_dir)
        if found is None:
            raise DataError(f"no FSDD recordings in {data_dir.absolute()}: {fsdd_hint()}")
        return found
    home = data_home() / "fsdd"
    if found := _find(home):
        return found
    archive = fetch(
        FSDD_ARCHIVE, FSDD_URLS, None, home, hint=f"Offline, {fsdd_hint()}", check=_check_download
    )
    return TarTree(archive, WAV_KIND)


def fsdd_hint() -> str:
    """Where to put the recordings, for messages about a missing copy."""
    return (
        f"pass --data-dir DIR where DIR holds the FSDD WAV files (named {_PATTERN}), "
        "a recordings/ folder of them or a .tar/.tar.gz of them (from "
        "https://github.com/Jakobovski/free-spoken-digit-dataset), or put them in "
        f"{data_home() / 'fsdd'} (set VQVAE_DATA to move that folder)"
    )


def _find(path: Path) -> FileTree | None:
    """The WAVs below ``path``, else the one archive in it, else ``None``."""
    if path.is_file():
        return TarTree(path, WAV_KIND) if is_archive(path) else None
    if not path.is_dir():
        return None
    tree = DirTree(path, WAV_KIND)
    if wav_files(tree):
        return tree
    archives = sorted(
        p for p in path.iterdir() if p.is_file() and is_archive(p) and not p.name.startswith(".")
    )
    if len(archives) > 1:
        raise DataError(
            f"{path} holds several archives ({', '.join(p.name for p in archives)}); "
            "pass the one with the FSDD recordings itself as the data folder"
        )
    return TarTree(archives[0], WAV_KIND) if archives else None


def _check_download(path: Path) -> None:
    """Accept a download only when it is an archive whose recordings' names all parse."""
    try:
        fsdd_layout(TarTree(path, WAV_KIND))
    except DataError as err:
        raise DataError(f"the file served is not an archive of FSDD recordings: {err}") from err
