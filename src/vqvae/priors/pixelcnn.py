"""Gated PixelCNN prior over 2-D code grids (van den Oord et al. 2016, "Conditional Image
Generation with PixelCNN Decoders"), the prior of the VQ-VAE paper (2017, §3.3).

Each gated layer has a vertical stack (the rows above, all columns) and a horizontal
stack (the current row, columns to the left). The vertical stack sees rows ≤ r; its
1x1-projected pre-activations reach the horizontal stack shifted down one row, so the
horizontal stack at (r, c) sees rows < r and, in its own row, columns < c (first layer,
mask type A) or ≤ c of the previous layer's features (later layers, type B): no blind
spot (§2.2). Activations are gated, ``tanh(a) ⊙ σ(b)``, with a per-layer class bias
added to both gates (§2.3); the horizontal stack is residual.

Letters: B batch, C channels (``width``), K codebook size, H W the latent grid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.priors.sampling import (
    check_codes,
    check_label_dropout,
    check_positive,
    code_picker,
    drop_labels,
    known_settings,
    label_table_size,
    resolve_labels,
    sampling_labels,
)


@dataclass(frozen=True)
class PixelCNNConfig:
    """Everything needed to rebuild a :class:`PixelCNNPrior`; JSON-safe via :meth:`to_dict`.

    Attributes:
        codebook_size: K, the number of codes.
        latent_shape: ``(H, W)``, the code grid.
        width: channels of both stacks.
        depth: number of gated layers (the first is mask type A).
        num_classes: classes for the class-conditional bias; None: unconditional.
        kernel_size: odd filter size of the layers after the first.
        first_kernel_size: odd filter size of the first layer (a wide first receptive field).
        head_width: channels of the hidden 1x1 convolution of the output head; None: the
            head is ReLU then one 1x1 convolution to K logits.
        label_dropout: a conditional prior's label is replaced by "no label" with this
            probability in training, which makes classifier-free guidance possible
            (``sample(..., guidance=g)``); 0 disables both.
    """

    codebook_size: int
    latent_shape: tuple[int, ...]
    width: int = 64
    depth: int = 15
    num_classes: int | None = None
    kernel_size: int = 3
    first_kernel_size: int = 7
    head_width: int | None = 512
    label_dropout: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.latent_shape, (str, bytes)) or not isinstance(
            self.latent_shape, Sequence
        ):
            raise TypeError(f"latent_shape must be a pair (H, W), got {self.latent_shape!r}")
        object.__setattr__(self, "latent_shape", tuple(self.latent_shape))
        if len(self.latent_shape) != 2:
            raise ValueError(
                f"PixelCNNPrior models 2-D code grids, got latent_shape {self.latent_shape}: "
                f"use TransformerPrior for 1-D or 3-D latents"
            )
        for name, value in [
            ("codebook_size", self.codebook_size),
            ("width", self.width),
            ("depth", self.depth),
            *(("latent_shape", s) for s in self.latent_shape),
        ]:
            check_positive(name, value)
        for name in ("num_classes", "head_width"):
            if getattr(self, name) is not None:
                check_positive(name, getattr(self, name))
        for name in ("kernel_size", "first_kernel_size"):
            value = getattr(self, name)
            check_positive(name, value)
            if value % 2 == 0 or value < 3:
                raise ValueError(f"{name} must be odd and >= 3, got {value}")
        check_label_dropout(self.label_dropout)

    @property
    def num_positions(self) -> int:
        """H·W, the number of codes per sample."""
        return self.latent_shape[0] * self.latent_shape[1]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> PixelCNNConfig:
        # Configs written before label_dropout existed were trained without it.
        return cls(**{"label_dropout": 0.0, **known_settings(cls, values)})


class GatedLayer(nn.Module):
    """One gated layer: vertical stack, horizontal stack and the link between them.

    Args:
        width: C.
        kernel_size: odd n of the n×n receptive field.
        first: mask type A (the horizontal stack excludes the current position, and is
            not residual, since its input is the current code).
        labels: rows of the conditional bias (the classes, plus "no label" when labels
            are dropped in training), or 0 for none.
    """

    def __init__(self, width: int, kernel_size: int, first: bool, labels: int) -> None:
        super().__init__()
        self.reach = k = kernel_size // 2
        self.first = first
        self.vertical = nn.Conv2d(width, 2 * width, (k + 1, kernel_size))  # rows r-k..r
        self.vertical_to_horizontal = nn.Conv2d(2 * width, 2 * width, 1)
        self.horizontal = nn.Conv2d(width, 2 * width, (1, k if first else k + 1))
        self.horizontal_out = nn.Conv2d(width, width, 1)
        self.label_bias = nn.Embedding(labels, 2 * width) if labels else None

    def vertical_stack(self, v: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        """Next vertical features and the link to the horizontal stack (not yet shifted).

        Shapes: ``(B, C, H, W) -> (B, C, H, W), (B, 2C, H, W)``
        """
        k = self.reach
        pre = self.vertical(F.pad(v, (k, k, k, 0)))  # (B, 2C, H, W), row r sees rows r-k..r
        link = self.vertical_to_horizontal(pre)
        return _gate(pre if bias is None else pre + bias), link

    def horizontal_stack(self, h: Tensor, context: Tensor | None) -> Tensor:
        """Next horizontal features given ``context``: link from the rows above plus bias.

        Shapes: ``(B, C, H, W), (B, 2C, H or 1, W or 1) -> (B, C, H, W)``
        """
        k, w = self.reach, h.shape[-1]
        pre = self.horizontal(F.pad(h, (k, 0)))[..., :w]  # (B, 2C, H, W)
        if context is not None:
            pre = pre + context
        out = self.horizontal_out(_gate(pre))
        return out if self.first else out + h

    def bias(self, labels: Tensor | None) -> Tensor | None:
        """Class bias ``(B, 2C, 1, 1)`` for both gates, or None."""
        if self.label_bias is None:
            return None
        return self.label_bias(labels)[:, :, None, None]


class PixelCNNPrior(nn.Module):
    """Autoregressive prior ``p(codes | label)`` over ``(H, W)`` code grids in raster order.

    Build it from settings, ``PixelCNNPrior(512, (8, 8), width=64, num_classes=10)``, or
    from a config, ``PixelCNNPrior(config)`` (keyword settings then override fields).

    Args:
        codebook_size: K, or a :class:`PixelCNNConfig`.
        latent_shape: ``(H, W)`` (omit when passing a config).
        **settings: the other :class:`PixelCNNConfig` fields.
    """

    def __init__(
        self,
        codebook_size: int | PixelCNNConfig,
        latent_shape: Sequence[int] | None = None,
        **settings,
    ) -> None:
        super().__init__()
        if isinstance(codebook_size, PixelCNNConfig):
            if latent_shape is not None:
                settings["latent_shape"] = latent_shape
            config = dataclasses.replace(codebook_size, **settings)
        else:
            if latent_shape is None:
                raise TypeError("PixelCNNPrior needs latent_shape=(H, W) (or a PixelCNNConfig)")
            config = PixelCNNConfig(codebook_size, latent_shape, **settings)
        self.config = c = config
        self.embedding = nn.Embedding(c.codebook_size, c.width)
        labels = label_table_size(c.num_classes, c.label_dropout) if c.num_classes else 0
        self.layers = nn.ModuleList(
            GatedLayer(c.width, c.first_kernel_size if i == 0 else c.kernel_size, i == 0, labels)
            for i in range(c.depth)
        )
        hidden = [nn.Conv2d(c.width, c.head_width, 1), nn.ReLU()] if c.head_width else []
        self.head = nn.Sequential(
            nn.ReLU(), *hidden, nn.Conv2d(c.head_width or c.width, c.codebook_size, 1)
        )
        # Rows (or columns) of input that can reach one output position: the sum of the reaches.
        self._reach = sum(layer.reach for layer in self.layers)

    @property
    def num_positions(self) -> int:
        """H·W, the number of codes per sample."""
        return self.config.num_positions

    def forward(self, codes: Tensor, label: int | Tensor | None = None, dropped: Tensor | None = None) -> Tensor:
        """Logits of every code given the codes before it in raster order (and the label).

        Args:
            codes: integer codes in ``[0, K)``.
            label: class of each sample (int or ``(B,)``) for a conditional prior, else None.
            dropped: in training, which labels to drop (bool ``(B,)``); default: drawn here
                with probability ``label_dropout``.

        Returns:
            Logits; position (r, c) depends only on ``codes[:, :r]``, ``codes[:, r, :c]``.

        Shapes:
            ``(B, H, W) -> (B, K, H, W)``
        """
        codes = check_codes(codes, self.config.codebook_size, self.config.latent_shape)
        labels = resolve_labels(label, codes.shape[0], self.config.num_classes, codes.device)
        if self.training:
            labels = drop_labels(labels, self.config.label_dropout, self.config.num_classes, dropped)
        return self.head(self._features(codes, self._biases(labels)))

    def loss(self, codes: Tensor, label: int | Tensor | None = None, dropped: Tensor | None = None) -> Tensor:
        """Mean cross-entropy in nats per code, the training objective (a scalar)."""
        return F.cross_entropy(self(codes, label, dropped), codes.long())

    def log_prob(self, codes: Tensor, label: int | Tensor | None = None) -> Tensor:
        """Total log-likelihood ``log p(codes | label)`` in nats per sample.

        Shapes: ``(B, H, W) -> (B,)``
        """
        nll = F.cross_entropy(self(codes, label), codes.long(), reduction="none")  # (B, H, W)
        return -nll.flatten(1).sum(1)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        label: int | Tensor | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        guidance: float = 1.0,
    ) -> Tensor:
        """Draw ``n`` code grids in raster order, on the prior's device, in eval mode.

        Args:
            n: number of grids.
            label: class (int or ``(n,)`` tensor) for a conditional prior, else None.
            temperature, top_k, top_p: see :func:`vqvae.priors.sampling.filter_logits`.
            generator: seeds the draws; the same seed gives the same codes.
            use_cache: True runs the vertical stack once per row and the horizontal stack
                on the current row only; False runs one full forward per position (on the
                rows up to the current one), the slow reference. Both compute the same logits.
            guidance: classifier-free guidance scale (see :mod:`vqvae.priors.sampling`);
                1.0 samples ``p(codes | label)`` itself. Other values need a prior trained
                with ``label_dropout`` > 0, and cost a second pass per sample.

        Returns:
            Codes, int64.

        Shapes:
            ``-> (n, H, W)``
        """
        device = self.embedding.weight.device
        config = self.config
        labels = sampling_labels(
            n, label, guidance=guidance, temperature=temperature, top_k=top_k, top_p=top_p,
            generator=generator, num_classes=config.num_classes,
            label_dropout=config.label_dropout, device=device,
        )  # (B,): B = n, or 2n when guided (rows n.. without their labels); or None
        pick = code_picker(guidance, temperature, top_k, top_p, generator)
        biases = self._biases(labels)
        height, width = config.latent_shape
        was_training = self.training
        self.eval()
        try:
            rows = n if labels is None else labels.shape[0]
            codes = torch.zeros(rows, height, width, dtype=torch.long, device=device)
            for r in range(height):
                contexts = self._contexts_from_above(codes, biases, r) if use_cache else None
                for c in range(width):
                    if use_cache:
                        logits = self._logits_in_row(codes, contexts, r, c)
                    else:  # rows below r cannot reach row r: run on rows [0, r] alone
                        features = self._features(codes[:, : r + 1], biases)  # (B, C, r+1, W)
                        logits = self.head(features[:, :, r : r + 1, c : c + 1]).flatten(1)
                    codes[:, r, c] = pick(logits)
        finally:
            self.train(was_training)
        return codes[:n]

    # ------------------------------------------------------------------ internals

    def _biases(self, labels: Tensor | None) -> list[Tensor | None]:
        return [layer.bias(labels) for layer in self.layers]

    def _features(self, codes: Tensor, biases: list[Tensor | None]) -> Tensor:
        """The last horizontal stack ``(B, C, H', W)`` of codes ``(B, H', W)``."""
        h = v = self.embedding(codes).permute(0, 3, 1, 2)  # (B, H', W, C) -> (B, C, H', W)
        for layer, bias in zip(self.layers, biases, strict=True):
            v, link = layer.vertical_stack(v, bias)
            context = F.pad(link, (0, 0, 1, 0))[:, :, :-1]  # shift down: row r sees rows < r
            h = layer.horizontal_stack(h, context if bias is None else context + bias)
        return h

    # Sampling with a cache. The horizontal stack at row r reads the rows above only
    # through each layer's shifted link, which stays fixed while row r is sampled:
    # compute it once per row, then run the horizontal stacks on row r alone. Inputs are
    # cropped to the rows and columns that can reach the output (self._reach of each).

    def _contexts_from_above(self, codes: Tensor, biases: list[Tensor | None], r: int) -> list:
        """Per layer, what the horizontal stack at row r gets from above: ``(B, 2C, 1, W)``."""
        if r == 0:  # no rows above: the bias alone
            return biases
        v = self.embedding(codes[:, max(0, r - 1 - self._reach) : r]).permute(0, 3, 1, 2)
        contexts = []
        for layer, bias in zip(self.layers, biases, strict=True):
            v, link = layer.vertical_stack(v, bias)  # (B, C, rows, W), (B, 2C, rows, W)
            row = link[:, :, -1:]  # the row just above r
            contexts.append(row if bias is None else row + bias)
        return contexts

    def _logits_in_row(self, codes: Tensor, contexts: list, r: int, c: int) -> Tensor:
        """Logits ``(B, K)`` at (r, c) from row r's codes left of c and the contexts."""
        start = max(0, c - self._reach)
        h = self.embedding(codes[:, r : r + 1, start : c + 1]).permute(0, 3, 1, 2)  # (B, C, 1, c')
        for layer, context in zip(self.layers, contexts, strict=True):
            if context is not None and context.shape[-1] > 1:
                context = context[..., start : c + 1]
            h = layer.horizontal_stack(h, context)
        return self.head(h[..., -1:]).flatten(1)  # (B, K, 1, 1) -> (B, K)


def _gate(x: Tensor) -> Tensor:
    """``tanh(a) ⊙ σ(b)`` with ``a, b`` the two channel halves: ``(B, 2C, ...) -> (B, C, ...)``."""
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)
