"""The report's charts, drawn with matplotlib's object API (no global pyplot state) as PNG bytes."""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure

__all__ = ["code_histogram", "codes_over_time", "curve_panels", "curves"]

_RATES = ("perplexity", "kl", "bits_per_code")  # shown beside the losses when a run logs them


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def _points(records: Sequence[dict], key: str, split: str) -> list[tuple[int, float]]:
    return [(r["step"], float(r[key])) for r in records if r.get("split", "train") == split
            and isinstance(r.get(key), int | float) and not isinstance(r.get(key), bool)
            and math.isfinite(r[key])]


def curve_panels(records: Sequence[dict]) -> list[str]:
    """The metric keys worth a panel: every loss a run logs, then its perplexity, KL or bits per code."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    losses = [k for k in keys if k == "loss" or k.endswith("_loss")]
    losses.sort(key=lambda k: (k != "loss", k != "reconstruction_loss"))
    return [k for k in [*losses, *(k for k in _RATES if k in keys)]
            if _points(records, k, "train") or _points(records, k, "val")]


def curves(records: Sequence[dict], keys: Sequence[str], columns: int = 3) -> bytes | None:
    """One panel per metric key: training and validation values against steps (losses on a log
    scale); None when no key has a value."""
    keys = [k for k in keys if _points(records, k, "train") or _points(records, k, "val")]
    if not keys:
        return None
    columns = min(columns, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig = Figure(figsize=(4.6 * columns, 3.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, key in zip(axes, keys, strict=False):
        for split, style, label in (("train", "-", "train"), ("val", "o-", "validation")):
            points = _points(records, key, split)
            if points:
                ax.plot(*zip(*points, strict=True), style, label=label, markersize=4)
        values = [v for split in ("train", "val") for _, v in _points(records, key, split)]
        if key.endswith("loss") and min(values) > 0 and max(values) > 20 * min(values):
            ax.set_yscale("log")  # only where a loss falls over decades; else the ticks say little
        ax.set(xlabel="step", title=key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    return _png(fig)


def codes_over_time(records: Sequence[dict], codebook_size: int | None) -> bytes | None:
    """Codes used and dead codes against steps (training windows and validation); None when
    the run logs neither."""
    series = [(key, split) for key in ("codes_used", "dead_codes") for split in ("train", "val")
              if _points(records, key, split)]
    if not series:
        return None
    fig = Figure(figsize=(7.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for key, split in series:
        label = f"{key.replace('_', ' ')} ({'validation' if split == 'val' else 'training window'})"
        ax.plot(*zip(*_points(records, key, split), strict=True), "o-" if split == "val" else "-",
                label=label, markersize=4)
    if codebook_size:
        ax.axhline(codebook_size, color="grey", linestyle=":", label=f"K = {codebook_size}")
    ax.set(xlabel="step", ylabel="codes", title="Codebook usage over training")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _png(fig)


def code_histogram(counts: np.ndarray) -> bytes:
    """How often each of the K codes was chosen: by code index, and sorted (dead codes at the
    right end of the sorted panel)."""
    k = len(counts)
    frequency = counts / max(1, counts.sum())
    fig = Figure(figsize=(11, 3.4), layout="constrained")
    by_index, ranked = fig.subplots(1, 2)
    by_index.bar(np.arange(k), frequency, width=1.0, color="tab:blue")
    by_index.set(xlabel="code index", ylabel="fraction of positions", title="Usage per code", xlim=(-0.5, k - 0.5))
    order = np.sort(frequency)[::-1]
    ranked.bar(np.arange(k), order, width=1.0, color="tab:orange")
    ranked.axhline(1 / k, color="grey", linestyle=":", label="uniform 1/K")
    ranked.set(xlabel="rank", ylabel="fraction of positions", title="Codes by usage", xlim=(-0.5, k - 0.5))
    if order[0] > 0:
        ranked.set_yscale("log")
        ranked.set_ylim(bottom=min(order[order > 0].min(), 1 / k) / 2)
    ranked.legend(fontsize="small")
    for ax in (by_index, ranked):
        ax.grid(alpha=0.3, axis="y")
    return _png(fig)
