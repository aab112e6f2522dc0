"""The speech sections of ``vqvae report``: held-out clips and their reconstructions, and
samples per digit from each prior, as audio players with spectrograms."""

from __future__ import annotations

import tempfile
from pathlib import Path

from torch import Tensor

from vqvae.modalities.speech import run as speech
from vqvae.modalities.speech.figures import save_spectrograms
from vqvae.modalities.speech.wav import write_wav
from vqvae.report.draws import draw_from_priors
from vqvae.report.sections import Clip, Section
from vqvae.runs import read_config

CLIPS = 3  # held-out clips reconstructed on the page
SAMPLES_PER_CLASS = 1


def report_sections(run: Path, device: str, samples_per_class: int | None, seed: int) -> list[Section]:
    return [reconstruction_section(run, device),
            *sample_sections(run, device, samples_per_class or SAMPLES_PER_CLASS, seed)]


def clip(title: str, wave: Tensor, sample_rate: int, caption: str = "") -> Clip:
    """A WAV player of ``wave`` ``(T,)`` with its spectrogram."""
    with tempfile.TemporaryDirectory() as folder:
        write_wav(Path(folder) / "clip.wav", wave, sample_rate)
        save_spectrograms([wave], [title], sample_rate, Path(folder) / "clip.png")
        return Clip(title, (Path(folder) / "clip.wav").read_bytes(), (Path(folder) / "clip.png").read_bytes(),
                    caption)


def reconstruction_section(run: Path, device: str) -> Section:
    """The first :data:`CLIPS` held-out clips, each followed by its reconstruction in the same voice."""
    model = speech.load_speech(run, device)
    audio = speech.speech_data(run)
    n = min(CLIPS, len(audio))
    originals = list(audio.waveforms[:n])
    speakers = speech.run_speakers(run, audio)
    rebuilt = speech.convert_clips(model, originals, None if speakers is None else speakers[:n], device)
    section = Section("Reconstructions", note=f"The first {n} clips of the {audio.split} split, each "
                                              "followed by its reconstruction (encode, decode in the same voice).")
    for name, original, again in zip(audio.names[:n], originals, rebuilt, strict=True):
        stem = Path(name).stem
        section.items.append(clip(f"{stem}: original", original, audio.sample_rate))
        section.items.append(clip(f"{stem}: reconstruction", again, audio.sample_rate))
    return section


def sample_sections(run: Path, device: str, per_class: int, seed: int) -> list[Section]:
    """``per_class`` samples of each digit from each trained prior, voiced by the run's speakers in turn."""
    draws, untrained = draw_from_priors(run, per_class, seed=seed, device=device)
    if not draws:
        waiting = f" ({', '.join(untrained)} has no weights yet)" if untrained else ""
        return [Section("Samples", note=f"No trained prior{waiting}: `vqvae train-prior RUN --arch transformer` "
                                        "trains one.")]
    config = read_config(run)
    rate, speakers = config["data"]["sample_rate"], config["data"]["speakers"]
    sections = []
    for draw in draws:
        waves = speech.speak(run, draw.codes, device=device)
        section = Section(f"Samples from prior {draw.prior}",
                          note=f"{draw.per_class} per class, temperature 1, guidance {draw.guidance:g}, seed {seed}.")
        for title, rows in draw.groups():
            for i in rows.tolist():
                voice = f"voice {speakers[i % len(speakers)]}" if speakers else ""
                section.items.append(clip(title, waves[i], rate, voice))
        sections.append(section)
    if untrained:
        sections[-1].note += f" Without weights yet: {', '.join(untrained)}."
    return sections

