"""Contracts every registered modality keeps, through the generic command line: training,
resume equals an uninterrupted run, encode/decode round trips, clean errors. Plus a
test-only modality that goes the whole journey without any change to core files."""

import json

import numpy as np
import pytest
import safetensors.torch
import torch

import vqvae
from signal_modality import SignalModality
from vqvae.cli import main
from vqvae.modalities import MODALITIES, detect
from vqvae.runs import load_codes

IMAGE_TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "4", "--batch-size", "8"]
SPEECH_TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "8",
               "--decoder-width", "32", "--speaker-dim", "8", "--segment", "512", "--batch-size", "4"]
SIGNAL_TINY = ["--hidden", "16", "--codebook-size", "8", "--code-dim", "4", "--batch-size", "8"]
# fp32: oneDNN's bf16 weight gradient of the tiny (3,4,4)-kernel Conv3d is NaN on AMX CPUs
VIDEO_TINY = ["--frames", "4", "--precision", "fp32", "--hidden", "16", "--res-hidden", "8", "--codebook-size", "16",
              "--code-dim", "8", "--batch-size", "4"]
K = {"image": 16, "speech": 16, "signal": 8, "video": 16}
# the model flag each contract changes on resume, and its new value
CHANGED = {"image": ("--hidden", "32"), "speech": ("--hidden", "32"), "signal": ("--hidden", "32"),
           "video": ("--hidden", "32")}


@pytest.fixture
def signal(monkeypatch):
    """Register the test-only modality for one test."""
    monkeypatch.setitem(MODALITIES, "signal", SignalModality())
    return MODALITIES["signal"]


@pytest.fixture(scope="module")
def tiny_doom(tmp_path_factory):
    """11 ViZDoom episodes of 12 frames (2 held out)."""
    pytest.importorskip("vizdoom")
    from vqvae.modalities.video.data import collect_doom

    return collect_doom("health_gathering", 11, 0, tmp_path_factory.mktemp("doom") / "doom", max_frames=12,
                        progress=False)


@pytest.fixture(params=["image", "speech", "signal", "video"])
def modality(request, tiny_images, signal):
    """(name, the data and model flags of a tiny run) for each modality."""
    if request.param == "image":
        return "image", ["--data", str(tiny_images), *IMAGE_TINY]
    if request.param == "speech":
        fsdd = request.getfixturevalue("fsdd_mini")
        return "speech", ["--data", "fsdd", "--data-dir", str(fsdd), *SPEECH_TINY]
    if request.param == "video":
        return "video", ["--data", request.getfixturevalue("tiny_doom"), *VIDEO_TINY]
    return "signal", ["--data", "signal:32", *SIGNAL_TINY]


def cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def weights(run) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run / "model.safetensors"))


def test_every_registered_modality_has_a_contract(signal):
    assert set(MODALITIES) == set(K), "add the new modality's tiny run to the contract tests"


def test_resume_equals_uninterrupted(modality, tmp_path, capsys):
    name, flags = modality
    common = [*flags, "--val-every", "2", "--checkpoint-every", "2", "--log-every", "1", "--no-progress"]
    assert cli(capsys, "train", *common, "--out", tmp_path / "whole", "--max-steps", 4)[0] == 0
    assert cli(capsys, "train", *common, "--out", tmp_path / "split", "--max-steps", 2)[0] == 0
    code, out, err = cli(capsys, "train", "--out", tmp_path / "split", "--resume", "--max-steps", 4, "--no-progress")
    assert code == 0, err
    assert "finished at step 4" in out
    config = json.loads((tmp_path / "split" / "config.json").read_text())
    assert config["modality"] == name and config["train"]["max_steps"] == 4
    whole, split = weights(tmp_path / "whole"), weights(tmp_path / "split")
    assert whole.keys() == split.keys()
    for key in whole:
        assert torch.equal(whole[key], split[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 4  # one log, as if never interrupted


def test_encode_decode_round_trip(modality, tmp_path, capsys):
    name, flags = modality
    run = tmp_path / "run"
    assert cli(capsys, "train", *flags, "--out", run, "--max-steps", 2, "--val-every", 2, "--no-progress")[0] == 0
    code, _, err = cli(capsys, "encode", run, "--split", "val", "-o", tmp_path / "a.npz")
    assert code == 0, err
    assert cli(capsys, "encode", run, "--split", "val", "-o", tmp_path / "b.npz")[0] == 0
    first, again = load_codes(tmp_path / "a.npz"), load_codes(tmp_path / "b.npz")
    assert torch.equal(first.codes, again.codes)  # encoding is deterministic
    rows = first.rows()
    assert all(int(r.min()) >= 0 and int(r.max()) < K[name] for r in rows)
    # the file holds exactly what the run's model computes for those codes
    model = vqvae.load(run)
    assert model.config.codebook_size == K[name]
    code, out, err = cli(capsys, "decode", run, tmp_path / "a.npz", "-o", tmp_path / "decoded")
    assert code == 0, err
    assert str(len(rows)) in out
    written = [p for p in (tmp_path / "decoded").iterdir() if p.name != "grid.png"]
    assert len(written) == (1 if name == "signal" else len(rows))


def test_errors_are_clear(modality, tmp_path, capsys):
    name, flags = modality
    run = tmp_path / "run"
    assert cli(capsys, "train", *flags, "--out", run, "--max-steps", 1, "--val-every", 1, "--no-progress")[0] == 0
    # codes beyond the codebook
    assert cli(capsys, "encode", run, "--split", "val", "-o", tmp_path / "c.npz")[0] == 0
    file = load_codes(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as f:
        arrays = dict(f)
    beyond = K[name] + (name == "video")  # video codes may also hold K, the still step
    arrays["codes"] = np.where(arrays["codes"] >= 0, beyond, arrays["codes"]).astype(np.int16)
    np.savez(tmp_path / "big.npz", **arrays)
    code, _, err = cli(capsys, "decode", run, tmp_path / "big.npz", "-o", tmp_path / "d")
    assert code == 2 and err.startswith("error: ") and "Traceback" not in err
    assert f"K={K[name]}" in err or f"[0, {K[name]})" in err, err
    assert len(file.codes) > 0
    # resume with another model, an occupied run directory, a missing run
    flag, value = CHANGED[name]
    code, _, err = cli(capsys, "train", "--out", run, "--resume", flag, value, "--no-progress")
    assert code == 2 and "differ" in err
    code, _, err = cli(capsys, "train", *flags, "--out", run, "--no-progress")
    assert code == 2 and "--resume" in err and "--force" in err
    code, _, err = cli(capsys, "evaluate", tmp_path / "missing")
    assert code == 2 and "does not exist" in err


def test_a_modality_is_one_package(signal, tiny_images, tmp_path, capsys):
    """The test-only modality: train, resume, encode, decode, train-prior, sample, all generic."""
    run = tmp_path / "signal"
    assert detect("signal:32") is signal
    code, out, err = cli(capsys, "train", "--data", "signal:32", *SIGNAL_TINY, "--signal-length", 16,
                         "--out", run, "--max-steps", 3, "--val-every", 3, "--no-progress")
    assert code == 0, err
    assert cli(capsys, "train", "--out", run, "--resume", "--max-steps", 4, "--no-progress")[0] == 0
    model = vqvae.load(run)
    assert isinstance(model, vqvae.VQVAE) and model.config.spatial_dims == 1
    assert cli(capsys, "encode", run, "--split", "val", "-o", tmp_path / "codes.npz")[0] == 0
    codes = load_codes(tmp_path / "codes.npz")
    assert codes.codes.shape == (8, 4) and codes.labels is not None
    assert cli(capsys, "decode", run, tmp_path / "codes.npz", "-o", tmp_path / "dec", "--gain", 2)[0] == 0
    decoded = np.load(tmp_path / "dec" / "signals.npy")
    expected = model.decode(codes.codes).numpy() * 2
    np.testing.assert_allclose(decoded, expected, rtol=1e-6)
    code, _, err = cli(capsys, "train-prior", run, "--arch", "transformer", "--width", 16, "--depth", 1,
                       "--heads", 1, "--max-steps", 2, "--val-every", 2, "--no-progress")
    assert code == 0, err
    prior = vqvae.load(run / "priors" / "transformer")
    assert tuple(prior.config.latent_shape) == (4,) and prior.config.num_classes == 2
    code, _, err = cli(capsys, "sample", run, "-n", 3, "--label", 1, "-o", tmp_path / "samples")
    assert code == 0, err
    assert np.load(tmp_path / "samples" / "signals.npy").shape == (3, 1, 16)
    # a modality's own flag is refused, with the reason, for runs of another modality
    image_run = tmp_path / "image"
    assert cli(capsys, "train", "--data", tiny_images, *IMAGE_TINY, "--out", image_run, "--max-steps", 1,
               "--val-every", 1, "--no-progress")[0] == 0
    code, _, err = cli(capsys, "decode", image_run, tmp_path / "codes.npz", "-o", tmp_path / "x", "--gain", 2)
    assert code == 2 and "--gain does not apply to image data: it is for signal data" in err
    code, _, err = cli(capsys, "train", "--data", "signal:8", "--image-size", 8, "--out", tmp_path / "y")
    assert code == 2 and "--image-size does not apply to signal data" in err


def test_runs_without_a_modality_entry_are_found_by_kind(tmp_path, tiny_images, capsys):
    run = tmp_path / "old"
    assert cli(capsys, "train", "--data", tiny_images, *IMAGE_TINY, "--out", run, "--max-steps", 1,
               "--val-every", 1, "--no-progress")[0] == 0
    config = json.loads((run / "config.json").read_text())
    del config["modality"]
    (run / "config.json").write_text(json.dumps(config))
    assert isinstance(vqvae.load(run), vqvae.VQVAE)
    config["kind"] = "hologram"
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = cli(capsys, "evaluate", run)
    assert code == 2 and "hologram" in err
