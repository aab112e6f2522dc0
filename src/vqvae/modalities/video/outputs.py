"""What video runs write: animations (GIF, or MP4 with imageio-ffmpeg), PNG film strips and
``.npy`` frames; every file atomically.

Frames here are uint8 ``(T, C, H, W)`` (one clip) or ``(N, T, C, H, W)``, with C = 1 (grey)
or 3 (RGB). Tensors from a model (floats in [0, 1], channels first then time:
``(N, C, T, H, W)``) become that layout through :func:`to_frames`.
"""

from __future__ import annotations

import importlib.util
import io
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqvae.atomic import atomic_write, write_bytes
from vqvae.figures import save_png

FORMATS = ("gif", "mp4")
PAD = 2  # pixels between frames, and around predicted ones (in red)
SCALE = 2  # 64x64 frames are hard to see at their own size
PREDICTED = (220, 40, 40)  # the border colour of predicted frames in film strips


def to_frames(clips: torch.Tensor) -> np.ndarray:
    """Floats in [0, 1] ``(N, C, T, H, W)`` → uint8 ``(N, T, C, H, W)``."""
    x = clips.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu()
    return x.permute(0, 2, 1, 3, 4).numpy()  # (N, C, T, H, W) -> (N, T, C, H, W)


def _rgb(frames: np.ndarray) -> np.ndarray:
    """uint8 ``(T, C, H, W)`` with C 1 or 3 → ``(T, H, W, 3)``."""
    if frames.ndim != 4 or frames.shape[1] not in (1, 3):
        raise ValueError(f"frames must be uint8 (T, C, H, W) with 1 or 3 channels, got shape {frames.shape}")
    frames = frames.transpose(0, 2, 3, 1)  # (T, H, W, C)
    return np.repeat(frames, 3, axis=3) if frames.shape[3] == 1 else frames


def side_by_side(*clips: np.ndarray) -> np.ndarray:
    """Clips ``(T, C, H, W)`` of equal length placed left to right, a white gap between:
    ``(T, H, W', 3)`` RGB."""
    parts = []
    for i, clip in enumerate(clips):
        if i:
            parts.append(np.full((*clip.shape[:1], clip.shape[2], PAD, 3), 255, np.uint8))
        parts.append(_rgb(clip))
    return np.concatenate(parts, axis=2)


def check_format(fmt: str) -> None:
    """Raise ``ValueError`` unless animations of format ``fmt`` can be written here (MP4
    needs imageio's FFmpeg backend, an optional package)."""
    if fmt not in FORMATS:
        raise ValueError(f"video format must be one of {FORMATS}, got {fmt!r}")
    if importlib.util.find_spec("imageio") is None:
        raise ValueError("writing GIF or MP4 files needs imageio: pip install imageio")
    if fmt == "mp4" and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise ValueError("writing MP4 needs imageio's FFmpeg backend: pip install imageio-ffmpeg, or use --format gif")


def write_animation(path: str | os.PathLike, frames: np.ndarray, fps: float, fmt: str = "gif") -> Path:
    """Write RGB frames ``(T, H, W, 3)`` at ``fps``, enlarged ``SCALE`` times, as ``path``
    (GIF, or MP4 through imageio's FFmpeg backend), atomically."""
    check_format(fmt)
    import imageio.v3 as iio

    big = frames.repeat(SCALE, axis=1).repeat(SCALE, axis=2)
    if fmt == "gif":
        write_bytes(path, iio.imwrite("<bytes>", big, extension=".gif", duration=round(1000 / fps), loop=0))
    else:  # the encoder writes a named file: the temporary one, renamed when complete
        atomic_write(path, lambda tmp: iio.imwrite(tmp, big, extension=".mp4", fps=fps))
    return Path(path)


def film_strip(rows: list[np.ndarray], first_predicted: int | None = None) -> Image.Image:
    """One picture of clips, one clip ``(T, C, H, W)`` per row, frames left to right; frames
    from ``first_predicted`` on get a red border (in rows that hold predictions: odd rows
    when rows alternate truth and prediction, see :func:`save_film_strip`)."""
    if not rows:
        raise ValueError("a film strip needs at least one clip")
    t = max(len(r) for r in rows)
    h, w = rows[0].shape[2:]
    sheet = np.full((len(rows) * (h + PAD) + PAD, t * (w + PAD) + PAD, 3), 255, np.uint8)
    for r, clip in enumerate(rows):
        frames = _rgb(clip)
        y = PAD + r * (h + PAD)
        for i, frame in enumerate(frames):
            x = PAD + i * (w + PAD)
            if first_predicted is not None and i >= first_predicted and r % 2 == 1:
                sheet[y - PAD : y + h + PAD, x - PAD : x + w + PAD] = PREDICTED
            sheet[y : y + h, x : x + w] = frame
    image = Image.fromarray(sheet)
    return image.resize((image.width * SCALE, image.height * SCALE), Image.NEAREST)


def save_film_strip(path: str | os.PathLike, rows: list[np.ndarray], first_predicted: int | None = None) -> Path:
    """:func:`film_strip` as a PNG, atomically."""
    save_png(film_strip(rows, first_predicted), path)
    return Path(path)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """One array as ``.npy`` (read back with ``allow_pickle=False``), atomically."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    write_bytes(path, buffer.getvalue())
    return Path(path)


def write_clips(frames: np.ndarray, out: str | os.PathLike, fps: float, fmt: str = "gif",
                strip: int = 8) -> Path:
    """One animation per clip (``000000.gif``, ...) of uint8 ``(N, T, C, H, W)`` in ``out``, and
    ``grid.png``: a film strip of the first ``strip`` clips. Returns the strip's path."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(frames):
        write_animation(out / f"{i:06d}.{fmt}", _rgb(clip), fps, fmt)
    return save_film_strip(out / "grid.png", list(frames[:strip]))


def write_pairs(truth: np.ndarray, other: np.ndarray, out: str | os.PathLike, fps: float, *,
                fmt: str = "gif", first_predicted: int | None = None, strip: int = 8,
                name: str = "strip.png") -> Path:
    """Truth beside another version (reconstruction, prediction) of each clip: one animation
    per clip, ``truth | other``, and a film strip of the first ``strip`` pairs (truth row above
    the other). ``truth``, ``other``: uint8 ``(N, T, C, H, W)``. Returns the strip's path."""
    if truth.shape != other.shape:
        raise ValueError(f"truth {truth.shape} and its counterpart {other.shape} differ in shape")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(zip(truth, other, strict=True)):
        write_animation(out / f"{i:06d}.{fmt}", side_by_side(a, b), fps, fmt)
    rows = [clip for pair in zip(truth[:strip], other[:strip], strict=True) for clip in pair]
    return save_film_strip(out / name, rows, first_predicted)

