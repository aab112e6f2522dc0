"""The image sections of ``vqvae report``: reconstructions over training, samples per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vqvae.modalities.image.evaluation import Loader, decode_codes, encode_images, run_data
from vqvae.modalities.image.outputs import image_grid
from vqvae.report.draws import draw_from_priors
from vqvae.report.sections import Picture, Section, png_bytes
from vqvae.runs import CodeFile

SHOWN_STEPS = 6  # validation steps whose reconstruction grids the page shows
SAMPLES_PER_CLASS = 8


def report_sections(load: Loader, run: Path, device: str, samples_per_class: int | None,
                    seed: int) -> list[Section]:
    return [reconstruction_section(run),
            *sample_sections(load, run, device, samples_per_class or SAMPLES_PER_CLASS, seed)]


def held_out_codes(load: Loader, run: Path, n: int, device: str) -> CodeFile:
    """Codes of the first ``n`` images of the val split, as ``vqvae encode --split val`` gives them
    (only those ``n`` are encoded)."""
    data = run_data(run, split="val")
    codes = encode_images(load(run, device), data.images[:n], device=device)
    return CodeFile(codes, None if data.labels is None else data.labels[:n])


def reconstruction_section(run: Path) -> Section:
    """The grids that validation wrote to ``RUN/reconstructions/``, at up to
    :data:`SHOWN_STEPS` steps spread over training (the first and the last among them)."""
    files = sorted(Path(run, "reconstructions").glob("step_*.png"))
    section = Section("Reconstructions over training")
    if not files:
        section.note = ("Validation saved no reconstructions (a PixelCNN decoder draws them pixel by pixel): "
                        "`vqvae reconstruct RUN -o recon.png` makes some.")
        return section
    shown = sorted({int(i) for i in np.linspace(0, len(files) - 1, min(SHOWN_STEPS, len(files))).round()})
    for i in shown:
        step = int(files[i].stem.removeprefix("step_"))
        section.items.append(Picture(f"step {step}", files[i].read_bytes(), width=300))
    section.note = (f"Held-out images, each row followed by its reconstructions, at {len(shown)} of the "
                    f"{len(files)} validation steps (all are in reconstructions/).")
    return section


def sample_sections(load: Loader, run: Path, device: str, per_class: int, seed: int) -> list[Section]:
    """``per_class`` samples of each class from each trained prior, decoded by the tokenizer."""
    draws, untrained = draw_from_priors(run, per_class, seed=seed, device=device)
    if not draws:
        waiting = f" ({', '.join(untrained)} has no weights yet)" if untrained else ""
        return [Section("Samples", note=f"No trained prior{waiting}: `vqvae train-prior RUN --arch transformer` "
                                        "trains one.")]
    model = load(run, device)
    sections = []
    for draw in draws:
        images = decode_codes(model, draw.codes, device=device)
        section = Section(f"Samples from prior {draw.prior}",
                          note=f"{draw.per_class} per class, temperature 1, guidance {draw.guidance:g}, "
                               f"seed {seed}.")
        for title, rows in draw.groups():
            grid = image_grid(images[rows], ncol=min(len(rows), draw.per_class))
            section.items.append(Picture(title, png_bytes(grid), width=260))
        sections.append(section)
    if untrained:
        sections[-1].note += f" Without weights yet: {', '.join(untrained)}."
    return sections
