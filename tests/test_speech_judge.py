"""The speech judges: log-mel features, padding masks, augmentation, training, save/load, cache."""

import io
import json
import math
import re
import tarfile

import numpy as np
import pytest
import torch

from vqvae.checkpoint import CheckpointError
from vqvae.modalities.speech.augment import augment, lowpass
from vqvae.modalities.speech.judge import (
    AudioClassifier,
    _fingerprint,
    audio_accuracy,
    audio_features,
    cached_audio_classifier,
    load_audio_classifier,
    log_mel,
    pad_batch,
    predict_audio,
    save_audio_classifier,
    train_audio_classifier,
)

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is fastest, and stable under load


SR = 8000


def _tones(n: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``n`` noisy tones of 0.1-0.3 s: label 0 at 250-450 Hz, label 1 at 1.5-2.5 kHz."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    clips = []
    for label in labels.tolist():
        length = int(torch.randint(800, 2400, (1,), generator=g))
        low, high = (250.0, 450.0) if label == 0 else (1500.0, 2500.0)
        f = low + (high - low) * float(torch.rand(1, generator=g))
        t = torch.arange(length) / SR
        phase = 2 * math.pi * float(torch.rand(1, generator=g))
        amplitude = 0.05 + 0.5 * float(torch.rand(1, generator=g))
        tone = amplitude * torch.sin(2 * math.pi * f * t + phase)
        clips.append(tone + 0.02 * torch.randn(length, generator=g))
    return clips, labels


TINY = {"steps": 40, "batch_size": 16, "width": 8, "lr": 3e-3}


@pytest.fixture(scope="module")
def tones():
    return _tones(32, seed=0), _tones(16, seed=1)


@pytest.fixture(scope="module")
def trained(tones):
    (clips, labels), _ = tones
    return train_audio_classifier(clips, labels, 2, **TINY)


# ------------------------------------------------------------------------ log-mel


def _htk_centres(n_mels: int, sample_rate: int) -> np.ndarray:
    top = 2595.0 * np.log10(1.0 + (sample_rate / 2) / 700.0)
    mels = np.linspace(0.0, top, n_mels + 2)[1:-1]
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def test_log_mel_of_silence_is_the_floor_in_every_layout():
    silence = torch.zeros(3, 1001, dtype=torch.float64)
    out = log_mel(silence)
    assert out.dtype == torch.float32 and out.shape == (3, 40, 1001 // 80 + 1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.full_like(out, math.log(1e-5)))
    assert torch.equal(log_mel(silence[:, None]), out)  # (B, 1, T) like (B, T)
    assert log_mel(torch.zeros(1, 500), n_fft=128, hop=50, n_mels=20).shape == (1, 20, 11)


@pytest.mark.parametrize("mel_bin", [8, 15, 24, 33, 38])
def test_a_sine_puts_its_energy_in_the_mel_bin_containing_it(mel_bin):
    f = _htk_centres(40, SR)[mel_bin]
    t = torch.arange(SR, dtype=torch.float64) / SR
    out = log_mel((0.3 * torch.sin(2 * math.pi * f * t))[None])  # (1, 40, L)
    profile = out[0, :, 5:-5].mean(dim=1)  # (40,), away from the zero-padded ends
    assert int(profile.argmax()) == mel_bin
    # far bins hold only window leakage: orders of magnitude less power
    assert profile[mel_bin] - profile[(mel_bin + 20) % 40] > math.log(1e3)


def test_log_mel_rejects_bad_input():
    with pytest.raises(ValueError, match="float"):
        log_mel(torch.zeros(2, 100, dtype=torch.int16))
    with pytest.raises(ValueError, match=r"\(B, T\)"):
        log_mel(torch.zeros(2, 2, 100))
    with pytest.raises(ValueError, match="covers no FFT bin"):
        log_mel(torch.zeros(1, 1000), n_mels=120)


def test_pad_batch_zero_pads_and_counts_samples():
    clips = [torch.ones(5), torch.full((1, 3), 2.0), torch.ones(7, dtype=torch.float64)]
    batch, lengths = pad_batch(clips)
    assert batch.shape == (3, 1, 7) and batch.dtype == torch.float32
    assert lengths.tolist() == [5, 3, 7] and lengths.dtype == torch.int64
    assert batch[0, 0, 5:].abs().sum() == 0 and batch[1, 0, 3:].abs().sum() == 0
    assert batch.sum() == 5 + 6 + 7
    with pytest.raises(ValueError, match="empty"):
        pad_batch([])
    with pytest.raises(ValueError, match="waveform 1 must be a non-empty"):
        pad_batch([torch.ones(3), torch.ones(0)])
    with pytest.raises(TypeError, match="sequence of"):
        pad_batch(torch.ones(2, 1, 5))
    with pytest.raises(TypeError, match="waveform 0 must be a float"):
        pad_batch([torch.ones(3, dtype=torch.int16)])


# ------------------------------------------------------------------------- masking


def _random_model(seed: int = 0) -> AudioClassifier:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AudioClassifier(3, width=8)
        for block in model.blocks:  # non-trivial running statistics for eval mode
            block.norm.running_mean.uniform_(-0.5, 0.5)
            block.norm.running_var.uniform_(0.5, 2.0)
    return model


def test_padding_does_not_change_a_clips_logits():
    model = _random_model().eval()
    g = torch.Generator().manual_seed(0)
    clips = [torch.randn(n, generator=g) * 0.1 for n in (333, 1000, 1601, 2000)]
    x, lengths = pad_batch(clips)
    logits = model(x, lengths)  # (4, 3)
    longer = torch.nn.functional.pad(x, (0, 1237))  # much more zero padding
    torch.testing.assert_close(model(longer, lengths), logits, rtol=1e-5, atol=1e-5)
    for i, clip in enumerate(clips):  # each clip alone, without padding
        torch.testing.assert_close(model(clip[None, None]), logits[i : i + 1], rtol=1e-5, atol=1e-5)
    # ... while without lengths the padding is audio and the short clips' logits move
    unmasked = model(longer)
    assert (unmasked[:3] - logits[:3]).abs().amax(dim=1).min() > 1e-2


def test_batch_statistics_in_training_ignore_the_padding():
    model = _random_model(1).train()
    g = torch.Generator().manual_seed(1)
    x, lengths = pad_batch([torch.randn(n, generator=g) * 0.1 for n in (400, 900, 1500)])
    logits = model(x, lengths)
    longer = torch.nn.functional.pad(x, (0, 2000))
    torch.testing.assert_close(model(longer, lengths), logits, rtol=1e-5, atol=1e-5)


def test_forward_rejects_bad_lengths():
    model = _random_model().eval()
    x = torch.zeros(2, 1, 100)
    with pytest.raises(ValueError, match="lengths must be"):
        model(x, torch.tensor([100, 101]))
    with pytest.raises(ValueError, match="lengths must be"):
        model(x, torch.tensor([0, 50]))
    with pytest.raises(ValueError, match=r"\(B, 1, T\)"):
        model(torch.zeros(2, 3, 100))
    with pytest.raises(ValueError, match="lengths must be integer"):
        model(x, torch.tensor([100.0, 50.0]))
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        AudioClassifier(1)
    with pytest.raises(ValueError, match="width must be an integer >= 1, got 2.5"):
        AudioClassifier(2, width=2.5)
    assert AudioClassifier(np.int64(3), width=np.int64(4)).config == {
        "num_classes": 3,
        "sample_rate": 8000,
        "n_mels": 40,
        "width": 4,
    }


def _sine(f: float, n: int) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / SR  # fp32 phases drift by ~1e-4 here
    return (0.5 * torch.sin(2 * math.pi * f * t)).float()


def test_augmentation_shifts_crops_and_scales_within_bounds():
    clip = _sine(500.0, 4000)  # below every low-pass cut-off
    x, lengths = augment([clip] * 64, SR, torch.Generator().manual_seed(0))
    assert x.shape == (64, 1, int(lengths.max()))
    # at most 0.1 s (800 samples) of silence added or 10 % of the clip cut, at each end
    assert 4000 - 2 * 400 <= lengths.min() < 4000 < lengths.max() <= 4000 + 2 * 800
    for row, n in zip(x[:, 0], lengths.tolist(), strict=True):
        assert not row[n:].any()  # padding stays silent
    # the level, corrected for added silence (a crop keeps a sine's level): ±6 dB, a
    # little noise on top, spread over most of that range
    energy = x[:, 0].square().sum(dim=1) / lengths.clamp(max=4000)
    gains = (energy / clip.square().mean()).sqrt()
    assert 10 ** (-6 / 20) * 0.95 < gains.min() < 0.7 and 1.4 < gains.max() < 10 ** (6 / 20) * 1.05
    again, _ = augment([clip] * 64, SR, torch.Generator().manual_seed(0))
    assert torch.equal(again, x)


def test_lowpass_keeps_low_tones_and_removes_high_ones():
    low, high = _sine(500.0, 4000), _sine(3000.0, 4000)
    out = lowpass(torch.stack([low, high]), torch.tensor([2000.0, 1500.0]), SR)
    inner = slice(400, -400)  # away from the ringing of the clip's abrupt ends
    torch.testing.assert_close(out[0, inner], low[inner], atol=1e-3, rtol=0)
    # an 8th-order Butterworth passes 1 / sqrt(1 + 2^16) of a tone an octave above cut-off
    expected = high[inner] / math.sqrt(1 + 2**16)
    torch.testing.assert_close(out[1, inner], expected, atol=2e-5, rtol=0)


# ------------------------------------------------------------------------ training


def test_a_tiny_classifier_separates_low_from_high_tones(tones, trained):
    _, (val_clips, val_labels) = tones
    assert not trained.training and trained.train_settings["steps_run"] == TINY["steps"]
    assert audio_accuracy(trained, val_clips, val_labels) == 1.0


def test_predictions_come_back_in_input_order(tones, trained):
    _, (val_clips, _) = tones
    predicted = predict_audio(trained, val_clips, batch_size=5)
    one_by_one = torch.cat([trained(c[None, None]).argmax(dim=1) for c in val_clips])
    assert predicted.dtype == torch.int64 and torch.equal(predicted, one_by_one)
    features = audio_features(trained, val_clips, batch_size=3)
    assert features.dtype == torch.float64 and features.shape == (16, 4 * 8)
    torch.testing.assert_close(features[4].float(), trained.features(val_clips[4][None, None])[0])


def test_training_is_deterministic_under_a_seed_and_leaves_global_rng_alone(tones):
    (clips, labels), _ = tones
    settings = dict(TINY, steps=3)
    rng_before = torch.get_rng_state()
    one = train_audio_classifier(clips, labels, 2, seed=7, **settings).state_dict()
    assert torch.equal(torch.get_rng_state(), rng_before)
    torch.rand(5)  # a different global RNG state must not matter
    two = train_audio_classifier(clips, labels, 2, seed=7, **settings).state_dict()
    other = train_audio_classifier(clips, labels, 2, seed=8, **settings).state_dict()
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert not all(torch.equal(one[k], other[k]) for k in one)


def test_time_budget_stops_training_and_bad_labels_are_refused(tones):
    (clips, labels), _ = tones
    model = train_audio_classifier(clips, labels, 2, time_budget=0.0, **TINY)
    assert model.train_settings["steps_run"] == 0
    with pytest.raises(ValueError, match="outside 0..0"):
        train_audio_classifier(clips, labels, 1, **TINY)
    with pytest.raises(ValueError, match="int64"):
        train_audio_classifier(clips, labels.int(), 2, **TINY)
    with pytest.raises(ValueError, match="one per clip"):
        train_audio_classifier(clips, labels[:-1], 2, **TINY)


# -------------------------------------------------------------------- save / load


def test_save_load_round_trip_gives_identical_logits(tmp_path, tones, trained):
    _, (val_clips, _) = tones
    save_audio_classifier(trained, tmp_path / "clf", val_accuracy=0.75)
    config = json.loads((tmp_path / "clf" / "config.json").read_text())
    assert config["kind"] == "audio-classifier" and config["val_accuracy"] == 0.75
    assert config["model"] == trained.config and config["training"]["seed"] == 0
    loaded = load_audio_classifier(tmp_path / "clf")
    assert loaded.config == trained.config and not loaded.training
    assert loaded.train_settings == trained.train_settings
    x, lengths = pad_batch(val_clips)
    assert torch.equal(loaded(x, lengths), trained(x, lengths))


def test_the_data_fingerprint_is_the_one_of_older_cached_classifiers():
    # Pinned: classifiers cached in existing run directories are reused only while the
    # fingerprint of their training clips hashes the same bytes as when they were saved.
    clips = [torch.arange(n) / 1024.0 for n in (100, 250, 80)]  # exact in float32
    assert _fingerprint(clips, torch.tensor([0, 1, 0]), SR) == (
        "60517fc6409d4c3ef188f51396bea566845757da58c7f4fdac84f4c878480899"
    )


def test_cached_classifier_reuses_a_match_and_retrains_on_other_data(tmp_path, tones):
    (clips, labels), (val_clips, val_labels) = tones
    folder = tmp_path / "run" / "digit-classifier"
    first, info = cached_audio_classifier(folder, clips, labels, 2, val_clips, val_labels, **TINY)
    assert info == {"val_accuracy": 1.0, "trained": True}
    second, info2 = cached_audio_classifier(folder, clips, labels, 2, val_clips, val_labels, **TINY)
    assert info2 == {"val_accuracy": 1.0, "trained": False}
    x, lengths = pad_batch(val_clips)
    assert torch.equal(first(x, lengths), second(x, lengths))
    assert cached_audio_classifier(folder, clips, labels, 2, **TINY)[1] == info2
    # One sample of one clip changed: another fingerprint, so the cache retrains.
    changed = [c.clone() for c in clips]
    changed[3][10] += 1e-3
    assert cached_audio_classifier(folder, changed, labels, 2, **TINY)[1]["trained"] is True
    assert cached_audio_classifier(folder, changed, labels, 2, **TINY)[1]["trained"] is False
    assert cached_audio_classifier(folder, changed, 1 - labels, 2, **TINY)[1]["trained"] is True


def test_foreign_or_corrupt_folders_give_clear_errors(tmp_path, tones):
    (clips, labels), _ = tones
    (tmp_path / "config.json").write_text(json.dumps({"format_version": 1, "kind": "classifier"}))
    with pytest.raises(CheckpointError, match="not an audio classifier"):
        cached_audio_classifier(tmp_path, clips, labels, 2, **TINY)
    with pytest.raises(CheckpointError, match="folder of its own"):
        save_audio_classifier(AudioClassifier(2, width=4), tmp_path)

    folder = tmp_path / "clf"
    with pytest.raises(FileNotFoundError, match="holds no saved audio classifier"):
        load_audio_classifier(folder)
    save_audio_classifier(AudioClassifier(2, width=4), folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(config, model={"num_classes": 1})))
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_audio_classifier(folder)
    (folder / "config.json").write_text(
        json.dumps(dict(config, model={**config["model"], "width": 5}))
    )
    with pytest.raises(CheckpointError, match="does not fit"):
        load_audio_classifier(folder)
    (folder / "config.json").write_text(json.dumps(dict(config, format_version=99)))
    with pytest.raises(CheckpointError, match="format_version 99"):
        load_audio_classifier(folder)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        cached_audio_classifier(folder, clips, labels, 2, **TINY)


# ------------------------------------------------------------------------ real data


def _fsdd_digits_0_and_1(path) -> dict[str, list]:
    """Clips of digits 0 and 1 (the first members of the dev tar), by take."""
    import soundfile

    clips = {"train": [], "val": []}
    with tarfile.open(path) as tar:
        for member in tar:
            match = re.fullmatch(r"recordings/(\d)_([a-z]+)_(\d+)\.wav", member.name)
            if match is None:
                continue
            digit, speaker, take = int(match[1]), match[2], int(match[3])
            if digit > 1:
                break
            if take >= 18:
                continue
            wave, rate = soundfile.read(io.BytesIO(tar.extractfile(member).read()), dtype="float32")
            assert rate == SR
            clips["val" if take < 10 else "train"].append((torch.from_numpy(wave), speaker))
    return clips


def test_speaker_classifier_smoke_on_real_recordings():
    from conftest import shared_data

    clips = _fsdd_digits_0_and_1(shared_data("fsdd", "fsdd-train-recordings.tar.gz"))
    speakers = sorted({s for _, s in clips["train"]})
    assert len(speakers) == 6 and len(clips["train"]) == 96 and len(clips["val"]) == 60

    def split(name):
        waves, names = zip(*clips[name], strict=True)
        return list(waves), torch.tensor([speakers.index(s) for s in names])

    model = train_audio_classifier(*split("train"), 6, steps=40, batch_size=16, width=32, lr=3e-3)
    assert audio_accuracy(model, *split("val")) >= 0.8
