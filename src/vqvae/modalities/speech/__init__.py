"""Speech: audio data sets, the speech VQ-VAE, speaker conversion, outputs and judges."""

from vqvae.modalities.speech.modality import SpeechModality

__all__ = ["SpeechModality"]
