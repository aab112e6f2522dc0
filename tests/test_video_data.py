"""Tests of the video data: Moving MNIST, the ViZDoom collector, shards, splits and windows."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import vqvae.modalities.video.data.doom as doom
from vqvae.data import DataError
from vqvae.modalities.image.data import load_images
from vqvae.modalities.video.data import (
    collect_doom,
    fixed_windows,
    is_video_spec,
    open_video,
    random_windows,
    read_window,
    video_datasets,
)
from vqvae.modalities.video.data.moving_mnist import MOVING_MNIST_SEQUENCES, MovingMnist

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
TINY = {"max_frames": 40, "episodes_per_shard": 2, "progress": False}  # 3 episodes: 2 shards


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- Moving MNIST -----------------------------------------------------------------------


def test_moving_mnist_is_deterministic_and_lazy():
    first, again = MovingMnist("train"), MovingMnist("train")
    assert len(first) == MOVING_MNIST_SEQUENCES["train"] and first.frame_shape == (1, 64, 64)
    for index in (0, 17, len(first) - 1):
        np.testing.assert_array_equal(first.frames(index, 0, 20), again.frames(index, 0, 20))
    video = first.frames(17, 0, 20)
    assert video.shape == (20, 1, 64, 64) and video.dtype == np.uint8
    assert not np.array_equal(video, first.frames(18, 0, 20))
    assert not np.array_equal(video, MovingMnist("train", seed=1).frames(17, 0, 20))
    np.testing.assert_array_equal(first.frames(17, 5, 9), video[5:9])
    assert first.actions(17, 0, 20) is None and first.num_actions is None
    assert first.describe()["fingerprint"] == again.describe()["fingerprint"]


def test_moving_mnist_frames_are_two_bouncing_digits_of_their_split():
    val = MovingMnist("val")
    np.testing.assert_array_equal(val.digits, load_images("mnist-mini", "val").images[:, 0].numpy())
    for index in (3, 250):
        layout, video = val.layout(index), val.frames(index, 0, 20)[:, 0]  # (T, H, W)
        assert layout.positions.min() >= 0 and layout.positions.max() <= 64 - 28
        steps = np.abs(np.diff(layout.positions, axis=0))  # (T - 1, 2, 2) pixels per frame
        assert steps.max() <= 5 and (steps.sum(axis=(0, 2)) > 0).all()  # both digits move
        for t in range(20):
            covered = np.zeros((64, 64), bool)
            for d, digit in enumerate(layout.digits):
                top, left = layout.positions[t, d]
                box = video[t, top:top + 28, left:left + 28]
                assert (box >= val.digits[digit]).all()  # each digit drawn (brighter pixel wins)
                covered[top:top + 28, left:left + 28] = True
            assert not video[t][~covered].any()  # nothing else in the frame
    # the held-out digits are never training digits
    train = MovingMnist("train")
    assert not {d.tobytes() for d in train.digits} & {d.tobytes() for d in val.digits}


def test_moving_mnist_uses_mnist_from_data_dir():
    if not SHARED_MNIST.is_dir():
        pytest.skip(f"{SHARED_MNIST} not found: tests that need ../shared/data skip outside the dev setup")
    val = open_video("moving-mnist", "val", data_dir=SHARED_MNIST)
    assert "IDX files" in val.describe()["source"] and len(val.digits) == 6_000
    assert val.frames(0, 0, 20).max() > 0


def test_moving_mnist_windows():
    val = open_video("moving-mnist", "val")
    video, actions = random_windows(val, 16, 3, torch.Generator().manual_seed(0))
    assert video.shape == (3, 1, 16, 64, 64) and video.dtype == torch.float32 and actions is None
    assert video.min() >= 0 and video.max() <= 1
    again, _ = random_windows(val, 16, 3, torch.Generator().manual_seed(0))
    torch.testing.assert_close(video, again, rtol=0, atol=0)
    windows = fixed_windows(val, 16, 50, seed=1)
    assert windows == fixed_windows(val, 16, 50, seed=1) != fixed_windows(val, 16, 50, seed=2)
    assert len(set(windows)) == 50 and len({e for e, _ in windows}) == 50  # one per sequence first
    assert all(0 <= s <= 4 for _, s in windows)
    window, _ = read_window(val, *windows[0], 16)
    assert window.shape == (1, 16, 64, 64)
    with pytest.raises(DataError, match="at least 21 frames"):
        random_windows(val, 21, 2, torch.Generator())
    assert "moving-mnist" in video_datasets() and is_video_spec("Moving-MNIST", None)


# --- the ViZDoom collector --------------------------------------------------------------


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    pytest.importorskip("vizdoom")
    return collect_doom("health_gathering", 3, 3, tmp_path_factory.mktemp("doom") / "a", **TINY)


def test_collection_layout_split_and_determinism(collection, tmp_path, monkeypatch):
    manifest = json.loads((collection / "manifest.json").read_text())
    assert [(e["episode"], e["file"], e["offset"], e["length"], e["split"]) for e in manifest["episodes"]] == [
        (0, "shard-00000", 0, 40, "val"), (1, "shard-00000", 40, 40, "train"), (2, "shard-00001", 0, 40, "train")]
    assert manifest["action_names"] == ["TURN_LEFT", "TURN_RIGHT", "MOVE_FORWARD", "NOOP"]
    assert manifest["resize"]["method"] == "squash" and manifest["frame_skip"] == 4
    assert sorted(_files(collection)) == ["manifest.json"] + sorted(
        f"shard-0000{k}.{a}.npy" for k in (0, 1) for a in ("actions", "episodes", "frames"))
    ids = np.load(collection / "shard-00000.episodes.npy")
    assert ids.tolist() == [0] * 40 + [1] * 40
    # the same seed gives the same bytes; ViZDoom ran in a scratch directory
    monkeypatch.chdir(tmp_path)
    again = collect_doom("health_gathering", 3, 3, tmp_path / "b", **TINY)
    assert _files(again) == _files(collection)
    assert not (tmp_path / "_vizdoom.ini").exists() and not (tmp_path / "_vizdoom").exists()
    assert Path.cwd() == tmp_path
    other = collect_doom("health_gathering", 1, 4, tmp_path / "c", **TINY)
    assert not np.array_equal(np.load(other / "shard-00000.frames.npy")[:40],
                              np.load(collection / "shard-00000.frames.npy")[:40])


def test_recorded_actions_are_the_sticky_seeded_policy(collection):
    train = open_video(collection, "train")
    assert (len(train), train.num_actions, train.frame_shape) == (2, 4, (3, 64, 64))
    assert open_video(collection, "val").episode_id(0) == 0
    for episode in range(len(train)):
        policy = doom.StickyPolicy(3, train.episode_id(episode), 4)
        expected, action = [], None
        for t in range(40):
            action = policy(t, action)
            expected.append(action)
        actions = train.actions(episode, 0, 40)
        assert actions.tolist() == expected and actions.dtype == np.int64
        assert 0.5 < np.mean(actions[1:] == actions[:-1]) < 1  # sticky, not constant


def test_turn_shows_in_the_next_frame_not_before():
    vizdoom = pytest.importorskip("vizdoom")
    config = doom._scenario_config(vizdoom, "health_gathering")
    turn_at = 6
    with doom._scratch_dir(), doom._open_game(vizdoom, config) as (game, table, names):
        left, noop = names.index("TURN_LEFT"), names.index("NOOP")
        frames, actions = doom._record_episode(
            game, table, 11, lambda t, prev: left if t == turn_at else noop, 4, 12)
    assert actions.tolist() == [noop] * turn_at + [left] + [noop] * 5
    change = np.abs(np.diff(frames.astype(np.float64), axis=0)).mean(axis=(1, 2, 3))  # change[t]: t -> t+1
    assert change[turn_at] > 5  # the turn taken at frame t shows in frame t + 1 ...
    assert change[turn_at - 1] < 0.5 and change[turn_at - 2] < 0.5  # ... and not earlier
    assert change[turn_at + 1:].max() < 0.5  # a no-op after it leaves the view still


def test_windows_carry_the_actions_of_their_frames(collection):
    train = open_video(collection, "train")
    video, actions = random_windows(train, 8, 6, torch.Generator().manual_seed(5))
    assert video.shape == (6, 3, 8, 64, 64) and actions.shape == (6, 8) and actions.dtype == torch.int64
    for window, window_actions in zip(video, actions, strict=True):
        found = [(e, s) for e in range(len(train)) for s in range(40 - 8 + 1)
                 if torch.equal(read_window(train, e, s, 8)[0], window)]
        assert found, "a drawn window is not a window of the split"
        e, s = found[0]
        assert window_actions.tolist() == train.actions(e, s, s + 8).tolist()
    windows = fixed_windows(train, 8, 100)
    assert len(windows) == 2 * 5  # non-overlapping: 5 per 40-frame episode, all of them
    for episode in range(2):
        starts = sorted(s for e, s in windows if e == episode)
        assert all(b - a >= 8 for a, b in zip(starts, starts[1:], strict=False))


def test_short_episode_errors(collection):
    train = open_video(collection, "train")
    with pytest.raises(DataError, match="at least 41 frames .*longest has 40"):
        random_windows(train, 41, 2, torch.Generator())
    with pytest.raises(DataError, match="at least 41 frames"):
        fixed_windows(train, 41, 4)
    with pytest.raises(DataError, match="does not fit episode 1"):
        read_window(train, 1, 30, 16)


def test_resume_equals_an_uninterrupted_collection(collection, tmp_path, monkeypatch):
    extended = tmp_path / "extended"
    collect_doom("health_gathering", 1, 3, extended, **TINY)  # one episode: a partial shard
    collect_doom("health_gathering", 3, 3, extended, **TINY)
    assert _files(extended) == _files(collection)

    interrupted, record, calls = tmp_path / "interrupted", doom._record_episode, []

    def stop_at_second_episode(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return record(*args, **kwargs)

    monkeypatch.setattr(doom, "_record_episode", stop_at_second_episode)
    with pytest.raises(KeyboardInterrupt):
        collect_doom("health_gathering", 3, 3, interrupted, **TINY)
    monkeypatch.setattr(doom, "_record_episode", record)
    assert (interrupted / "pending" / "episode-000000.frames.npy").is_file()
    held = json.loads((interrupted / "manifest.json").read_text())["episodes"]
    assert [e["episode"] for e in held] == [0]
    collect_doom("health_gathering", 3, 3, interrupted, **TINY)
    assert _files(interrupted) == _files(collection)


def test_damaged_shards_are_named_and_recollected(collection, tmp_path):
    copy = Path(shutil.copytree(collection, tmp_path / "copy"))
    shard = copy / "shard-00000.frames.npy"
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"shard-00000\.frames\.npy has .* bytes.*re-collect"):
        open_video(copy, "train")
    shutil.copy(collection / "shard-00000.frames.npy", shard)
    (copy / "shard-00001.actions.npy").unlink()
    with pytest.raises(DataError, match=r"shard-00001\.actions\.npy is missing"):
        open_video(copy, "train")
    flipped = bytearray((collection / "shard-00001.frames.npy").read_bytes())
    flipped[-5] ^= 0xFF  # same size: only the checksum tells
    (copy / "shard-00001.frames.npy").write_bytes(bytes(flipped))
    collect_doom("health_gathering", 3, 3, copy, **TINY)  # rerunning repairs
    assert _files(copy) == _files(collection)


def test_folder_errors(collection, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert not is_video_spec(str(empty), None) and is_video_spec(str(collection), None)
    with pytest.raises(DataError, match="no manifest.json"):
        open_video(empty, "train")
    lost = Path(shutil.copytree(collection, tmp_path / "lost"))
    (lost / "manifest.json").unlink()
    assert is_video_spec(str(lost), None)  # claimed, so that the error explains
    with pytest.raises(DataError, match="no manifest.json"):
        open_video(lost, "val")
    with pytest.raises(DataError, match="seed 3 .*now 4"):
        collect_doom("health_gathering", 3, 4, collection, **TINY)
    with pytest.raises(DataError, match="not empty"):
        collect_doom("health_gathering", 1, 3, lost, **TINY)
    with pytest.raises(DataError, match="unknown split"):
        open_video(collection, "test")


def test_unknown_scenario_lists_the_shipped_ones(tmp_path):
    pytest.importorskip("vizdoom")
    with pytest.raises(DataError, match="unknown ViZDoom scenario 'nope'.*health_gathering"):
        collect_doom("nope", 1, 0, tmp_path / "x", progress=False)


def test_missing_vizdoom_names_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vizdoom", None)  # import vizdoom now raises ImportError
    with pytest.raises(DataError, match=r"pip install vizdoom==1\.3\.2"):
        collect_doom("health_gathering", 1, 0, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()
