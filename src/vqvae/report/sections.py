"""What a run report is made of: sections of pictures, audio clips and tables.

These are plain values, so a modality can build its own sections (reconstructions,
samples, audio) without knowing how the page is laid out.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import Image

__all__ = ["Clip", "Picture", "Section", "Table", "png_bytes"]


@dataclass(frozen=True)
class Picture:
    """A PNG image with a title and an optional caption, shown at most ``width`` CSS pixels
    wide (None: the page's width)."""

    title: str
    png: bytes
    caption: str = ""
    width: int | None = None
    kind: str = field(default="picture", init=False)


@dataclass(frozen=True)
class Clip:
    """An audio player for a WAV file, with an optional spectrogram PNG under it."""

    title: str
    wav: bytes
    spectrogram: bytes | None = None
    caption: str = ""
    kind: str = field(default="clip", init=False)


@dataclass(frozen=True)
class Table:
    """Rows of ``(name, value)`` text."""

    title: str
    rows: tuple[tuple[str, str], ...]
    kind: str = field(default="table", init=False)


@dataclass
class Section:
    """One titled part of the page; ``note`` says in words what the items show or why
    something is missing."""

    title: str
    items: list[Picture | Clip | Table] = field(default_factory=list)
    note: str = ""

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


def png_bytes(image: Image.Image) -> bytes:
    """A PIL image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
