"""Classifiers trained on real speech, to judge reconstructed, converted and sampled speech.

The speech experiment of the VQ-VAE paper (§4.3) asks whether a decoded clip still says
the same word and sounds like the same speaker. On the Free Spoken Digit Dataset that is
two classifiers of real recordings: a *digit* classifier (10 classes) and a *speaker*
classifier (6 classes). Both are the same :class:`AudioClassifier`
(:mod:`~vqvae.modalities.speech.judge_net`), trained on randomly altered clips in batches
of similar length. How they are altered is a :class:`~vqvae.modalities.speech.augment.Recipe`:
``"basic"`` (shift, noise, low-pass, gain) or the robust ``"digit"`` and ``"speaker"``
recipes that also change speed, pitch or tempo and pad with silence.

A classifier is trained once and cached in a folder of its own (``config.json`` +
``model.safetensors``, see :func:`cached_audio_classifier`); the cache key covers the
recipe. Training, prediction and the cache are the shared ones of :mod:`vqvae.judges`, whose
:func:`~vqvae.judges.frechet_distance` also applies to :func:`audio_features`.

Shapes: B batch, T samples, N clips, F feature width.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from vqvae.checkpoint import load_judge, save_judge
from vqvae.judges import (
    cached_judge,
    check_labels,
    fingerprint,
    fraction_correct,
    predict_batches,
    train_judge,
)
from vqvae.modalities.speech.augment import BASIC, Recipe, augment, get_recipe
from vqvae.modalities.speech.judge_net import AudioClassifier, check_waveforms, pad_batch
from vqvae.modalities.speech.mel import log_mel

__all__ = [
    "AudioClassifier",
    "audio_accuracy",
    "audio_features",
    "cached_audio_classifier",
    "load_audio_classifier",
    "log_mel",
    "pad_batch",
    "predict_audio",
    "save_audio_classifier",
    "train_audio_classifier",
]

KIND = "audio-classifier"
BUCKET_BATCHES = 16  # batches drawn together and sorted by length, see _batches


# ---------------------------------------------------------------------- training


def _batches(lengths: Tensor, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless mini-batches of indices, each of clips of similar length.

    Every epoch is a fresh permutation; each run of ``BUCKET_BATCHES`` batches of it is
    sorted by length before it is cut into batches, and the batches are shuffled. Random
    batches would pad every clip to the longest of 64 (about 2 s for 0.45 s clips);
    buckets cut the padding, and with it the training time, several-fold.
    """
    n = lengths.shape[0]
    span = batch_size * BUCKET_BATCHES
    while True:
        order = torch.randperm(n, generator=generator)
        batches = []
        for start in range(0, n, span):
            chunk = order[start : start + span]
            chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        # the short leftover of an epoch would be a noisy step; BatchNorm needs >= 2 clips
        batches = [b for b in batches if len(b) == batch_size]
        for i in torch.randperm(len(batches), generator=generator).tolist():
            yield batches[i]


# Every classifier was trained with this recipe before recipes existed; with it the
# fingerprint hashes the data alone, the same bytes as before, so classifiers cached in
# older run directories still match. Any other recipe, or this one edited, adds its
# signature and so retrains.
_ORIGINAL_RECIPE = (
    '{"lowpass_hz": [1500.0, 3500.0], "lowpass_p": 0.5, "max_change": 0.15, "max_gain_db": 6.0, '
    '"max_pad": 0.0, "max_shift": 0.1, "name": "basic", "pad_p": 0.0, "pitch_p": 0.0, '
    '"snr_db": [15.0, 45.0], "speed_p": 0.0, "tempo_p": 0.0}'
)


def _fingerprint(
    clips: Sequence[Tensor], labels: Tensor, sample_rate: int, recipe: Recipe = BASIC
) -> str:
    """SHA-256 of the training set and the augmentation recipe."""

    def parts() -> Iterator[str | Tensor]:
        yield f"{sample_rate} {len(clips)} {tuple(labels.shape)}"
        for clip in clips:
            yield str(clip.shape[0])
            yield clip.float()
        yield labels
        if recipe.signature() != _ORIGINAL_RECIPE:
            yield "recipe " + recipe.signature()

    return fingerprint(parts())


def train_audio_classifier(
    waveforms: Sequence[Tensor],
    labels: Tensor,
    num_classes: int,
    *,
    sample_rate: int = 8000,
    steps: int = 1500,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 0,
    time_budget: float | None = None,
    device: str | torch.device = "cpu",
    width: int = 64,
    recipe: Recipe | str = BASIC,
) -> AudioClassifier:
    """Train an :class:`AudioClassifier` on real recordings with Adam and a cosine lr.

    Each step draws a batch of clips of similar length (see :func:`_batches`), augments
    every clip as ``recipe`` says (:func:`~vqvae.modalities.speech.augment.augment`) --
    with the basic recipe a random shift or crop of up to 0.1 s at each end, white noise
    15-45 dB below the clip, half of the time a low-pass at 1.5-3.5 kHz, and a gain of
    ±6 dB, so that the classifier still recognises the content of degraded
    (reconstructed, vocoded, muffled) audio; the ``"digit"`` recipe adds speed, pitch and
    tempo changes of up to 15 % and silence, so that it hears words rather than voices --
    pads them and takes one cross-entropy step (:func:`vqvae.judges.train_judge`). On the CPU, with a fixed number of threads, the
    result depends only on the arguments (``seed`` fixes the initial weights, batches and
    augmentation; the global RNG is left untouched) unless ``time_budget`` stops training
    early.

    Args:
        waveforms: ``N`` float clips ``(T_i,)`` at ``sample_rate``.
        labels: int64 ``(N,)`` labels in ``[0, num_classes)`` (digits or speakers).
        num_classes: number of classes.
        sample_rate: Hz of the clips.
        steps: optimizer steps (the learning rate decays to 0 over them).
        batch_size: clips per step (at most N).
        lr: peak Adam learning rate.
        seed: seed of everything random in training.
        time_budget: stop after this many seconds even if fewer than ``steps`` ran.
        device: where to train; the model is returned there.
        width: network size, see :class:`AudioClassifier`.
        recipe: the augmentation, a :class:`~vqvae.modalities.speech.augment.Recipe` or
            the name of one (``"basic"``, ``"digit"``, ``"speaker"``). The basic recipe is
            the default because it assumes nothing about the labels; a speed or pitch
            change would blur speaker labels.

    Returns:
        The classifier in eval mode, with ``train_settings`` recording the arguments,
        the steps actually run, the seconds taken, the recipe and a fingerprint of the
        data and recipe.
    """
    recipe = get_recipe(recipe)
    clips = [c.detach().float().cpu() for c in check_waveforms(waveforms)]
    check_labels(labels, len(clips), num_classes, per="clip")
    lengths = torch.tensor([c.shape[0] for c in clips])  # (N,)

    def inputs(index: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return augment([clips[i] for i in index], sample_rate, generator, recipe)  # (B, 1, T), (B,)

    return train_judge(
        lambda: AudioClassifier(num_classes, sample_rate, width=width),
        labels,
        lambda size, generator: _batches(lengths, size, generator),
        inputs,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        time_budget=time_budget,
        device=device,
        record={
            "train_clips": len(clips),
            "recipe": recipe.name,
            "data_sha256": _fingerprint(clips, labels, sample_rate, recipe),
        },
    )


# --------------------------------------------------------------------- inference


def _in_length_order(
    model: AudioClassifier,
    waveforms: Sequence[Tensor],
    batch_size: int,
    device: str | torch.device,
    output,
) -> Tensor:
    """``output(model, batch, lengths)`` for every clip, run in batches of similar length
    (less padding) and returned in input order: ``(N, ...)`` on the CPU."""
    clips = check_waveforms(waveforms)
    order = torch.argsort(torch.tensor([c.shape[0] for c in clips]), stable=True)  # (N,)

    def inputs(index: Tensor) -> tuple[Tensor, Tensor]:
        x, lengths = pad_batch([clips[i] for i in index])  # (B, 1, T), (B,)
        return x.to(device), lengths.to(device)

    (out,) = predict_batches(
        model, order, batch_size, inputs, lambda m, x, lengths: (output(m, x, lengths),)
    )
    return out


def predict_audio(
    model: AudioClassifier,
    waveforms: Sequence[Tensor],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Predicted labels of float clips ``(T_i,)``, int64 ``(N,)`` on the CPU, input order.

    The model is put in eval mode and must already be on ``device``.
    """
    return _in_length_order(
        model, waveforms, batch_size, device, lambda m, x, lengths: m(x, lengths).argmax(dim=1)
    )


def audio_features(
    model: AudioClassifier,
    waveforms: Sequence[Tensor],
    batch_size: int = 64,
    device: str | torch.device = "cpu",
) -> Tensor:
    """Pooled features (:meth:`AudioClassifier.features`) of float clips, float64 ``(N, F)``
    on the CPU in input order, e.g. for :func:`vqvae.judges.frechet_distance`."""
    return _in_length_order(
        model, waveforms, batch_size, device, lambda m, x, lengths: m.features(x, lengths).double()
    )


def audio_accuracy(
    model: AudioClassifier, waveforms: Sequence[Tensor], labels: Tensor, **predict_kwargs
) -> float:
    """Fraction of clips whose predicted label equals ``labels`` (int64 ``(N,)``)."""
    if tuple(labels.shape) != (len(waveforms),):
        raise ValueError(
            f"need one label per clip: {len(waveforms)} clips, labels {tuple(labels.shape)}"
        )
    return fraction_correct(predict_audio(model, waveforms, **predict_kwargs), labels)


# -------------------------------------------------------------------- save / load


def save_audio_classifier(
    model: AudioClassifier, folder: str | os.PathLike, *, val_accuracy: float | None = None
) -> None:
    """Write ``config.json`` and ``model.safetensors`` to ``folder``, each atomically.

    Give each classifier a folder of its own (e.g. ``RUN/digit-classifier`` and
    ``RUN/speaker-classifier``): a run directory's ``config.json`` is the model's.
    """
    save_judge(folder, KIND, model, val_accuracy)


def load_audio_classifier(
    folder: str | os.PathLike, device: str | torch.device = "cpu"
) -> AudioClassifier:
    """Rebuild a classifier saved by :func:`save_audio_classifier`, in eval mode on ``device``."""
    return load_judge(folder, KIND, AudioClassifier, device)


def cached_audio_classifier(
    folder: str | os.PathLike,
    waveforms: Sequence[Tensor],
    labels: Tensor,
    num_classes: int,
    val_waveforms: Sequence[Tensor] | None = None,
    val_labels: Tensor | None = None,
    **train_kwargs,
) -> tuple[AudioClassifier, dict]:
    """The classifier saved in ``folder`` if it fits this data, else a freshly trained one.

    A saved classifier is reused when its class count and sample rate (and ``width``
    when given) and the fingerprint of its training clips, labels and augmentation
    recipe (``train_kwargs["recipe"]``, default basic) match; otherwise
    one is trained with :func:`train_audio_classifier` (``train_kwargs`` go there),
    scored on the validation clips if given, and saved to ``folder``, replacing the old
    one. A corrupt saved classifier raises :class:`~vqvae.checkpoint.CheckpointError`.

    Returns:
        ``(model, info)``, ``info = {"val_accuracy": float | None, "trained": bool}``;
        ``val_accuracy`` is measured now when validation clips are given, else the
        saved value.
    """
    clips = check_waveforms(waveforms)
    check_labels(labels, len(clips), num_classes, per="clip")
    if (val_waveforms is None) != (val_labels is None):
        raise ValueError("give both val_waveforms and val_labels, or neither")
    sample_rate = int(train_kwargs.get("sample_rate", 8000))
    wanted = {"num_classes": int(num_classes), "sample_rate": sample_rate}
    if "width" in train_kwargs:
        wanted["width"] = int(train_kwargs["width"])
    device = train_kwargs.get("device", "cpu")
    recipe = get_recipe(train_kwargs.get("recipe", BASIC))
    return cached_judge(
        folder,
        KIND,
        AudioClassifier,
        wanted,
        _fingerprint(clips, labels, sample_rate, recipe),
        lambda: train_audio_classifier(clips, labels, num_classes, **train_kwargs),
        None if val_waveforms is None else (
            lambda model: audio_accuracy(model, val_waveforms, val_labels, device=device)
        ),
        device,
    )
