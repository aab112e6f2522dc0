"""Vector quantization: the codebook bottleneck of VQ-VAE (van den Oord et al. 2017, §3.1).

Two quantizers share one lookup and one set of codebook-health tools:

* :class:`VectorQuantizer` learns the codebook by gradient descent on the codebook loss
  ``‖sg[z_e] − e‖²``;
* :class:`EMAVectorQuantizer` moves each code to the exponential moving average of the
  encoder outputs assigned to it (the paper's appendix A.1).

Both find the exact nearest code in squared Euclidean distance without ever building
the full N×K distance matrix (the search runs over row chunks of a fixed byte budget),
keep distances, argmin and EMA statistics in fp32 under autocast, can start from
k-means, re-seed dead codes from a reservoir of recent encoder outputs, and stay
identical on every rank under ``torch.distributed``.

Shapes: B batch, D code dimension, S spatial axes (0 to 3 of them), N = B·∏S flattened
vectors, K codebook size, R reservoir size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CodebookUsage",
    "EMAVectorQuantizer",
    "QuantizerOutput",
    "VectorQuantizer",
    "codebook_perplexity",
    "kmeans",
    "nearest_codes",
]

DEFAULT_CHUNK_BYTES = 8 << 20  # distance rows per chunk: chunk_bytes // (K * 4)


@dataclass
class QuantizerOutput:
    """What a quantizer's forward returns.

    Attributes:
        quantized: ``(B, D, *S)``, the nearest codes with the gradient of ``z``
            (straight-through estimator).
        indices: ``(B, *S)`` int64, the chosen code of every vector.
        loss: the auxiliary loss to add to the reconstruction loss:
            ``codebook_loss + beta * commitment_loss`` (EMA: ``beta * commitment_loss``).
        codebook_loss: mean of ``(sg[z] − e)²``, which moves only the codebook.
        commitment_loss: mean of ``(z − sg[e])²``, which moves only the input.
        perplexity: ``exp(entropy)`` of this call's code histogram.
    """

    quantized: Tensor
    indices: Tensor
    loss: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor


@dataclass
class CodebookUsage:
    """Code usage accumulated over a window of training steps."""

    steps: int
    codes_used: int
    used_fraction: float
    perplexity: float
    dead_codes: int


def nearest_codes(x: Tensor, codebook: Tensor, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Tensor:
    """Index of the nearest code (squared Euclidean distance) for every row of ``x``.

    The distance matrix is never built whole: rows are searched in chunks whose
    ``(rows, K)`` distance block takes at most ``chunk_bytes`` (at least one row).

    Args:
        x: ``(N, D)`` floating vectors.
        codebook: ``(K, D)`` codes, same dtype as ``x``.
        chunk_bytes: memory budget of one distance block.

    Returns:
        ``(N,)`` int64 indices; ties go to the lowest index.
    """
    n, k = x.shape[0], codebook.shape[0]
    # argmin_k ‖x − e_k‖² = argmin_k (‖e_k‖²/2 − x·e_k): ‖x‖² is the same for every k.
    half_sq_norms = 0.5 * codebook.square().sum(dim=1)  # (K,)
    group = _argmin_group(k)
    if k % group:  # pad with codes at infinite distance so that groups tile the row
        pad = group - k % group
        codebook = torch.cat([codebook, codebook.new_zeros(pad, codebook.shape[1])])
        half_sq_norms = torch.cat([half_sq_norms, half_sq_norms.new_full((pad,), float("inf"))])
    padded_k = codebook.shape[0]
    rows = max(1, min(n, chunk_bytes // (padded_k * x.element_size())))
    block = torch.empty(rows, padded_k, dtype=x.dtype, device=x.device)  # (rows, K), reused
    indices = torch.empty(n, dtype=torch.long, device=x.device)
    for start in range(0, n, rows):
        chunk = x[start : start + rows]
        dist_block = block[: chunk.shape[0]]
        torch.addmm(half_sq_norms, chunk, codebook.t(), alpha=-1.0, out=dist_block)
        indices[start : start + chunk.shape[0]] = _argmin_rows(dist_block, group)
    return indices


def _argmin_group(k: int) -> int:
    """Group width for the two-level argmin: about sqrt(K), a power of two (1: plain argmin)."""
    if k < 256:
        return 1
    return 1 << math.ceil(math.log2(math.sqrt(k)))


def _argmin_rows(block: Tensor, group: int) -> Tensor:
    """``block.argmin(dim=1)``, first index on ties, in two levels.

    A vectorised ``amin`` over groups of ``group`` columns, then ``argmin`` over the group
    minima and within the one winning group: 2-5x faster than a plain ``argmin`` over
    long rows on CPUs, where ``argmin`` does not vectorise.
    """
    if group == 1:
        return block.argmin(dim=1)
    rows, k = block.shape
    grouped = block.view(rows, k // group, group)  # (rows, G, L)
    best_group = grouped.amin(dim=2).argmin(dim=1)  # (rows,), first group holding the minimum
    row = torch.arange(rows, device=block.device)
    within = grouped[row, best_group].argmin(dim=1)  # (rows,), first position in that group
    return best_group * group + within


def kmeans(
    x: Tensor, k: int, iters: int = 10, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """k-means: k-means++ seeding (Arthur & Vassilvitskii 2007), then Lloyd iterations.

    An empty cluster keeps its previous centre.

    Args:
        x: ``(N, D)`` floating vectors, ``N >= k``.
        k: number of clusters.
        iters: Lloyd iterations.
        generator: CPU generator for the seeding.

    Returns:
        ``(centres (k, D), counts (k,))``, counts being the cluster sizes of the last
        assignment.
    """
    if x.shape[0] < k:
        raise ValueError(f"k-means needs at least k={k} vectors, got {x.shape[0]}")
    centres = _kmeans_plus_plus(x, k, generator)  # (K, D)
    counts = torch.zeros(k, dtype=x.dtype, device=x.device)
    for _ in range(iters):
        idx = nearest_codes(x, centres)  # (N,)
        counts = torch.bincount(idx, minlength=k).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, idx, x)  # (K, D)
        filled = counts > 0
        centres[filled] = sums[filled] / counts[filled, None]
    return centres, counts


def _kmeans_plus_plus(x: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    """Each next centre is drawn with probability proportional to its squared distance."""
    n = x.shape[0]
    chosen = torch.empty(k, dtype=torch.long)
    chosen[0] = torch.randint(n, (1,), generator=generator)
    closest = (x - x[chosen[0]]).square().sum(1).cpu().double()  # (N,) squared distances
    for i in range(1, k):
        if closest.sum() <= 0:  # fewer distinct points than k: repeat some
            chosen[i:] = torch.randint(n, (k - i,), generator=generator)
            break
        chosen[i] = torch.multinomial(closest, 1, generator=generator)
        new = (x - x[chosen[i]]).square().sum(1).cpu().double()
        torch.minimum(closest, new, out=closest)
    return x[chosen.to(x.device)].clone()


class _StraightThrough(torch.autograd.Function):
    """Returns ``codes`` in the forward pass and hands the gradient to ``z`` unchanged.

    Equivalent to the usual ``z + (codes - z).detach()`` but exact (that sum rounds) and
    free of two full passes over the latents.
    """

    @staticmethod
    def forward(ctx, z: Tensor, codes: Tensor) -> Tensor:
        return codes

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


def _distributed(group) -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


def _perplexity(counts: Tensor) -> Tensor:
    probs = counts.double() / counts.sum().clamp_min(1)
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum()
    return entropy.exp().float()


class _Quantizer(nn.Module):
    """Lookup, straight-through, losses and codebook health shared by both quantizers.

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
        super().__init__()
        for name, value in (("codebook_size", codebook_size), ("dim", dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if beta < 0:
            raise ValueError(f"beta (commitment cost) must be >= 0, got {beta}")
        if dead_code_window is not None and dead_code_window < 1:
            raise ValueError(f"dead_code_window must be None or >= 1, got {dead_code_window}")
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.kmeans_iters = kmeans_iters
        self.dead_code_window = dead_code_window
        self.seed = seed
        self.chunk_bytes = chunk_bytes
        self.check_finite = check_finite
        self.process_group = process_group
        reservoir_size = codebook_size if reservoir_size is None else reservoir_size
        if reservoir_size < 1:
            raise ValueError(f"reservoir_size must be >= 1, got {reservoir_size}")
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("last_used", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("usage_counts", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("usage_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("reservoir", torch.zeros(reservoir_size, dim))  # (R, D)
        self.register_buffer("reservoir_written", torch.zeros((), dtype=torch.long))
        self._kmeans_pending: list[Tensor] = []

    def _initial_codebook(self) -> Tensor:
        g = torch.Generator().manual_seed(self.seed)
        return torch.randn(self.codebook_size, self.dim, generator=g)  # (K, D)

    def _generator(self, purpose: int) -> torch.Generator:
        # A fresh stream per (seed, step, purpose): deterministic, and resumable from buffers.
        return torch.Generator().manual_seed(
            (self.seed * 1_000_003 + int(self.steps) * 7 + purpose) % (2**63)
        )

    # ---------------------------------------------------------------- public API

    def forward(self, z: Tensor) -> QuantizerOutput:
        """Quantize ``z`` of shape ``(B, D, *S)``; in training mode also update the codebook."""
        self._check_input(z)
        with torch.autocast(z.device.type, enabled=False):
            flat = self._flatten(z)  # (N, D), fp32 or wider
            if self.training and not bool(self.initialized):
                self._collect_for_kmeans(flat.detach())
            with torch.no_grad():
                indices = nearest_codes(flat.detach(), self._search_codebook(flat), self.chunk_bytes)
            quantized_flat, codebook_loss, commitment_loss = self._losses(flat, indices)
            counts = torch.bincount(indices, minlength=self.codebook_size)  # (K,)
            if self.training:
                with torch.no_grad():
                    self._training_update(flat.detach(), indices, counts)
        codes = quantized_flat.detach().to(z.dtype).view(z.shape[0], *z.shape[2:], self.dim)
        quantized = _StraightThrough.apply(z, codes.movedim(-1, 1))  # value of e, gradient of z
        return QuantizerOutput(
            quantized=quantized,
            indices=indices.view(z.shape[0], *z.shape[2:]),
            loss=self._aux_loss(codebook_loss, commitment_loss),
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=_perplexity(counts),
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

    @torch.no_grad()
    def codebook_usage(self, reset: bool = True) -> CodebookUsage:
        """Usage over the training steps since the last reset (all ranks counted).

        Args:
            reset: start a new window afterwards.
        """
        counts = self.usage_counts
        used = int((counts > 0).sum())
        usage = CodebookUsage(
            steps=int(self.usage_steps),
            codes_used=used,
            used_fraction=used / self.codebook_size,
            perplexity=float(_perplexity(counts)) if counts.sum() > 0 else 0.0,
            dead_codes=self.codebook_size - used,
        )
        if reset:
            self.usage_counts.zero_()
            self.usage_steps.zero_()
        return usage

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
        self.steps += 1
        counts = self._all_reduce(counts.clone())
        self.usage_counts += counts
        self.usage_steps += 1
        self.last_used[counts > 0] = self.steps
        self._remember(flat)
        self._update_codebook(flat, indices, counts)
        if self.dead_code_window is not None:
            self._reset_dead_codes()

    def _all_reduce(self, t: Tensor) -> Tensor:
        if _distributed(self.process_group):
            dist.all_reduce(t, group=self.process_group)
        return t

    def _broadcast(self, t: Tensor) -> Tensor:
        if _distributed(self.process_group):
            src = dist.get_global_rank(self.process_group, 0) if self.process_group else 0
            dist.broadcast(t, src=src, group=self.process_group)
        return t

    def _remember(self, flat: Tensor) -> None:
        """Write a random sample of this batch into the ring-buffer reservoir."""
        size = self.reservoir.shape[0]
        take = min(flat.shape[0], size)
        pick = torch.randperm(flat.shape[0], generator=self._generator(1))[:take].to(flat.device)
        start = int(self.reservoir_written) % size
        slots = (torch.arange(take, device=flat.device) + start) % size
        self.reservoir[slots] = flat[pick].to(self.reservoir.dtype)
        self.reservoir_written += take

    def _reset_dead_codes(self) -> None:
        dead = (self.steps - self.last_used) >= self.dead_code_window  # (K,), same on all ranks
        n_dead = int(dead.sum())
        filled = min(int(self.reservoir_written), self.reservoir.shape[0])
        if n_dead == 0 or filled == 0:
            return
        g = self._generator(2)
        if filled >= n_dead:
            rows = torch.randperm(filled, generator=g)[:n_dead]
        else:
            rows = torch.randint(filled, (n_dead,), generator=g)
        vectors = self._broadcast(self.reservoir[rows.to(self.reservoir.device)].clone())  # (n_dead, D)
        self._set_codes(dead, vectors)
        self.last_used[dead] = self.steps  # a grace window before a re-seeded code can die again

    @torch.no_grad()
    def _collect_for_kmeans(self, flat: Tensor) -> None:
        self._kmeans_pending.append(flat.float())
        have = torch.tensor(sum(x.shape[0] for x in self._kmeans_pending), device=flat.device)
        if _distributed(self.process_group):
            dist.all_reduce(have, op=dist.ReduceOp.MIN, group=self.process_group)
        if int(have) < self.codebook_size:
            return
        data = torch.cat(self._kmeans_pending)  # (N_collected, D)
        self._kmeans_pending = []
        centres, counts = kmeans(data, self.codebook_size, self.kmeans_iters, self._generator(3))
        centres = self._broadcast(centres)
        counts = self._broadcast(counts)
        everything = torch.ones(self.codebook_size, dtype=torch.bool, device=centres.device)
        self._set_codes(everything, centres, counts)
        self.initialized.fill_(True)


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
        codebook_loss = F.mse_loss(quantized, flat.detach())
        commitment_loss = F.mse_loss(flat, quantized.detach())
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
        commitment_loss = F.mse_loss(flat, quantized)
        return quantized, commitment_loss.detach(), commitment_loss

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


def codebook_perplexity(counts: Tensor) -> float:
    """Perplexity ``exp(H)`` of a histogram of code counts (K,)."""
    return float(_perplexity(counts))
