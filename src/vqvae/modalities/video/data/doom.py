"""Recording ViZDoom episodes: the stand-in for DeepMind Lab (``vqvae collect doom``).

ViZDoom runs headless (no window, no display, no GL) from a scratch working directory,
because the engine writes ``_vizdoom.ini`` and a ``_vizdoom/`` folder into the current
one. The screen is rendered at 160x120 RGB without the HUD, and each frame is squashed
to 64x64 with area averaging (PIL's box filter): the whole 4:3 view is kept, its aspect
ratio is not, so nothing at the edges that a turn brings into view is cropped away.

The agent follows a seeded random policy with sticky actions: at each frame it repeats
its previous action with probability :data:`STICKY`, else draws one uniformly from the
action set, the scenario's buttons one at a time plus a no-op (last). An action is held
for ``frame_skip`` tics (4 by default: 35 tics are one second of game time, so frames
are 1/8.75 s apart and a turn moves the view by about 30 degrees). ``actions[t]`` is
the action taken at frame ``t`` and takes the game to frame ``t + 1``; the last frame's
action was taken too, but what followed (the end of the episode, or the ``max_frames``
cap) is not recorded.

Episode ``i`` is seeded from ``(seed, i)`` alone (the game's seed and the policy's), so
episodes can be recorded in any order: a resumed collection equals an uninterrupted one.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vqvae.data.errors import DataError
from vqvae.modalities.video.data.hashing import hash_seed, hash_uniforms
from vqvae.modalities.video.data.shards import (
    FORMAT_VERSION,
    HELD_OUT_RULE,
    MANIFEST,
    MANIFEST_FORMAT,
    file_problem,
    is_held_out,
    read_manifest,
    write_arrays,
    write_manifest,
)

__all__ = [
    "DEFAULT_FRAME_SKIP",
    "DEFAULT_SCENARIO",
    "EPISODES_PER_SHARD",
    "STICKY",
    "VIZDOOM_REQUIREMENT",
    "add_collect_arguments",
    "collect_doom",
    "doom_scenarios",
]

VIZDOOM_REQUIREMENT = "vizdoom==1.3.2"
DEFAULT_SCENARIO = "health_gathering"
DEFAULT_FRAME_SKIP = 4
#: Episodes per shard: a health_gathering shard of random play is about 30 MB.
EPISODES_PER_SHARD = 16
STICKY = 0.75
FRAME_SIZE = 64
NOOP = "NOOP"
_POLICY_KEY, _GAME_KEY = 0x706F6C, 0x67616D
_RESIZE = {"method": "squash", "from": [120, 160], "to": [FRAME_SIZE, FRAME_SIZE], "filter": "box (area average)"}
_SCREEN = "RES_160X120, RGB24, no HUD, no crosshair, window hidden"


def _import_vizdoom():
    try:
        import vizdoom
    except ImportError as err:
        raise DataError(
            f"recording Doom episodes needs ViZDoom, which is not installed ({err}); "
            f"install it with `pip install {VIZDOOM_REQUIREMENT}` (or `pip install 'vqvae[video]'`)"
        ) from err
    return vizdoom


def doom_scenarios(vizdoom=None) -> list[str]:
    """Names of the scenarios that ship with ViZDoom (a ``.cfg`` beside a ``.wad`` of that name)."""
    folder = Path((vizdoom or _import_vizdoom()).scenarios_path)
    return sorted(p.stem for p in folder.glob("*.cfg") if (folder / f"{p.stem}.wad").is_file())


def _scenario_config(vizdoom, scenario: str) -> Path:
    names = doom_scenarios(vizdoom)
    if scenario not in names:
        raise DataError(f"unknown ViZDoom scenario {scenario!r}; the scenarios shipped with ViZDoom "
                        f"{vizdoom.__version__} are: {', '.join(names)}")
    return Path(vizdoom.scenarios_path) / f"{scenario}.cfg"


@contextmanager
def _scratch_dir() -> Iterator[Path]:
    """Run the block inside a fresh temporary working directory, then return and delete it."""
    previous = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="vqvae-vizdoom-") as scratch:
        os.chdir(scratch)
        try:
            yield Path(scratch)
        finally:
            os.chdir(previous)


@contextmanager
def _open_game(vizdoom, config: Path) -> Iterator[tuple[object, list[list[int]], list[str]]]:
    """A started, headless game, its action table (one-hot rows) and action names; closed after."""
    game = vizdoom.DoomGame()
    try:
        game.load_config(str(config))
        game.set_doom_config_path(str(Path.cwd() / "_vizdoom.ini"))
        game.set_window_visible(False)
        game.set_screen_resolution(vizdoom.ScreenResolution.RES_160X120)
        game.set_screen_format(vizdoom.ScreenFormat.RGB24)
        game.set_render_hud(False)
        game.set_render_crosshair(False)
        game.set_mode(vizdoom.Mode.PLAYER)
        game.init()
        buttons = [b.name for b in game.get_available_buttons()]
        table = [[int(i == a) for i in range(len(buttons))] for a in range(len(buttons) + 1)]
        yield game, table, [*buttons, NOOP]
    finally:
        game.close()


class StickyPolicy:
    """The seeded random policy of episode ``episode``: repeat with probability :data:`STICKY`."""

    def __init__(self, seed: int, episode: int, num_actions: int) -> None:
        self.keys, self.num_actions = (_POLICY_KEY, seed, episode), num_actions

    def __call__(self, t: int, previous: int | None) -> int:
        repeat, draw = hash_uniforms(self.keys, 2 * t, 2)
        if previous is not None and repeat < STICKY:
            return previous
        return min(int(draw * self.num_actions), self.num_actions - 1)


def _resize(screen: np.ndarray) -> np.ndarray:
    """(120, 160, 3) uint8 screen -> (3, 64, 64) uint8 frame, squashed with a box filter."""
    small = Image.fromarray(screen).resize((FRAME_SIZE, FRAME_SIZE), Image.Resampling.BOX)
    return np.asarray(small).transpose(2, 0, 1)  # (C, H, W)


def _record_episode(game, table: list[list[int]], game_seed: int, choose: Callable[[int, int | None], int],
                    frame_skip: int, max_frames: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Play one episode; returns frames uint8 ``(T, 3, 64, 64)`` and actions int64 ``(T,)``."""
    game.set_seed(game_seed)
    game.new_episode()
    frames, actions, action = [], [], None
    while not game.is_episode_finished() and (max_frames is None or len(frames) < max_frames):
        frames.append(_resize(game.get_state().screen_buffer))
        action = choose(len(actions), action)
        actions.append(action)
        game.make_action(table[action], frame_skip)  # actions[t] takes frame t to t + 1
    return np.stack(frames), np.array(actions, dtype=np.int64)


def _check_count(name: str, value, minimum: int, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise DataError(f"{name} must be a whole number >= {minimum}, got {value!r}")


def collect_doom(scenario: str, episodes: int, seed: int, out: str | os.PathLike, *,
                 frame_skip: int = DEFAULT_FRAME_SKIP, max_frames: int | None = None,
                 progress: bool = True, episodes_per_shard: int = EPISODES_PER_SHARD) -> Path:
    """Record ``episodes`` episodes of a ViZDoom scenario into ``out`` (shards + manifest).

    Rerunning the same call on the same folder resumes: recorded episodes are kept (after
    checking their files' checksums), missing or damaged ones are recorded again, and the
    result equals an uninterrupted collection. A larger ``episodes`` extends a folder.

    Args:
        scenario: a scenario shipped with ViZDoom (:func:`doom_scenarios`), e.g. ``health_gathering``.
        episodes: episodes the folder should hold (a folder holding more keeps them all).
        seed: seeds the game and the policy of every episode (episode i from ``(seed, i)``).
        out: the collection folder (created if missing).
        frame_skip: tics each action is held for, i.e. between two recorded frames.
        max_frames: cap on the frames of an episode (None: until the episode ends).
        progress: show a progress bar (stderr).
        episodes_per_shard: episodes gathered into one shard.

    Returns:
        ``out``, as a Path.

    Raises:
        DataError: ViZDoom missing, an unknown scenario, bad numbers, or a folder that
            holds another collection (other scenario, seed, frame skip, ...).
    """
    _check_count("episodes", episodes, 1)
    _check_count("seed", seed, 0)
    _check_count("frame_skip", frame_skip, 1)
    _check_count("max_frames", max_frames, 1, optional=True)
    _check_count("episodes_per_shard", episodes_per_shard, 1)
    vizdoom = _import_vizdoom()
    config = _scenario_config(vizdoom, scenario)
    out = Path(out).expanduser().absolute()
    settings = {"scenario": scenario, "seed": seed, "source": "vizdoom", "source_version": vizdoom.__version__,
                "frame_skip": frame_skip, "max_frames": max_frames, "episodes_per_shard": episodes_per_shard}
    manifest = _start_manifest(out, settings)

    with _scratch_dir(), _open_game(vizdoom, config) as (game, table, names):
        if manifest["action_names"] not in (None, names):
            raise DataError(f"{out} was recorded with actions {manifest['action_names']}, this ViZDoom "
                            f"offers {names}; collect into a new folder")
        manifest["action_names"] = names
        write_manifest(out, manifest)  # from now on the folder is recognised, and resumable
        total = max(episodes, 1 + max((e["episode"] for e in manifest["episodes"]), default=-1))
        with tqdm(total=total, disable=not progress, unit="episode", desc=f"doom {scenario}") as bar:
            for group in range(-(-total // episodes_per_shard)):
                wanted = range(group * episodes_per_shard, min((group + 1) * episodes_per_shard, total))
                _collect_group(out, manifest, wanted, lambda ep: _record(game, table, seed, ep, frame_skip,
                                                                         max_frames), bar)
    _remove_orphans(out, manifest)
    return out


def _record(game, table, seed: int, episode: int, frame_skip: int, max_frames: int | None):
    policy = StickyPolicy(seed, episode, len(table))
    return _record_episode(game, table, hash_seed((_GAME_KEY, seed, episode)), policy, frame_skip, max_frames)


def _start_manifest(out: Path, settings: dict) -> dict:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; pass a folder to collect into")
    if (out / MANIFEST).is_file():
        manifest = read_manifest(out)
        differing = {k: (manifest.get(k), v) for k, v in settings.items() if manifest.get(k) != v}
        if differing:
            said = ", ".join(f"{k} {old!r} (now {new!r})" for k, (old, new) in differing.items())
            raise DataError(f"{out} holds a collection recorded with {said}; rerun with the same "
                            "settings to resume or extend it, or collect into another folder")
        return manifest
    if out.is_dir() and any(out.iterdir()):
        raise DataError(f"{out} is not empty and holds no {MANIFEST}; collect into a new or empty folder")
    return {"format": MANIFEST_FORMAT, "format_version": FORMAT_VERSION, **settings,
            "policy": {"kind": "uniform random over the actions, sticky", "repeat_probability": STICKY},
            "screen": _SCREEN, "resize": _RESIZE, "frame_shape": [3, FRAME_SIZE, FRAME_SIZE],
            "action_names": None,
            "actions": "actions[t] is taken at frame t and leads to frame t + 1; the last frame's action "
                       "was taken too, but its result (episode end or the max_frames cap) is not recorded",
            "split": HELD_OUT_RULE, "files": {}, "episodes": []}


def _collect_group(out: Path, manifest: dict, wanted: range, record, bar) -> None:
    """Make shard ``wanted[0] // E`` hold exactly the episodes ``wanted``, recording what is missing."""
    stem = f"shard-{wanted[0] // manifest['episodes_per_shard']:05d}"
    held = {e["episode"]: e for e in manifest["episodes"] if e["episode"] in wanted}
    for file in sorted({e["file"] for e in held.values()}):  # drop episodes whose files are damaged
        if file_problem(out, file, manifest["files"][file], checksum=True) is not None:
            held = {i: e for i, e in held.items() if e["file"] != file}
            _forget(manifest, file)
    if set(held) == set(wanted) and all(e["file"] == stem for e in held.values()):
        bar.update(len(wanted))
        return
    arrays = {}
    for episode in wanted:
        if episode in held:
            arrays[episode] = _read_episode(out, held[episode])
        else:
            frames, actions = record(episode)
            arrays[episode] = frames, actions
            pending = f"pending/episode-{episode:06d}"
            record_files = write_arrays(out, pending, {"frames": frames, "actions": actions,
                                                       "episodes": np.full(len(actions), episode, np.int64)})
            manifest["files"][pending] = record_files
            _set_entry(manifest, episode, pending, 0, len(actions))
            write_manifest(out, manifest)
        bar.update(1)
    frames = np.concatenate([arrays[e][0] for e in wanted])  # (N, C, H, W)
    actions = np.concatenate([arrays[e][1] for e in wanted])  # (N,)
    ids = np.concatenate([np.full(len(arrays[e][1]), e, np.int64) for e in wanted])  # (N,)
    manifest["files"][stem] = write_arrays(out, stem, {"frames": frames, "actions": actions, "episodes": ids})
    offset = 0
    for episode in wanted:
        _set_entry(manifest, episode, stem, offset, len(arrays[episode][1]))
        offset += len(arrays[episode][1])
    for file in list(manifest["files"]):
        if file.startswith("pending/") and int(file.rsplit("-", 1)[1]) in wanted:
            manifest["files"].pop(file)
    write_manifest(out, manifest)
    _remove_orphans(out, manifest)


def _remove_orphans(out: Path, manifest: dict) -> None:
    """Delete pending files the manifest no longer names (their episodes are in a shard now)."""
    pending = out / "pending"
    if not pending.is_dir():
        return
    for path in pending.glob("episode-*.npy"):
        if f"pending/{path.name.split('.')[0]}" not in manifest["files"]:
            path.unlink(missing_ok=True)
    with suppress(OSError):
        pending.rmdir()  # only when empty


def _forget(manifest: dict, file: str) -> None:
    manifest["episodes"] = [e for e in manifest["episodes"] if e["file"] != file]
    manifest["files"].pop(file, None)


def _set_entry(manifest: dict, episode: int, file: str, offset: int, length: int) -> None:
    manifest["episodes"] = [e for e in manifest["episodes"] if e["episode"] != episode]
    manifest["episodes"].append({"episode": episode, "file": file, "offset": offset, "length": length,
                                 "split": "val" if is_held_out(episode) else "train"})


def _read_episode(out: Path, entry: dict) -> tuple[np.ndarray, np.ndarray]:
    rows = slice(entry["offset"], entry["offset"] + entry["length"])
    frames = np.load(out / f"{entry['file']}.frames.npy", mmap_mode="r", allow_pickle=False)[rows]
    actions = np.load(out / f"{entry['file']}.actions.npy", mmap_mode="r", allow_pickle=False)[rows]
    return np.array(frames), np.array(actions, dtype=np.int64)


def add_collect_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the flags of ``vqvae collect doom`` to ``parser``; their dests match :func:`collect_doom`."""
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO,
                        help=f"a scenario shipped with ViZDoom (default {DEFAULT_SCENARIO}; others: basic, "
                             "my_way_home, defend_the_center, deadly_corridor, take_cover, ...)")
    parser.add_argument("--episodes", type=int, default=100,
                        help="episodes the folder should hold (default 100); rerunning resumes or extends")
    parser.add_argument("--seed", type=int, default=0, help="seeds every episode's game and policy (default 0)")
    parser.add_argument("--out", required=True, help="the collection folder (shards and manifest.json)")
    parser.add_argument("--frame-skip", type=int, default=DEFAULT_FRAME_SKIP,
                        help=f"game tics each action is held, between two recorded frames (default {DEFAULT_FRAME_SKIP})")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="cap on the frames of one episode (default: until the episode ends)")
    return parser
