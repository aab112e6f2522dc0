"""A small classifier trained on real images, to judge generated ones.

Two sample-quality numbers come from it: the label accuracy of class-conditional samples,
and :func:`~vqvae.judges.frechet_distance` between its penultimate-layer features of
samples and of held-out real images (the Fréchet Inception Distance of Heusel et al. 2017,
with this classifier in place of Inception, so it is *not* called FID and is only
comparable between runs that share one classifier).

The classifier is trained once per tokenizer run and cached in a folder of its own
(``config.json`` + ``model.safetensors``, see :func:`cached_classifier`). Training,
prediction and the cache are the shared ones of :mod:`vqvae.judges`; this module brings
the network, its input (uint8 images to floats in ``[0, 1]``) and the augmentation.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.checkpoint import load_judge, save_judge
from vqvae.judges import (
    cached_judge,
    check_labels,
    fingerprint,
    fraction_correct,
    frechet_distance,
    predict_batches,
    train_judge,
)

__all__ = [
    "ImageClassifier",
    "accuracy",
    "cached_classifier",
    "frechet_distance",
    "load_classifier",
    "predict",
    "save_classifier",
    "train_classifier",
]

KIND = "classifier"
MAX_SHIFT = 2  # pixels of random translation during training


# ------------------------------------------------------------------------- model


class ImageClassifier(nn.Module):
    """Small CNN for ``(B, C, H, W)`` floats in ``[0, 1]``.

    Three blocks of 3×3 convolution → BatchNorm → ReLU → 2×2 max-pool (``width``,
    ``2 width``, ``4 width`` channels), a global average pool, a fully-connected
    penultimate layer of ``feature_dim`` units with ReLU (:meth:`features`), then a
    linear layer to the class logits.

    Args:
        in_channels: C of the images (1 grey, 3 colour).
        num_classes: number of labels.
        image_size: ``(H, W)`` of the images it will see; the network itself works at
            any size, but save/load and :func:`predict` check it.
        width: channels of the first block.
        feature_dim: width of the penultimate layer.

    Attributes:
        config: the arguments above as a JSON-able dict; ``ImageClassifier(**config)``
            rebuilds the network.
        train_settings: how it was trained (filled by :func:`train_classifier`, kept by
            save/load); ``{}`` for an untrained model.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        width: int = 32,
        feature_dim: int = 128,
    ) -> None:
        super().__init__()
        image_size = tuple(int(s) for s in image_size)
        if len(image_size) != 2 or min(image_size) < 1:
            raise ValueError(f"image_size must be (H, W) with H, W >= 1, got {image_size}")
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes),
                            ("width", width), ("feature_dim", feature_dim)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if num_classes < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got num_classes={num_classes}")
        self.config = {
            "in_channels": int(in_channels),
            "num_classes": int(num_classes),
            "image_size": list(image_size),
            "width": int(width),
            "feature_dim": int(feature_dim),
        }
        self.train_settings: dict = {}
        channels = [in_channels, width, 2 * width, 4 * width]
        blocks = []
        for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
            blocks += [
                nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
                # ceil_mode keeps a 1-pixel map alive, so tiny images pass all three pools
                nn.MaxPool2d(2, ceil_mode=True),
            ]
        self.body = nn.Sequential(*blocks)
        self.penultimate = nn.Linear(channels[-1], feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(self.config["image_size"])

    def features(self, x: Tensor) -> Tensor:
        """Penultimate-layer activations: ``(B, C, H, W)`` → ``(B, feature_dim)``."""
        h = self.body(x)  # (B, 4 width, H / 8, W / 8)
        h = h.mean(dim=(2, 3))  # (B, 4 width)
        return F.relu(self.penultimate(h))  # (B, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits: ``(B, C, H, W)`` → ``(B, num_classes)``."""
        return self.head(self.features(x))


def _check_images(images: Tensor, model: ImageClassifier | None = None) -> None:
    if not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images)
        raise TypeError(f"images must be a uint8 tensor (N, C, H, W), got {got}")
    if images.shape[0] == 0:
        raise ValueError("no images: the set is empty")
    if model is not None:
        expected = (model.config["in_channels"], *model.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images are (C, H, W) = {tuple(images.shape[1:])} but the classifier was "
                f"built for {expected}: use a classifier trained on this data"
            )


def _to_float(images: Tensor, device: str | torch.device) -> Tensor:
    return images.to(device).float().div_(255.0)


# ---------------------------------------------------------------------- training


def _shift(x: Tensor, generator: torch.Generator) -> Tensor:
    """Translate each image by up to ``MAX_SHIFT`` pixels in each direction (zero fill)."""
    B, _, H, W = x.shape
    s = MAX_SHIFT
    padded = F.pad(x, (s, s, s, s))  # (B, C, H + 2s, W + 2s)
    dy, dx = torch.randint(0, 2 * s + 1, (2, B, 1), generator=generator)  # (B, 1) each
    rows = (dy + torch.arange(H)).to(x.device)  # (B, H)
    cols = (dx + torch.arange(W)).to(x.device)  # (B, W)
    batch = torch.arange(B, device=x.device)[:, None, None]  # (B, 1, 1)
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()  # (B, C, H, W)


def _batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless mini-batches of indices: a fresh permutation per epoch, remainder dropped."""
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def _fingerprint(images: Tensor, labels: Tensor) -> str:
    """SHA-256 of the training set; the same bytes as before :mod:`vqvae.judges` existed,
    so classifiers cached in older run directories still match."""
    shapes = str((tuple(images.shape), tuple(labels.shape)))
    return fingerprint([shapes, images, labels])


def train_classifier(
    images: Tensor,
    labels: Tensor,
    num_classes: int,
    *,
    steps: int = 1500,
    batch_size: int = 128,
    lr: float = 1e-3,
    seed: int = 0,
    time_budget: float | None = None,
    device: str | torch.device = "cpu",
    width: int = 32,
    feature_dim: int = 128,
) -> ImageClassifier:
    """Train an :class:`ImageClassifier` on real images with Adam and a cosine learning rate.

    Each step draws a batch (a fresh permutation per epoch), shifts every image by up to
    2 pixels, and takes one cross-entropy step (:func:`vqvae.judges.train_judge`). On the
    CPU, with a fixed number of threads, the result depends only on the arguments
    (``seed`` fixes the initial weights, batches and shifts; the global RNG is left
    untouched) unless ``time_budget`` stops training early.

    Args:
        images: uint8 ``(N, C, H, W)`` training images.
        labels: int64 ``(N,)`` labels in ``[0, num_classes)``.
        num_classes: number of classes.
        steps: optimizer steps (the learning rate decays to 0 over them).
        batch_size: images per step (at most N).
        lr: peak Adam learning rate.
        seed: seed of everything random in training.
        time_budget: stop after this many seconds even if fewer than ``steps`` ran.
        device: where to train; the model is returned there.
        width, feature_dim: network size, see :class:`ImageClassifier`.

    Returns:
        The classifier in eval mode, with ``train_settings`` recording the arguments,
        the steps actually run, the seconds taken and a fingerprint of the data.
    """
    _check_images(images)
    check_labels(labels, images.shape[0], num_classes, per="image")

    def build() -> ImageClassifier:
        model = ImageClassifier(images.shape[1], num_classes, tuple(images.shape[2:]),
                                width=width, feature_dim=feature_dim)
        # channels-last roughly halves the cost of these small convolutions on the CPU
        return model.to(memory_format=torch.channels_last)

    def inputs(index: Tensor, generator: torch.Generator) -> tuple[Tensor]:
        x = _shift(_to_float(images[index], device), generator)  # (B, C, H, W)
        return (x.contiguous(memory_format=torch.channels_last),)

    model = train_judge(
        build,
        labels,
        lambda size, generator: _batches(images.shape[0], size, generator),
        inputs,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        time_budget=time_budget,
        device=device,
        record={
            "train_images": int(images.shape[0]),
            "data_sha256": _fingerprint(images, labels),
        },
    )
    # back to the default layout, so a reloaded copy computes exactly the same features
    return model.to(memory_format=torch.contiguous_format)


# --------------------------------------------------------------------- inference


def predict(
    model: ImageClassifier,
    images: Tensor,
    batch_size: int = 512,
    device: str | torch.device = "cpu",
) -> tuple[Tensor, Tensor]:
    """Predicted labels and penultimate features of uint8 ``images`` ``(N, C, H, W)``.

    The model is put in eval mode and must already be on ``device``.

    Returns:
        ``(labels int64 (N,), features float64 (N, feature_dim))`` on the CPU.
    """
    _check_images(images, model)

    def labels_and_features(m: ImageClassifier, x: Tensor) -> tuple[Tensor, Tensor]:
        f = m.features(x)  # (B, F)
        return m.head(f).argmax(dim=1), f.double()

    return predict_batches(
        model,
        torch.arange(images.shape[0]),
        batch_size,
        lambda index: (_to_float(images[index], device),),
        labels_and_features,
    )


def accuracy(model: ImageClassifier, images: Tensor, labels: Tensor, **predict_kwargs) -> float:
    """Fraction of ``images`` whose predicted label equals ``labels`` (int64 ``(N,)``)."""
    if tuple(labels.shape) != (images.shape[0],):
        raise ValueError(
            f"need one label per image: {images.shape[0]} images, labels {tuple(labels.shape)}"
        )
    predicted, _ = predict(model, images, **predict_kwargs)
    return fraction_correct(predicted, labels)


# -------------------------------------------------------------------- save / load


def save_classifier(
    model: ImageClassifier, folder: str | os.PathLike, *, val_accuracy: float | None = None
) -> None:
    """Write ``config.json`` and ``model.safetensors`` to ``folder``, each atomically.

    Give the classifier a folder of its own (e.g. ``RUN/classifier``): a tokenizer run
    directory's ``config.json`` is the tokenizer's.
    """
    save_judge(folder, KIND, model, val_accuracy)


def load_classifier(folder: str | os.PathLike, device: str | torch.device = "cpu") -> ImageClassifier:
    """Rebuild a classifier saved by :func:`save_classifier`, in eval mode on ``device``."""
    return load_judge(folder, KIND, ImageClassifier, device)


def cached_classifier(
    folder: str | os.PathLike,
    train_images: Tensor,
    train_labels: Tensor,
    num_classes: int,
    val_images: Tensor | None = None,
    val_labels: Tensor | None = None,
    **train_kwargs,
) -> tuple[ImageClassifier, dict]:
    """The classifier saved in ``folder`` if it fits this data, else a freshly trained one.

    A saved classifier is reused when its image shape, class count (and ``width`` /
    ``feature_dim`` when given) and the fingerprint of its training set match; otherwise
    one is trained with :func:`train_classifier` (``train_kwargs`` go there), scored on
    the validation images if given, and saved to ``folder``, replacing the old one.
    A corrupt saved classifier raises :class:`~vqvae.checkpoint.CheckpointError`.

    Returns:
        ``(model, info)``, ``info = {"val_accuracy": float | None, "trained": bool}``;
        ``val_accuracy`` is measured now when validation images are given, else the
        saved value.
    """
    _check_images(train_images)
    if (val_images is None) != (val_labels is None):
        raise ValueError("give both val_images and val_labels, or neither")
    wanted = {
        "in_channels": int(train_images.shape[1]),
        "num_classes": int(num_classes),
        "image_size": list(train_images.shape[2:]),
    }
    for key in ("width", "feature_dim"):
        if key in train_kwargs:
            wanted[key] = int(train_kwargs[key])
    device = train_kwargs.get("device", "cpu")
    return cached_judge(
        folder,
        KIND,
        ImageClassifier,
        wanted,
        _fingerprint(train_images, train_labels),
        lambda: train_classifier(train_images, train_labels, num_classes, **train_kwargs),
        None if val_images is None else (
            lambda model: accuracy(model, val_images, val_labels, device=device)
        ),
        device,
    )
