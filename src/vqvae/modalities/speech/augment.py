"""Training-time augmentation of the speech judges' clips, by recipe.

Decoded speech is shifted, noisier, duller and louder or softer than the recordings a
judge learns from; the basic alterations (a shift or crop at each end, white noise, a
low-pass, a gain) teach it to recognise the content anyway. That is not enough for a
judge of *words*: trained on six voices, a digit classifier can lean on one speaker's
formants, and then it hears the digit in a conversion that only sounds like it. The
robust recipes add what changes a voice but not a word -- a speed change
(tempo and every frequency scaled together, as a shorter or longer vocal tract does),
a pitch change at constant tempo, a tempo change at constant pitch -- and silence at
both ends. A speaker judge gets only the tempo change and the silence: the timing of a
conversion is its source speaker's, while pitch and formants are what it must judge.

A :class:`Recipe` is frozen data; its :meth:`~Recipe.signature` enters the fingerprint
of a cached judge (:mod:`vqvae.modalities.speech.judge`), so editing a recipe retrains
the judges instead of reusing stale ones. All randomness comes from the caller's
generator (see :func:`vqvae.judges.train_judge`).

Shapes: B batch, T samples, F frequency bins, L frames.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.modalities.speech.judge_net import pad_batch

__all__ = [
    "BASIC",
    "DIGIT",
    "RECIPES",
    "SPEAKER",
    "Recipe",
    "augment",
    "change_speed",
    "change_tempo",
    "get_recipe",
    "lowpass",
    "pad_silence",
    "perturb",
    "resample",
    "shift_pitch",
]

VOCODER_FFT = 256  # phase-vocoder window: 32 ms at 8 kHz, about three pitch periods
RESAMPLE_UP = 4  # resample interpolates linearly between samples at 4x the rate


@dataclass(frozen=True)
class Recipe:
    """What every training clip of a judge goes through; probabilities are per clip.

    Attributes:
        name: the recipe's name (``RECIPES[name]``).
        max_shift: seconds of silence added, or of audio cut (at most 10 % of the clip),
            at each end.
        max_gain_db: a random gain in ``[-max_gain_db, +max_gain_db]`` dB.
        snr_db: range of the signal-to-noise ratio of the added white noise.
        lowpass_p: probability of a low-pass ...
        lowpass_hz: ... with a cut-off frequency in this range.
        speed_p: probability of a speed change (:func:`change_speed`).
        pitch_p: probability of a pitch change at constant tempo (:func:`shift_pitch`).
        tempo_p: probability of a tempo change at constant pitch (:func:`change_tempo`).
            A clip gets at most one of the three; their probabilities sum to at most 1.
        max_change: each of those changes scales by a factor drawn uniformly from
            ``[1 - max_change, 1 + max_change]``.
        pad_p: probability that a batch gets silence padding ...
        max_pad: ... of up to this many seconds per clip, split at random between its
            two ends. One total per batch keeps the batch short (it costs the time of
            its longest clip) while every clip gets its own split.
    """

    name: str
    max_shift: float = 0.1
    max_gain_db: float = 6.0
    snr_db: tuple[float, float] = (15.0, 45.0)
    lowpass_p: float = 0.5
    lowpass_hz: tuple[float, float] = (1500.0, 3500.0)
    speed_p: float = 0.0
    pitch_p: float = 0.0
    tempo_p: float = 0.0
    max_change: float = 0.15
    pad_p: float = 0.0
    max_pad: float = 0.0

    def __post_init__(self) -> None:
        for field in ("lowpass_p", "speed_p", "pitch_p", "tempo_p", "pad_p"):
            if not 0.0 <= getattr(self, field) <= 1.0:
                raise ValueError(f"{field} must be a probability in [0, 1], got {getattr(self, field)}")
        if self.speed_p + self.pitch_p + self.tempo_p > 1.0:
            raise ValueError(
                f"a clip gets at most one speed, pitch or tempo change: speed_p + pitch_p + "
                f"tempo_p must be <= 1, got {self.speed_p + self.pitch_p + self.tempo_p:g}"
            )
        if not 0.0 <= self.max_change < 0.5:
            raise ValueError(f"max_change must be in [0, 0.5), got {self.max_change}")
        for field in ("max_shift", "max_gain_db", "max_pad"):
            if getattr(self, field) < 0:
                raise ValueError(f"{field} must be >= 0, got {getattr(self, field)}")

    @property
    def perturbs(self) -> bool:
        """Whether clips are perturbed (:func:`perturb`) before the basic alterations."""
        return self.speed_p + self.pitch_p + self.tempo_p > 0 or self.pad_p * self.max_pad > 0

    def signature(self) -> str:
        """Every setting as canonical JSON: a cached judge's fingerprint includes it."""
        return json.dumps(asdict(self), sort_keys=True)


BASIC = Recipe("basic")  # the original recipe: shift/crop, noise, low-pass, gain
DIGIT = Recipe("digit", speed_p=0.3, pitch_p=0.3, tempo_p=0.2, pad_p=0.5, max_pad=0.6)
SPEAKER = Recipe("speaker", tempo_p=0.6, pad_p=0.5, max_pad=0.6)
RECIPES = {r.name: r for r in (BASIC, DIGIT, SPEAKER)}


def get_recipe(recipe: Recipe | str) -> Recipe:
    """``recipe`` itself, or the recipe of that name in :data:`RECIPES`."""
    if isinstance(recipe, Recipe):
        return recipe
    if recipe not in RECIPES:
        raise ValueError(f"unknown augmentation recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    return RECIPES[recipe]


# ------------------------------------------------------------------ perturbations


def resample(clip: Tensor, length: int) -> Tensor:
    """Band-limited resampling of a ``(T,)`` clip to ``length`` samples.

    The clip, zero-padded so that its end does not wrap into its start, is low-passed
    below the new Nyquist frequency (when it gets fewer samples: no aliasing) and
    upsampled ``RESAMPLE_UP``-fold in the frequency domain at FFT-friendly sizes; the
    output samples are read off that dense signal by linear interpolation at exactly
    ``T / length`` input samples apart (-0.4 dB at the old Nyquist frequency).
    """
    if clip.ndim != 1 or clip.shape[0] == 0 or length < 1:
        raise ValueError(
            f"need a non-empty (T,) clip and length >= 1, got {tuple(clip.shape)} and {length}"
        )
    T = clip.shape[0]
    if length == T:
        return clip.clone()
    ratio = T / length  # input samples per output sample
    n = _fast_length(T + T // 8 + 64)  # prime FFT sizes are 20x slower
    spectrum = torch.fft.rfft(clip, n=n)  # (n // 2 + 1,)
    keep = min(n // 2, math.floor(n / 2 / max(ratio, 1.0)))  # bins below both Nyquists
    dense = spectrum.new_zeros(RESAMPLE_UP * n // 2 + 1)
    dense[:keep] = spectrum[:keep]
    x = torch.fft.irfft(dense, n=RESAMPLE_UP * n) * RESAMPLE_UP  # (UP n,)
    position = torch.arange(length, dtype=torch.float64, device=clip.device) * (ratio * RESAMPLE_UP)
    index = position.floor().long()  # (length,), < UP T: the zeros after it cover index + 1
    alpha = (position - index).to(x.dtype)
    return x[index] * (1.0 - alpha) + x[index + 1] * alpha


@functools.lru_cache(maxsize=4096)
def _fast_length(n: int) -> int:
    """The least 2^a 3^b 5^c >= n."""
    best = 1 << (n - 1).bit_length()
    fives = 1
    while fives < best:
        threes = fives
        while threes < best:
            size = threes
            while size < n:
                size *= 2
            best = min(best, size)
            threes *= 3
        fives *= 5
    return best


def change_speed(clip: Tensor, factor: float) -> Tensor:
    """Play a ``(T,)`` clip ``factor`` times faster: ``round(T / factor)`` samples, every
    frequency times ``factor`` (tempo, pitch and formants together)."""
    _check_factor(factor)
    return resample(clip, max(1, round(clip.shape[0] / factor)))


def change_tempo(clip: Tensor, factor: float, n_fft: int = VOCODER_FFT) -> Tensor:
    """A ``(T,)`` clip ``factor`` times faster at the same pitch: ``round(T / factor)``
    samples, by a phase vocoder (Flanagan & Golden 1966; Laroche & Dolson 1999).

    STFT frames (``n_fft`` window, 75 % overlap) are read at steps of ``factor`` frames;
    each output frame takes the interpolated magnitude of its two neighbours and a phase
    that advances by their measured instantaneous frequency, so partials keep their
    frequencies while the frames move closer together or further apart.
    """
    _check_factor(factor)
    T = clip.shape[0]
    if T < 2:
        raise ValueError(f"need a clip of at least 2 samples, got {T}")
    hop = n_fft // 4
    window = torch.hann_window(n_fft, dtype=clip.dtype, device=clip.device)
    spec = torch.stft(clip, n_fft, hop, window=window, center=True, pad_mode="constant",
                      return_complex=True)  # (F, L)
    L = spec.shape[1]
    spec = torch.cat([spec, spec.new_zeros(spec.shape[0], 2)], dim=1)  # (F, L + 2): reads past the end
    steps = torch.arange(0.0, L, factor, dtype=torch.float64, device=clip.device)  # (L',)
    index = steps.floor().long()
    alpha = (steps - index).to(clip.dtype)  # (L',)
    left, right = spec[:, index], spec[:, index + 1]  # (F, L')
    magnitude = (1.0 - alpha) * left.abs() + alpha * right.abs()
    # expected phase advance over one hop of bin k: 2 pi k hop / n_fft
    advance = torch.linspace(0.0, math.pi * hop, spec.shape[0], dtype=clip.dtype,
                             device=clip.device)[:, None]  # (F, 1)
    deviation = right.angle() - left.angle() - advance
    deviation = deviation - 2.0 * math.pi * torch.round(deviation / (2.0 * math.pi))
    increments = advance + deviation  # (F, L'): measured phase advance per hop
    phase = spec[:, :1].angle() + torch.cumsum(increments, dim=1) - increments  # (F, L')
    out = torch.polar(magnitude, phase)
    return torch.istft(out, n_fft, hop, window=window, center=True,
                       length=max(1, round(T / factor)))


def shift_pitch(clip: Tensor, factor: float, n_fft: int = VOCODER_FFT) -> Tensor:
    """Every frequency of a ``(T,)`` clip times ``factor`` at the same tempo: ``(T,)``.

    A tempo change by ``1 / factor`` (:func:`change_tempo`, about ``T·factor`` samples)
    played ``factor`` times faster (:func:`resample` back to ``T``).
    """
    _check_factor(factor)
    return resample(change_tempo(clip, 1.0 / factor, n_fft), clip.shape[0])


def pad_silence(clip: Tensor, before: int, after: int) -> Tensor:
    """``before`` zeros, the ``(T,)`` clip, ``after`` zeros."""
    if before < 0 or after < 0:
        raise ValueError(f"padding must be >= 0 samples, got {before} and {after}")
    return F.pad(clip, (before, after))


def _check_factor(factor: float) -> None:
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"the factor must be a positive number, got {factor}")


def perturb(
    clips: Sequence[Tensor], sample_rate: int, generator: torch.Generator, recipe: Recipe
) -> list[Tensor]:
    """Each clip, after at most one speed, pitch or tempo change and the batch's silence
    padding, as ``recipe`` draws them (see :class:`Recipe`)."""
    u = torch.rand(len(clips), 3, generator=generator)  # (B, 3) one column per use
    pad = torch.rand(2, generator=generator)  # (2,): is there padding, how much
    total = round(float(pad[1]) * recipe.max_pad * sample_rate) if pad[0] < recipe.pad_p else 0
    bounds = torch.tensor([recipe.speed_p, recipe.pitch_p, recipe.tempo_p]).cumsum(0).tolist()
    out = []
    for clip, (kind, f, split) in zip(clips, u.tolist(), strict=True):
        factor = 1.0 - recipe.max_change + 2.0 * recipe.max_change * f
        if kind < bounds[0]:
            clip = change_speed(clip, factor)
        elif kind < bounds[1]:
            clip = shift_pitch(clip, factor)
        elif kind < bounds[2] and clip.shape[0] >= 2:
            clip = change_tempo(clip, factor)
        before = round(split * total)
        out.append(pad_silence(clip, before, total - before))
    return out


# ------------------------------------------------------------- basic alterations


def lowpass(x: Tensor, cutoff: Tensor, sample_rate: int) -> Tensor:
    """Zero-phase low-pass of ``(B, T)`` clips with an 8th-order Butterworth magnitude
    response at ``cutoff`` Hz ``(B,)``; the FFT is zero-padded to a power of two (fast,
    and the filter's ringing fades in the padding instead of wrapping around)."""
    T = x.shape[-1]
    n = 2 ** math.ceil(math.log2(T + sample_rate // 100))
    freqs = torch.fft.rfftfreq(n, 1.0 / sample_rate, device=x.device)  # (n // 2 + 1,)
    response = torch.rsqrt(1.0 + (freqs / cutoff[:, None]) ** 16)  # (B, n // 2 + 1)
    return torch.fft.irfft(torch.fft.rfft(x, n=n) * response, n=n)[:, :T]


def augment(
    clips: Sequence[Tensor],
    sample_rate: int,
    generator: torch.Generator,
    recipe: Recipe = BASIC,
) -> tuple[Tensor, Tensor]:
    """A padded training batch ``((B, 1, T), lengths (B,))`` of randomly altered clips.

    With a recipe that perturbs, each clip first goes through :func:`perturb`. Then it
    gets a random shift or crop at both ends, white noise, a low-pass some of the time,
    and a gain. :data:`BASIC` draws exactly the random numbers of the original recipe,
    so judges trained with it are the same as before recipes existed.
    """
    if recipe.perturbs:
        clips = perturb(clips, sample_rate, generator, recipe)
    B = len(clips)
    u = torch.rand(B, 6, generator=generator)  # (B, 6) uniform draws, one column per use
    max_shift = round(recipe.max_shift * sample_rate)
    shifted = []
    for clip, (start, end) in zip(clips, (2.0 * u[:, :2] - 1.0).tolist(), strict=True):
        # each end: either up to max_shift s of silence added, or up to 10 % of the clip cut
        cut = min(max_shift, clip.shape[0] // 10)
        ends = [round(v * max_shift) if v >= 0 else -round(-v * cut) for v in (start, end)]
        shifted.append(F.pad(clip, ends))  # negative padding crops
    x, lengths = pad_batch(shifted)  # (B, 1, T), (B,)
    x = x[:, 0]  # (B, T)
    valid = torch.arange(x.shape[1]) < lengths[:, None]  # (B, T)
    low_snr, high_snr = recipe.snr_db
    snr_db = low_snr + u[:, 2] * (high_snr - low_snr)  # (B,)
    rms = (x.square().sum(dim=1) / lengths).sqrt()  # (B,)
    noise = torch.randn(x.shape, generator=generator) * valid  # (B, T)
    x = x + noise * (rms * 10.0 ** (-snr_db / 20.0))[:, None]
    low = u[:, 3] < recipe.lowpass_p  # (B,)
    if low.any():
        # Decoders tend to lose the top band first; without this the digit classifier
        # leans on fricatives ("six", "seven") and fails on muffled but clear speech.
        low_hz, high_hz = recipe.lowpass_hz
        cutoff = low_hz + u[low, 4] * (high_hz - low_hz)
        x[low] = lowpass(x[low], cutoff, sample_rate) * valid[low]
    gain = 10.0 ** ((2.0 * u[:, 5] - 1.0) * recipe.max_gain_db / 20.0)  # (B,)
    return (x * gain[:, None])[:, None], lengths
