"""Continuous-valued likelihoods: a Gaussian of fixed variance (the MSE) and the Bernoulli."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from vqvae.likelihood.base import Likelihood


@dataclass(frozen=True)
class MSELikelihood(Likelihood):
    """Gaussian of fixed variance ``data_variance`` about ``mean = raw + 0.5``.

    ``raw + 0.5`` centres a zero-initialised decoder on mid-grey. The NLL is
    ``0.5 (x − mean)² / data_variance``: the Gaussian's up to its constant
    ``0.5 log(2π data_variance)``, and a density, not a mass (no bits/dim). The loss is
    the normalised MSE ``mean((x − mean)²) / data_variance``, twice the mean NLL, kept
    as it was so that β and learning rates tuned on it still apply.

    Attributes:
        data_variance: variance of the training pixels, > 0.
    """

    data_variance: float = 1.0
    name: ClassVar[str] = "mse"
    discrete: ClassVar[bool] = False

    def __post_init__(self) -> None:
        v = self.data_variance
        if (
            isinstance(v, bool)
            or not isinstance(v, numbers.Real)
            or not (v > 0 and math.isfinite(v))
        ):
            raise ValueError(
                f"data_variance must be a positive finite number, got {v!r}: use the variance "
                f"of the training pixels, or 1.0 for a plain MSE"
            )

    @property
    def params_per_channel(self) -> int:
        return 1

    def loss(self, params: Tensor, x: Tensor) -> Tensor:
        raw = self._split(params, x)[:, :, 0]  # (B, C, *S)
        return F.mse_loss(raw + 0.5, x.to(raw.dtype)) / self.data_variance

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        raw = self._split(params, x)[:, :, 0]  # (B, C, *S)
        return 0.5 * (x.to(raw.dtype) - (raw + 0.5)).square() / self.data_variance

    def mean(self, params: Tensor) -> Tensor:
        return (self._split(params)[:, :, 0] + 0.5).clamp(0.0, 1.0)

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Gaussian draws about the mean, clipped to [0, 1]; with the data's own variance
        they are very noisy: :meth:`mean` is the usual reconstruction."""
        raw = self._split(params)[:, :, 0]  # (B, C, *S)
        noise = torch.randn(raw.shape, generator=generator, device=raw.device, dtype=raw.dtype)
        return (raw + 0.5 + math.sqrt(self.data_variance) * noise).clamp(0.0, 1.0)


@dataclass(frozen=True)
class BernoulliLikelihood(Likelihood):
    """Independent Bernoulli per element with logits ``raw``, for binarised data.

    The NLL is the binary cross-entropy, also for soft targets in [0, 1].
    """

    name: ClassVar[str] = "bernoulli"
    discrete: ClassVar[bool] = False

    @property
    def params_per_channel(self) -> int:
        return 1

    def loss(self, params: Tensor, x: Tensor) -> Tensor:
        logits = self._split(params, x)[:, :, 0]  # (B, C, *S)
        return F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype))

    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        logits = self._split(params, x)[:, :, 0]  # (B, C, *S)
        return F.binary_cross_entropy_with_logits(logits, x.to(logits.dtype), reduction="none")

    def mean(self, params: Tensor) -> Tensor:
        return torch.sigmoid(self._split(params)[:, :, 0])

    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draws in {0, 1}."""
        return torch.bernoulli(self.mean(params), generator=generator)


