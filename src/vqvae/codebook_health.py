"""Keeping a codebook alive and measured: usage statistics, dead-code resets from a
reservoir of recent encoder outputs, and a k-means start, identical on every rank under
``torch.distributed``.

:class:`CodebookHealth` is the base of the quantizers in :mod:`vqvae.quantize`; it holds
the bookkeeping buffers (their names are part of saved checkpoints) and leaves the codebook
itself, and how a code is overwritten, to its subclasses.

Shapes: N flattened vectors, D code dimension, K codebook size, R reservoir size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from vqvae.clustering import kmeans

__all__ = ["CodebookHealth", "CodebookUsage", "codebook_perplexity"]


@dataclass
class CodebookUsage:
    """Code usage accumulated over a window of training steps."""

    steps: int
    codes_used: int
    used_fraction: float
    perplexity: float
    dead_codes: int


def codebook_perplexity(counts: Tensor) -> float:
    """Perplexity ``exp(H)`` of a histogram of code counts (K,)."""
    return float(perplexity(counts))


def perplexity(counts: Tensor) -> Tensor:
    """``exp(entropy)`` of the histogram ``counts`` (K,), a float32 scalar tensor."""
    probs = counts.double() / counts.sum().clamp_min(1)
    entropy = -(probs * probs.clamp_min(1e-30).log()).sum()
    return entropy.exp().float()


def distributed(group) -> bool:
    """True when ``group`` (None: the default group) spans more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1


class CodebookHealth(nn.Module):
    """Usage counters, a reservoir of recent inputs, dead-code resets and k-means start.

    Subclasses hold ``self.codebook`` ``(K, D)`` and implement :meth:`_set_codes`.
    Every random draw comes from a generator seeded by ``(seed, steps, purpose)``, so a
    run is reproducible and resumes from the buffers alone.

    Args:
        codebook_size: K.
        dim: D.
        kmeans_init: wait for K training vectors, then start the codebook from k-means.
        kmeans_iters: Lloyd iterations of that k-means.
        dead_code_window: re-seed codes unused for this many training steps; None: never.
        reservoir_size: R, recent encoder outputs kept for resets.
        seed: seeds the reservoir sampling, the resets and the k-means seeding.
        process_group: ``torch.distributed`` group to synchronise statistics over.
    """

    codebook: Tensor

    def __init__(
        self,
        codebook_size: int,
        dim: int,
        *,
        kmeans_init: bool,
        kmeans_iters: int,
        dead_code_window: int | None,
        reservoir_size: int,
        seed: int,
        process_group=None,
    ) -> None:
        super().__init__()
        if dead_code_window is not None and dead_code_window < 1:
            raise ValueError(f"dead_code_window must be None or >= 1, got {dead_code_window}")
        if reservoir_size < 1:
            raise ValueError(f"reservoir_size must be >= 1, got {reservoir_size}")
        self.codebook_size = codebook_size
        self.kmeans_iters = kmeans_iters
        self.dead_code_window = dead_code_window
        self.seed = seed
        self.process_group = process_group
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.tensor(not kmeans_init))
        self.register_buffer("last_used", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("usage_counts", torch.zeros(codebook_size, dtype=torch.long))
        self.register_buffer("usage_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("reservoir", torch.zeros(reservoir_size, dim))  # (R, D)
        self.register_buffer("reservoir_written", torch.zeros((), dtype=torch.long))
        self._kmeans_pending: list[Tensor] = []

    @torch.no_grad()
    def codebook_usage(self, reset: bool = True) -> CodebookUsage:
        """Usage over the training steps since the last reset (all ranks counted).

        Args:
            reset: start a new window afterwards.

        Returns:
            The window's :class:`CodebookUsage`; its perplexity is 0 for an empty window.
        """
        counts = self.usage_counts
        used = int((counts > 0).sum())
        usage = CodebookUsage(
            steps=int(self.usage_steps),
            codes_used=used,
            used_fraction=used / self.codebook_size,
            perplexity=float(perplexity(counts)) if counts.sum() > 0 else 0.0,
            dead_codes=self.codebook_size - used,
        )
        if reset:
            self.usage_counts.zero_()
            self.usage_steps.zero_()
        return usage

    def _set_codes(self, which: Tensor, vectors: Tensor, counts: Tensor | None = None) -> None:
        """Overwrite the codes selected by the mask ``which`` (K,) with ``vectors``."""
        raise NotImplementedError

    def _generator(self, purpose: int) -> torch.Generator:
        # A fresh stream per (seed, step, purpose): deterministic, and resumable from buffers.
        return torch.Generator().manual_seed(
            (self.seed * 1_000_003 + int(self.steps) * 7 + purpose) % (2**63)
        )

    def _record_step(self, flat: Tensor, counts: Tensor) -> None:
        """Count a training step with all-reduced code ``counts`` (K,); keep some of ``flat``."""
        self.steps += 1
        self.usage_counts += counts
        self.usage_steps += 1
        self.last_used[counts > 0] = self.steps
        self._remember(flat)

    def _all_reduce(self, t: Tensor) -> Tensor:
        if distributed(self.process_group):
            dist.all_reduce(t, group=self.process_group)
        return t

    def _broadcast(self, t: Tensor) -> Tensor:
        if distributed(self.process_group):
            src = dist.get_global_rank(self.process_group, 0) if self.process_group else 0
            dist.broadcast(t, src=src, group=self.process_group)
        return t

    def _remember(self, flat: Tensor) -> None:
        """Write a random sample of this batch ``(N, D)`` into the ring-buffer reservoir."""
        size = self.reservoir.shape[0]
        take = min(flat.shape[0], size)
        pick = torch.randperm(flat.shape[0], generator=self._generator(1))[:take].to(flat.device)
        start = int(self.reservoir_written) % size
        slots = (torch.arange(take, device=flat.device) + start) % size
        self.reservoir[slots] = flat[pick].to(self.reservoir.dtype)
        self.reservoir_written += take

    def _reset_dead_codes(self) -> None:
        """Re-seed codes unused for ``dead_code_window`` steps with reservoir vectors."""
        if self.dead_code_window is None:
            return
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
        """Keep ``flat`` ``(N, D)``; once every rank holds K vectors, start from k-means."""
        self._kmeans_pending.append(flat.float())
        have = torch.tensor(sum(x.shape[0] for x in self._kmeans_pending), device=flat.device)
        if distributed(self.process_group):
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
