"""The settings of the speech VQ-VAE, :class:`SpeechVQVAEConfig`, and their checks.

Letters: T samples, L = T / 64 latent steps, D code dimension, E speaker embedding size.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

from vqvae.quantize import QuantizerConfig

__all__ = [
    "CONTENT_NORMS",
    "DECODERS",
    "DEFAULT_STFT_RESOLUTIONS",
    "SpeechVQVAEConfig",
    "check_resolution",
]

DEFAULT_STFT_RESOLUTIONS = ((512, 128, 512), (256, 64, 256), (128, 32, 128))
DECODERS = ("spectral", "upsample")
CONTENT_NORMS = ("none", "output", "layers")


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"model.{name} must be an integer >= {minimum}, got {value!r}")


def _check_float(name: str, value, low: float, high: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"model.{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"model.{name} must be a finite number in [{low}, {high}], got {value!r}")


def _int_tuple(name: str, values) -> tuple:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"model.{name} must be a non-empty tuple, got {values!r}")
    return tuple(values)


@dataclass(frozen=True)
class SpeechVQVAEConfig(QuantizerConfig):
    """Everything needed to rebuild a :class:`SpeechVQVAE`; saved as ``config.json["model"]``.

    The encoder (256 wide), D=64, β=0.25 and γ=0.99 are the paper's (§4.3, appendix A.1);
    the codebook is twice the paper's, K=1024, and the decoder is trained on time-jittered
    codes (``jitter``). Those three together, against a 128-wide encoder, K=512 and no jitter,
    raised the digit kept in conversions of the 15-minute FSDD command from 84.2 % to
    88.6 % and the conversions heard as the target speaker from 89.9 % to 95.9 % (robust
    judges, mean of two seeds; docs/results.md). The width brings most of the digit, though
    it buys 19-29 % fewer steps; jitter and K bring most of the voice. The encoder's layers
    are instance-normalised over each clip (``content_norm``), which the paper's are not:
    that is what lets the codes drop the voice.

    Attributes:
        sample_rate: samples per second of the audio; the model itself only needs it to
            report rates, the data pipeline resamples to it.
        hidden: width of the encoder (its first five stride-2 convolutions have half).
        res_hidden: width inside the encoder's residual blocks.
        residual_blocks: residual blocks of the encoder.
        downsamples: stride-2 convolutions of the encoder; one code per
            ``2**downsamples`` samples (the paper: 6, so 64).
        codebook_size: K, 1024 here (the image and video models keep the paper's 512).
        code_dim, quantizer, beta, decay, kmeans_init, dead_code_window: the rest of the
            codebook, from :class:`~vqvae.quantize.QuantizerConfig` (saved flat, like the rest).
        num_speakers: speakers the decoder is conditioned on; 0 for none.
        speaker_dim: E, size of the learned speaker embedding.
        speaker_scale: the spectral decoder's blocks take a per-channel scale and shift
            from the speaker (FiLM); False (the default): a shift only. In the 15-minute
            FSDD run the shift kept more content (digit accuracy 87.7 % against 85.7 % on
            reconstructions, 50.9 % against 42.9 % in conversions) and still imposed the
            voice (92.3 % of conversions heard as the target speaker, against 97.8 %).
        decoder: ``"spectral"``, a :class:`SpectralDecoder` (ConvNeXt blocks at the code
            rate that predict STFT frames, then an inverse STFT), or ``"upsample"``, a
            :class:`SpeechDecoder` (six ×2 transposed-convolution stages with dilated
            residual units up to the sample rate).
        decoder_width: decoder channels at the code rate; in the upsampling decoder they
            halve at every stage down to ``DECODER_MIN_CHANNELS`` (or ``decoder_width`` if
            smaller), so the 4 and 8 kHz stages stay cheap.
        decoder_depth: ConvNeXt blocks of the spectral decoder (each sees 7 frames, so 8
            blocks see 49 codes, 392 ms).
        decoder_dilations: upsampling decoder: dilations of the kernel-3 residual units
            after each upsampling; (1, 3, 9) sees 27 steps of each stage's rate.
        stft_resolutions: ``(n_fft, hop, win)`` of each STFT of the loss; 512/128/64
            samples resolve pitch harmonics, 128 samples (16 ms) onsets.
        waveform_weight: weight of the L1 waveform term. 1.0: the spectral terms are
            O(1) while a sample-wise L1 on speech in [-1, 1] is about 0.05 to 0.1, so the
            waveform term is a light anchor of the phase of the loud low harmonics,
            not a weight that would make the decoder average over phases and muffle.
        mel_weight: weight of the L1 distance between log-mel spectrograms (64 ms
            windows, 8 ms hop, 64 bins; see :func:`mel_loss`). The linear-frequency STFT
            terms spend most of their bins above 2 kHz, where speech has little to tell
            apart; the mel scale gives the formants below it, which carry the words,
            their due share.
        content_norm: instance normalisation (each channel to zero mean and unit variance
            over the clip's time, as in AdaIN-VC, Chou et al. 2019) of the encoder: ``"none"``;
            ``"output"``, of its output before the lookup; ``"layers"``, also after each
            strided convolution (the default). What stays constant through a clip, the
            voice and the microphone, is then not in the codes, and the decoder must take
            it from the speaker embedding. In the 15-minute FSDD command, one run
            each: ``"layers"`` kept the digit in 81.9 % of conversions (``"output"``:
            66.7 %, ``"none"``: 50.9 %) and in 95.0 % of reconstructions (89.3 %, 87.7 %),
            with 91.7 % of conversions heard as the target speaker (99.0 %, 92.3 %); the
            benchmark's later ``"layers"`` run: 84.9 %, 96.0 %, 94.3 %.
        jitter: time jitter (Chorowski et al. 2019): while training, each code step the
            decoder sees is replaced by its left or right neighbour with this probability
            (half each), so that no single code can carry what must last longer than a code,
            the voice above all; 0 turns it off. Saved only when not 0; a config without it
            was written before it and reads as 0.
        seed: seeds the codebook initialisation and resets.
    """

    codebook_size: int = 1024
    sample_rate: int = 8000
    hidden: int = 256
    res_hidden: int = 128
    residual_blocks: int = 1
    downsamples: int = 6
    num_speakers: int = 0
    speaker_dim: int = 64
    speaker_scale: bool = False
    decoder: str = "spectral"
    decoder_width: int = 256
    decoder_depth: int = 8
    decoder_dilations: tuple[int, ...] = (1, 3, 9)
    stft_resolutions: tuple[tuple[int, int, int], ...] = DEFAULT_STFT_RESOLUTIONS
    waveform_weight: float = 1.0
    mel_weight: float = 1.0
    content_norm: str = "layers"
    jitter: float = 0.12
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in (
            "sample_rate",
            "hidden",
            "res_hidden",
            "downsamples",
            "speaker_dim",
            "decoder_width",
            "decoder_depth",
        ):
            _check_int(name, getattr(self, name), 1)
        for name in ("residual_blocks", "num_speakers", "seed"):
            _check_int(name, getattr(self, name), 0)
        if self.content_norm not in CONTENT_NORMS:
            raise ValueError(f"model.content_norm must be one of {CONTENT_NORMS}, got {self.content_norm!r}")
        if not isinstance(self.speaker_scale, bool):
            raise ValueError(f"model.speaker_scale must be true or false, got {self.speaker_scale!r}")
        if self.decoder not in DECODERS:
            raise ValueError(f"model.decoder must be one of {DECODERS}, got {self.decoder!r}")
        _check_float("waveform_weight", self.waveform_weight, 0.0)
        _check_float("mel_weight", self.mel_weight, 0.0)
        _check_float("jitter", self.jitter, 0.0, 1.0)
        # JSON turns tuples into lists: accept any sequence, keep tuples (hashable, frozen).
        dilations = _int_tuple("decoder_dilations", self.decoder_dilations)
        for d in dilations:
            _check_int("decoder_dilations[...]", d, 1)
        object.__setattr__(self, "decoder_dilations", dilations)
        resolutions = tuple(
            _int_tuple("stft_resolutions[...]", r)
            for r in _int_tuple("stft_resolutions", self.stft_resolutions)
        )
        for r in resolutions:
            check_resolution(r)
        object.__setattr__(self, "stft_resolutions", resolutions)

    @property
    def hop(self) -> int:
        """Samples per code, ``2**downsamples``."""
        return 1 << self.downsamples

    def to_dict(self) -> dict:
        values = dataclasses.asdict(self)
        if not self.jitter:  # a config without jitter stays readable by releases before it
            del values["jitter"]
        return values

    @classmethod
    def from_dict(cls, values: dict) -> SpeechVQVAEConfig:
        """Rebuild from :meth:`to_dict`'s output, also after a JSON round trip (lists → tuples)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown speech model settings {unknown} in config.json: was it written by a "
                f"newer vqvae? Known: {sorted(known)}"
            )
        # Configs from before these settings existed: upsampling decoder, no mel term, no jitter.
        values = {"decoder": "upsample", "mel_weight": 0.0, "speaker_scale": True,
                  "content_norm": "none", "jitter": 0.0, **values}
        if "decoder_dilations" in values:
            values["decoder_dilations"] = _int_tuple(
                "decoder_dilations", values["decoder_dilations"]
            )
        if "stft_resolutions" in values:
            values["stft_resolutions"] = tuple(
                _int_tuple("stft_resolutions[...]", r)
                for r in _int_tuple("stft_resolutions", values["stft_resolutions"])
            )
        return cls(**values)


def check_resolution(resolution: tuple) -> None:
    """Refuse an STFT ``(n_fft, hop, win)`` that is not three positive ints with ``win <= n_fft``."""
    if len(resolution) != 3:
        raise ValueError(f"an STFT resolution is (n_fft, hop, win), got {resolution!r}")
    for value in resolution:
        _check_int("stft_resolutions[...]", value, 1)
    n_fft, _, win = resolution
    if win > n_fft:
        raise ValueError(
            f"STFT resolution {resolution}: the window ({win}) must not be longer than n_fft "
            f"({n_fft})"
        )
