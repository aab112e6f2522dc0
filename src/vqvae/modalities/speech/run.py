"""Using a trained speech run: its audio, reconstruct, convert speakers, encode, decode, sample.

Each ``vqvae`` sub-command on a speech run is a thin layer over one function here. Clips
have different lengths, so their code files (:mod:`vqvae.runs`) hold rows padded with −1,
``lengths`` (codes per clip), ``labels`` and ``speakers`` (−1 where unknown).
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.atomic import write_bytes
from vqvae.checkpoint import load_model
from vqvae.generate import sample_codes
from vqvae.modalities.speech.data import (
    AudioData,
    available_audio_splits,
    load_audio,
    read_wav,
    write_wav,
)
from vqvae.modalities.speech.figures import save_spectrograms
from vqvae.modalities.speech.model import SpeechVQVAE, SpeechVQVAEConfig
from vqvae.modalities.speech.task import speaker_indices
from vqvae.runs import CodeFile, codes_cache_path, load_codes, read_config, save_codes


def build_speech(config: dict) -> SpeechVQVAE:
    """The speech VQ-VAE that a run's ``config.json`` describes."""
    return SpeechVQVAE(SpeechVQVAEConfig.from_dict(config["model"]))


def load_speech(run: str | os.PathLike, device: str | torch.device = "cpu") -> SpeechVQVAE:
    return load_model(run, build_speech, device)


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
    model = load_speech(run, device)
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
    model = load_speech(run, device)
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


def encode_audio(run: str | os.PathLike, data: str | None = None, data_dir: str | None = None,
                 split: str | None = None, device: str = "cpu") -> CodeFile:
    """``vqvae encode`` on a speech run: code rows of a split's clips (default train), with
    their labels and speakers."""
    audio = speech_data(run, data, data_dir, split, default_split="train")
    rows = encode_clips(load_speech(run, device), audio.waveforms, device=device)
    codes, lengths = _padded(rows)
    return CodeFile(codes, audio.labels, lengths, {"speakers": run_speakers(run, audio)})


def _padded(rows: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    width = max((r.numel() for r in rows), default=0)
    codes = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, row in enumerate(rows):
        codes[i, : row.numel()] = row
    return codes, torch.tensor([r.numel() for r in rows], dtype=torch.long)


def decode_audio_file(run: str | os.PathLike, codes: CodeFile, out_dir: str | os.PathLike,
                      speaker: str | None = None, device: str = "cpu") -> list[Path]:
    """``vqvae decode`` on a speech run: one WAV per code row, spoken by ``speaker`` (or by
    the speakers saved with the codes)."""
    model = load_speech(run, device)
    if codes.codes.dim() != 2:
        raise ValueError(f"audio codes must be (N, L) rows, got shape {tuple(codes.codes.shape)}")
    rows = codes.rows()
    speakers = codes.extras.get("speakers")
    if speakers is not None and bool((speakers < 0).any()):
        speakers = None
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
    path = codes_cache_path(run, f"audio-{split}", (data, data_dir, split, window))
    if not path.exists():
        model = load_speech(run, device)
        audio = speech_data(run, data, data_dir, split, default_split=split)
        samples = window * model.hop
        clips = [F.pad(w, (0, max(0, samples - w.numel()))) for w in audio.waveforms]
        codes = torch.stack([row[:window] for row in encode_clips(model, clips, device=device)])
        save_codes(path, codes, model.config.codebook_size, audio.labels)
    file = load_codes(path)
    return file.codes, file.labels


def sample_speech(run: str | os.PathLike, n: int, *, prior: str | None = None, label: int | None = None,
                  speaker: str | None = None, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None, guidance: float | None = None, seed: int = 0,
                  device: str = "cpu") -> tuple[Tensor, list[Tensor]]:
    """Sample ``n`` code windows from a prior of the run and decode them by ``speaker``
    (default: the speakers in turn). Returns ``(codes (n, W), waveforms)``."""
    codes, _ = sample_codes(run, n, prior=prior, label=label, temperature=temperature, top_k=top_k, top_p=top_p,
                            guidance=guidance, seed=seed, device=device)
    return codes, speak(run, codes, speaker, device)


def speak(run: str | os.PathLike, codes: Tensor, speaker: str | None = None, device: str = "cpu") -> list[Tensor]:
    """Waveforms of code windows ``(N, W)`` in the voice of ``speaker`` (default: the run's
    speakers in turn)."""
    model = load_speech(run, device)
    n = len(codes)
    speakers = None
    if model.config.num_speakers:
        speakers = torch.full((n,), speaker_index(run, speaker)) if speaker is not None \
            else torch.arange(n) % model.config.num_speakers
    elif speaker is not None:
        raise ValueError(f"{run} was trained without speakers: drop --speaker")
    return decode_clips(model, list(codes), speakers, device=device)


def write_samples(run: str | os.PathLike, codes: Tensor, out: str | os.PathLike, speaker: str | None = None,
                  device: str = "cpu") -> list[Path]:
    """``vqvae sample`` on a speech run: one WAV per code window and ``codes.npy`` in ``out``."""
    out = Path(out)
    rate = read_config(run)["data"]["sample_rate"]
    paths = [out / f"{i:06d}.wav" for i in range(len(codes))]
    for path, clip in zip(paths, speak(run, codes, speaker, device), strict=True):
        write_wav(path, clip, rate)
    buffer = io.BytesIO()
    np.save(buffer, codes.numpy().astype(np.int16), allow_pickle=False)
    write_bytes(out / "codes.npy", buffer.getvalue())
    return paths


def _by_length(items: Sequence[Tensor], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(items)), key=lambda i: items[i].numel())
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
