"""Convolutional encoder and decoder of the paper (§4.1), for 1-, 2- and 3-D data.

No vector quantization here: the encoder maps data to continuous latents, the decoder
maps latents back. Shapes: B batch, C channels, S spatial axes.
"""

from __future__ import annotations

import math

from torch import Tensor, nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
ENCODER_NORMS = ("none", "group")
NORM_GROUPS = 16  # group normalisation's groups (fewer where the channels do not divide by 16)


def _norm(kind: str, channels: int) -> list[nn.Module]:
    """The encoder's normalisation after a convolution of ``channels`` outputs: none, or
    group normalisation over ``gcd(16, channels)`` groups (Wu & He 2018)."""
    return [nn.GroupNorm(math.gcd(NORM_GROUPS, channels), channels)] if kind == "group" else []


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")


def check_time_downsamples(time_downsamples: int | None, downsamples: int, spatial_dims: int) -> None:
    """Raise ``ValueError`` unless ``time_downsamples`` fits: None, or for 3-D data
    (time, height, width) an int in ``[0, downsamples]``."""
    if time_downsamples is None:
        return
    if spatial_dims != 3:
        raise ValueError(
            f"time_downsamples applies to 3-D data (time, height, width), but spatial_dims is "
            f"{spatial_dims}: leave it None"
        )
    if isinstance(time_downsamples, bool) or not isinstance(time_downsamples, int) or not (
        0 <= time_downsamples <= downsamples
    ):
        raise ValueError(
            f"time_downsamples must be an int in [0, downsamples={downsamples}] (how many of the "
            f"stride-2 convolutions also halve time), got {time_downsamples!r}"
        )


def _strides(downsamples: int, time_downsamples: int | None) -> list[bool]:
    """Whether each strided convolution of the encoder halves time too: the first
    ``time_downsamples`` do (all when None), the later ones keep it."""
    halving = downsamples if time_downsamples is None else time_downsamples
    return [i < halving for i in range(downsamples)]


def _strided(conv: type[nn.Module], c_in: int, c_out: int, halve_time: bool) -> nn.Module:
    """A stride-2 4x4 (transposed) convolution; ``halve_time=False`` keeps the first axis
    (time) with a 3-wide stride-1 window there, which changes no output size along it."""
    if halve_time:
        return conv(c_in, c_out, 4, stride=2, padding=1)
    return conv(c_in, c_out, (3, 4, 4), stride=(1, 2, 2), padding=(1, 1, 1))


class ResidualBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))``, the paper's residual block."""

    def __init__(self, channels: int, hidden: int, spatial_dims: int = 2) -> None:
        super().__init__()
        conv = _CONV[spatial_dims]
        self.block = nn.Sequential(
            nn.ReLU(),
            conv(channels, hidden, 3, padding=1),
            nn.ReLU(),
            conv(hidden, channels, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.block(x)


class Encoder(nn.Module):
    """Strided 4x4 convolutions, a 3x3 convolution, residual blocks, a 1x1 projection;
    with ``norm="group"``, group normalisation after each strided and the 3x3 convolution.

    Args:
        in_channels: C of the data.
        hidden: width of every convolution (the first strided one has half).
        res_hidden: width inside the residual blocks.
        out_channels: D, the code dimension.
        downsamples: number of stride-2 convolutions (each halves every spatial axis).
        residual_blocks: number of residual blocks.
        spatial_dims: 1, 2 or 3.
        time_downsamples: 3-D only: how many of the strided convolutions (the first ones)
            also halve the first axis, time; the others keep it. None: all of them.
        norm: ``"none"`` (the paper's) or ``"group"``: group normalisation before each of
            the ReLUs that follow the strided convolutions and before the residual blocks.

    Shapes:
        ``(B, C, *S) -> (B, D, *S / 2**downsamples)``; 3-D with ``time_downsamples``:
        ``(B, C, T, H, W) -> (B, D, T / 2**time_downsamples, H / 2**downsamples, W / 2**downsamples)``
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        res_hidden: int,
        out_channels: int,
        downsamples: int = 2,
        residual_blocks: int = 2,
        spatial_dims: int = 2,
        time_downsamples: int | None = None,
        norm: str = "none",
    ) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        if downsamples < 1:
            raise ValueError(f"downsamples must be >= 1, got {downsamples}")
        check_time_downsamples(time_downsamples, downsamples, spatial_dims)
        if norm not in ENCODER_NORMS:
            raise ValueError(f"norm must be one of {ENCODER_NORMS}, got {norm!r}")
        conv = _CONV[spatial_dims]
        widths = [in_channels] + [hidden // 2] * (downsamples - 1) + [hidden]
        layers: list[nn.Module] = []
        for i, halve_time in enumerate(_strides(downsamples, time_downsamples)):
            layers += [_strided(conv, widths[i], widths[i + 1], halve_time), *_norm(norm, widths[i + 1]), nn.ReLU()]
        layers += [conv(hidden, hidden, 3, padding=1), *_norm(norm, hidden)]
        layers += [ResidualBlock(hidden, res_hidden, spatial_dims) for _ in range(residual_blocks)]
        layers += [nn.ReLU(), conv(hidden, out_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """The encoder mirrored: 3x3 convolution, residual blocks, strided 4x4 transposed ones.

    ``time_upsamples`` (3-D only) mirrors the encoder's ``time_downsamples``: the last
    ``time_upsamples`` transposed convolutions double time, the earlier ones keep it.

    Shapes:
        ``(B, D, *S) -> (B, out_channels, *S * 2**upsamples)``; 3-D with ``time_upsamples``,
        the time axis grows by ``2**time_upsamples`` only.
    """

    def __init__(
        self,
        in_channels: int,
        hidden: int,
        res_hidden: int,
        out_channels: int,
        upsamples: int = 2,
        residual_blocks: int = 2,
        spatial_dims: int = 2,
        time_upsamples: int | None = None,
    ) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        if upsamples < 1:
            raise ValueError(f"upsamples must be >= 1, got {upsamples}")
        check_time_downsamples(time_upsamples, upsamples, spatial_dims)
        conv, conv_t = _CONV[spatial_dims], _CONV_T[spatial_dims]
        layers: list[nn.Module] = [conv(in_channels, hidden, 3, padding=1)]
        layers += [ResidualBlock(hidden, res_hidden, spatial_dims) for _ in range(residual_blocks)]
        layers.append(nn.ReLU())
        widths = [hidden] + [hidden // 2] * (upsamples - 1) + [out_channels]
        doubles_time = _strides(upsamples, time_upsamples)[::-1]  # the encoder's, mirrored
        for i, double_time in enumerate(doubles_time):
            layers.append(_strided(conv_t, widths[i], widths[i + 1], double_time))
            if i < upsamples - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
