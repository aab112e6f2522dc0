"""Video end to end through the CLI, on a tiny real ViZDoom collection: the 3-D tokenizer's
shapes, training, encode/decode, the action alignment of code steps, an action-conditioned
prior, prediction and evaluation, cached sampling equal to uncached, and clean errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vqvae.cli import main
from vqvae.modalities import MODALITIES, detect
from vqvae.modalities.video.codes import step_actions
from vqvae.modalities.video.metrics import MSE_FLOOR, frame_psnr, frame_ssim, paired_bootstrap
from vqvae.modalities.video.predict import copy_last, read_actions

pytest.importorskip("vizdoom")

# 4-frame windows -> 2 code steps of 2 frames; 64x64 -> 8x8; a tiny network. fp32: oneDNN's bf16
# weight gradient of this tiny (3,4,4)-kernel Conv3d (8 -> 16 channels, 2 frames) is NaN on CPUs with AMX
TINY = ["--frames", "4", "--precision", "fp32", "--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "8",
        "--batch-size", "4"]
PRIOR = ["--arch", "transformer", "--width", "32", "--depth", "1", "--heads", "2", "--batch-size", "8"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is fastest, and stable under load


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def doom(tmp_path_factory) -> str:
    """11 episodes of 12 frames of health_gathering: episodes 0 and 10 are held out."""
    from vqvae.modalities.video.data import collect_doom

    out = tmp_path_factory.mktemp("doom") / "collection"
    collect_doom("health_gathering", 11, 0, out, max_frames=12, progress=False)
    return str(out)


@pytest.fixture(scope="module")
def video_run(doom, tmp_path_factory) -> str:
    run = tmp_path_factory.mktemp("runs") / "video"
    assert main(["train", "--data", doom, "--out", str(run), *TINY, "--max-steps", "3", "--val-every", "3",
                 "--log-every", "1", "--no-progress"]) == 0
    return str(run)


# --------------------------------------------------------------------------- code steps


def test_each_code_step_gets_the_actions_that_lead_into_its_frames():
    # actions[t] takes frame t to t + 1: frame j is reached by actions[j - 1]
    actions = torch.tensor([[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25]])
    steps = step_actions(actions, factor=2, num_actions=99)
    assert steps.shape == (2, 3, 2)
    assert steps[0].tolist() == [[99, 10], [11, 12], [13, 14]]  # frames (0,1), (2,3), (4,5)
    assert steps[1, 1].tolist() == [21, 22]  # step 1 covers frames 2 and 3: actions 1 and 2
    assert step_actions(actions, factor=1, num_actions=99)[0, :, 0].tolist() == [99, 10, 11, 12, 13, 14]
    assert step_actions(actions, factor=3, num_actions=99)[0].tolist() == [[99, 10, 11], [12, 13, 14]]
    with pytest.raises(ValueError, match="multiple of 4"):
        step_actions(actions, factor=4, num_actions=99)


def _view_shift(before: torch.Tensor, after: torch.Tensor) -> int:
    """How many pixels the picture moved sideways from ``before`` to ``after`` ``(C, H, W)``
    (positive: to the right, as turning left moves it)."""
    def error(s: int) -> float:
        a, b = (before[..., : 64 - s], after[..., s:]) if s >= 0 else (before[..., -s:], after[..., : 64 + s])
        return float((a - b).abs().mean())

    return min(range(-12, 13), key=error)


def test_a_turn_shows_in_the_frame_its_code_step_gives_it_to(doom):
    """On real frames: wherever a code step's action slot i holds a turn, frame ``t'f + i`` is
    the previous frame turned that way (turning left moves the picture right). An off-by-one
    in the alignment pairs turns with the frames of the action before or after them."""
    from vqvae.modalities.video.codes import read_windows
    from vqvae.modalities.video.data import open_video

    videos = open_video(doom, "train")
    left, right = videos.action_names.index("TURN_LEFT"), videos.action_names.index("TURN_RIGHT")
    checked = 0
    for episode in range(len(videos)):
        video, actions = read_windows(videos, [(episode, 0)], 12)
        steps = step_actions(actions, 2, videos.num_actions)[0]  # (6, 2)
        assert int(steps[0, 0]) == videos.num_actions  # nothing leads into the first frame
        for t in range(6):
            for i in range(2):
                frame = 2 * t + i
                if int(steps[t, i]) in (left, right):
                    shift = _view_shift(video[0, :, frame - 1], video[0, :, frame])
                    assert shift >= 4 if int(steps[t, i]) == left else shift <= -4, (episode, frame, shift)
                    checked += 1
    assert checked >= 20


# --------------------------------------------------------------------------- metrics


def test_frame_metrics_and_bootstrap():
    truth = torch.rand(3, 1, 4, 16, 16)
    other = (truth + 0.1).clamp(0, 1)
    psnr = frame_psnr(truth, other)
    expected = 10 * torch.log10(1 / (other - truth).square().mean(dim=(1, 3, 4)))
    assert psnr.shape == (3, 4) and torch.allclose(psnr, expected)
    assert float(frame_psnr(truth, truth).max()) == pytest.approx(10 * np.log10(1 / MSE_FLOOR), rel=1e-5)
    ssim = frame_ssim(truth, truth)
    assert ssim.shape == (3, 4) and torch.allclose(ssim, torch.ones(3, 4))
    assert float(frame_ssim(truth, other).max()) < 1
    a = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    low, high = paired_bootstrap(a + 1.0, a)  # a constant gain of exactly 1
    assert low == pytest.approx(1.0) and high == pytest.approx(1.0)
    low, high = paired_bootstrap(a + torch.tensor([0.5, -0.5, 0.3, -0.3, 0.1]), a)
    assert low < 0.02 < high and high - low < 1
    with pytest.raises(ValueError, match="same N"):
        paired_bootstrap(a, a[:3])


def test_copy_last_repeats_the_last_context_frame():
    video = torch.arange(2 * 1 * 6 * 2 * 2, dtype=torch.float).view(2, 1, 6, 2, 2)
    baseline = copy_last(video, 4)
    assert baseline.shape == (2, 1, 2, 2, 2)
    assert torch.equal(baseline[:, :, 0], video[:, :, 3]) and torch.equal(baseline[:, :, 1], video[:, :, 3])


def test_actions_files(tmp_path):
    names = ["TURN_LEFT", "TURN_RIGHT", "MOVE_FORWARD", "NOOP"]
    path = tmp_path / "a.json"
    path.write_text(json.dumps(["TURN_LEFT", 2, "NOOP"]))  # the 3 actions into predicted frames 5, 6, 7
    given = read_actions(path, n=2, frames=8, context=5, action_names=names, num_actions=4)
    assert given.tolist() == [[-1, -1, -1, -1, 0, 2, 3, -1]] * 2
    np.save(tmp_path / "a.npy", np.arange(16).reshape(2, 8) % 4)
    assert read_actions(tmp_path / "a.npy", 2, 8, 5, names, 4).tolist() == (np.arange(16).reshape(2, 8) % 4).tolist()
    path.write_text(json.dumps(["JUMP", 1, 2]))
    with pytest.raises(ValueError, match="JUMP"):
        read_actions(path, 2, 8, 5, names, 4)
    np.save(tmp_path / "b.npy", np.zeros(7, dtype=np.int64))
    with pytest.raises(ValueError, match="give 8 actions per window"):
        read_actions(tmp_path / "b.npy", 2, 8, 5, names, 4)
    np.save(tmp_path / "c.npy", np.full(3, 4))
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        read_actions(tmp_path / "c.npy", 2, 8, 5, names, 4)


# --------------------------------------------------------------------------- the tokenizer


def test_the_data_decide_the_video_modality(doom):
    assert detect(doom).name == "video" and detect("moving-mnist").name == "video"
    assert "moving-mnist" in MODALITIES["video"].datasets()


def test_training_records_a_3d_tokenizer(video_run):
    config = json.loads(Path(video_run, "config.json").read_text())
    assert config["modality"] == "video" and config["model"]["spatial_dims"] == 3
    assert config["model"]["time_downsamples"] == 1 and config["model"]["quantizer"] == "ema"
    assert config["data"]["frames"] == 4 and config["data"]["latent_shape"] == [2, 8, 8]
    assert config["data"]["num_actions"] == 4 and config["data"]["fps"] == pytest.approx(35 / 4)
    records = [json.loads(line) for line in Path(video_run, "metrics.jsonl").read_text().splitlines()]
    val = records[-1]
    assert val["split"] == "val" and val["windows"] == 6  # 2 held-out episodes of 12 frames, 3 windows each
    assert len(val["psnr_per_frame"]) == 4 and 0 < val["ssim"] <= 1 and 1 <= val["codes_used"] <= 16
    model = MODALITIES["video"].load(video_run)
    x = torch.rand(2, 3, 4, 64, 64)
    assert model.encode(x).shape == (2, 2, 8, 8)
    assert model.decode(model.encode(x)).shape == x.shape


def test_encode_decode_reconstruct_evaluate(video_run, tmp_path, capsys):
    code, out, err = cli(capsys, "encode", video_run, "--split", "val", "-o", tmp_path / "c.npz")
    assert code == 0, err
    with np.load(tmp_path / "c.npz") as f:
        assert f["codes"].shape == (6, 2, 8, 8)
        assert f["episodes"].tolist() == [0, 0, 0, 1, 1, 1] and f["starts"].tolist() == [0, 4, 8] * 2
    code, out, err = cli(capsys, "decode", video_run, tmp_path / "c.npz", "-o", tmp_path / "dec")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "dec").iterdir()) == [f"{i:06d}.gif" for i in range(6)] + ["grid.png"]
    import imageio.v3 as iio

    assert iio.imread(tmp_path / "dec" / "000000.gif").shape == (4, 128, 128, 3)  # 4 frames, shown 2x
    assert cli(capsys, "reconstruct", video_run, "-n", "2", "-o", tmp_path / "rec")[0] == 0
    assert (tmp_path / "rec" / "strip.png").exists() and (tmp_path / "rec" / "000001.gif").exists()
    code, out, err = cli(capsys, "evaluate", video_run, "--json", tmp_path / "e.json")
    assert code == 0, err
    metrics = json.loads((tmp_path / "e.json").read_text())
    assert len(metrics["reconstruction_psnr_per_frame"]) == 4 and metrics["windows"] == 6
    assert metrics["compression_ratio"] == pytest.approx(3 * 4 * 64 * 64 * 8 / (2 * 8 * 8 * 4))
    assert "prediction_psnr" not in metrics and "no prior" in metrics["prediction"]


def test_clear_errors(doom, video_run, tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--data", doom, "--out", tmp_path / "r", *TINY[2:], "--frames", "5",
                       "--no-progress")
    assert code == 2 and "multiple of 2" in err and "Traceback" not in err
    code, _, err = cli(capsys, "train", "--data", doom, "--out", tmp_path / "r", *TINY[2:], "--frames", "13",
                       "--force", "--no-progress", "--max-steps", "1")
    assert code == 2 and "at least 13" in err
    code, _, err = cli(capsys, "predict", video_run, "-o", tmp_path / "p")
    assert code == 2 and "no prior" in err
    code, _, err = cli(capsys, "collect", "doom", "--scenario", "nowhere", "--episodes", "1", "--out", tmp_path / "d")
    assert code == 2 and "nowhere" in err


# --------------------------------------------------------------------------- the prior


@pytest.fixture(scope="module")
def prior_run(video_run) -> str:
    assert main(["train-prior", video_run, *PRIOR, "--max-steps", "3", "--val-every", "3", "--no-progress"]) == 0
    return video_run


def test_the_prior_is_conditioned_on_the_actions_of_each_code_step(prior_run):
    from vqvae.modalities.video.codes import prior_windows
    from vqvae.priors.training import load_prior

    config = json.loads(Path(prior_run, "priors", "transformer", "config.json").read_text())["model"]
    assert config["num_actions"] == 4 and config["actions_per_step"] == 2 and config["latent_shape"] == [2, 8, 8]
    codes, actions = prior_windows(MODALITIES["video"].load, prior_run, "train", steps=2)
    assert codes.shape[1:] == (2, 8, 8) and actions.shape == (len(codes), 2, 2)
    assert (actions[:, 0, 0] == 4).all()  # nothing leads into a window's first frame
    assert int(actions[:, 1:].max()) < 4  # every later frame has its recorded action
    assert len(codes) == 9 * 5  # 9 training episodes of 12 frames: windows of 4 start every 2 frames
    assert config["codebook_size"] == 17  # K = 16 codes and the still step
    prior = load_prior(f"{prior_run}/priors/transformer")
    other = actions.clone()
    other[:, 1] = (other[:, 1] + 1) % 4
    logits = prior(codes[:4], actions=actions[:4])
    changed = prior(codes[:4], actions=other[:4])
    assert torch.equal(logits[:, :, 0], changed[:, :, 0])  # step 0 cannot see step 1's actions
    assert not torch.allclose(logits[:, :, 1], changed[:, :, 1])


def test_cached_prediction_equals_uncached(prior_run):
    from vqvae.modalities.video.codes import read_windows
    from vqvae.modalities.video.data import open_video
    from vqvae.modalities.video.predict import predict_clips
    from vqvae.priors.training import load_prior

    videos = open_video(json.loads(Path(prior_run, "config.json").read_text())["data"]["spec"], "val")
    video, actions = read_windows(videos, [(0, 0), (1, 4), (0, 8)], 4)
    tokenizer, prior = MODALITIES["video"].load(prior_run), load_prior(f"{prior_run}/priors/transformer")
    drawn = {cached: predict_clips(tokenizer, prior, video, actions, 2, seed=3, batch_size=2,
                                   sampling={"top_k": None, "use_cache": cached}) for cached in (True, False)}
    assert drawn[True].shape == (3, 3, 2, 64, 64)
    assert torch.equal(drawn[True], drawn[False])


def test_still_steps_are_marked_for_the_prior_and_predicted_as_exact_copies(prior_run, monkeypatch):
    from vqvae.modalities.video.codes import read_windows, strided_windows, window_codes
    from vqvae.modalities.video.data import open_video
    from vqvae.modalities.video.predict import predict_clips
    from vqvae.priors.training import load_prior

    videos = open_video(json.loads(Path(prior_run, "config.json").read_text())["data"]["spec"], "train")
    video, _ = read_windows(videos, strided_windows(videos, 4, 2)[:4], 4)
    video[:2, :, 2:] = video[:2, :, 1:2]  # the first two windows stand still from frame 1 on: step 1 is still
    tokenizer, prior = MODALITIES["video"].load(prior_run), load_prior(f"{prior_run}/priors/transformer")
    codes = window_codes(tokenizer, video)
    assert (codes[:2, 1] == 16).all() and (codes[:, 0] < 16).all() and (codes[2:] < 16).all()

    seen = {}

    def draw_still(n, prefix, **kwargs):  # a prior that says: nothing moves
        seen["prefix"] = prefix
        return torch.cat([prefix, torch.full_like(prefix, 16)], dim=1)

    monkeypatch.setattr(prior, "sample", draw_still)
    given = video[2:]
    predicted = predict_clips(tokenizer, prior, given, torch.zeros(2, 4, dtype=torch.long), 2)
    assert torch.equal(predicted, given[:, :, 1:2].expand(-1, -1, 2, -1, -1))  # the last given frame, exactly
    assert (seen["prefix"] < 16).all()  # a window's first step is never still


def test_predict_and_evaluate_end_to_end(prior_run, tmp_path, capsys):
    code, out, err = cli(capsys, "predict", prior_run, "--context", "2", "-n", "2", "-o", tmp_path / "p")
    assert code == 0, err
    assert "copying the last context frame" in out
    names = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert names == ["000000.gif", "000001.gif", "actions.npy", "metrics.json", "predicted.npy", "strip.png"]
    predicted = np.load(tmp_path / "p" / "predicted.npy", allow_pickle=False)
    assert predicted.shape == (2, 2, 3, 64, 64) and predicted.dtype == np.uint8
    metrics = json.loads((tmp_path / "p" / "metrics.json").read_text())
    assert len(metrics["prediction_psnr_per_frame"]) == 2 and metrics["sampling"]["temperature"] == 0.7
    assert metrics["sampling"]["guidance"] == 2.5  # the prior dropped its actions in training: guided
    # given actions: all turns left, in a JSON file of action names
    (tmp_path / "left.json").write_text(json.dumps(["TURN_LEFT", "TURN_LEFT"]))
    code, _, err = cli(capsys, "predict", prior_run, "--context", "2", "-n", "2", "--actions", tmp_path / "left.json",
                       "-o", tmp_path / "q")
    assert code == 0, err
    used = np.load(tmp_path / "q" / "actions.npy")
    assert used[:, 1:3].tolist() == [[0, 0], [0, 0]]  # the actions into predicted frames 2 and 3
    recorded = np.load(tmp_path / "p" / "actions.npy")
    assert used[:, 0].tolist() == recorded[:, 0].tolist()  # the context keeps its recorded actions

    code, out, err = cli(capsys, "evaluate", prior_run, "--prior", "transformer", "--context", "2", "--windows", "4",
                         "--json", tmp_path / "e.json")
    assert code == 0, err
    metrics = json.loads((tmp_path / "e.json").read_text())
    for name in ("prediction", "shuffled_actions", "copy_last", "ceiling"):
        for score in ("psnr", "ssim"):
            assert len(metrics[f"{name}_{score}_per_frame"]) == 2, name  # frames - context
            assert metrics[f"{name}_{score}"] == pytest.approx(np.mean(metrics[f"{name}_{score}_per_frame"]), abs=1e-3)
    assert len(metrics["reconstruction_psnr_per_frame"]) == 4
    low, high = metrics["action_gain_psnr_interval"]
    assert low <= high
    low, high = metrics["copy_last_gain_psnr_interval"]
    gain = metrics["prediction_psnr"] - metrics["copy_last_psnr"]
    assert low <= gain <= high  # the mean gain, inside its paired bootstrap interval
    # the ceiling is the reconstruction's future frames, where they are not still steps
    assert 0 <= metrics["still_steps"] <= 1
    if metrics["still_steps"] == 0:
        assert metrics["ceiling_psnr_per_frame"] == metrics["reconstruction_psnr_per_frame"][2:]


def test_prediction_errors(prior_run, tmp_path, capsys):
    code, _, err = cli(capsys, "predict", prior_run, "--context", "3", "-o", tmp_path / "p")
    assert code == 2 and "multiple of 2" in err
    code, _, err = cli(capsys, "predict", prior_run, "--context", "2", "--frames", "6", "-o", tmp_path / "p")
    assert code == 2 and "--frames 4" in err
    code, _, err = cli(capsys, "evaluate", prior_run, "--json", tmp_path / "e.json")  # the run's only prior
    assert code == 2 and "--context" in err  # 6 context frames do not fit a window of 4
    (tmp_path / "bad.json").write_text(json.dumps(["JUMP", "JUMP"]))
    code, _, err = cli(capsys, "predict", prior_run, "--context", "2", "--actions", tmp_path / "bad.json", "-o",
                       tmp_path / "p")
    assert code == 2 and "JUMP" in err and "TURN_LEFT" in err


def test_video_demo_runs_end_to_end(tmp_path, monkeypatch):
    """The demo's path with tiny settings: record, train both stages, predict."""
    import dataclasses

    import vqvae.demo as demo
    from vqvae.modalities.video import modality

    monkeypatch.setitem(modality.VIDEO_MODEL, "hidden", 16)
    monkeypatch.setitem(modality.VIDEO_MODEL, "res_hidden", 8)
    monkeypatch.setitem(modality.VIDEO_MODEL, "codebook_size", 16)
    monkeypatch.setattr(demo, "VIDEO_EPISODES", 11)
    monkeypatch.setattr(demo, "VIDEO_TRAIN", dataclasses.replace(demo.VIDEO_TRAIN, max_steps=2, precision="fp32"))
    monkeypatch.setattr(demo, "VIDEO_PRIOR", {"width": 32, "depth": 1, "heads": 2})
    monkeypatch.setattr(demo, "VIDEO_PRIOR_TRAIN", dataclasses.replace(demo.VIDEO_PRIOR_TRAIN, max_steps=2))
    lines = demo.run_video_demo(tmp_path / "demo", progress=False)
    assert "10 frames from 6" in lines[3] and "copying the last given frame" in lines[3]
    predictions = tmp_path / "demo" / "run" / "predictions"
    assert (predictions / "strip.png").exists() and len(list(predictions.glob("*.gif"))) == 8
    metrics = json.loads((tmp_path / "demo" / "run" / "metrics.json").read_text())
    assert len(metrics["prediction"]["prediction_psnr_per_frame"]) == 10


def test_mp4_needs_its_backend(prior_run, tmp_path, capsys):
    import importlib.util

    code, _, err = cli(capsys, "predict", prior_run, "--context", "2", "-n", "1", "--format", "mp4", "-o", tmp_path / "m")
    if importlib.util.find_spec("imageio_ffmpeg") is None:
        assert code == 2 and "pip install imageio-ffmpeg" in err and not (tmp_path / "m").exists()
    else:
        assert code == 0, err
        assert (tmp_path / "m" / "000000.mp4").stat().st_size > 0


def test_predictions_are_guided_by_default_only_where_the_prior_can_be():
    from types import SimpleNamespace

    from vqvae.modalities.video.predict import ACTION_GUIDANCE, prediction_sampling

    def prior(num_actions, action_dropout):
        return SimpleNamespace(config=SimpleNamespace(num_actions=num_actions, action_dropout=action_dropout))

    assert prediction_sampling(prior(4, 0.1)) == {"temperature": 0.7, "top_k": None, "top_p": None,
                                                  "guidance": ACTION_GUIDANCE}
    assert prediction_sampling(prior(None, 0.1))["guidance"] == 1.0  # unconditional (Moving MNIST)
    assert prediction_sampling(prior(4, 0.0))["guidance"] == 1.0  # never learned without its actions
    assert prediction_sampling(prior(4, 0.1), {"guidance": 1.0, "temperature": 1.0}) == {
        "temperature": 1.0, "top_k": None, "top_p": None, "guidance": 1.0}
