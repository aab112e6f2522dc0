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

from vqvae.likelihood.base import (
    DISCRETE,
    LEVELS,
    LIKELIHOODS,
    MIN_LOG_SCALE,
    Likelihood,
    _check_mixtures,
    bits_per_dim,
    to_levels,
)
from vqvae.likelihood.continuous import BernoulliLikelihood, MSELikelihood
from vqvae.likelihood.discrete import CategoricalLikelihood, LogisticLikelihood

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


