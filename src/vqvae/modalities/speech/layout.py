"""How the WAV files of a folder or archive become splits, speakers and labels.

:class:`Layout` is what a layout function makes of a :class:`~vqvae.data.files.FileTree`;
:func:`folder_layout` is the generic one (the FSDD's is in
:mod:`vqvae.modalities.speech.fsdd`):

* every ``*.wav`` below the root, sorted; an archive's single wrapper folders, as in
  ``speech.tar.gz`` holding ``speech/...``, are stripped;
* top-level ``train`` / ``val`` / ``test`` folders, when they hold every file, are the
  splits; otherwise all files are ``train``;
* a ``train`` split without a ``val`` folder gives up a fixed validation split:
  :func:`vqvae.data.splits.validation_indices_by_name` of each file's path below the
  split folder (about 10 %, the same on every machine and run);
* the first folder level below the split is the speaker (``root/<speaker>/.../x.wav``);
  files directly in the split folder carry no speaker. Generic folders have no labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from vqvae.data.errors import DataError
from vqvae.data.files import FileEntry, FileTree, unwrap
from vqvae.data.source import SPLITS
from vqvae.data.splits import validation_indices_by_name

__all__ = ["WAV_KIND", "Item", "Layout", "folder_layout", "wav_files"]

WAV_KIND = "WAV"  # how trees of WAV files describe themselves: "WAV folder /x"


@dataclass(frozen=True)
class Item:
    """One clip of a split: its file, its name, and its label and speaker indices (or ``None``)."""

    entry: FileEntry
    name: str
    label: int | None
    speaker: int | None


@dataclass(frozen=True)
class Layout:
    """The non-empty splits (in SPLITS order) and the names behind label/speaker indices."""

    splits: dict[str, list[Item]]
    classes: tuple[str, ...]
    speaker_names: tuple[str, ...]
    hint: str  # why a split may be missing, for the error that says so


def wav_files(tree: FileTree) -> list[FileEntry]:
    """The ``.wav`` files of ``tree``, sorted; an archive's wrapper folders are stripped.

    A folder given by path is taken as it is: it is the root the user named.
    """
    files = unwrap(tree.files, keep=SPLITS) if tree.is_archive else tree.files
    return [f for f in files if f.suffix == ".wav"]


def folder_layout(tree: FileTree) -> Layout:
    """The generic layout of a folder or archive of WAV files (see the module docstring).

    Raises:
        DataError: when there is no WAV file, or a split mixes loose files and speaker
            folders.
    """
    wavs = wav_files(tree)
    if not wavs:
        raise DataError(
            f"no WAV files found in {tree.description}: expected files ending in "
            ".wav (hidden files and folders are ignored)"
        )
    top = {w.parts[0] for w in wavs if len(w.parts) > 1}
    if all(len(w.parts) > 1 for w in wavs) and top <= set(SPLITS):
        groups = {s: [FileEntry(w.parts[1:], w.ref) for w in wavs if w.parts[0] == s] for s in top}
    else:
        groups = {"train": wavs}
    hint = "there is no such split folder"
    if "train" in groups and "val" not in groups:
        train = groups["train"]
        keep, held_out = validation_indices_by_name(["/".join(w.parts) for w in train])
        groups["train"], groups["val"] = [train[i] for i in keep], [train[i] for i in held_out]
        hint = (
            "val is carved from about 10% of train's files by a hash of their paths and "
            "picked none of them; add files or a val/ folder"
        )
    speaker_names = _speaker_names(groups, tree.description)
    index = {name: i for i, name in enumerate(speaker_names)}
    splits = {
        split: [
            Item(w, "/".join(w.parts), None, index[w.parts[0]] if speaker_names else None)
            for w in groups[split]
        ]
        for split in SPLITS
        if groups.get(split)
    }
    return Layout(splits, (), speaker_names, hint)


def _speaker_names(groups: dict[str, list[FileEntry]], where: str) -> tuple[str, ...]:
    loose = [w for group in groups.values() for w in group if len(w.parts) == 1]
    foldered = [w for group in groups.values() for w in group if len(w.parts) > 1]
    if loose and foldered:
        raise DataError(
            f"{where} holds both WAV files directly in a split folder, such as "
            f"{loose[0].parts[-1]!r}, and speaker folders, such as {foldered[0].parts[0]!r}; "
            "move every file into a speaker folder (or none, for a set without speakers)"
        )
    return tuple(sorted({w.parts[0] for w in foldered}))
