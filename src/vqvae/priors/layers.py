"""The layers of the Transformer prior: pre-LayerNorm blocks of causal self-attention
and an MLP, each usable on a whole sequence, on one position at a time with a KV cache,
or on a prefix that fills the cache in one pass; and per-axis position embeddings.

Letters: B batch, T positions, C channels (``width``), hs = C / heads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MLP_RATIO = 4


class KVCache:
    """Keys and values of every layer for ``length`` positions, preallocated, filled in order.

    Shapes:
        ``keys[l]``, ``values[l]``: ``(B, heads, length, head_dim)``
    """

    def __init__(
        self,
        depth: int,
        batch: int,
        heads: int,
        length: int,
        head_dim: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        store = torch.empty(depth, 2, batch, heads, length, head_dim, device=device, dtype=dtype)
        self.keys = list(store[:, 0])
        self.values = list(store[:, 1])


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position i attends to positions ≤ i."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        B, T, C = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.heads, C // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, heads, T, C / heads)
        return q, k, v

    def _merge(self, y: Tensor) -> Tensor:
        B, _, T, _ = y.shape
        return self.out(y.transpose(1, 2).reshape(B, T, -1))  # (B, heads, T, hs) -> (B, T, C)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C) -> (B, T, C)``."""
        q, k, v = self._split(x)
        p = self.dropout if self.training else 0.0
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=p))

    def step(self, x: Tensor, keys: Tensor, values: Tensor, t: int) -> Tensor:
        """Position ``t`` alone: store its key and value, attend over positions ``≤ t``.

        Shapes: ``(B, 1, C) -> (B, 1, C)``; ``keys``, ``values``: ``(B, heads, T_max, hs)``
        """
        q, k, v = self._split(x)  # each (B, heads, 1, hs)
        keys[:, :, t : t + 1] = k
        values[:, :, t : t + 1] = v
        y = F.scaled_dot_product_attention(q, keys[:, :, : t + 1], values[:, :, : t + 1])
        return self._merge(y)

    def prefill(self, x: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """Positions ``0..L-1`` at once, causally, storing their keys and values.

        Shapes: ``(B, L, C) -> (B, L, C)``; ``keys``, ``values``: ``(B, heads, T_max, hs)``
        """
        q, k, v = self._split(x)  # each (B, heads, L, hs)
        keys[:, :, : x.shape[1]] = k
        values[:, :, : x.shape[1]] = v
        return self._merge(F.scaled_dot_product_attention(q, k, v, is_causal=True))


class Block(nn.Module):
    """Pre-LayerNorm Transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads, dropout)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, MLP_RATIO * width),
            nn.GELU(),
            nn.Linear(MLP_RATIO * width, width),
            nn.Dropout(dropout),
        )
        self.residual_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """``(B, T, C) -> (B, T, C)``."""
        x = x + self.residual_dropout(self.attention(self.attention_norm(x)))
        return x + self.mlp(self.mlp_norm(x))

    def step(self, x: Tensor, keys: Tensor, values: Tensor, t: int) -> Tensor:
        """One position with the KV cache: ``(B, 1, C) -> (B, 1, C)``."""
        x = x + self.attention.step(self.attention_norm(x), keys, values, t)
        return x + self.mlp(self.mlp_norm(x))

    def prefill(self, x: Tensor, keys: Tensor, values: Tensor) -> Tensor:
        """The first L positions with the KV cache: ``(B, L, C) -> (B, L, C)``."""
        x = x + self.attention.prefill(self.attention_norm(x), keys, values)
        return x + self.mlp(self.mlp_norm(x))


class AxisPositions(nn.Module):
    """Learned position embeddings, one table per latent axis, summed.

    Shapes: ``-> (T, C)`` for the flattened grid.
    """

    def __init__(self, latent_shape: tuple[int, ...], width: int) -> None:
        super().__init__()
        self.axes = nn.ModuleList(nn.Embedding(size, width) for size in latent_shape)
        grid = torch.stack(torch.meshgrid(*(torch.arange(s) for s in latent_shape), indexing="ij"))
        self.register_buffer("index", grid.flatten(1), persistent=False)  # (axes, T), raster order

    def forward(self) -> Tensor:
        return sum(axis(index) for axis, index in zip(self.axes, self.index, strict=True))
