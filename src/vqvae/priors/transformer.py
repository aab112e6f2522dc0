"""GPT-style decoder-only Transformer prior over code grids of any rank, with a KV cache.

The grid is flattened in raster order into T = prod(latent_shape) positions. The input
at position 0 is a start token (the label's embedding for a class-conditional prior, a
learned BOS vector otherwise) and at position i > 0 the embedding of code i-1; the
output at position i gives the logits of code i. Every input also gets the position of
the code it predicts, as a sum of learned per-axis embeddings (row + column for 2-D).
Blocks are pre-LayerNorm: causal self-attention (``scaled_dot_product_attention``),
then a 4×-wide GELU MLP (Radford et al. 2019). A prior over a time axis (the first
latent axis) may also take actions per time step (:mod:`vqvae.priors.conditions`), and
sampling may start from given codes of the first time steps (frame prediction).

Letters: B batch, T positions, C channels (``width``), K codebook size, S latent axes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.priors.conditions import (
    ActionEmbedding,
    check_action_settings,
    check_prefix,
    drop_actions,
    resolve_actions,
    with_no_actions,
)
from vqvae.priors.layers import AxisPositions, Block, KVCache
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

_ACTION_FIELDS = ("num_actions", "actions_per_step", "action_dropout")


@dataclass(frozen=True)
class TransformerConfig:
    """Everything needed to rebuild a :class:`TransformerPrior`; JSON-safe via :meth:`to_dict`.

    Attributes:
        codebook_size: K, the number of codes.
        latent_shape: the code grid, 1-D ``(T,)``, 2-D ``(H, W)`` or 3-D ``(T, H, W)``.
        width: C, the model width.
        depth: number of Transformer blocks.
        heads: attention heads; None: ``max(1, width // 64)``. Must divide ``width``.
        num_classes: classes for the start token; None: unconditional (learned BOS).
        dropout: dropout on embeddings, attention weights and residual branches (training only).
        tie_weights: the output head reuses the code embedding matrix (Press & Wolf 2017).
        label_bias: a conditional prior also adds a learned embedding of the label to the
            input at every position, besides the start token, so that each position sees
            the class directly instead of having to find it by attention.
        label_dropout: a conditional prior's label is replaced by "no label" with this
            probability in training, which makes classifier-free guidance possible
            (``sample(..., guidance=g)``); 0 disables both.
        num_actions: actions per time step (the first latent axis) condition the prior:
            their number, A; None: no actions. Action ``A`` means "no action".
        actions_per_step: F, actions per time step (the frames one code step covers).
        action_dropout: in training, all of a sample's actions become "no action" with this
            probability, so the prior also learns without them (guidance over actions).
    """

    codebook_size: int
    latent_shape: tuple[int, ...]
    width: int = 256
    depth: int = 8
    heads: int | None = None
    num_classes: int | None = None
    dropout: float = 0.0
    tie_weights: bool = False
    label_bias: bool = True
    label_dropout: float = 0.1
    num_actions: int | None = None
    actions_per_step: int = 1
    action_dropout: float = 0.1

    def __post_init__(self) -> None:
        if isinstance(self.latent_shape, (str, bytes)) or not isinstance(
            self.latent_shape, Sequence
        ):
            raise TypeError(
                f"latent_shape must be a tuple of grid sizes, got {self.latent_shape!r}"
            )
        object.__setattr__(self, "latent_shape", tuple(self.latent_shape))
        if not self.latent_shape:
            raise ValueError("latent_shape must have at least one axis, e.g. (8, 8)")
        for name, value in [
            ("codebook_size", self.codebook_size),
            ("width", self.width),
            ("depth", self.depth),
            *(("latent_shape", s) for s in self.latent_shape),
        ]:
            check_positive(name, value)
        if self.num_classes is not None:
            check_positive("num_classes", self.num_classes)
        if self.heads is not None:
            check_positive("heads", self.heads)
        if self.width % self.num_heads:
            raise ValueError(
                f"heads={self.num_heads} must divide width={self.width}: choose e.g. "
                f"heads={max(1, self.width // 64)}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        check_label_dropout(self.label_dropout)
        check_action_settings(self.num_actions, self.actions_per_step, self.action_dropout)
        for name in ("tie_weights", "label_bias"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")

    @property
    def num_positions(self) -> int:
        """T, the number of codes per sample."""
        return math.prod(self.latent_shape)

    @property
    def num_heads(self) -> int:
        """``heads``, or ``max(1, width // 64)`` when it is None."""
        return max(1, self.width // 64) if self.heads is None else self.heads

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        if self.num_actions is None:  # a prior without actions writes the keys it wrote before them
            for field in dataclasses.fields(self):
                if field.name in _ACTION_FIELDS and values[field.name] == field.default:
                    del values[field.name]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> TransformerConfig:
        # Configs written before label_bias or label_dropout existed were trained without them.
        return cls(**{"label_bias": False, "label_dropout": 0.0, **known_settings(cls, values)})


class TransformerPrior(nn.Module):
    """Autoregressive prior ``p(codes | label, actions)`` over code grids in raster order.

    Build it from settings, ``TransformerPrior(512, (8, 8), width=256, depth=4)``, or
    from a config, ``TransformerPrior(config)`` (keyword settings then override fields).

    Args:
        codebook_size: K, or a :class:`TransformerConfig`.
        latent_shape: the code grid (omit when passing a config).
        **settings: the other :class:`TransformerConfig` fields.
    """

    def __init__(
        self,
        codebook_size: int | TransformerConfig,
        latent_shape: Sequence[int] | None = None,
        **settings,
    ) -> None:
        super().__init__()
        if isinstance(codebook_size, TransformerConfig):
            if latent_shape is not None:
                settings["latent_shape"] = latent_shape
            config = dataclasses.replace(codebook_size, **settings)
        else:
            if latent_shape is None:
                raise TypeError("TransformerPrior needs latent_shape (or a TransformerConfig)")
            config = TransformerConfig(codebook_size, latent_shape, **settings)
        self.config = c = config
        self.code_embedding = nn.Embedding(c.codebook_size, c.width)
        labels = label_table_size(c.num_classes, c.label_dropout) if c.num_classes else 0
        self.start = nn.Embedding(labels or 1, c.width)  # label tokens, or one BOS
        self.positions = AxisPositions(c.latent_shape, c.width)
        self.label_bias = nn.Embedding(labels, c.width) if labels and c.label_bias else None
        self.embedding_dropout = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList(Block(c.width, c.num_heads, c.dropout) for _ in range(c.depth))
        self.final_norm = nn.LayerNorm(c.width)
        # Tied: the head reads code_embedding.weight; one tensor, so safetensors can save it.
        self.head = None if c.tie_weights else nn.Linear(c.width, c.codebook_size, bias=False)
        self.head_bias = nn.Parameter(torch.zeros(c.codebook_size))
        # Made last, so that a prior without actions draws its initial weights as before them.
        self.action_embedding = ActionEmbedding(c.num_actions, c.actions_per_step, c.width) if c.num_actions else None
        self.apply(_init_weights)
        for block in self.blocks:  # GPT-2: scale residual projections by 1/sqrt(2·depth)
            for linear in (block.attention.out, block.mlp[2]):
                nn.init.normal_(linear.weight, std=0.02 / math.sqrt(2 * c.depth))

    @property
    def num_positions(self) -> int:
        """T, the number of codes per sample."""
        return self.config.num_positions

    def forward(
        self,
        codes: Tensor,
        label: int | Tensor | None = None,
        dropped: Tensor | None = None,
        actions: Tensor | None = None,
        dropped_actions: Tensor | None = None,
    ) -> Tensor:
        """Logits of every code given the codes before it in raster order (and the label,
        and the actions).

        Args:
            codes: integer codes in ``[0, K)``.
            label: class of each sample (int or ``(B,)``) for a conditional prior, else None.
            dropped: in training, which labels to drop (bool ``(B,)``); default: drawn here
                with probability ``label_dropout``.
            actions: for a prior with ``num_actions``: int ``(B, T', F)``, the actions of each
                time step (``num_actions`` = no action); None: no action anywhere (a prior
                trained with action dropout). None for a prior without actions.
            dropped_actions: in training, whose actions to drop (bool ``(B,)``); default:
                drawn here with probability ``action_dropout``.

        Returns:
            Logits; position i (raster order) depends only on codes at positions < i, and on
            the actions of its time step and earlier ones.

        Shapes:
            ``(B, *S) -> (B, K, *S)``
        """
        c = self.config
        codes = check_codes(codes, c.codebook_size, c.latent_shape)
        B = codes.shape[0]
        labels = resolve_labels(label, B, c.num_classes, codes.device)
        steps = self._actions(actions, B, codes.device)
        if self.training:
            labels = drop_labels(labels, c.label_dropout, c.num_classes, dropped)
            steps = drop_actions(steps, c.action_dropout, c.num_actions, dropped_actions)
        start = self._start(labels, B)  # (B, 1, C)
        previous = self.code_embedding(codes.flatten(1)[:, :-1])  # (B, T-1, C)
        x = torch.cat([start, previous], dim=1) + self.positions()  # (B, T, C)
        x = self.embedding_dropout(x + self._conditions(labels, steps))
        for block in self.blocks:
            x = block(x)
        logits = self._head(x)  # (B, T, K)
        return logits.transpose(1, 2).reshape(B, c.codebook_size, *c.latent_shape)

    def loss(self, codes: Tensor, label: int | Tensor | None = None, dropped: Tensor | None = None,
             actions: Tensor | None = None, dropped_actions: Tensor | None = None) -> Tensor:
        """Mean cross-entropy in nats per code, the training objective (a scalar)."""
        return F.cross_entropy(self(codes, label, dropped, actions, dropped_actions), codes.long())

    def log_prob(self, codes: Tensor, label: int | Tensor | None = None, dropped: Tensor | None = None,
                 actions: Tensor | None = None, dropped_actions: Tensor | None = None) -> Tensor:
        """Total log-likelihood ``log p(codes | label, actions)`` in nats per sample.

        Shapes: ``(B, *S) -> (B,)``
        """
        logits = self(codes, label, dropped, actions, dropped_actions)
        nll = F.cross_entropy(logits, codes.long(), reduction="none")  # (B, *S)
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
        actions: Tensor | None = None,
        prefix: Tensor | None = None,
    ) -> Tensor:
        """Draw ``n`` code grids in raster order, on the prior's device, in eval mode.

        Args:
            n: number of grids.
            label: class (int or ``(n,)`` tensor) for a conditional prior, else None.
            temperature, top_k, top_p: see :func:`vqvae.priors.sampling.filter_logits`.
            generator: seeds the draws; the same seed gives the same codes.
            use_cache: True feeds one position per step and keeps every layer's keys and
                values in a preallocated :class:`KVCache`; False recomputes the whole
                prefix each step, the slow reference. Both give the same codes.
            guidance: classifier-free guidance scale (see :mod:`vqvae.priors.sampling`);
                1.0 samples ``p(codes | label)`` itself. Other values need a prior trained
                with ``label_dropout`` > 0 (or ``action_dropout`` > 0), and cost a second pass
                per sample; the unconditional pass drops the label and the actions.
            actions: int ``(n, T', F)``, the actions of each time step, for a prior with
                ``num_actions`` (see :meth:`forward`).
            prefix: int ``(n, t0, *S[1:])``, the given codes of the first ``t0`` time steps,
                kept as they are; only the later positions are drawn (the KV cache is
                filled from the prefix in one pass first).

        Returns:
            Codes, int64.

        Shapes:
            ``-> (n, *S)``
        """
        c = self.config
        device = self.code_embedding.weight.device
        labels = sampling_labels(
            n, label, guidance=guidance, temperature=temperature, top_k=top_k, top_p=top_p,
            generator=generator, num_classes=c.num_classes, label_dropout=c.label_dropout,
            device=device, num_actions=c.num_actions, action_dropout=c.action_dropout,
        )  # (B,): B = n, or 2n when guided (rows n.. without their labels); or None
        steps = self._actions(actions, n, device)  # (n, T', F) or None
        known = check_prefix(prefix, n, c.codebook_size, c.latent_shape)  # (n, P) or None
        if guidance != 1.0:
            steps = with_no_actions(steps, c.num_actions, c.action_dropout)  # (2n, T', F)
            known = None if known is None else known.repeat(2, 1)
        start = self._start(labels, n if guidance == 1.0 else 2 * n)  # (B, 1, C)
        conditions = self._conditions(labels, steps)  # (B, 1 or T, C), or 0
        pick = code_picker(guidance, temperature, top_k, top_p, generator)
        was_training = self.training
        self.eval()
        try:
            run = self._sample_cached if use_cache else self._sample_uncached
            codes = run(start, conditions, pick, known)[:n]
        finally:
            self.train(was_training)
        return codes.view(n, *c.latent_shape)

    # ------------------------------------------------------------------ internals

    def _start(self, labels: Tensor | None, batch: int) -> Tensor:
        """Start token ``(B, 1, C)``: the label's embedding, or the BOS vector."""
        if labels is None:
            return self.start.weight[None].expand(batch, 1, -1)
        return self.start(labels)[:, None]

    def _label_bias(self, labels: Tensor | None) -> Tensor | float:
        """The label's embedding ``(B, 1, C)`` added at every position, or 0."""
        if self.label_bias is None or labels is None:
            return 0.0
        return self.label_bias(labels)[:, None]

    def _actions(self, actions: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        """Checked actions ``(B, T', F)`` int64, "no action" rows when None; None without actions."""
        c = self.config
        return resolve_actions(actions, batch, steps=c.latent_shape[0], num_actions=c.num_actions,
                               actions_per_step=c.actions_per_step, action_dropout=c.action_dropout,
                               device=device)

    def _conditions(self, labels: Tensor | None, actions: Tensor | None) -> Tensor | float:
        """What every input gets besides its code and position: the label's embedding
        ``(B, 1, C)``, plus at each position the actions of the time step it predicts,
        ``(B, T, C)``; 0 for neither."""
        bias = self._label_bias(labels)
        if actions is None:
            return bias
        step = self.positions.index[0]  # (T,): the time step of each position's code
        return bias + self.action_embedding(actions)[:, step]  # (B, T', C) -> (B, T, C)

    def _head(self, x: Tensor) -> Tensor:
        """Logits ``(..., K)`` of features ``(..., C)``."""
        weight = self.code_embedding.weight if self.head is None else self.head.weight
        return F.linear(self.final_norm(x), weight, self.head_bias)

    def _sample_cached(self, start: Tensor, conditions: Tensor | float, pick, known: Tensor | None) -> Tensor:
        c = self.config
        B, T = start.shape[0], c.num_positions
        P = 0 if known is None else known.shape[1]  # given codes
        if P == T:
            return known
        head_dim = c.width // c.num_heads
        cache = KVCache(c.depth, B, c.num_heads, T, head_dim, start.device, start.dtype)
        positions = self.positions()[:, None]  # (T, 1, C)
        codes = torch.empty(B, T, dtype=torch.long, device=start.device)
        if P == 0:
            x = start + positions[0] + _at(conditions, 0, 1)  # (B, 1, C)
        else:
            codes[:, :P] = known
            # Prefill: the inputs of positions 0..P-1 in one causal pass fill the cache.
            x = torch.cat([start, self.code_embedding(known[:, :-1])], dim=1)  # (B, P, C)
            x = x + positions[:P, 0] + _at(conditions, 0, P)
            for block, keys, values in zip(self.blocks, cache.keys, cache.values, strict=True):
                x = block.prefill(x, keys, values)
            x = self.code_embedding(known[:, -1])[:, None] + positions[P] + _at(conditions, P, P + 1)
        for t in range(P, T):
            for block, keys, values in zip(self.blocks, cache.keys, cache.values, strict=True):
                x = block.step(x, keys, values, t)
            codes[:, t] = code = pick(self._head(x[:, 0]))  # (B, K) -> (B,)
            if t + 1 < T:
                x = self.code_embedding(code)[:, None] + positions[t + 1] + _at(conditions, t + 1, t + 2)
        return codes

    def _sample_uncached(self, start: Tensor, conditions: Tensor | float, pick, known: Tensor | None) -> Tensor:
        B, T = start.shape[0], self.config.num_positions
        P = 0 if known is None else known.shape[1]
        positions = self.positions()  # (T, C)
        codes = torch.empty(B, T, dtype=torch.long, device=start.device)
        if P:
            codes[:, :P] = known
        for t in range(P, T):
            previous = self.code_embedding(codes[:, :t])  # (B, t, C)
            x = torch.cat([start, previous], dim=1) + positions[: t + 1] + _at(conditions, 0, t + 1)  # (B, t+1, C)
            for block in self.blocks:
                x = block(x)
            codes[:, t] = pick(self._head(x[:, -1]))  # (B, K) -> (B,)
        return codes


def _at(conditions: Tensor | float, first: int, stop: int) -> Tensor | float:
    """The conditions of positions ``first..stop-1``: per position ``(B, T, C)``, or the same
    for all (``(B, 1, C)`` or 0)."""
    if isinstance(conditions, Tensor) and conditions.shape[1] > 1:
        return conditions[:, first:stop]
    return conditions


def _init_weights(module: nn.Module) -> None:
    """GPT-2 initialisation: N(0, 0.02) weights, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
