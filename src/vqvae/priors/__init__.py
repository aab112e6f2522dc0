"""Autoregressive priors over the code grids of a frozen tokenizer (stage 2 of VQ-VAE).

Both priors share one contract: ``forward(codes, label) -> logits (B, K, *S)`` where a
position's logits depend only on the codes before it in raster order, ``loss`` (nats per
code), ``log_prob`` (nats per sample) and ``sample(n, label, temperature, top_k, top_p,
generator, use_cache, guidance)``, classifier-free guidance included.
"""

from vqvae.priors.pixelcnn import GatedLayer, PixelCNNConfig, PixelCNNPrior
from vqvae.priors.sampling import draw, filter_logits, guide
from vqvae.priors.transformer import KVCache, TransformerConfig, TransformerPrior

__all__ = [
    "GatedLayer",
    "KVCache",
    "PixelCNNConfig",
    "PixelCNNPrior",
    "TransformerConfig",
    "TransformerPrior",
    "draw",
    "filter_logits",
    "guide",
]
