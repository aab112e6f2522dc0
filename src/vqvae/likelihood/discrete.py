"""Likelihoods over the 256 levels of 8-bit data: the discretised logistic mixture and the
256-way categorical; their NLL is a code length in bits/dim."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.likelihood.base import (
    _MAX_SAMPLING_LOG_SCALE,
    _NARROW_BIN,
    INITIAL_LOG_SCALE,
    LEVELS,
    MIN_LOG_SCALE,
    Likelihood,
    _check_mixtures,
    _compute_dtype,
    _draw,
    to_levels,
)


@dataclass(frozen=True)
class LogisticLikelihood(Likelihood):
    """Discretised logistic mixture over the 256 levels (PixelCNN++, Salimans et al. 2017).

    Each component is a logistic of mean μ and scale s = exp(log_s), binned into 256
    bins of width 1/255 centred on ``k/255``; the edge bins extend to −∞ and +∞, so a
    mean outside [0, 1] puts its mass on 0 or 255. Means live on the pixel scale centred
    like the mse head, ``μ = raw + 0.5``, so a zero-initialised decoder predicts
    mid-grey; log-scales are clamped below at :data:`MIN_LOG_SCALE`. The C channels are
    independent given the decoder output: there are no autoregressive coefficients
    between the colour channels (PixelCNN++ §2.2), the decoder alone couples them.

    Params per channel: ``(mean, log_scale)`` for one component, else
    ``(M mixture logits, M means, M log-scales)``.

    Stability: PixelCNN++ computes a bin's mass as σ(a) − σ(b), b and a its standardised
    edges, which cancels in the tails, and falls back to the density at the bin centre
    there. Here the mass is written as the product ``σ(a) · σ(−b) · (1 − e^{−(a−b)})``,
    each factor in log space (log-sigmoids, ``log(−expm1)``), which never cancels: the
    NLL is exact, and finite with finite gradients for any log-scale and any |μ| below
    ~1e30 (tested to 1e5). The centre-density approximation is its limit for narrow bins
    (``log d`` for ``log(1 − e^{−d})``, used below d = 1e-4 where d may underflow). The edges are computed from the integer levels, so
    neighbouring bins share them bit for bit and the 256 masses sum to 1 to fp32 rounding.

    Attributes:
        mixtures: M, the number of logistic components, >= 1.
    """

    mixtures: int = 1
    name: ClassVar[str] = "logistic"
    discrete: ClassVar[bool] = True

    def __post_init__(self) -> None:
        _check_mixtures(self.mixtures)

    @property
    def params_per_channel(self) -> int:
        return 2 if self.mixtures == 1 else 3 * self.mixtures

    def initial_bias(self) -> Tensor:
        """Log-scales start at :data:`INITIAL_LOG_SCALE`: with a zero bias (s = 1) the logistic
        spreads its mass far beyond [0, 1], costing more than the uniform 8 bits, and the
        gradient reaching the means, which scales with 1/s, is small."""
        bias = torch.zeros(self.params_per_channel)
        bias[1 if self.mixtures == 1 else 2 * self.mixtures :] = INITIAL_LOG_SCALE
        return bias

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        logit_weights, means, log_scales = self._components(self._split(params, x))
        levels = to_levels(x).unsqueeze(2)  # (B, C, 1, *S)
        log_mass = _logistic_log_mass(levels, means, log_scales)  # (B, C, M, *S)
        if logit_weights is None:
            return -log_mass[:, :, 0]
        return -torch.logsumexp(log_mass + logit_weights.log_softmax(dim=2), dim=2)

    def mean(self, params: Tensor) -> Tensor:
        """The mixture's continuous mean ``Σ π_m μ_m``, clamped to [0, 1]."""
        logit_weights, means, _ = self._components(self._split(params))
        if logit_weights is None:
            return means[:, :, 0].clamp(0.0, 1.0)
        return (logit_weights.softmax(dim=2) * means).sum(dim=2).clamp(0.0, 1.0)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A component per element (mixtures only), then a logistic draw by inverse CDF,
        binned to its level; the generator serves the components first, then the
        uniforms of the logistic draws."""
        logit_weights, means, log_scales = self._components(self._split(params))
        if logit_weights is not None:
            chosen = _draw(logit_weights.movedim(2, -1), generator).unsqueeze(2)  # (B, C, 1, *S)
            means, log_scales = means.gather(2, chosen), log_scales.gather(2, chosen)
        means, log_scales = means[:, :, 0], log_scales[:, :, 0]  # (B, C, *S)
        u = torch.rand(means.shape, generator=generator, device=means.device, dtype=means.dtype)
        eps = torch.finfo(u.dtype).eps
        u = u.clamp(eps, 1 - eps)  # logit(0) = -inf
        scale = log_scales.clamp(max=_MAX_SAMPLING_LOG_SCALE).exp()
        value = means + scale * (torch.log(u) - torch.log1p(-u))
        # Bins are centred on k/255 and the edge bins are open: rounding then clamping bins
        # the draw; the clamp to [-1, 2] first keeps value * 255 finite.
        levels = (value.clamp(-1.0, 2.0) * (LEVELS - 1)).round().clamp(0, LEVELS - 1)
        return levels / (LEVELS - 1)

    def _components(self, p: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        """Mixture logits (None for one component), means μ and clamped log-scales, each
        ``(B, C, M, *S)``, from ``(B, C, P, *S)``."""
        m = self.mixtures
        if m == 1:
            return None, p[:, :, :1] + 0.5, p[:, :, 1:2].clamp(min=MIN_LOG_SCALE)
        return p[:, :, :m], p[:, :, m : 2 * m] + 0.5, p[:, :, 2 * m :].clamp(min=MIN_LOG_SCALE)


@dataclass(frozen=True)
class CategoricalLikelihood(Likelihood):
    """A softmax over the 256 levels ``k/255`` per element: 256 logits per channel.

    The NLL is the cross-entropy of the level; uniform logits give exactly 8 bits/dim.
    """

    name: ClassVar[str] = "categorical"
    discrete: ClassVar[bool] = True

    @property
    def params_per_channel(self) -> int:
        return LEVELS

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        logits = self._split(params, x)  # (B, C, K, *S)
        levels = to_levels(x)  # (B, C, *S)
        nll = F.cross_entropy(logits.flatten(0, 1), levels.flatten(0, 1), reduction="none")
        return nll.unflatten(0, levels.shape[:2])  # (B, C, *S)

    def mean(self, params: Tensor) -> Tensor:
        """The expected level / 255."""
        probs = self._split(params).softmax(dim=2)  # (B, C, K, *S)
        values = torch.arange(LEVELS, device=probs.device, dtype=probs.dtype) / (LEVELS - 1)
        values = values.view(1, 1, LEVELS, *([1] * (probs.dim() - 3)))  # (1, 1, K, 1...)
        return (probs * values).sum(dim=2)  # elementwise, not a matmul: autocast keeps fp32

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        levels = _draw(self._split(params).movedim(2, -1), generator)  # (B, C, *S)
        return levels.to(_compute_dtype(params)) / (LEVELS - 1)

def _logistic_log_mass(levels: Tensor, means: Tensor, log_scales: Tensor) -> Tensor:
    """log P(level) under logistic(μ, s) binned at ``k/255 ± 1/510``, edge bins open.

    ``levels`` ``(B, C, 1, *S)`` int64 broadcast against ``means``, ``log_scales``
    ``(B, C, M, *S)``; returns ``(B, C, M, *S)``.
    """
    k = levels.to(means.dtype)
    inv_scale = torch.exp(-log_scales)
    # Standardised edges. (k ± 0.5) is exact, so bin k's upper edge and bin k+1's lower
    # edge are the same float: the masses telescope and sum to 1.
    upper = ((k + 0.5) / (LEVELS - 1) - means) * inv_scale
    lower = ((k - 0.5) / (LEVELS - 1) - means) * inv_scale
    log_cdf_upper = F.logsigmoid(upper)  # log F(upper): all of bin 0
    log_sf_lower = F.logsigmoid(-lower)  # log(1 − F(lower)): all of bin 255
    # σ(a) − σ(b) = σ(a) σ(−b) (1 − e^{−(a−b)}), with d = a − b the bin width in scales,
    # taken from the shared edges so that the masses stay consistent between bins.
    width = upper - lower
    narrow = width < _NARROW_BIN
    # Narrow bins: log(1 − e^{−d}) ≈ log d − d/2 with the analytic log d = −log s − log 255,
    # finite (with a finite gradient) when d is denormal or 0. They hold little mass
    # (< 64 d in all), so their d need not match the edges to the last bit.
    log_one_minus = torch.where(
        narrow,
        -log_scales - math.log(LEVELS - 1) - 0.5 * width,
        torch.log(-torch.expm1(-torch.where(narrow, 1.0, width))),  # inner where: no inf grad
    )
    interior = log_cdf_upper + log_sf_lower + log_one_minus
    return torch.where(k == 0, log_cdf_upper, torch.where(k == LEVELS - 1, log_sf_lower, interior))


