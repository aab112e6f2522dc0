"""Decoder likelihoods ``p(x | z)`` of the autoencoders, and bits/dim of 8-bit data.

A decoder outputs ``params`` ``(B, C·P, *S)``: ``P = params_per_channel`` numbers per
data channel, channel c owning the block ``params[:, c*P:(c+1)*P]`` (that is,
``params.unflatten(1, (C, P))``). A :class:`Likelihood` turns them into the training
loss, the per-element negative log-likelihood, a point estimate and samples:

* ``"mse"``: Gaussian of fixed variance ``data_variance`` about ``raw + 0.5``; the loss
  is the normalised MSE the VQ-VAE has always been trained on.
* ``"bernoulli"``: ``raw`` are logits, for binarised data.
* ``"logistic"``: discretised logistic (mixture) over the 256 levels ``k/255``
  (Salimans et al. 2017, PixelCNN++, §2.1).
* ``"categorical"``: a softmax over the 256 levels.

The last two put a probability mass on every 8-bit value, so their NLL, summed over an
example and added to the latent term, is a negative ELBO that :func:`bits_per_dim`
reports as in the VQ-VAE paper's CIFAR-10 comparison (van den Oord et al. 2017, §4.1).

Every computation runs in fp32 (fp64 inputs stay fp64), also under bf16 autocast: only
elementwise ops are used, which autocast never lowers, and the params are cast first.

Letters: B batch, C data channels, P params per channel, M mixture components,
K = 256 levels, S the 1 to 3 spatial axes.
"""

from __future__ import annotations

import math
import numbers
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "DISCRETE",
    "LEVELS",
    "LIKELIHOODS",
    "MIN_LOG_SCALE",
    "BernoulliLikelihood",
    "CategoricalLikelihood",
    "Likelihood",
    "LogisticLikelihood",
    "MSELikelihood",
    "bits_per_dim",
    "make_likelihood",
    "to_levels",
]

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


def make_likelihood(name: str, *, data_variance: float = 1.0, mixtures: int = 1) -> Likelihood:
    """The likelihood called ``name``.

    Args:
        name: one of :data:`LIKELIHOODS`.
        data_variance: the Gaussian's variance, used by ``"mse"`` only.
        mixtures: components of the ``"logistic"`` mixture; must stay 1 for the others.

    Returns:
        A :class:`Likelihood`.
    """
    if name not in LIKELIHOODS:
        raise ValueError(f"unknown likelihood {name!r}: expected one of {LIKELIHOODS}")
    _check_mixtures(mixtures)
    if mixtures != 1 and name != "logistic":
        raise ValueError(
            f"mixtures={mixtures} only applies to the 'logistic' likelihood, got {name!r}: "
            f"use likelihood 'logistic' or leave mixtures at 1"
        )
    if name == "mse":
        return MSELikelihood(data_variance)
    if name == "bernoulli":
        return BernoulliLikelihood()
    if name == "logistic":
        return LogisticLikelihood(mixtures)
    return CategoricalLikelihood()


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
