"""Recorded episodes on disk: shards of ``.npy`` arrays and the ``manifest.json`` that indexes them.

A collection folder holds::

    manifest.json                settings, action names, one entry per episode, file checksums
    shard-00000.frames.npy       uint8 (N, C, H, W): the frames of episodes 0..15, one after another
    shard-00000.actions.npy      int64 (N,): actions[t] takes frame t to frame t + 1
    shard-00000.episodes.npy     int64 (N,): the episode each frame belongs to
    pending/episode-000017.*.npy an episode recorded but not yet gathered into its shard

Shard ``k`` holds episodes ``k * E .. (k + 1) * E - 1`` (``E = episodes_per_shard``), so the
files are a function of the settings and the number of episodes alone, however often
the collection was interrupted and resumed. Every file is written atomically; the
manifest is rewritten after every episode and names each file with its size and SHA-256.
The arrays are plain ``.npy`` so a reader memory-maps them (``np.load(mmap_mode="r")``)
and touches only the frames it reads.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from vqvae.atomic import atomic_write, write_json
from vqvae.data.errors import DataError
from vqvae.modalities.video.data.episodes import VIDEO_SPLITS, VideoSet

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "ARRAYS",
    "EpisodeFolder",
    "file_problem",
    "is_held_out",
    "looks_like_collection",
    "read_manifest",
    "write_arrays",
    "write_manifest",
]

MANIFEST = "manifest.json"
MANIFEST_FORMAT = "vqvae-video-episodes"
FORMAT_VERSION = 1
ARRAYS = ("frames", "actions", "episodes")
#: The held-out rule, fixed by episode index so that adding episodes never moves one.
HELD_OUT_RULE = "episode % 10 == 0 is held out (split val); the rest is train"


def is_held_out(episode: int) -> bool:
    return episode % 10 == 0


def _recollect_hint(folder: Path) -> str:
    return (f"re-collect it: rerun the same `vqvae collect doom ... --out {folder}` command, which "
            "re-records the episodes of missing or damaged files (or collect into a new folder)")


def read_manifest(folder: str | Path) -> dict:
    """The manifest of a collection folder, checked for its format.

    Raises:
        DataError: when the folder or its manifest is missing, unreadable or not a collection.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; pass the --out folder of `vqvae collect doom`")
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(
            f"no {MANIFEST} in {folder}: it is not a finished collection of `vqvae collect doom` "
            f"(the manifest is written when the first episode is recorded); {_recollect_hint(folder)}"
        )
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path}: {err}; {_recollect_hint(folder)}") from err
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path} is not a video collection manifest (its format is not {MANIFEST_FORMAT!r})")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(f"{path} has format_version {manifest.get('format_version')!r}; this vqvae reads "
                        f"version {FORMAT_VERSION}: upgrade vqvae or re-collect")
    return manifest


def write_manifest(folder: Path, manifest: dict) -> None:
    manifest["episodes"].sort(key=lambda entry: entry["episode"])
    write_json(folder / MANIFEST, manifest)


def looks_like_collection(folder: Path) -> bool:
    """Whether a folder is (or was meant to be) a collection: it has our manifest, or shards."""
    path = folder / MANIFEST
    if path.is_file():
        try:
            return json.loads(path.read_text()).get("format") == MANIFEST_FORMAT
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
            return True  # damaged: claim it, so that opening it explains
    return folder.is_dir() and (any(folder.glob("shard-*.frames.npy")) or (folder / "pending").is_dir())


def write_arrays(folder: Path, stem: str, arrays: dict[str, np.ndarray]) -> dict:
    """Write ``{stem}.{name}.npy`` for each array, atomically; returns their manifest record."""
    record = {}
    for name in ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        path = folder / f"{stem}.{name}.npy"
        atomic_write(path, lambda tmp, a=array: _save(tmp, a), size=array.nbytes + 128)
        record[name] = {"bytes": path.stat().st_size, "sha256": _sha256(path)}
    return record


def _save(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # a file object: np.save would add ".npy" to a bare name
        np.save(f, array, allow_pickle=False)


def file_problem(folder: Path, stem: str, record: dict, *, checksum: bool) -> str | None:
    """What is wrong with the files of ``stem`` (missing, wrong size, wrong checksum), or None."""
    for name in ARRAYS:
        path = folder / f"{stem}.{name}.npy"
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != record[name]["bytes"]:
            return f"{path} has {size:,} bytes where the manifest recorded {record[name]['bytes']:,} (truncated or overwritten)"
        if checksum and _sha256(path) != record[name]["sha256"]:
            return f"{path} does not match its SHA-256 in the manifest (damaged)"
    return None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class EpisodeFolder(VideoSet):
    """One split of a collection folder, read lazily through memory maps.

    Opening checks that every file the split needs exists with the size the manifest
    recorded (cheap); the checksums are checked by the collector when it resumes.
    """

    def __init__(self, folder: str | Path, split: str) -> None:
        if split not in VIDEO_SPLITS:
            raise DataError(f"unknown split {split!r}: choose one of {', '.join(VIDEO_SPLITS)}")
        self.folder = Path(folder).expanduser()
        self.manifest = read_manifest(self.folder)
        self.spec, self.split = str(folder), split
        self.frame_shape = tuple(self.manifest["frame_shape"])
        self.action_names = list(self.manifest["action_names"])
        self.num_actions = len(self.action_names)
        self._entries = [e for e in self.manifest["episodes"] if e["split"] == split]
        if not self._entries:
            total = len(self.manifest["episodes"])
            raise DataError(
                f"{self.folder} holds {total} episode(s), none in the {split} split ({HELD_OUT_RULE}); "
                "collect more episodes into it (rerun `vqvae collect doom` with a larger --episodes)"
            )
        for stem in sorted({e["file"] for e in self._entries}):
            problem = file_problem(self.folder, stem, self.manifest["files"][stem], checksum=False)
            if problem is not None:
                raise DataError(f"{problem}; {_recollect_hint(self.folder)}")
        self._maps: dict[str, dict[str, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def length(self, episode: int) -> int:
        return int(self._entries[episode]["length"])

    def lengths(self) -> np.ndarray:
        return np.array([e["length"] for e in self._entries], dtype=np.int64)

    def episode_id(self, episode: int) -> int:
        """The collection's index of this split's ``episode`` (its seed and its place)."""
        return int(self._entries[episode]["episode"])

    def _frames(self, episode: int, start: int, stop: int) -> np.ndarray:
        return self._slice("frames", episode, start, stop)

    def _actions(self, episode: int, start: int, stop: int) -> np.ndarray:
        return self._slice("actions", episode, start, stop).astype(np.int64, copy=False)

    def _slice(self, name: str, episode: int, start: int, stop: int) -> np.ndarray:
        entry = self._entries[episode]
        array = self._map(entry["file"], name)
        offset = int(entry["offset"])
        return np.array(array[offset + start:offset + stop])  # a copy: the map stays read-only

    def _map(self, stem: str, name: str) -> np.ndarray:
        if stem not in self._maps:
            self._maps[stem] = {key: self._load(stem, key) for key in ARRAYS}
        return self._maps[stem][name]

    def _load(self, stem: str, name: str) -> np.ndarray:
        path = self.folder / f"{stem}.{name}.npy"
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as err:
            raise DataError(f"cannot read {path}: {err}; {_recollect_hint(self.folder)}") from err
        rows = sum(e["length"] for e in self.manifest["episodes"] if e["file"] == stem)
        expected = (rows, *self.frame_shape) if name == "frames" else (rows,)
        if array.shape != expected:
            raise DataError(f"{path} holds an array of shape {array.shape}, the manifest says {expected}; "
                            f"{_recollect_hint(self.folder)}")
        return array

    def describe(self) -> dict:
        m = self.manifest
        digest = hashlib.sha256()
        for entry in self._entries:
            digest.update(json.dumps([entry, m["files"][entry["file"]]["frames"]["sha256"]]).encode())
        return {
            "spec": self.spec,
            "data_dir": None,
            "split": self.split,
            "source": f"{m['source']} {m['source_version']}, scenario {m['scenario']}",
            "scenario": m["scenario"],
            "seed": m["seed"],
            "frame_skip": m["frame_skip"],
            "resize": m["resize"],
            "episodes": len(self._entries),
            "frames": int(self.lengths().sum()),
            "frame_shape": list(self.frame_shape),
            "action_names": self.action_names,
            "fingerprint": digest.hexdigest()[:16],
        }
