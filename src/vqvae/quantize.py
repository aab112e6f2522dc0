"""Vector quantization: the codebook bottleneck of VQ-VAE (van den Oord et al. 2017, §3.1).

Two quantizers share one lookup and one set of codebook-health tools:

* :class:`VectorQuantizer` learns the codebook by gradient descent on the codebook loss
  ``‖sg[z_e] − e‖²``;
* :class:`EMAVectorQuantizer` moves each code to the exponential moving average of the
  encoder outputs assigned to it (the paper's appendix A.1).

Both find the exact nearest code (:func:`vqvae.clustering.nearest_codes`), keep
distances, argmin and EMA statistics in fp32 under autocast, can start from k-means,
re-seed dead codes from a reservoir of recent encoder outputs
(:class:`vqvae.codebook_health.CodebookHealth`), and stay identical on every rank under
``torch.distributed``. :class:`QuantizerConfig` and :func:`make_quantizer` are how models
describe and build one.

Shapes: B batch, D code dimension, S spatial axes (0 to 3 of them), N = B·∏S flattened
vectors, K codebook size, R reservoir size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.clustering import DEFAULT_CHUNK_BYTES, kmeans, nearest_codes
from vqvae.codebook_health import CodebookHealth, CodebookUsage, codebook_perplexity, perplexity
from vqvae.quantizer_config import QUANTIZERS, QuantizerConfig

__all__ = [
    "QUANTIZERS",
    "CodebookUsage",
    "EMAVectorQuantizer",
    "QuantizerConfig",
    "QuantizerOutput",
    "VectorQuantizer",
    "codebook_perplexity",
    "kmeans",
    "make_quantizer",
    "nearest_codes",
]


@dataclass
class QuantizerOutput:
    """What a quantizer's forward returns.

    Attributes:
        quantized: ``(B, D, *S)``, the nearest codes with the gradient of ``z``
            (straight-through estimator); safe to modify in place.
        indices: ``(B, *S)`` int64, the chosen code of every vector.
        loss: the auxiliary loss to add to the reconstruction loss:
            ``codebook_loss + beta * commitment_loss`` (EMA: ``beta * commitment_loss``).
        codebook_loss: mean of ``(sg[z] − e)²``, which moves only the codebook.
        commitment_loss: mean of ``(z − sg[e])²``, which moves only the input.
        perplexity: ``exp(entropy)`` of this call's code histogram (0 for an empty batch).
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor


class _StraightThrough(torch.autograd.Function):
    """Returns ``codes`` in the forward pass and hands the gradient to ``z`` unchanged.

    Equivalent to the usual ``z + (codes - z).detach()`` but exact (that sum rounds) and
    free of two full passes over the latents. The output is ``codes.detach()``: the same
    memory, but not a view to autograd, which forbids in-place writes to the views a
    custom Function returns; so callers may write to it in place (``relu_``). That is safe
    because no backward pass keeps these codes (:class:`_SquaredError` keeps ``z − e``),
    and one that did would still be caught by the version counter the alias shares.
    """

    @staticmethod
    def forward(ctx, z: Tensor, codes: Tensor) -> Tensor:
        return codes.detach()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class _SquaredError(torch.autograd.Function):
    """``(codebook_loss, commitment_loss)`` of ``flat`` and its codes ``quantized``, both
    ``mean((flat − quantized)²)``; the first moves only ``quantized``, the second only ``flat``.

    One difference serves both values and both gradients, and it is all the backward pass
    keeps: ``F.mse_loss`` would keep ``quantized``, which the forward hands out, and so
    forbid writing to it in place. Measured, it is also about twice as fast as ``mse_loss``.
    """

    @staticmethod
    def forward(ctx, flat: Tensor, quantized: Tensor) -> tuple[Tensor, Tensor]:
        ctx.set_materialize_grads(False)  # an unused loss sends no (zero) gradient
        diff = flat - quantized  # (N, D)
        ctx.save_for_backward(diff)
        # Row norms squared and summed: as exact as a mean of squares (one fp32 dot product
        # drifts by 1e-5 over a million terms) without an (N, D) temporary.
        loss = torch.linalg.vector_norm(diff, dim=1).square().sum() / diff.numel()
        return loss, loss.clone()

    @staticmethod
    def backward(ctx, codebook_grad: Tensor | None, commitment_grad: Tensor | None):
        (diff,) = ctx.saved_tensors
        scale = 2.0 / diff.numel()
        to_flat = to_codes = None
        if ctx.needs_input_grad[0] and commitment_grad is not None:
            to_flat = diff * (commitment_grad * scale)
        if ctx.needs_input_grad[1] and codebook_grad is not None:
            to_codes = diff * (codebook_grad * -scale)
        return to_flat, to_codes


class _Quantizer(CodebookHealth):
    """Lookup, straight-through, losses and input checks shared by both quantizers.

    Subclasses hold the codebook (``self.codebook``, ``(K, D)``) and define how it learns.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        *,
        kmeans_init: bool = False,
        kmeans_iters: int = 10,
        dead_code_window: int | None = 100,
        reservoir_size: int | None = None,
        seed: int = 0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        check_finite: bool = True,
        process_group=None,
    ) -> None:
        for name, value in (("codebook_size", codebook_size), ("dim", dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if beta < 0:
            raise ValueError(f"beta (commitment cost) must be >= 0, got {beta}")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        super().__init__(
            codebook_size, dim, kmeans_init=kmeans_init, kmeans_iters=kmeans_iters,
            dead_code_window=dead_code_window, seed=seed, process_group=process_group,
            reservoir_size=codebook_size if reservoir_size is None else reservoir_size,
        )
        self.dim = dim
        self.beta = beta
        self.chunk_bytes = chunk_bytes
        self.check_finite = check_finite

    def _initial_codebook(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.codebook_size, self.dim, generator=g)  # (K, D)

    # ---------------------------------------------------------------- public API

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z`` of shape ``(B, D, *S)``; in training mode also update the codebook.

        An empty batch (no vectors) gives zero losses and perplexity and changes no state.
        """
        self._check_input(z)
        with torch.autocast(z.device.type, enabled=False):
            flat = self._flatten(z)  # (N, D), fp32 or wider
            if self.training and not bool(self.initialized):
                self._collect_for_kmeans(flat.detach())
            with torch.no_grad():
                indices = nearest_codes(flat.detach(), self._search_codebook(flat), self.chunk_bytes)
            counts = torch.bincount(indices, minlength=self.codebook_size)  # (K,)
            if flat.shape[0]:
                quantized_flat, codebook_loss, commitment_loss = self._losses(flat, indices)
                batch_perplexity = perplexity(counts)
            else:  # a mean over no vectors is NaN; the empty sum is an exact 0 in z's graph
                quantized_flat = flat.detach()
                codebook_loss = commitment_loss = flat.sum()
                batch_perplexity = flat.new_zeros((), dtype=torch.float32)
            if self.training:
                with torch.no_grad():
                    self._training_update(flat.detach(), indices, counts)
        codes = quantized_flat.detach().to(z.dtype).view(z.shape[0], *z.shape[2:], self.dim)  # (B, *S, D)
        quantized = _StraightThrough.apply(z, codes.movedim(-1, 1))  # value of e, gradient of z
        return QuantizerOutput(
            quantized=quantized,
            indices=indices.view(z.shape[0], *z.shape[2:]),
            loss=self._aux_loss(codebook_loss, commitment_loss),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=batch_perplexity,
        )

    @torch.no_grad()
    def encode(self, z: Tensor) -> Tensor:
        """Indices ``(B, *S)`` int64 of the nearest codes to ``z`` ``(B, D, *S)``; no side effects."""
        self._check_input(z)
        with torch.autocast(z.device.type, enabled=False):
            flat = self._flatten(z)
            indices = nearest_codes(flat, self._search_codebook(flat), self.chunk_bytes)
        return indices.view(z.shape[0], *z.shape[2:])

    def decode(self, indices: Tensor) -> Tensor:
        """Code vectors ``(B, D, *S)`` for integer ``indices`` ``(B, *S)``."""
        if not isinstance(indices, Tensor):
            raise TypeError(f"indices must be a torch.Tensor, got {type(indices).__name__}")
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TypeError(f"indices must be an integer tensor, got dtype {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise IndexError(
                f"indices must lie in [0, {self.codebook_size}), got values in "
                f"[{int(indices.min())}, {int(indices.max())}]: were they made with a "
                f"codebook of another size?"
            )
        vectors = F.embedding(indices.long().to(self.codebook.device), self.codebook)  # (B, *S, D)
        return vectors.movedim(-1, 1)

    def extra_repr(self) -> str:
        return (
            f"codebook_size={self.codebook_size}, dim={self.dim}, beta={self.beta}, "
            f"dead_code_window={self.dead_code_window}"
        )

    # ------------------------------------------------------------ subclass hooks

    def _losses(self, flat: Tensor, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def _aux_loss(self, codebook_loss: Tensor, commitment_loss: Tensor) -> Tensor:
        raise NotImplementedError

    def _update_codebook(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        """Training-mode codebook update from all-reduced ``counts``; EMA only."""

    def _set_codes(self, which: Tensor, vectors: Tensor, counts: Tensor | None = None) -> None:
        self.codebook[which] = vectors.to(self.codebook.dtype)

    # ---------------------------------------------------------------- internals

    def _check_input(self, z: Tensor) -> None:
        if not isinstance(z, Tensor):
            raise TypeError(f"z must be a torch.Tensor, got {type(z).__name__}")
        if not z.is_floating_point():
            raise TypeError(
                f"z must be a floating-point tensor of encoder outputs, got dtype {z.dtype}; "
                f"to look up integer codes use decode()"
            )
        if not 2 <= z.dim() <= 5:
            raise ValueError(
                f"z must have shape (B, D, *spatial) with 0 to 3 spatial axes, got shape "
                f"{tuple(z.shape)}"
            )
        if z.shape[1] != self.dim:
            raise ValueError(
                f"z has {z.shape[1]} channels at dim 1 but the codebook has dim={self.dim}; "
                f"expected shape (B, {self.dim}, *spatial), got {tuple(z.shape)} "
                f"(channels go first)"
            )
        # A sum is ~20x cheaper than isfinite(z).all(); only a non-finite sum needs the exact
        # check (a sum of huge finite values can overflow).
        if (
            self.check_finite
            and not bool(torch.isfinite(z.sum()))
            and not bool(torch.isfinite(z).all())
        ):
            raise ValueError(
                "z contains NaN or Inf: check the encoder's inputs and learning rate "
                "(or pass check_finite=False to skip this check)"
            )

    def _flatten(self, z: Tensor) -> Tensor:
        dtype = torch.promote_types(torch.promote_types(z.dtype, self.codebook.dtype), torch.float32)
        return z.movedim(1, -1).reshape(-1, self.dim).to(dtype)  # (N, D)

    def _search_codebook(self, flat: Tensor) -> Tensor:
        return self.codebook.detach().to(flat.dtype)

    def _training_update(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        counts = self._all_reduce(counts.clone())  # (K,), the same on every rank
        # An empty batch on every rank has nothing to teach and must not age the statistics;
        # only a locally empty one needs the (synchronising) look at the reduced counts.
        if flat.shape[0] == 0 and not bool(counts.any()):
            return
        self._record_step(flat, counts)
        self._update_codebook(flat, indices, counts)
        self._reset_dead_codes()


class VectorQuantizer(_Quantizer):
    """Nearest-neighbour quantizer whose codebook is learned by gradient descent.

    The auxiliary loss is the paper's eq. 3 without the reconstruction term:
    ``‖sg[z] − e‖² + beta · ‖z − sg[e]‖²``, where ``beta`` (the *commitment cost*,
    0.25 in the paper) weighs the commitment term, the one that moves the encoder.

    Args:
        codebook_size: K, the number of codes.
        dim: D, the size of each code (the encoder's output channels).
        beta: weight of the commitment loss.
        kmeans_init: initialise the codebook by k-means over the first training
            batches (as soon as K vectors have been seen).
        kmeans_iters: Lloyd iterations of that k-means.
        dead_code_window: re-seed codes unused for this many training steps with
            encoder outputs from the reservoir; ``None`` turns resets off.
        reservoir_size: recent encoder outputs kept for resets (default K).
        seed: seeds the initial codebook, the reservoir sampling and resets.
        chunk_bytes: memory budget of one block of the distance search.
        check_finite: raise on NaN or Inf inputs (costs one pass over ``z``).
        process_group: ``torch.distributed`` group to synchronise statistics over.

    Shapes:
        ``z``: ``(B, D, *S)`` with 0 to 3 spatial axes; ``indices``: ``(B, *S)``.
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, **kwargs) -> None:
        super().__init__(codebook_size, dim, beta, **kwargs)
        self.codebook = nn.Parameter(self._initial_codebook())  # (K, D)

    def _losses(self, flat: Tensor, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        quantized = F.embedding(indices, self.codebook).to(flat.dtype)  # (N, D), grad to codebook
        codebook_loss, commitment_loss = _SquaredError.apply(flat, quantized)
        return quantized, codebook_loss, commitment_loss

    def _aux_loss(self, codebook_loss: Tensor, commitment_loss: Tensor) -> Tensor:
        return codebook_loss + self.beta * commitment_loss


class EMAVectorQuantizer(_Quantizer):
    """Nearest-neighbour quantizer whose codes are moving averages of their inputs.

    Appendix A.1 of the paper: with ``n_i`` the number of inputs assigned to code i in a
    batch and ``s_i`` their sum, ``N_i ← γ N_i + (1 − γ) n_i``, ``m_i ← γ m_i + (1 − γ) s_i``
    and ``e_i = m_i / N_i`` (``N_i`` Laplace-smoothed). ``N``, ``m`` and the codebook are
    buffers, not parameters; they change only in training mode. The auxiliary loss is
    ``beta · ‖z − sg[e]‖²``; ``codebook_loss`` is reported, detached, for logging.

    Args:
        codebook_size, dim, beta: as for :class:`VectorQuantizer`.
        decay: γ, the EMA decay (0.99 in the paper).
        eps: Laplace smoothing of the cluster sizes.
        **kwargs: the codebook-health options of :class:`VectorQuantizer`.
    """

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        beta: float = 0.25,
        decay: float = 0.99,
        eps: float = 1e-5,
        **kwargs,
    ) -> None:
        super().__init__(codebook_size, dim, beta, **kwargs)
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.eps = eps
        codebook = self._initial_codebook()
        self.register_buffer("codebook", codebook)  # (K, D)
        # Every code starts as if seen once at its initial value, so an unused code
        # stays where it is (m_i / N_i is constant) instead of drifting or blowing up.
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # (K,)
        self.register_buffer("embed_sum", codebook.clone())  # (K, D)

    def _losses(self, flat: Tensor, indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        quantized = F.embedding(indices, self.codebook).to(flat.dtype)  # (N, D), no grad
        codebook_loss, commitment_loss = _SquaredError.apply(flat, quantized)
        return quantized, codebook_loss.detach(), commitment_loss

    def _aux_loss(self, codebook_loss: Tensor, commitment_loss: Tensor) -> Tensor:
        return self.beta * commitment_loss

    def _update_codebook(self, flat: Tensor, indices: Tensor, counts: Tensor) -> None:
        sums = torch.zeros_like(self.embed_sum).index_add_(0, indices, flat.to(self.embed_sum.dtype))
        sums = self._all_reduce(sums)  # (K, D)
        self.cluster_size.lerp_(counts.to(self.cluster_size.dtype), 1.0 - self.decay)
        self.embed_sum.lerp_(sums, 1.0 - self.decay)
        self._refresh_codebook()

    def _refresh_codebook(self) -> None:
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n
        self.codebook.copy_(self.embed_sum / smoothed.unsqueeze(1))

    def _set_codes(self, which: Tensor, vectors: Tensor, counts: Tensor | None = None) -> None:
        # A re-seeded code restarts with the weight of one average assignment.
        if counts is None:
            weight = (self.cluster_size.sum() / self.codebook_size).clamp_min(1.0)
            counts = torch.full((vectors.shape[0],), float(weight), device=vectors.device)
        counts = counts.to(self.cluster_size.dtype).clamp_min(1.0)
        vectors = vectors.to(self.embed_sum.dtype)
        self.cluster_size[which] = counts
        self.embed_sum[which] = vectors * counts.unsqueeze(1)
        self._refresh_codebook()
        self.codebook[which] = vectors  # exact, whatever the smoothing does to the others


def make_quantizer(config: QuantizerConfig, seed: int = 0) -> EMAVectorQuantizer | VectorQuantizer:
    """The quantizer ``config`` describes, untrained.

    Args:
        config: the settings; any config that inherits :class:`QuantizerConfig` will do.
        seed: seeds the initial codebook, the reservoir sampling and resets.

    Returns:
        An :class:`EMAVectorQuantizer` for ``quantizer="ema"``, else a :class:`VectorQuantizer`.
    """
    options = {"kmeans_init": config.kmeans_init, "dead_code_window": config.dead_code_window,
               "seed": seed}
    if config.quantizer == "ema":
        return EMAVectorQuantizer(config.codebook_size, config.code_dim, config.beta,
                                  decay=config.decay, **options)
    return VectorQuantizer(config.codebook_size, config.code_dim, config.beta, **options)
