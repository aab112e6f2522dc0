"""The likelihood interface, the 8-bit level grid and bits/dim, shared by every likelihood."""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

LIKELIHOODS = ("mse", "bernoulli", "logistic", "categorical")
DISCRETE = ("logistic", "categorical")  # a probability mass over the 256 levels -> bits/dim
LEVELS = 256

# Floor of the logistic log-scale. At s = e^-4 / 255 a bin's half-width is e^4 / 2 ≈ 27
# scales, so a mean at the bin centre already gets mass 1 - 2σ(-27) ≈ 1 - 4e-12: no fp32
# loss can improve below the floor, while a smaller s would only steepen the gradients
# (∝ 1/s) of a mean that is off by a bin. PixelCNN++'s floor (-7 on a [-1, 1] scale) is
# 2.15 below its log bin width; this one is 4 below.
MIN_LOG_SCALE = math.log(1 / (LEVELS - 1)) - 4.0

# Below this bin width d (in scale units) log(1 - e^-d) is taken as log d - d/2, whose
# error d²/24 < 1e-9 there, and which stays finite when d itself underflows.
_NARROW_BIN = 1e-4
# s = e^-2 ≈ 0.14: a logistic of standard deviation s·π/√3 ≈ 0.25, the spread of natural
# pixel values in [0, 1].
INITIAL_LOG_SCALE = -2.0
# exp() of the log-scale is capped here when sampling so that s · logit(u) stays finite
# in fp32; at s = e^80 the draw is at ±inf on the pixel scale either way.
_MAX_SAMPLING_LOG_SCALE = 80.0


class Likelihood(ABC):
    """A decoder likelihood: loss, NLL, point estimate and samples from decoder params.

    Attributes:
        name: one of :data:`LIKELIHOODS`.
        discrete: True when the NLL is the negative log of a probability mass over the
            256 levels ``k/255`` (then bits/dim are meaningful).
        params_per_channel: P, decoder output channels per data channel.

    Shapes:
        params ``(B, C·P, *S)``; x, NLL, mean and samples ``(B, C, *S)``.
    """

    name: ClassVar[str]
    discrete: ClassVar[bool]

    @property
    @abstractmethod
    def params_per_channel(self) -> int:
        """P, decoder output channels per data channel."""

    def initial_bias(self) -> Tensor:
        """Bias ``(P,)`` of the decoder's output layer, per data channel, for a fresh decoder:
        zeros (mid-grey means, equal logits) unless a likelihood needs a better start."""
        return torch.zeros(self.params_per_channel)

    def loss(self, params: Tensor, x: Tensor) -> Tensor:
        """Training loss: the mean over all elements of the per-element NLL in nats.

        Args:
            params: ``(B, C·P, *S)`` decoder outputs.
            x: ``(B, C, *S)`` data in [0, 1].

        Returns:
            A scalar tensor, fp32 (fp64 for fp64 params).
        """
        return self.nll(params, x).mean()

    @abstractmethod
    def nll(self, params: Tensor, x: Tensor) -> Tensor:
        """Per-element negative log-likelihood in nats.

        Args:
            params: ``(B, C·P, *S)`` decoder outputs.
            x: ``(B, C, *S)`` data in [0, 1] (discrete likelihoods: 8-bit values ``k/255``).

        Returns:
            ``(B, C, *S)``, fp32 (fp64 for fp64 params).
        """

    @abstractmethod
    def mean(self, params: Tensor) -> Tensor:
        """The decoder's point estimate ``(B, C, *S)`` in [0, 1] from ``(B, C·P, *S)``."""

    @abstractmethod
    def sample(self, params: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Draws ``(B, C, *S)`` in [0, 1] from ``(B, C·P, *S)``.

        Args:
            params: decoder outputs.
            generator: the random source, on the device of ``params``; None: torch's default.

        Returns:
            One draw per element; discrete likelihoods give exactly ``k / 255``.
        """

    def _split(self, params: Tensor, x: Tensor | None = None) -> Tensor:
        """``params`` in fp32 (fp64 kept) as ``(B, C, P, *S)``, after checking the shapes."""
        p = self.params_per_channel
        if not isinstance(params, Tensor) or not params.is_floating_point():
            raise TypeError(
                f"params must be a floating-point tensor (B, C*{p}, *S), got "
                f"{type(params).__name__ if not isinstance(params, Tensor) else params.dtype}"
            )
        if params.dim() < 2 or params.shape[1] % p:
            raise ValueError(
                f"{self.name} params must have shape (B, C*{p}, *S) ({p} decoder channels per "
                f"data channel), got shape {tuple(params.shape)}"
            )
        if x is not None:
            _check_float("x", x)
            expected = (x.shape[0], x.shape[1] * p, *x.shape[2:]) if x.dim() >= 2 else None
            if tuple(params.shape) != expected:
                raise ValueError(
                    f"{self.name} params must have shape (B, C*{p}, *S) for x of shape (B, C, *S) = "
                    f"{tuple(x.shape)}, got {tuple(params.shape)}: the decoder needs "
                    f"{p} output channels per data channel"
                )
        return params.to(_compute_dtype(params)).unflatten(1, (-1, p))  # (B, C, P, *S)


def to_levels(x: Tensor) -> Tensor:
    """8-bit levels ``round(x · 255)`` of data in [0, 1].

    Args:
        x: floating tensor in [0, 1] (any shape); 8-bit data as ``k / 255``.

    Returns:
        int64 levels 0..255, same shape.
    """
    _check_float("x", x)
    outside = (x < 0) | (x > 1) | x.isnan()
    if outside.any():
        raise ValueError(
            f"x must lie in [0, 1] (8-bit data as k/255), got {int(outside.sum())} values "
            f"outside, e.g. {float(x[outside][0])}: scale uint8 data by 1/255"
        )
    return (x.to(_compute_dtype(x)) * (LEVELS - 1)).round().long()


def bits_per_dim(nats: Tensor | float, dims: int) -> float:
    """Bits per dimension ``nats / (dims · ln 2)``.

    Args:
        nats: negative log-likelihood (or negative ELBO) of one example in nats, or its
            mean over examples; a number or a one-element tensor.
        dims: dimensions of one example, e.g. ``C · H · W`` = 3072 for CIFAR-10.

    Returns:
        A float.
    """
    if isinstance(dims, bool) or not isinstance(dims, numbers.Integral) or dims < 1:
        raise ValueError(f"dims must be a positive int (e.g. C*H*W), got {dims!r}")
    if isinstance(nats, Tensor):
        if nats.numel() != 1:
            raise ValueError(
                f"nats must be one number, got a tensor of shape {tuple(nats.shape)}: sum over "
                f"the dimensions of an example and average over examples first"
            )
        nats = float(nats)
    elif isinstance(nats, bool) or not isinstance(nats, numbers.Real):
        raise TypeError(f"nats must be a number or a one-element tensor, got {type(nats).__name__}")
    return float(nats) / (int(dims) * math.log(2))


def _draw(logits: Tensor, generator: torch.Generator | None) -> Tensor:
    """One index per row of ``logits`` ``(..., K)`` from their softmax; returns ``(...)``."""
    probs = logits.reshape(-1, logits.shape[-1]).softmax(dim=-1)  # (N, K)
    return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])


def _compute_dtype(t: Tensor) -> torch.dtype:
    """fp32 for fp16/bf16/fp32 inputs, fp64 for fp64 (gradcheck, references)."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _check_float(name: str, x: object) -> None:
    if not isinstance(x, Tensor) or not x.is_floating_point():
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise TypeError(
            f"{name} must be a floating-point tensor in [0, 1], got {got}: scale uint8 data by 1/255"
        )


def _check_mixtures(mixtures: object) -> None:
    if isinstance(mixtures, bool) or not isinstance(mixtures, numbers.Integral):
        raise TypeError(f"mixtures must be a positive int, got {mixtures!r}")
    if mixtures < 1:
        raise ValueError(f"mixtures must be >= 1 (1: a single logistic), got {mixtures}")

