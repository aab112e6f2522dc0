"""Images as items of an index (``vqvae index``, ``vqvae search``): encoding, query files, contact sheets.

The retrieval core (:mod:`vqvae.retrieval`) reads only what :func:`retrieval_items` gives
it: the code grids ``(N, H', W')``, the encoder's output before quantization averaged over
the grid, the raw pixels for the baseline, labels and ids (``split/position``; the image
loaders keep no file names, so there are no paths).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import nn

from vqvae.figures import save_png
from vqvae.modalities.image.data.folder import IMAGE_EXTENSIONS
from vqvae.modalities.image.data.transforms import resize_and_crop
from vqvae.modalities.image.evaluation import Loader, run_data
from vqvae.modalities.image.outputs import image_grid
from vqvae.retrieval.items import RetrievalError, RetrievalItems, tokenizer_hash
from vqvae.runs import CodeFile, read_config

__all__ = ["encode_items", "query_items", "read_query", "retrieval_items", "retrieval_media", "write_contact_sheet"]


def retrieval_items(load: Loader, run: Path, data: str | None, data_dir: str | None, split: str,
                    device: str = "cpu", batch_size: int = 256) -> RetrievalItems:
    """A split of the run's data (or of ``data``) encoded for an index."""
    _check_vqvae(run)
    images = run_data(run, data, data_dir, split, default_split=split)
    ids = [f"{images.split}/{i}" for i in range(len(images))]
    return encode_items(load(run, device), run, images.images, ids, images.labels, images.classes,
                        device=device, batch_size=batch_size)


@torch.no_grad()
def encode_items(model: nn.Module, run: Path, images: torch.Tensor, ids: list[str], labels: torch.Tensor | None,
                 classes: Sequence[str] = (), *, device: str = "cpu", batch_size: int = 256) -> RetrievalItems:
    """Codes, pooled continuous latents and pixels of uint8 images ``(N, C, H, W)``, a batch at a time
    (fp32: the exact codes, as the code caches hold)."""
    codes, pooled = [], []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device).float().div_(255)  # (B, C, H, W)
        z = model.encoder(x - 0.5)  # (B, D, H', W'), as VQVAE.encode centres the data
        codes.append(model.quantizer.encode(z).cpu())
        pooled.append(z.mean(dim=(2, 3)).float().cpu())
    return RetrievalItems(
        codes=CodeFile(torch.cat(codes), labels),
        codebook=model.quantizer.codebook.detach().float().cpu().numpy(),
        continuous=torch.cat(pooled).numpy(),
        baseline=images.reshape(len(images), -1).numpy(),
        baseline_name="pixels",
        ids=ids,
        tokenizer=tokenizer_hash(run),
        classes=tuple(classes),
    )


def read_query(run: Path, path: Path) -> torch.Tensor:
    """A query image file as uint8 ``(C, H, W)``, in the run's colours and size."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise RetrievalError(f"query {path} is not an image file ({', '.join(sorted(IMAGE_EXTENSIONS))}): "
                             f"the index holds codes of images, so query it with images")
    if not path.is_file():
        raise FileNotFoundError(f"query image {path} does not exist")
    data = read_config(run)["data"]
    channels, height, width = data["shape"]
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image).convert("L" if channels == 1 else "RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise RetrievalError(f"cannot read query image {path} ({exc}): pass a PNG or JPEG file") from exc
    if data.get("image_size"):
        image = resize_and_crop(image, data["image_size"])  # as the indexed data were
    pixels = np.asarray(image)
    if pixels.shape[:2] != (height, width):
        raise RetrievalError(f"query image {path} is {pixels.shape[1]}x{pixels.shape[0]}, but the index holds "
                             f"{width}x{height} images: resize it to {width}x{height}")
    return torch.from_numpy(pixels[None] if channels == 1 else pixels.transpose(2, 0, 1).copy())


def query_items(load: Loader, run: Path, queries, names: Sequence[str] | None = None,
                device: str = "cpu") -> RetrievalItems:
    """Query images (uint8 ``(B, C, H, W)``, floats in [0, 1], or a list of ``(C, H, W)``) encoded for search."""
    images = _as_batch(queries, tuple(read_config(run)["data"]["shape"]))
    names = list(names) if names is not None else [f"query/{i}" for i in range(len(images))]
    return encode_items(load(run, device), run, images, names, None, device=device)


def retrieval_media(run: Path, data: dict, rows: np.ndarray) -> list[torch.Tensor]:
    """The indexed images at ``rows``, uint8 ``(C, H, W)`` each."""
    images = run_data(run, data.get("spec"), data.get("data_dir"), data.get("split"), default_split="train")
    return list(images.images[torch.as_tensor(rows, dtype=torch.long)])


def write_contact_sheet(queries: list[torch.Tensor], hits: list[list[torch.Tensor]], out: Path) -> list[Path]:
    """``out/contact_sheet.png``: one row per query, the query first, then its hits in rank order."""
    if not queries:
        return []
    width = 1 + max((len(h) for h in hits), default=0)
    blank = torch.full_like(queries[0], 255)
    cells = [cell for query, found in zip(queries, hits, strict=True)
             for cell in [query, *found, *[blank] * (width - 1 - len(found))]]
    path = out / "contact_sheet.png"
    save_png(image_grid(torch.stack(cells).numpy(), ncol=width), path)
    return [path]


def _as_batch(queries, shape: tuple[int, int, int]) -> torch.Tensor:
    if isinstance(queries, (list, tuple)):
        if not queries:
            raise RetrievalError("no query images given")
        queries = torch.stack([torch.as_tensor(np.asarray(q)) for q in queries])
    x = torch.as_tensor(np.asarray(queries)) if not isinstance(queries, torch.Tensor) else queries
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or tuple(x.shape[1:]) != shape:
        raise RetrievalError(f"query images must be (B, {', '.join(map(str, shape))}) like the indexed images, "
                             f"got shape {tuple(x.shape)}: resize them to {shape[2]}x{shape[1]} with {shape[0]} "
                             "channel(s)")
    if x.is_floating_point():
        x = (x.clamp(0, 1) * 255).round().to(torch.uint8)  # the pixels the data loaders would give
    elif x.dtype != torch.uint8:
        raise RetrievalError(f"query images must be uint8 or floats in [0, 1], got {x.dtype}")
    return x.cpu()


def _check_vqvae(run: Path) -> None:
    kind = read_config(run)["kind"]
    if kind != "vqvae":
        raise RetrievalError(f"{run} is a {kind} run: an index needs the discrete codes of a VQ-VAE tokenizer")

