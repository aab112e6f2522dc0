"""vqvae: discrete representation learning with VQ-VAE (van den Oord et al. 2017)."""

from vqvae.quantize import (
    CodebookUsage,
    EMAVectorQuantizer,
    QuantizerOutput,
    VectorQuantizer,
    codebook_perplexity,
    kmeans,
    nearest_codes,
)

__version__ = "0.1.0"

__all__ = [
    "CodebookUsage",
    "EMAVectorQuantizer",
    "QuantizerOutput",
    "VectorQuantizer",
    "__version__",
    "codebook_perplexity",
    "kmeans",
    "nearest_codes",
]
