"""Pictures of any run, written atomically as PNG: loss curves (the modalities draw their own data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from PIL import Image

from vqvae.atomic import atomic_write


def save_png(image: Image.Image, path: str | os.PathLike) -> None:
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def plot_metrics(
    metrics_file: str | os.PathLike, path: str | os.PathLike, panels: list[tuple[str, str]]
) -> None:
    """One panel per ``(metric key, title)``: training and validation values against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(metrics_file).read_text().splitlines()]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels, strict=True):
        for split, style in (("train", "-"), ("val", "o-")):
            points = [(r["step"], r[key]) for r in records
                      if r.get("split", "train") == split and r.get(key) is not None]
            if points:
                ax.plot(*zip(*points, strict=True), style, label="validation" if split == "val" else split)
        ax.set(xlabel="step", title=title)
        if key.endswith("loss"):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend()
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100))
    plt.close(fig)
