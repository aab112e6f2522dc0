"""The robust speech judges (issue 18): speed, pitch and tempo changes, silence padding,
recipes, and the cache key that follows the recipe."""

import dataclasses
import math

import pytest
import torch

from vqvae.modalities.speech.augment import (
    BASIC,
    DIGIT,
    RECIPES,
    SPEAKER,
    Recipe,
    augment,
    change_speed,
    change_tempo,
    get_recipe,
    pad_silence,
    perturb,
    resample,
    shift_pitch,
)
from vqvae.modalities.speech.evaluation import JUDGES, speech_judges
from vqvae.modalities.speech.judge import (
    _fingerprint,
    audio_accuracy,
    cached_audio_classifier,
    train_audio_classifier,
)

SR = 8000


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is fastest, and stable under load


def _sine(f: float, n: int, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(n, dtype=torch.float64) / SR
    return (amplitude * torch.sin(2 * math.pi * f * t)).float()


def _dominant_hz(x: torch.Tensor) -> float:
    """The frequency of the strongest partial, to 0.12 Hz (zero-padded, Hann-windowed FFT)."""
    n = 1 << 16
    spectrum = torch.fft.rfft(x.double() * torch.hann_window(x.shape[0], dtype=torch.float64), n=n)
    return float(spectrum.abs().argmax()) * SR / n


def _rms(x: torch.Tensor) -> float:
    return float(x.square().mean().sqrt())


# ----------------------------------------------------------------- perturbations


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_speed_change_scales_length_and_frequency_by_the_factor(factor):
    out = change_speed(_sine(440.0, 4000), factor)
    assert out.shape == (round(4000 / factor),)
    assert _dominant_hz(out) == pytest.approx(440.0 * factor, abs=1.0)
    assert _rms(out[400:-400]) == pytest.approx(0.5 / math.sqrt(2), rel=0.02)  # level kept


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_pitch_shift_moves_the_frequency_and_keeps_the_length(factor):
    out = shift_pitch(_sine(440.0, 4000), factor)
    assert out.shape == (4000,)
    assert _dominant_hz(out) == pytest.approx(440.0 * factor, abs=1.0)
    assert _rms(out[400:-400]) == pytest.approx(0.5 / math.sqrt(2), rel=0.15)


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_tempo_change_moves_events_and_keeps_the_frequency(factor):
    # 500 Hz, then 1500 Hz from sample 2000: after the change the switch sits at 2000 / factor
    clip = torch.cat([_sine(500.0, 2000), _sine(1500.0, 2000)])
    out = change_tempo(clip, factor)
    assert out.shape == (round(4000 / factor),)
    switch = round(2000 / factor)
    first, second = out[200 : switch - 300], out[switch + 300 : -200]
    assert _dominant_hz(first) == pytest.approx(500.0, abs=2.0)
    assert _dominant_hz(second) == pytest.approx(1500.0, abs=2.0)
    assert _dominant_hz(change_tempo(_sine(440.0, 4000), factor)) == pytest.approx(440.0, abs=1.0)


def test_resampling_does_not_alias_and_leaves_an_unchanged_length_alone():
    clip = _sine(3900.0, 4000)  # above 4000 / 1.15 Hz: sped up, it must vanish, not fold
    assert _rms(change_speed(clip, 1.15)[200:-200]) < 0.01 * _rms(clip)
    same = resample(clip, 4000)
    assert torch.equal(same, clip) and same is not clip
    with pytest.raises(ValueError, match="length >= 1"):
        resample(clip, 0)
    with pytest.raises(ValueError, match="positive number"):
        change_speed(clip, 0.0)
    with pytest.raises(ValueError, match="positive number"):
        shift_pitch(clip, float("nan"))


def test_padding_adds_silence_at_both_ends():
    clip = _sine(300.0, 1000) + 0.1
    out = pad_silence(clip, 300, 120)
    assert out.shape == (1420,)
    assert not out[:300].any() and not out[-120:].any()
    assert torch.equal(out[300:-120], clip)
    with pytest.raises(ValueError, match=">= 0 samples"):
        pad_silence(clip, -1, 0)


def test_perturb_pads_every_clip_of_a_batch_by_one_total_split_at_random():
    recipe = Recipe("pad only", pad_p=1.0, max_pad=0.5)
    clips = [torch.full((n,), 0.5) for n in (900, 1500, 2100, 2600)]
    out = perturb(clips, SR, torch.Generator().manual_seed(3), recipe)
    added = {o.shape[0] - c.shape[0] for o, c in zip(out, clips, strict=True)}
    assert len(added) == 1 and 0 < added.pop() <= 0.5 * SR
    befores = []
    for o, c in zip(out, clips, strict=True):
        nonzero = o.nonzero()[:, 0]
        before, after = int(nonzero[0]), o.shape[0] - 1 - int(nonzero[-1])
        assert torch.equal(o[before : o.shape[0] - after], c)  # the clip itself is untouched
        befores.append(before)
    assert len(set(befores)) == len(befores)  # each clip splits the total its own way


def test_perturb_changes_lengths_within_the_recipes_range():
    clips = [_sine(440.0, 3000)] * 200
    out = perturb(clips, SR, torch.Generator().manual_seed(0), Recipe("speed", speed_p=1.0))
    lengths = torch.tensor([o.shape[0] for o in out], dtype=torch.float64)
    assert round(3000 / 1.15) <= lengths.min() < 2700 and 3400 < lengths.max() <= round(3000 / 0.85)
    out = perturb(clips, SR, torch.Generator().manual_seed(0), Recipe("pitch", pitch_p=1.0))
    assert {o.shape[0] for o in out} == {3000}
    assert not all(torch.equal(o, out[0]) for o in out[1:])  # every clip drew its own factor


# ------------------------------------------------------------------------ recipes


def test_robust_augmentation_is_deterministic_under_a_seed():
    g = torch.Generator().manual_seed(5)
    clips = [torch.randn(int(n), generator=g) * 0.1 for n in torch.randint(800, 3000, (16,), generator=g)]
    for recipe in (DIGIT, SPEAKER):
        one = augment(clips, SR, torch.Generator().manual_seed(1), recipe)
        two = augment(clips, SR, torch.Generator().manual_seed(1), recipe)
        other = augment(clips, SR, torch.Generator().manual_seed(2), recipe)
        assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])
        assert not torch.equal(one[1], other[1])
        for row, n in zip(one[0][:, 0], one[1].tolist(), strict=True):
            assert not row[n:].any()  # batch padding stays silent


def test_the_basic_recipe_draws_exactly_what_it_drew_before_recipes():
    # The robust recipes draw their perturbations first; the basic one must draw only
    # the original (B, 6) uniforms and the (B, T) noise, so that judges trained with it
    # stay what they were (their cached fingerprints say so).
    clips = [_sine(500.0, n) for n in (1500, 2000, 2500)]
    g = torch.Generator().manual_seed(0)
    _, lengths = augment(clips, SR, g, BASIC)
    reference = torch.Generator().manual_seed(0)
    torch.rand(3, 6, generator=reference)
    torch.randn(3, int(lengths.max()), generator=reference)
    assert torch.equal(g.get_state(), reference.get_state())
    g = torch.Generator().manual_seed(0)
    augment(clips, SR, g, DIGIT)
    assert not torch.equal(g.get_state(), reference.get_state())
    assert not BASIC.perturbs and DIGIT.perturbs and SPEAKER.perturbs
    assert SPEAKER.speed_p == SPEAKER.pitch_p == 0  # a speaker judge must hear the voice
    assert get_recipe("digit") is DIGIT and set(RECIPES) == {"basic", "digit", "speaker"}


def test_recipes_refuse_impossible_settings():
    with pytest.raises(ValueError, match="at most one speed, pitch or tempo change"):
        Recipe("x", speed_p=0.6, pitch_p=0.6)
    with pytest.raises(ValueError, match="pad_p must be a probability"):
        Recipe("x", pad_p=1.5)
    with pytest.raises(ValueError, match="max_change must be in"):
        Recipe("x", max_change=0.5)
    with pytest.raises(ValueError, match="unknown augmentation recipe 'loud'"):
        get_recipe("loud")
    with pytest.raises(ValueError, match="unknown judges 'strict'"):
        speech_judges("no-run", None, "strict")
    assert set(JUDGES) == {"robust", "lenient"}


def test_the_fingerprint_follows_the_recipe():
    clips = [torch.arange(n) / 1024.0 for n in (100, 250, 80)]
    labels = torch.tensor([0, 1, 0])
    basic = _fingerprint(clips, labels, SR, BASIC)
    assert basic == _fingerprint(clips, labels, SR)  # the old bytes, pinned in test_speech_judge
    prints = {basic, _fingerprint(clips, labels, SR, DIGIT), _fingerprint(clips, labels, SR, SPEAKER),
              _fingerprint(clips, labels, SR, dataclasses.replace(BASIC, max_shift=0.2)),
              _fingerprint(clips, labels, SR, dataclasses.replace(DIGIT, max_change=0.1))}
    assert len(prints) == 5


def _tones(n: int, seed: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    clips = []
    for label in labels.tolist():
        f = (300.0 if label == 0 else 2000.0) * (0.9 + 0.2 * float(torch.rand(1, generator=g)))
        clips.append(_sine(f, int(torch.randint(800, 2000, (1,), generator=g))))
    return clips, labels


def test_a_cached_judge_is_retrained_when_the_recipe_changes_and_trains_with_it(tmp_path):
    clips, labels = _tones(24, 0)
    tiny = {"steps": 30, "batch_size": 12, "width": 8, "lr": 3e-3}
    folder = tmp_path / "digit"
    model, info = cached_audio_classifier(folder, clips, labels, 2, recipe="digit", **tiny)
    assert info["trained"] and model.train_settings["recipe"] == "digit"
    assert cached_audio_classifier(folder, clips, labels, 2, recipe=DIGIT, **tiny)[1]["trained"] is False
    assert cached_audio_classifier(folder, clips, labels, 2, **tiny)[1]["trained"] is True  # basic
    assert cached_audio_classifier(folder, clips, labels, 2, recipe="basic", **tiny)[1]["trained"] is False
    val_clips, val_labels = _tones(16, 1)
    robust = train_audio_classifier(clips, labels, 2, recipe="digit", **tiny)
    shifted = [shift_pitch(c, 1.15) for c in val_clips]
    assert audio_accuracy(robust, shifted, val_labels) == 1.0
