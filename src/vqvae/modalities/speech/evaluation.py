"""Judging a speech run: a digit and a speaker classifier trained on the run's real audio
score real, reconstructed, converted and sampled clips.

Two sets of judges (:data:`JUDGES`): the ``robust`` ones, the default, are trained with
speed, pitch and tempo changes and silence padding (the digit judge) or tempo changes and
padding (the speaker judge), so that the digit judge hears words rather than one speaker's
formants; the ``lenient`` ones are the original recipe (shift, noise, low-pass,
gain), kept to compare with figures measured before.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from vqvae.modalities.speech.data import AudioData
from vqvae.modalities.speech.judge import AudioClassifier, audio_accuracy, cached_audio_classifier
from vqvae.modalities.speech.run import (
    decode_clips,
    encode_clips,
    load_speech,
    run_speakers,
    sample_speech,
    speech_data,
)
from vqvae.runs import prior_names, read_config

CLASSIFIER_STEPS = 1500
# judge set -> (augmentation recipe of the digit judge, of the speaker judge, cache folder)
JUDGES = {
    "robust": ("digit", "speaker", "classifiers"),
    "lenient": ("basic", "basic", "classifiers/lenient"),
}


def speech_judges(run: str | os.PathLike, train: AudioData, judges: str = "robust",
                  classifier_steps: int = CLASSIFIER_STEPS, seed: int = 0, device: str = "cpu",
                  need: tuple[bool, bool] = (True, True)) -> tuple[AudioClassifier | None, AudioClassifier | None]:
    """The run's ``(digit, speaker)`` judges of set ``judges`` (see :data:`JUDGES`), trained
    on ``train`` or reused from ``RUN/classifiers/`` (``RUN/classifiers/lenient/`` for the
    lenient set); ``None`` for a judge not in ``need`` or that the data has no labels for."""
    if judges not in JUDGES:
        raise ValueError(f"unknown judges {judges!r}: choose one of {', '.join(JUDGES)}")
    digit_recipe, speaker_recipe, folder = JUDGES[judges]
    settings = {"sample_rate": train.sample_rate, "steps": classifier_steps, "seed": seed, "device": device}
    digit = speaker = None
    if need[0] and train.labels is not None:
        digit, _ = cached_audio_classifier(Path(run) / folder / "digit", train.waveforms, train.labels,
                                           len(train.classes), recipe=digit_recipe, **settings)
    train_speakers = run_speakers(run, train)
    if need[1] and train_speakers is not None:
        speaker, _ = cached_audio_classifier(Path(run) / folder / "speaker", train.waveforms, train_speakers,
                                             len(read_config(run)["data"]["speakers"]), recipe=speaker_recipe,
                                             **settings)
    return digit, speaker


def evaluate_speech_run(run: str | os.PathLike, data: str | None = None, data_dir: str | None = None,
                        split: str | None = None, device: str = "cpu", prior: str | None = None,
                        samples_per_class: int = 20, classifier_steps: int = CLASSIFIER_STEPS,
                        seed: int = 0, judges: str = "robust") -> dict:
    """Judge a speech run with a digit and a speaker classifier trained on the run's real
    training audio (the ``judges`` set of :func:`speech_judges`), on held-out clips:

    (i) real audio, (ii) reconstructions by the clip's own speaker, (iii) conversions of
    every clip to every other speaker (classified as the target speaker? digit kept?),
    (iv) digit-conditioned samples of a prior of the run, when it has one; and the
    bitrate of the codes against 16-bit PCM.
    """
    model = load_speech(run, device)
    rate, hop, k = model.config.sample_rate, model.hop, model.config.codebook_size
    held_out = speech_data(run, data, data_dir, split)
    metrics: dict = {"run": str(run), "data": held_out.source, "split": held_out.split, "clips": len(held_out),
                     "judges": judges, "bitrate_bps": rate / hop * math.log2(k), "pcm_bitrate_bps": 16.0 * rate}
    metrics["compression_ratio"] = metrics["pcm_bitrate_bps"] / metrics["bitrate_bps"]
    train = speech_data(run, data, data_dir, "train", default_split="train")
    clips = list(held_out.waveforms)
    speakers = run_speakers(run, held_out)
    codes = encode_clips(model, clips, device=device)
    lengths = [c.numel() for c in clips]
    metrics["codes_used"] = int(torch.cat(codes).unique().numel())

    digit, speaker_clf = speech_judges(run, train, judges, classifier_steps, seed, device,
                                       need=(held_out.labels is not None, speakers is not None))
    if digit is not None:
        metrics["real_digit_accuracy"] = audio_accuracy(digit, clips, held_out.labels, device=device)
    if speaker_clf is not None:
        metrics["real_speaker_accuracy"] = audio_accuracy(speaker_clf, clips, speakers, device=device)

    recon = decode_clips(model, codes, speakers, lengths, device=device)
    metrics["reconstruction_snr_db"] = _snr_db(clips, recon)
    if digit is not None:
        metrics["reconstruction_digit_accuracy"] = audio_accuracy(digit, recon, held_out.labels, device=device)
        metrics["reconstruction_digit_ratio"] = metrics["reconstruction_digit_accuracy"] / metrics["real_digit_accuracy"]
    if speaker_clf is not None:
        metrics["reconstruction_speaker_accuracy"] = audio_accuracy(speaker_clf, recon, speakers, device=device)
        n_speakers = model.config.num_speakers
        sources, targets = [], []
        for i in range(len(clips)):
            for t in range(n_speakers):
                if t != int(speakers[i]):
                    sources.append(i)
                    targets.append(t)
        targets_t = torch.tensor(targets)
        converted = decode_clips(model, [codes[i] for i in sources], targets_t, [lengths[i] for i in sources],
                                 device=device)
        metrics["conversions"] = len(converted)
        metrics["conversion_speaker_accuracy"] = audio_accuracy(speaker_clf, converted, targets_t, device=device)
        metrics["conversion_source_speaker_rate"] = audio_accuracy(speaker_clf, converted, speakers[sources], device=device)
        if digit is not None:
            metrics["conversion_digit_accuracy"] = audio_accuracy(digit, converted, held_out.labels[sources],
                                                                  device=device)

    names = prior_names(run)
    if digit is not None and (prior is not None or len(names) == 1):
        prior = prior or names[0]
        sampled, wanted = [], []
        for label in range(len(train.classes)):
            _, audio = sample_speech(run, samples_per_class, prior=prior, label=label, seed=seed + label,
                                     device=device)
            sampled += audio
            wanted += [label] * samples_per_class
        metrics["sample_prior"] = prior
        metrics["sample_digit_accuracy"] = audio_accuracy(digit, sampled, torch.tensor(wanted), device=device)
    return metrics


def _snr_db(clips: Sequence[Tensor], rebuilt: Sequence[Tensor]) -> float:
    signal = sum(float(c.square().sum()) for c in clips)
    noise = sum(float((c - r).square().sum()) for c, r in zip(clips, rebuilt, strict=True))
    return 10 * math.log10(signal / noise) if noise > 0 else math.inf
