"""Video: 3-D latents over time, height and width (Moving MNIST, ViZDoom recordings), the
video tokenizer's training, action-conditioned frame prediction, outputs and judges."""

from vqvae.modalities.video.modality import VideoModality

__all__ = ["VideoModality"]
