"""Speech end to end through the CLI, on a handful of real FSDD recordings: train, reconstruct,
convert, encode/decode, a prior over code windows, samples, evaluation, and clean errors."""

import json

import numpy as np
import pytest
import soundfile

from vqvae.cli import main
from vqvae.modalities.speech.data import read_wav

TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "8",
        "--decoder-width", "32", "--speaker-dim", "8", "--segment", "512", "--batch-size", "4"]


@pytest.fixture(scope="module")
def speech_run(fsdd_mini, tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "speech"
    assert main(["train", "--data", "fsdd", "--data-dir", str(fsdd_mini), "--out", str(run), *TINY,
                 "--mel-weight", "0.5", "--max-steps", "3", "--val-every", "3", "--log-every", "1",
                 "--no-progress"]) == 0
    return run


def test_train_records_a_speech_run(speech_run):
    config = json.loads((speech_run / "config.json").read_text())
    assert config["kind"] == "speech"
    assert config["data"]["speakers"] == ["george", "theo"]
    assert config["model"]["num_speakers"] == 2 and config["model"]["downsamples"] == 6
    assert config["model"]["mel_weight"] == 0.5 and config["model"]["content_norm"] == "layers"
    records = [json.loads(line) for line in (speech_run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["split"] == "val" and records[-1]["clips"] == 12


def test_content_norm_and_jitter_flags_reach_the_model(fsdd_mini, tmp_path):
    run = tmp_path / "speech"
    assert main(["train", "--data", "fsdd", "--data-dir", str(fsdd_mini), "--out", str(run), *TINY,
                 "--content-norm", "none", "--jitter", "0.2", "--max-steps", "1", "--val-every", "1",
                 "--no-progress"]) == 0
    model = json.loads((run / "config.json").read_text())["model"]
    assert model["content_norm"] == "none" and model["jitter"] == 0.2


def test_a_run_from_before_jitter_resumes_without_it(fsdd_mini, tmp_path, capsys):
    run = tmp_path / "speech"
    tiny = ["train", "--data", "fsdd", "--data-dir", str(fsdd_mini), "--out", str(run), *TINY, "--val-every", "1",
            "--no-progress"]
    assert main([*tiny, "--max-steps", "1"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["model"]["jitter"] == 0.12 and config["model"]["codebook_size"] == 16  # the default, saved
    del config["model"]["jitter"]  # as written before jitter existed: it trained without
    (run / "config.json").write_text(json.dumps(config))
    assert main([*tiny, "--resume", "--max-steps", "2", "--jitter", "0"]) == 0  # what the run has: no change
    assert main([*tiny, "--resume", "--max-steps", "3", "--jitter", "0.12"]) != 0
    assert "jitter=0.12 (run has 0.0)" in capsys.readouterr().err


def test_prior_windows_of_a_folder_without_labels(fsdd_mini, tmp_path):
    from vqvae.modalities.speech.run import code_windows

    folder = tmp_path / "wavs"  # splits of flat folders: no speakers, no digit labels
    for i, wav in enumerate(sorted(fsdd_mini.glob("*.wav"))[:8]):
        split = folder / ("val" if i < 2 else "train")
        split.mkdir(parents=True, exist_ok=True)
        (split / f"clip{i}.wav").write_bytes(wav.read_bytes())
    run = tmp_path / "run"
    assert main(["train", "--data", str(folder), "--out", str(run), *TINY, "--max-steps", "1",
                 "--val-every", "1", "--no-progress"]) == 0
    codes, labels = code_windows(run, "train", window=40)
    assert labels is None and codes.shape[1] == 40 and codes.shape[0] >= 1
    assert codes.min() >= 0 and codes.max() < 16  # short clips padded with coded silence


def test_reconstruct_convert_and_round_trip_lengths(speech_run, fsdd_mini, tmp_path):
    assert main(["reconstruct", str(speech_run), "-n", "2", "-o", str(tmp_path / "rec")]) == 0
    originals = sorted(p for p in (tmp_path / "rec").glob("*.wav") if ".reconstruction" not in p.name)
    assert len(originals) == 2 and len(list((tmp_path / "rec").glob("*.png"))) == 2
    for original in originals:
        a, _ = read_wav(original)
        b, _ = read_wav(original.with_suffix(".reconstruction.wav"))
        assert a.shape == b.shape
    source = fsdd_mini / "1_george_5.wav"
    assert main(["convert", str(speech_run), str(source), "--speaker", "theo", "-o", str(tmp_path / "one.wav")]) == 0
    assert read_wav(tmp_path / "one.wav")[0].shape == read_wav(source)[0].shape
    inputs = [str(fsdd_mini / "0_theo_6.wav"), str(source)]
    assert main(["convert", str(speech_run), *inputs, "--speaker", "george", "-o", str(tmp_path / "many")]) == 0
    assert sorted(p.name for p in (tmp_path / "many").iterdir()) == ["0_theo_6.wav", "1_george_5.wav"]


def test_encode_decode_audio_codes(speech_run, tmp_path):
    codes = tmp_path / "codes.npz"
    assert main(["encode", str(speech_run), "--split", "val", "-o", str(codes)]) == 0
    with np.load(codes) as f:
        assert f["codes"].shape[0] == 12 and (f["lengths"] > 0).all()
        assert set(f["speakers"].tolist()) == {0, 1}
    assert main(["decode", str(speech_run), str(codes), "-o", str(tmp_path / "dec"), "--speaker", "theo"]) == 0
    with np.load(codes) as f:
        first = f["lengths"][0]
    assert read_wav(tmp_path / "dec" / "000000.wav")[0].numel() == first * 64


def test_prior_samples_and_evaluation(speech_run, tmp_path, capsys):
    assert main(["train-prior", str(speech_run), "--arch", "transformer", "--width", "32", "--depth", "1",
                 "--window", "0.25", "--max-steps", "2", "--val-every", "2", "--no-progress"]) == 0
    prior = json.loads((speech_run / "priors" / "transformer" / "config.json").read_text())
    assert prior["model"]["latent_shape"] == [31] and prior["model"]["num_classes"] == 10
    assert main(["sample", str(speech_run), "-n", "2", "--label", "1", "--speaker", "theo",
                 "-o", str(tmp_path / "samples")]) == 0
    assert read_wav(tmp_path / "samples" / "000001.wav")[0].numel() == 31 * 64
    out = tmp_path / "eval.json"
    assert main(["evaluate", str(speech_run), "--classifier-steps", "5", "--samples-per-digit", "1",
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    # each accuracy is a count over its clips: 12 held-out, 12 conversions, 10 samples (1 per digit)
    counts = {"real_digit_accuracy": 12, "reconstruction_digit_accuracy": 12, "real_speaker_accuracy": 12,
              "conversion_speaker_accuracy": 12, "conversion_digit_accuracy": 12, "sample_digit_accuracy": 10}
    for key, n in counts.items():
        assert report[key] * n == pytest.approx(round(report[key] * n)), key
    # recomputed with the cached judges on the same held-out clips
    from vqvae.modalities.speech.judge import audio_accuracy, load_audio_classifier
    from vqvae.modalities.speech.run import run_speakers, speech_data

    held_out = speech_data(speech_run)
    digit = load_audio_classifier(speech_run / "classifiers" / "digit")
    speaker = load_audio_classifier(speech_run / "classifiers" / "speaker")
    assert report["real_digit_accuracy"] == audio_accuracy(digit, list(held_out.waveforms), held_out.labels)
    assert report["real_speaker_accuracy"] == audio_accuracy(speaker, list(held_out.waveforms),
                                                             run_speakers(speech_run, held_out))
    assert report["conversions"] == 12  # each held-out clip to the one other speaker
    assert report["bitrate_bps"] == pytest.approx(8000 / 64 * 4)  # K = 16
    assert report["compression_ratio"] == pytest.approx(16 * 8000 / report["bitrate_bps"])


def test_speech_errors_are_clear(speech_run, fsdd_mini, tmp_path, capsys):
    source = str(fsdd_mini / "1_george_5.wav")
    assert main(["convert", str(speech_run), source, "--speaker", "bob", "-o", str(tmp_path / "x.wav")]) == 2
    assert "unknown speaker 'bob': this run knows george, theo" in capsys.readouterr().err
    assert main(["convert", str(speech_run), str(tmp_path / "missing.wav"), "--speaker", "theo",
                 "-o", str(tmp_path / "x.wav")]) == 2
    assert "missing.wav" in capsys.readouterr().err
    (tmp_path / "text.wav").write_text("not audio")
    assert main(["convert", str(speech_run), str(tmp_path / "text.wav"), "--speaker", "theo",
                 "-o", str(tmp_path / "x.wav")]) == 2
    assert "not a readable WAV" in capsys.readouterr().err
    soundfile.write(tmp_path / "stereo.wav", np.zeros((800, 2), np.int16), 8000)
    assert main(["convert", str(speech_run), str(tmp_path / "stereo.wav"), "--speaker", "theo",
                 "-o", str(tmp_path / "x.wav")]) == 2
    assert "channels" in capsys.readouterr().err
    assert main(["evaluate", str(speech_run), "--bits-per-dim"]) == 2
    assert "--bits-per-dim does not apply to speech data: it is for image data" in capsys.readouterr().err
    assert main(["train", "--data", "fsdd", "--data-dir", str(fsdd_mini), "--out", str(tmp_path / "r"),
                 "--likelihood", "logistic"]) == 2
    assert "--likelihood does not apply to speech data" in capsys.readouterr().err
