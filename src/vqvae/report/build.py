"""``vqvae report``: one self-contained HTML page of a run, for any modality.

The page holds the run's config, its loss and perplexity curves, codebook usage over
training and a code-usage histogram of held-out data, each prior's curves, whatever the
run's modality shows of its data (reconstructions over training, samples per class,
audio), and every evaluation JSON found in the run directory. Pictures and audio are
embedded as data URIs, so the one file can be mailed or archived on its own.

The core never asks which modality it serves: the modality arrives as a
:class:`ReportSource` (the run's :class:`~vqvae.modalities.Modality`).
"""

from __future__ import annotations

import base64
import datetime
import importlib.metadata
import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from jinja2 import Environment, PackageLoader, StrictUndefined

from vqvae.atomic import write_bytes
from vqvae.checkpoint import CONFIG_FILE
from vqvae.quantize import codebook_perplexity
from vqvae.report import figures
from vqvae.report.sections import Picture, Section, Table
from vqvae.runs import METRICS_FILE, CodeFile, prior_names, read_config

__all__ = ["REPORT_FILE", "ReportSource", "build_report", "render"]

REPORT_FILE = "report.html"
_NOT_EVALUATIONS = {"tensorboard", "codes"}  # folders of a run whose JSON files are not results
_LARGEST_JSON = 256 * 1024  # a results file is a few hundred numbers; larger JSON is data, not a table


class ReportSource(Protocol):
    """What the report needs from the run's modality."""

    def report_codes(self, run: Path, n: int, device: str) -> CodeFile:
        """Codes of up to ``n`` held-out items."""

    def report_media(self, run: Path, *, device: str, samples_per_class: int | None, seed: int) -> list[Section]:
        """The modality's own sections: reconstructions, samples per prior, audio."""


def build_report(
    run: str | os.PathLike,
    source: ReportSource,
    out: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
    held_out: int = 1000,
    samples_per_class: int | None = None,
    seed: int = 0,
) -> Path:
    """Write the report of a tokenizer run as one HTML file.

    Args:
        run: the run directory.
        source: the run's modality (see :class:`ReportSource`).
        out: the HTML file (default ``RUN/report.html``).
        device: where held-out data are encoded and samples drawn.
        held_out: held-out items encoded for the code-usage histogram.
        samples_per_class: samples per class drawn from each prior (None: the modality's default).
        seed: seed of the samples.

    Returns:
        The path written.
    """
    if held_out < 1:
        raise ValueError(f"--held-out must be at least 1 item, got {held_out}")
    run = Path(run)
    config = read_config(run)
    records, skipped = read_records(run)
    sections = [
        config_section(config),
        training_section(records, skipped),
        codebook_section(run, config, records, source, held_out, device),
    ]
    sections += prior_sections(run)
    sections += _guarded("Samples and reconstructions", lambda: source.report_media(
        run, device=device, samples_per_class=samples_per_class, seed=seed))
    sections.append(evaluation_section(run))
    path = Path(out) if out is not None else run / REPORT_FILE
    write_bytes(path, render(run, config, records, sections).encode())
    return path


def render(run: Path, config: dict, records: list[dict], sections: list[Section]) -> str:
    """The HTML page of the sections."""
    env = Environment(loader=PackageLoader("vqvae.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["data_uri"] = _data_uri
    steps = [r["step"] for r in records if isinstance(r.get("step"), int)]
    return env.get_template("report.html.j2").render(
        title=run.resolve().name,
        run=str(run),
        modality=config.get("modality", "?"),
        kind=config.get("kind", "?"),
        step=max(steps, default=0),
        version=_version(),
        generated=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        sections=[s for s in sections if s.items or s.note],
    )


# ------------------------------------------------------------------ sections of any run


def read_records(folder: Path) -> tuple[list[dict], int]:
    """The records of ``FOLDER/metrics.jsonl`` and how many lines could not be read."""
    path = folder / METRICS_FILE
    if not path.exists():
        return [], 0
    records, skipped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            record = None
        if isinstance(record, dict) and "step" in record:
            records.append(record)
        elif line.strip():
            skipped += 1
    return records, skipped


def config_section(config: dict) -> Section:
    """The run's ``config.json``: one table per entry (model, data, train)."""
    top = tuple((k, _text(v)) for k, v in config.items() if not isinstance(v, dict))
    tables = [Table("run", top)] if top else []
    tables += [Table(k, tuple(_flatten(v))) for k, v in config.items() if isinstance(v, dict)]
    return Section("Configuration", tables, "The run's config.json, from which the model is rebuilt.")


def training_section(records: list[dict], skipped: int = 0) -> Section:
    """Loss and perplexity curves, and the last validation record."""
    section = Section("Training curves")
    png = figures.curves(records, figures.curve_panels(records))
    if png is None:
        section.note = "metrics.jsonl holds no records yet: train the run first."
        return section
    section.items.append(Picture("Losses and perplexity", png, "Lines: training records; dots: validation."))
    val = [r for r in records if r.get("split") == "val"]
    if val:
        section.items.append(Table(f"last validation (step {val[-1]['step']})",
                                   tuple(_flatten({k: v for k, v in val[-1].items() if k not in ("step", "split")}))))
    if skipped:
        section.note = f"{skipped} line(s) of metrics.jsonl could not be read and are left out."
    return section


def codebook_section(run: Path, config: dict, records: list[dict], source: ReportSource, held_out: int,
                     device: str) -> Section:
    """Codes used and dead codes over training, and a histogram of held-out codes."""
    k = config.get("model", {}).get("codebook_size")
    section = Section("Codebook")
    if k is None:
        section.note = f"A {config.get('kind')} model has no codebook."
        return section
    png = figures.codes_over_time(records, k)
    if png is not None:
        section.items.append(Picture("Codes used and dead codes", png,
                                     "Training windows count the codes chosen since the previous log."))
    try:
        codes = source.report_codes(run, held_out, device)
    except (OSError, ValueError) as exc:
        section.note = f"The held-out data could not be encoded ({exc}), so there is no code-usage histogram."
        return section
    rows = codes.rows()
    flat = np.concatenate([r.flatten().numpy() for r in rows]) if rows else np.zeros(0, np.int64)
    counts = np.bincount(flat, minlength=k)[:k]
    section.items.append(Picture("Code usage on held-out data", figures.code_histogram(counts),
                                 f"{len(rows)} held-out items, {len(flat)} code positions."))
    section.items.append(Table("held-out codes", (
        ("items encoded", str(len(rows))),
        ("positions", str(len(flat))),
        ("codes used", f"{int((counts > 0).sum())} of {k}"),
        ("dead codes", str(int((counts == 0).sum()))),
        ("perplexity", f"{codebook_perplexity(torch.from_numpy(counts)):.2f}"),
    )))
    return section


def prior_sections(run: Path) -> list[Section]:
    """One section per prior: its negative log-likelihood curve, last validation and config."""
    sections = []
    for name in prior_names(run):
        folder = run / "priors" / name
        config = read_config(folder)
        records, skipped = read_records(folder)
        section = Section(f"Prior {name}", note=f"A {config.get('arch')} over the run's codes, in priors/{name}/.")
        png = figures.curves(records, [k for k in ("bits_per_code",) if any(k in r for r in records)])
        if png is not None:
            section.items.append(Picture("Negative log-likelihood", png, "bits per code; dots: validation"))
        val = [r for r in records if r.get("split") == "val"]
        if val:
            section.items.append(Table(f"last validation (step {val[-1]['step']})",
                                       tuple(_flatten({k: v for k, v in val[-1].items() if k not in ("step", "split")}))))
        section.items += [Table(k, tuple(_flatten(v))) for k, v in config.items() if k in ("model", "train")]
        if skipped:
            section.note += f" {skipped} line(s) of its metrics.jsonl could not be read."
        sections.append(section)
    return sections


def evaluation_section(run: Path) -> Section:
    """Every JSON file in the run besides configs (``vqvae evaluate --json``, say), as tables."""
    section = Section("Evaluations")
    unreadable, large = [], []
    for path in _evaluation_files(run):
        if path.stat().st_size > _LARGEST_JSON:
            large.append(path.relative_to(run).as_posix())
            continue
        try:
            value = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            unreadable.append(path.relative_to(run).as_posix())
            continue
        data = value if isinstance(value, dict) else {"value": value}
        section.items.append(Table(path.relative_to(run).as_posix(), tuple(_flatten(data))))
    if not section.items:
        section.note = ("No evaluation JSON in the run yet: `vqvae evaluate RUN --json RUN/eval.json` "
                        "writes one.")
    if unreadable:
        section.note += f" Not valid JSON, left out: {', '.join(unreadable)}."
    if large:
        section.note += f" Over {_LARGEST_JSON // 1024} KiB, too long for a table, left out: {', '.join(large)}."
    return section


def _evaluation_files(run: Path) -> list[Path]:
    return sorted(p for p in run.rglob("*.json") if p.name != CONFIG_FILE
                  and not _NOT_EVALUATIONS.intersection(p.relative_to(run).parts[:-1]))


def _guarded(title: str, make) -> list[Section]:
    """The modality's sections, or one that says why they could not be made."""
    try:
        return list(make())
    except (OSError, ValueError) as exc:
        return [Section(title, note=f"could not be made: {exc}")]


# ------------------------------------------------------------------ text


def _flatten(data: dict, prefix: str = "") -> Iterable[tuple[str, str]]:
    for key, value in data.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", _text(value)


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _version() -> str:
    try:
        return importlib.metadata.version("vqvae")
    except importlib.metadata.PackageNotFoundError:
        return "(source tree)"


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"
