"""How models describe their vector quantizer: :class:`QuantizerConfig`.

Model configs inherit its fields, so their names are those saved, flat, in
``config.json["model"]``; :func:`vqvae.quantize.make_quantizer` builds the quantizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["QUANTIZERS", "QuantizerConfig"]

QUANTIZERS = ("ema", "grad")


@dataclass(frozen=True)
class QuantizerConfig:
    """The quantizer settings every model shares; saved flat in ``config.json["model"]``.

    Defaults are the paper's codebook (§4.1, appendix A.1): K=512, D=64, β=0.25, γ=0.99.

    Attributes:
        codebook_size: K.
        code_dim: D.
        quantizer: ``"ema"`` (:class:`~vqvae.quantize.EMAVectorQuantizer`, appendix A.1) or
            ``"grad"`` (:class:`~vqvae.quantize.VectorQuantizer`, codebook loss).
        beta: commitment cost β.
        decay: EMA decay γ (EMA quantizer only).
        kmeans_init: start the codebook from k-means on the first batches.
        dead_code_window: re-seed codes unused for this many steps (None: never).
    """

    codebook_size: int = 512
    code_dim: int = 64
    quantizer: str = "ema"
    beta: float = 0.25
    decay: float = 0.99
    kmeans_init: bool = True
    dead_code_window: int | None = 100

    def __post_init__(self) -> None:
        for name in ("codebook_size", "code_dim"):
            _check_int(name, getattr(self, name), 1)
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"model.quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        _check_number("beta", self.beta)
        if self.beta < 0:
            raise ValueError(f"model.beta (commitment cost) must be >= 0, got {self.beta!r}")
        _check_number("decay", self.decay)
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"model.decay must lie in [0, 1), got {self.decay!r}")
        if not isinstance(self.kmeans_init, bool):
            raise ValueError(f"model.kmeans_init must be true or false, got {self.kmeans_init!r}")
        if self.dead_code_window is not None:
            _check_int("dead_code_window", self.dead_code_window, 1)


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"model.{name} must be an integer >= {minimum}, got {value!r}")


def _check_number(name: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"model.{name} must be a finite number, got {value!r}")
