"""Speech clips as items of an index (``vqvae index``, ``vqvae search``): encoding, query WAVs, results.

The retrieval core (:mod:`vqvae.retrieval`) reads only what :func:`retrieval_items` gives
it: one row of codes per clip (padded with −1 past its length), the encoder's output
before quantization averaged over the clip, log-mel frames averaged over time for the
baseline, digit labels, speakers, and the clip names as ids and paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vqvae.modalities.speech.data import read_wav, write_wav
from vqvae.modalities.speech.mel import log_mel
from vqvae.modalities.speech.model import SpeechVQVAE
from vqvae.modalities.speech.run import load_speech, speech_data
from vqvae.retrieval.items import RetrievalError, RetrievalItems, tokenizer_hash
from vqvae.runs import CodeFile, read_config

__all__ = ["encode_items", "query_items", "read_query", "retrieval_items", "retrieval_media", "write_hits"]


def retrieval_items(run: Path, data: str | None, data_dir: str | None, split: str, device: str = "cpu",
                    batch_size: int = 32) -> RetrievalItems:
    """A split of the run's audio (or of ``data``) encoded for an index."""
    audio = speech_data(run, data, data_dir, split, default_split=split)
    ids = [Path(name).stem for name in audio.names]
    return encode_items(load_speech(run, device), run, list(audio.waveforms), ids, audio.labels, audio.classes,
                        speakers=audio.speakers, speaker_names=audio.speaker_names, paths=list(audio.names),
                        device=device, batch_size=batch_size)


@torch.no_grad()
def encode_items(model: SpeechVQVAE, run: Path, clips: list[torch.Tensor], ids: list[str],
                 labels: torch.Tensor | None, classes: Sequence[str] = (), *, speakers: torch.Tensor | None = None,
                 speaker_names: Sequence[str] = (), paths: list[str] | None = None, device: str = "cpu",
                 batch_size: int = 32) -> RetrievalItems:
    """Code rows, pooled continuous latents and mean log-mel frames of clips ``(T_i,)``; clips of
    similar length are batched."""
    rows: list[torch.Tensor | None] = [None] * len(clips)
    pooled = torch.zeros(len(clips), model.config.code_dim)
    order = sorted(range(len(clips)), key=lambda i: clips[i].numel())
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        lengths = torch.tensor([clips[i].numel() for i in batch])
        width = int(model.latent_length(int(lengths.max()))) * model.hop
        x = torch.stack([F.pad(clips[i], (0, width - clips[i].numel())) for i in batch])[:, None]  # (B, 1, T)
        z = model._content(x.to(device), lengths.to(device))  # (B, D, L): what encode() quantizes
        codes = model.quantizer.encode(z).cpu()  # (B, L)
        for row, i in enumerate(batch):
            n = model.latent_length(clips[i].numel())
            rows[i] = codes[row, :n]
            pooled[i] = z[row, :, :n].float().mean(dim=1).cpu()
    mel = torch.stack([log_mel(c[None].float(), model.config.sample_rate)[0].mean(dim=1) for c in clips])  # (N, M)
    width = max(r.numel() for r in rows)
    padded = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, r in enumerate(rows):
        padded[i, : r.numel()] = r
    lengths = torch.tensor([r.numel() for r in rows])
    return RetrievalItems(
        codes=CodeFile(padded, labels, lengths, {"speakers": speakers}),
        codebook=model.quantizer.codebook.detach().float().cpu().numpy(),
        continuous=pooled.numpy(),
        baseline=mel.numpy(),
        baseline_name="log_mel",
        ids=ids,
        tokenizer=tokenizer_hash(run),
        paths=paths,
        classes=tuple(classes),
        speaker_names=tuple(speaker_names),
    )


def read_query(run: Path, path: Path) -> torch.Tensor:
    """A query WAV file as float32 ``(T,)`` at the run's sample rate."""
    if path.suffix.lower() != ".wav":
        raise RetrievalError(f"query {path} is not a WAV file: the index holds codes of speech, so query it with "
                             ".wav clips")
    if not path.is_file():
        raise FileNotFoundError(f"query clip {path} does not exist")
    return read_wav(path, read_config(run)["data"]["sample_rate"])[0]


def query_items(run: Path, queries, names: Sequence[str] | None = None, device: str = "cpu") -> RetrievalItems:
    """Query clips (a list of float waveforms ``(T,)`` at the run's rate) encoded for search."""
    if isinstance(queries, torch.Tensor) and queries.dim() == 1:
        queries = [queries]
    clips = [torch.as_tensor(np.asarray(q), dtype=torch.float32) for q in queries]
    if not clips:
        raise RetrievalError("no query clips given")
    for i, clip in enumerate(clips):
        if clip.dim() != 1 or clip.numel() == 0:
            raise RetrievalError(f"query clip {i} must be a non-empty mono waveform (T,), got shape "
                                 f"{tuple(clip.shape)}: pass one 1-D tensor per clip")
    names = list(names) if names is not None else [f"query/{i}" for i in range(len(clips))]
    return encode_items(load_speech(run, device), run, clips, names, None, device=device)


def retrieval_media(run: Path, data: dict, rows: np.ndarray) -> list[tuple[str, torch.Tensor]]:
    """The indexed clips at ``rows``: ``(name, waveform)`` each."""
    audio = speech_data(run, data.get("spec"), data.get("data_dir"), data.get("split"), default_split="train")
    return [(audio.names[r], audio.waveforms[r]) for r in rows.tolist()]


def write_hits(run: Path, queries: list, hits: list[list[tuple[str, torch.Tensor]]], out: Path) -> list[Path]:
    """``out/query_NN/``: the query as ``00_query.wav``, then each hit as ``RR_NAME.wav`` in rank order."""
    rate = read_config(run)["data"]["sample_rate"]
    written = []
    for q, (query, found) in enumerate(zip(queries, hits, strict=True)):
        folder = out / f"query_{q:02d}"
        written.append(folder / "00_query.wav")
        write_wav(written[-1], torch.as_tensor(np.asarray(query), dtype=torch.float32), rate)
        for rank, (name, clip) in enumerate(found, start=1):
            written.append(folder / f"{rank:02d}_{Path(name).stem}.wav")
            write_wav(written[-1], clip, rate)
    return written

