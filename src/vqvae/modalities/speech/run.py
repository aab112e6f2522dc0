"""Using a trained speech run: reconstruct, convert speakers, encode, decode, sample, evaluate.

The audio counterpart of :mod:`vqvae.tokenizer`: each ``vqvae`` sub-command on a speech
run is a thin layer over one function here. Clips have different lengths, so code files
of audio hold ``codes`` ``(N, L_max)`` padded with −1, ``lengths`` (codes per clip),
``labels`` and ``speakers`` (−1 where unknown).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.checkpoint import load, read_config, write_bytes
from vqvae.modalities.speech.data import (
    AudioData,
    available_audio_splits,
    load_audio,
    read_wav,
    write_wav,
)
from vqvae.modalities.speech.judge import audio_accuracy, cached_audio_classifier
from vqvae.modalities.speech.model import SpeechVQVAE

CLASSIFIER_STEPS = 1500


def speech_data(
    run: str | os.PathLike,
    data: str | None = None,
    data_dir: str | None = None,
    split: str | None = None,
    default_split: str = "eval",
) -> AudioData:
    """The audio a run command works on: the run's own unless ``data`` names other audio.

    ``split=None`` means ``test`` when the source has one, else ``val`` (``default_split="eval"``).
    """
    recorded = read_config(run)["data"]
    if data is None:
        data, data_dir = recorded["spec"], data_dir or recorded["data_dir"]
    if split is None:
        if default_split == "eval":
            split = "test" if "test" in available_audio_splits(data, data_dir) else "val"
        else:
            split = default_split
    return load_audio(data, split, data_dir=data_dir, sample_rate=recorded["sample_rate"])


def speaker_index(run: str | os.PathLike, name: str) -> int:
    """Index of speaker ``name`` in the run; an unknown name lists the known ones."""
    speakers = read_config(run)["data"]["speakers"]
    if not speakers:
        raise ValueError(f"{run} was trained without speakers: there is no speaker to choose")
    if name not in speakers:
        raise ValueError(f"unknown speaker {name!r}: this run knows {', '.join(speakers)}")
    return speakers.index(name)


def run_speakers(run: str | os.PathLike, data: AudioData) -> Tensor | None:
    """Speakers of ``data`` as indices into the run's list (None for a run without speakers)."""
    from vqvae.train import speaker_indices

    return speaker_indices(data, read_config(run)["data"]["speakers"])


@torch.no_grad()
def encode_clips(model: SpeechVQVAE, clips: Sequence[Tensor], batch_size: int = 32,
                 device: str | torch.device = "cpu") -> list[Tensor]:
    """Codes ``(ceil(T_i / hop),)`` of each clip ``(T_i,)``; clips of similar length are batched."""
    out: list[Tensor | None] = [None] * len(clips)
    for batch in _by_length(clips, batch_size):
        length = max(clips[i].numel() for i in batch)
        x = torch.zeros(len(batch), 1, length)
        for row, i in enumerate(batch):
            x[row, 0, : clips[i].numel()] = clips[i]
        lengths = torch.tensor([clips[i].numel() for i in batch])
        codes = model.encode(x.to(device), lengths.to(device)).cpu()  # (B, L)
        for row, i in enumerate(batch):
            out[i] = codes[row, : model.latent_length(clips[i].numel())]
    return out


@torch.no_grad()
def decode_clips(model: SpeechVQVAE, codes: Sequence[Tensor], speakers: Tensor | None,
                 lengths: Sequence[int] | None = None, batch_size: int = 32,
                 device: str | torch.device = "cpu") -> list[Tensor]:
    """Waveforms ``(T_i,)`` decoded from code rows ``(L_i,)`` by ``speakers`` ``(N,)``, each cut
    to ``lengths[i]`` samples (default ``L_i · hop``)."""
    out: list[Tensor | None] = [None] * len(codes)
    for batch in _by_length(codes, batch_size):
        width = max(codes[i].numel() for i in batch)
        # pad with each row's last code, so the decoder's context at the end looks natural
        rows = torch.stack([torch.cat([codes[i], codes[i][-1:].expand(width - codes[i].numel())]) for i in batch])
        who = None if speakers is None else speakers[batch].to(device)
        audio = model.decode(rows.to(device), who).cpu()[:, 0]  # (B, T)
        for row, i in enumerate(batch):
            keep = lengths[i] if lengths is not None else codes[i].numel() * model.hop
            out[i] = audio[row, :keep]
    return out


def convert_clips(model: SpeechVQVAE, clips: Sequence[Tensor], speakers: Tensor | None,
                  device: str | torch.device = "cpu") -> list[Tensor]:
    """Each clip re-spoken by ``speakers[i]``: ``decode(encode(clip), speaker)``, same length."""
    codes = encode_clips(model, clips, device=device)
    return decode_clips(model, codes, speakers, [c.numel() for c in clips], device=device)


def convert_files(run: str | os.PathLike, inputs: Sequence[str | os.PathLike], speaker: str,
                  out: str | os.PathLike, device: str = "cpu") -> list[Path]:
    """``vqvae convert``: re-speak WAV files as ``speaker``. One input: ``out`` is the output
    file; several: ``out`` is a folder that gets the same file names."""
    if not inputs:
        raise ValueError("no input WAV files given")
    target = speaker_index(run, speaker)
    model = load(run, device)
    rate = model.config.sample_rate
    clips = [read_wav(path, rate)[0] for path in inputs]
    names = [Path(p).name for p in inputs]
    if len(inputs) == 1:
        paths = [Path(out)]
    else:
        if len(set(names)) != len(names):
            raise ValueError("several inputs share a file name: the outputs would overwrite each other")
        if Path(out).suffix.lower() == ".wav":
            raise ValueError(f"{len(inputs)} inputs need an output folder, got the file name {out}")
        paths = [Path(out) / name for name in names]
    converted = convert_clips(model, clips, torch.full((len(clips),), target), device)
    for path, audio in zip(paths, converted, strict=True):
        write_wav(path, audio, rate)
    return paths


def reconstruct_audio(run: str | os.PathLike, out_dir: str | os.PathLike, data: str | None = None,
                      data_dir: str | None = None, split: str | None = None, n: int = 8,
                      device: str = "cpu") -> Path:
    """``vqvae reconstruct`` on audio: for the first ``n`` clips, ``NAME.wav`` (original),
    ``NAME.reconstruction.wav`` and a PNG of both log-spectrograms."""
    from vqvae.figures import save_spectrograms

    model = load(run, device)
    audio = speech_data(run, data, data_dir, split)
    n = min(n, len(audio))
    clips = list(audio.waveforms[:n])
    speakers = run_speakers(run, audio)
    recon = convert_clips(model, clips, None if speakers is None else speakers[:n], device)
    out_dir = Path(out_dir)
    for name, original, rebuilt in zip(audio.names[:n], clips, recon, strict=True):
        stem = Path(name).stem.replace("/", "_")
        write_wav(out_dir / f"{stem}.wav", original, audio.sample_rate)
        write_wav(out_dir / f"{stem}.reconstruction.wav", rebuilt, audio.sample_rate)
        save_spectrograms([original, rebuilt], ["original", "reconstruction"], audio.sample_rate,
                          out_dir / f"{stem}.png")
    return out_dir


# ------------------------------------------------------------------ code files


def save_audio_codes(path: str | os.PathLike, codes: Sequence[Tensor], labels: Tensor | None,
                     speakers: Tensor | None) -> None:
    """Variable-length code rows to an ``.npz``: ``codes`` padded with −1, ``lengths``, ``labels``
    and ``speakers`` (−1 where unknown), atomically."""
    n = len(codes)
    width = max((c.numel() for c in codes), default=0)
    array = np.full((n, width), -1, dtype=np.int16)
    for i, row in enumerate(codes):
        array[i, : row.numel()] = row.numpy()
    none = np.full(n, -1, dtype=np.int64)
    buffer = io.BytesIO()
    np.savez(buffer, codes=array, lengths=np.array([c.numel() for c in codes], dtype=np.int64),
             labels=none if labels is None else labels.numpy().astype(np.int64),
             speakers=none if speakers is None else speakers.numpy().astype(np.int64))
    write_bytes(path, buffer.getvalue())


def load_audio_codes(path: str | os.PathLike) -> tuple[list[Tensor], Tensor | None]:
    """Code rows and speakers (None when unknown) from a file of :func:`save_audio_codes`, or
    from a plain ``codes`` array ``(N, L)`` (``.npy`` or ``.npz``), every row full length."""
    from vqvae.tokenizer import load_codes

    codes, _ = load_codes(path)
    lengths = speakers = None
    if Path(path).suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            lengths = f["lengths"] if "lengths" in f.files else None
            speakers = f["speakers"] if "speakers" in f.files else None
    if codes.dim() != 2:
        raise ValueError(f"audio codes must be (N, L) rows, got shape {tuple(codes.shape)} in {path}")
    rows = [codes[i, : int(lengths[i])] if lengths is not None else codes[i] for i in range(len(codes))]
    if any(bool((r < 0).any()) for r in rows):
        raise ValueError(f"{path} has negative codes inside the rows' lengths: is it an audio code file?")
    who = None if speakers is None or (speakers < 0).any() else torch.from_numpy(speakers)
    return rows, who


def decode_audio_file(run: str | os.PathLike, codes_path: str | os.PathLike, out_dir: str | os.PathLike,
                      speaker: str | None = None, device: str = "cpu") -> list[Path]:
    """``vqvae decode`` on a speech run: one WAV per code row, spoken by ``speaker`` (or by
    the speakers saved with the codes)."""
    model = load(run, device)
    rows, speakers = load_audio_codes(codes_path)
    k = model.config.codebook_size
    if any(int(r.max()) >= k for r in rows if r.numel()):
        raise ValueError(f"codes reach beyond this run's K={k}: were they encoded with another run?")
    if speaker is not None:
        speakers = torch.full((len(rows),), speaker_index(run, speaker))
    if model.config.num_speakers and speakers is None:
        names = ", ".join(read_config(run)["data"]["speakers"])
        raise ValueError(f"the code file names no speakers: choose one with --speaker ({names})")
    if not model.config.num_speakers:
        speakers = None
    audio = decode_clips(model, rows, speakers, device=device)
    out_dir = Path(out_dir)
    paths = [out_dir / f"{i:06d}.wav" for i in range(len(audio))]
    for path, clip in zip(paths, audio, strict=True):
        write_wav(path, clip, model.config.sample_rate)
    return paths


# ------------------------------------------------------------------ priors over windows


def code_windows(run: str | os.PathLike, split: str, window: int, data: str | None = None,
                 data_dir: str | None = None, device: str = "cpu") -> tuple[Tensor, Tensor | None]:
    """Fixed windows of ``window`` codes, one per clip, for a prior: each clip's codes from
    its start, cut, or encoded after padding the clip with silence to the window's length (so
    the silence is encoded in context, as the encoder's normalisation sees it in a longer
    recording). Cached in ``RUN/codes/``.

    Returns:
        ``(codes (N, window) int64, labels (N,) or None)``.
    """
    from vqvae.tokenizer import codes_cache_path, load_codes, save_codes

    path = codes_cache_path(run, f"audio-{split}", (data, data_dir, split, window))
    if path.exists():
        codes, labels = load_codes(path)
    else:
        model = load(run, device)
        audio = speech_data(run, data, data_dir, split, default_split=split)
        samples = window * model.hop
        clips = [F.pad(w, (0, max(0, samples - w.numel()))) for w in audio.waveforms]
        codes = torch.stack([row[:window] for row in encode_clips(model, clips, device=device)])
        labels = audio.labels if audio.labels is not None else torch.full((len(codes),), -1)
        save_codes(path, codes, labels, model.config.codebook_size)
    if labels is not None and bool((labels < 0).all()):
        labels = None
    return codes, labels


def sample_speech(run: str | os.PathLike, n: int, *, prior: str | None = None, label: int | None = None,
                  speaker: str | None = None, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, guidance: float | None = None, seed: int = 0,
                  device: str = "cpu") -> tuple[Tensor, list[Tensor]]:
    """Sample ``n`` code windows from a prior of the run and decode them by ``speaker``
    (default: the speakers in turn). Returns ``(codes (n, W), waveforms)``."""
    from vqvae.generate import prior_folder
    from vqvae.priors.sampling import resolve_guidance

    model = load(run, device)
    prior_model = load(prior_folder(run, prior), device)
    guidance = resolve_guidance(guidance, prior_model.config.num_classes, prior_model.config.label_dropout)
    generator = torch.Generator(device).manual_seed(seed)
    codes = prior_model.sample(n, label=label, temperature=temperature, top_k=top_k, top_p=top_p,
                               guidance=guidance, generator=generator).cpu()
    speakers = None
    if model.config.num_speakers:
        speakers = torch.full((n,), speaker_index(run, speaker)) if speaker is not None \
            else torch.arange(n) % model.config.num_speakers
    elif speaker is not None:
        raise ValueError(f"{run} was trained without speakers: drop --speaker")
    return codes, decode_clips(model, list(codes), speakers, device=device)


# ------------------------------------------------------------------ evaluation


def evaluate_speech_run(run: str | os.PathLike, data: str | None = None, data_dir: str | None = None,
                        split: str | None = None, device: str = "cpu", prior: str | None = None,
                        samples_per_class: int = 20, classifier_steps: int = CLASSIFIER_STEPS,
                        seed: int = 0) -> dict:
    """Judge a speech run with a digit and a speaker classifier trained on the run's real
    training audio (cached in ``RUN/classifiers/``), on held-out clips:

    (i) real audio, (ii) reconstructions by the clip's own speaker, (iii) conversions of
    every clip to every other speaker (classified as the target speaker? digit kept?),
    (iv) digit-conditioned samples of a prior of the run, when it has one; and the
    bitrate of the codes against 16-bit PCM.
    """
    from vqvae.generate import prior_names

    config = read_config(run)
    model = load(run, device)
    rate, hop, k = model.config.sample_rate, model.hop, model.config.codebook_size
    held_out = speech_data(run, data, data_dir, split)
    metrics: dict = {"run": str(run), "data": held_out.source, "split": held_out.split, "clips": len(held_out),
                     "bitrate_bps": rate / hop * math.log2(k), "pcm_bitrate_bps": 16.0 * rate}
    metrics["compression_ratio"] = metrics["pcm_bitrate_bps"] / metrics["bitrate_bps"]
    train = speech_data(run, data, data_dir, "train", default_split="train")
    clips = list(held_out.waveforms)
    speakers = run_speakers(run, held_out)
    codes = encode_clips(model, clips, device=device)
    lengths = [c.numel() for c in clips]
    metrics["codes_used"] = int(torch.cat(codes).unique().numel())

    digit = speaker_clf = None
    if held_out.labels is not None and train.labels is not None:
        digit, info = cached_audio_classifier(
            Path(run) / "classifiers" / "digit", train.waveforms, train.labels, len(train.classes),
            sample_rate=rate, steps=classifier_steps, seed=seed, device=device)
        metrics["real_digit_accuracy"] = audio_accuracy(digit, clips, held_out.labels, device=device)
    if speakers is not None:
        train_speakers = run_speakers(run, train)
        speaker_clf, _ = cached_audio_classifier(
            Path(run) / "classifiers" / "speaker", train.waveforms, train_speakers,
            len(config["data"]["speakers"]), sample_rate=rate, steps=classifier_steps, seed=seed, device=device)
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


def _by_length(items: Sequence[Tensor], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(items)), key=lambda i: items[i].numel())
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
