"""vqvae: discrete representation learning with VQ-VAE (van den Oord et al. 2017)."""

from vqvae.autoencoder import VAE, VQVAE, VAEConfig, VAEOutput, VQVAEConfig, VQVAEOutput
from vqvae.modalities import MODALITIES, load
from vqvae.modalities.retrieval import Index
from vqvae.modalities.speech.model import SpeechVQVAE, SpeechVQVAEConfig
from vqvae.priors import PixelCNNConfig, PixelCNNPrior, TransformerConfig, TransformerPrior
from vqvae.quantize import (
    CodebookUsage,
    EMAVectorQuantizer,
    QuantizerConfig,
    QuantizerOutput,
    VectorQuantizer,
    codebook_perplexity,
    kmeans,
    make_quantizer,
    nearest_codes,
)

__version__ = "0.1.0"

__all__ = [
    "VAE",
    "VQVAE",
    "VAEConfig",
    "VAEOutput",
    "CodebookUsage",
    "EMAVectorQuantizer",
    "Index",
    "MODALITIES",
    "PixelCNNConfig",
    "PixelCNNPrior",
    "QuantizerConfig",
    "QuantizerOutput",
    "SpeechVQVAE",
    "SpeechVQVAEConfig",
    "TransformerConfig",
    "TransformerPrior",
    "VQVAEConfig",
    "VQVAEOutput",
    "VectorQuantizer",
    "__version__",
    "codebook_perplexity",
    "kmeans",
    "load",
    "make_quantizer",
    "nearest_codes",
]
