"""Run directories written by the previous release (c21477a, format_version 1, before the
modality redesign) still load, evaluate, encode, decode, sample and resume with this code.

The runs are tiny and live in tests/fixtures/v1 (its README says how they were made);
``expected.json`` there holds what the old release's own CLI answered on them. Every test
works on a copy in tmp_path, so nothing is ever written into the fixtures.
"""

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import safetensors
import safetensors.torch
import soundfile
import torch
from PIL import Image

import vqvae
from conftest import shared_data
from vqvae.cli import main
from vqvae.modalities import MODALITIES, modality_of
from vqvae.runs import read_config

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v1"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())
# The fixtures train under --precision auto: bf16 where the CPU computes it natively (where
# they were made), fp32 elsewhere; the old release resumed them both ways.
RESUMED = "_resumed" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "_resumed_fp32"

# run -> (modality it must be recognised as, class vqvae.load must rebuild)
TOKENIZERS = {"image": ("image", vqvae.VQVAE), "vae": ("image", vqvae.VAE), "speech": ("speech", vqvae.SpeechVQVAE)}
PRIORS = {"image/priors/transformer": vqvae.TransformerPrior, "image/priors/pixelcnn": vqvae.PixelCNNPrior,
          "speech/priors/transformer": vqvae.TransformerPrior}


def copy_run(name: str, tmp_path: Path, data_dir: Path | None = None) -> Path:
    """A copy of a fixture run; ``data_dir`` replaces the recorded (absolute, /tmp) data folder."""
    run = tmp_path / name
    shutil.copytree(FIXTURES / name, run)
    if data_dir is not None:
        config = json.loads((run / "config.json").read_text())
        config["data"]["data_dir"] = str(data_dir)
        (run / "config.json").write_text(json.dumps(config, indent=2))
    return run


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


# ------------------------------------------------------------------ configs and weights


def test_fixtures_hold_only_what_loading_needs():
    files = sorted(str(p.relative_to(FIXTURES)) for p in FIXTURES.rglob("*") if p.is_file())
    per_run = ["config.json", "metrics.jsonl", "model.safetensors", "train_state.safetensors"]
    runs = ["image", "image/priors/pixelcnn", "image/priors/transformer", "speech",
            "speech/priors/transformer", "vae"]
    assert files == sorted(["README.md", "expected.json", "make_expected.py"]
                           + [f"{run}/{f}" for run in runs for f in per_run])
    assert sum((FIXTURES / f).stat().st_size for f in files) < 1_000_000


@pytest.mark.parametrize("name", sorted(TOKENIZERS))
def test_old_configs_have_no_modality_and_are_recognised_by_kind(name):
    config = read_config(FIXTURES / name)
    assert config["format_version"] == 1 and "modality" not in config
    assert config["kind"] == {"image": "vqvae", "vae": "vae", "speech": "speech"}[name]
    assert modality_of(config) is MODALITIES[TOKENIZERS[name][0]]


@pytest.mark.parametrize("name", sorted(TOKENIZERS) + sorted(PRIORS))
def test_load_rebuilds_the_model_with_exactly_the_saved_weights(name):
    model = vqvae.load(FIXTURES / name)
    assert type(model) is (TOKENIZERS[name][1] if name in TOKENIZERS else PRIORS[name])
    assert not model.training
    saved = safetensors.torch.load_file(FIXTURES / name / "model.safetensors")
    state = model.state_dict()
    assert sorted(state) == sorted(saved)  # strict: no key missing, none left over
    for key, tensor in saved.items():
        assert state[key].dtype == tensor.dtype and torch.equal(state[key], tensor), key


def test_loaded_old_models_keep_their_shapes():
    image, vae, speech = (vqvae.load(FIXTURES / n) for n in ("image", "vae", "speech"))
    x = torch.rand(3, 1, 8, 8)
    codes = image.encode(x)
    assert codes.shape == (3, 2, 2) and codes.dtype == torch.int64 and 0 <= codes.min() <= codes.max() < 8
    assert image.decode(codes).shape == (3, 1, 8, 8)
    z = vae.encode(x)
    assert z.shape == (3, 4, 2, 2) and vae.decode(z).shape == (3, 1, 8, 8)
    audio = torch.rand(2, 1, 640) * 2 - 1
    codes = speech.encode(audio)
    assert codes.shape == (2, 10) and 0 <= codes.min() <= codes.max() < 16
    assert speech.decode(codes, torch.tensor([0, 1])).shape == (2, 1, 640)
    prior = vqvae.load(FIXTURES / "speech" / "priors" / "transformer")
    assert prior.config.latent_shape == (12,) and prior.config.codebook_size == 16  # --window 0.1 at 8 kHz / 64


# ------------------------------------------------------------------ images


@pytest.mark.parametrize("name", ["image", "vae"])
def test_evaluate_gives_the_old_release_numbers(name, tmp_path):
    run = copy_run(name, tmp_path)
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run), "--json", str(out)]) == 0
    report, old = json.loads(out.read_text()), EXPECTED[f"{name}_evaluate"]
    assert report["model"] == old["model"] and report["split"] == "val" and report["images"] == 500
    for key in ("mse", "nmse", "psnr"):
        assert report[key] == pytest.approx(old[key], rel=1e-5), key
    if name == "image":
        for key in ("codes_used", "dead_codes", "codebook_size", "bits_per_image", "compression_ratio"):
            assert report[key] == old[key], key
        # an untrained codebook has near ties, which a more exact search may break otherwise
        assert report["perplexity"] == pytest.approx(old["perplexity"], rel=1e-2)
    else:
        assert "perplexity" not in report


def test_encode_then_decode_an_old_image_run(tmp_path):
    from vqvae.modalities.image.evaluation import run_data

    run = copy_run("image", tmp_path)
    codes_file = tmp_path / "codes.npz"
    assert main(["encode", str(run), "--split", "val", "--precision", "fp32", "-o", str(codes_file)]) == 0
    with np.load(codes_file) as f:
        codes, labels = f["codes"], f["labels"]
    assert codes.shape == (500, 2, 2) and codes.dtype == np.int16 and labels.shape == (500,)
    assert set(labels.tolist()) == set(range(10))
    # the old release's codes, but for a few near ties (2 of 2,000 positions when written)
    old = np.asarray(EXPECTED["image_val_codes_fp32"])
    assert (codes != old).sum() <= 20

    model = vqvae.load(run)
    images = run_data(run, split="val").images
    assert images.shape == (500, 1, 8, 8)
    assert np.array_equal(codes, model.encode(images.float() / 255).numpy())

    out = tmp_path / "decoded"
    assert main(["decode", str(run), str(codes_file), "-o", str(out)]) == 0
    assert len(list(out.glob("0*.png"))) == 500 and (out / "grid.png").is_file()
    expected = to_uint8(model.decode(model.encode(images[:256].float() / 255)))  # (256, 1, 8, 8)
    for i in range(0, 256, 15):
        assert np.array_equal(png(out / f"{i:06d}.png"), expected[i, 0]), i


@pytest.mark.parametrize("prior", ["transformer", "pixelcnn"])
def test_sample_from_an_old_prior(prior, tmp_path):
    run = copy_run("image", tmp_path)
    out = tmp_path / "samples"
    assert main(["sample", str(run), "--prior", prior, "-n", "2", "--label", "3", "--seed", "0",
                 "-o", str(out)]) == 0
    codes, images = np.load(out / "codes.npy"), np.load(out / "images.npy")
    assert codes.shape == (2, 2, 2) and images.shape == (2, 1, 8, 8) and images.dtype == np.uint8
    assert codes.tolist() == EXPECTED[f"sample_image_{prior}_seed0"]  # the old release's seeded draw
    model = vqvae.load(run)
    assert np.array_equal(images, to_uint8(model.decode(torch.from_numpy(codes).long())))
    assert sorted(p.name for p in out.glob("0*.png")) == ["000000.png", "000001.png"]


def test_sampling_a_class_conditional_old_prior_needs_a_label(tmp_path, capsys):
    run = copy_run("image", tmp_path)
    assert main(["sample", str(run), "--prior", "transformer", "-n", "2", "-o", str(tmp_path / "s")]) != 0
    assert "class-conditional" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["image", "vae"])
def test_resume_continues_an_old_run(name, tmp_path):
    run = copy_run(name, tmp_path)
    before = safetensors.torch.load_file(run / "model.safetensors")
    steps = read_config(run)["train"]["max_steps"]
    assert steps == 3 and metrics(run)[-1]["step"] == steps
    assert main(["train", "--out", str(run), "--resume", "--max-steps", str(steps + 1), "--no-progress"]) == 0

    records = metrics(run)
    assert [r["step"] for r in records if "split" not in r] == [1, 2, 3, 4]  # old lines kept, one new step
    new = [r for r in records if r["step"] == steps + 1]
    assert [r.get("split") for r in new] == [None, "val"]
    old = EXPECTED[name + RESUMED]  # the old release resuming the same run, at the same precision
    assert new[0]["loss"] == pytest.approx(old[0]["loss"], rel=1e-5)  # same batch, optimizer and RNG state
    assert new[1]["nmse"] == pytest.approx(old[1]["nmse"], rel=1e-5)
    with safetensors.safe_open(run / "model.safetensors", "pt") as f:
        assert f.metadata()["step"] == str(steps + 1)
    after = vqvae.load(run).state_dict()
    assert sorted(after) == sorted(before)
    assert any(not torch.equal(after[k], before[k]) for k in before)  # it trained


# ------------------------------------------------------------------ speech


@pytest.fixture(scope="module")
def fsdd_mini(tmp_path_factory) -> Path:
    """The clips the speech fixture was trained on: digits 0-1 of george and theo, takes 5-7
    (val) and 10-13 (train), from ../shared/data/fsdd."""
    tar_path = shared_data("fsdd", "fsdd-train-recordings.tar.gz")
    root = tmp_path_factory.mktemp("fsdd-mini")
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not name.endswith(".wav"):
                continue
            digit, speaker, take = name[:-4].split("_")
            if digit in "01" and speaker in ("george", "theo") and int(take) in (5, 6, 7, 10, 11, 12, 13):
                (root / name).write_bytes(tar.extractfile(member).read())
    assert len(list(root.glob("*.wav"))) == 28
    return root


def test_speech_evaluate_on_an_old_run(fsdd_mini, tmp_path):
    run = copy_run("speech", tmp_path)  # its recorded data_dir is gone: --data-dir names the clips
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(run), "--data", "fsdd", "--data-dir", str(fsdd_mini), "--classifier-steps", "5",
                 "--samples-per-digit", "1", "--json", str(out)]) == 0
    report, old = json.loads(out.read_text()), EXPECTED["speech_evaluate"]
    for key in ("split", "clips", "conversions", "bitrate_bps", "pcm_bitrate_bps", "compression_ratio",
                "codes_used", "sample_prior"):
        assert report[key] == old[key], key
    assert report["reconstruction_snr_db"] == pytest.approx(old["reconstruction_snr_db"], abs=1e-4)
    accuracies = [k for k in old if k.endswith(("_accuracy", "_rate", "_ratio")) and k != "compression_ratio"]
    assert len(accuracies) == 9
    for key in accuracies:
        assert 0.0 <= report[key] <= 1.0, key


def test_speech_encode_then_decode(fsdd_mini, tmp_path):
    run = copy_run("speech", tmp_path)
    codes_file = tmp_path / "codes.npz"
    assert main(["encode", str(run), "--data", "fsdd", "--data-dir", str(fsdd_mini), "--split", "val",
                 "-o", str(codes_file)]) == 0
    with np.load(codes_file) as f:
        got = {k: f[k].tolist() for k in f.files}
    assert got == EXPECTED["speech_val_codes"]  # codes, lengths, labels and speakers, as the old release wrote
    assert len(got["lengths"]) == 12 and set(got["speakers"]) == {0, 1}

    assert main(["decode", str(run), str(codes_file), "-o", str(tmp_path / "dec"), "--speaker", "theo"]) == 0
    for i, length in enumerate(got["lengths"]):
        assert soundfile.info(tmp_path / "dec" / f"{i:06d}.wav").frames == length * 64

    rows = np.asarray(got["codes"])[:3, :20]  # rows of one length: the CLI decodes them as one batch
    np.save(tmp_path / "rows.npy", rows)
    assert main(["decode", str(run), str(tmp_path / "rows.npy"), "-o", str(tmp_path / "rows"), "--speaker", "theo"]) == 0
    model = vqvae.load(run)
    theo = read_config(run)["data"]["speakers"].index("theo")
    expected = model.decode(torch.from_numpy(rows).long(), torch.full((3,), theo))[:, 0].numpy()
    for i in range(3):
        wav, rate = soundfile.read(tmp_path / "rows" / f"{i:06d}.wav", dtype="float32")
        assert rate == 8000 and wav.shape == (20 * 64,)
        np.testing.assert_allclose(wav, expected[i], atol=1.5 / 32768)  # 16-bit PCM


def test_speech_sample_from_an_old_prior(tmp_path):
    run = copy_run("speech", tmp_path)
    out = tmp_path / "samples"
    assert main(["sample", str(run), "-n", "2", "--label", "1", "--speaker", "theo", "--seed", "0",
                 "-o", str(out)]) == 0
    codes = np.load(out / "codes.npy")
    assert codes.tolist() == EXPECTED["sample_speech_transformer_seed0"]  # (2, 12), the old release's draw
    for i in range(2):
        assert soundfile.info(out / f"{i:06d}.wav").frames == 12 * 64


def test_speech_resume_continues_an_old_run(fsdd_mini, tmp_path):
    run = copy_run("speech", tmp_path, data_dir=fsdd_mini)  # resuming reads the data of the config
    steps = read_config(run)["train"]["max_steps"]
    assert steps == 2
    assert main(["train", "--out", str(run), "--resume", "--max-steps", str(steps + 1), "--no-progress"]) == 0
    records = metrics(run)
    assert [r["step"] for r in records if "split" not in r] == [1, 2, 3]
    new = [r for r in records if r["step"] == steps + 1]
    old = EXPECTED["speech" + RESUMED]
    assert [r.get("split") for r in new] == [None, "val"] and new[1]["clips"] == 12
    assert new[0]["loss"] == pytest.approx(old[0]["loss"], rel=1e-4)
    assert new[1]["reconstruction_loss"] == pytest.approx(old[1]["reconstruction_loss"], rel=1e-4)
    with safetensors.safe_open(run / "model.safetensors", "pt") as f:
        assert f.metadata()["step"] == str(steps + 1)
