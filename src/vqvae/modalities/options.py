"""Flags that several modalities share: the codebook's and the encoder's."""

from __future__ import annotations

from vqvae.modalities.base import Option


def quantizer_options(codebook_size: int = 512, decay: str = "0.99") -> tuple[Option, ...]:
    """The codebook's flags, with this modality's K and EMA decay in their help."""
    return (
        Option("--codebook-size", f"K, number of codes (default {codebook_size})", int, field="codebook_size"),
        Option("--code-dim", "D, code dimension (default 64)", int, field="code_dim"),
        Option("--quantizer", "ema (appendix A.1, default) or grad", str, field="quantizer"),
        Option("--beta", "commitment cost (default 0.25)", float, field="beta"),
        Option("--decay", f"EMA decay (default {decay})", float, field="decay"),
        Option("--dead-code-window", "re-seed codes unused this many steps (default 100)", int,
               field="dead_code_window"),
        Option("--kmeans-init", "start the codebook from k-means on the first batch (default on)", None,
               switch="optional", field="kmeans_init"),
    )


def encoder_options(hidden: int, res_hidden: int, blocks: int, downsamples: str) -> tuple[Option, ...]:
    """The encoder's size flags, with this modality's defaults in their help."""
    return (
        Option("--hidden", f"encoder/decoder width (default {hidden})", int, field="hidden"),
        Option("--res-hidden", f"width inside residual blocks (default {res_hidden})", int, field="res_hidden"),
        Option("--residual-blocks", f"residual blocks (default {blocks})", int, field="residual_blocks"),
        Option("--downsamples", f"stride-2 convolutions: {downsamples}", int, field="downsamples"),
    )
