"""Convolutional encoder and decoder of the paper (§4.1), for 1-, 2- and 3-D data.

No vector quantization here: the encoder maps data to continuous latents, the decoder
maps latents back. Shapes: B batch, C channels, S spatial axes.
"""

from __future__ import annotations

from torch import Tensor, nn

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONV_T = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}


def _check_dims(spatial_dims: int) -> None:
    if spatial_dims not in _CONV:
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")


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
    """Strided 4x4 convolutions, a 3x3 convolution, residual blocks, a 1x1 projection.

    Args:
        in_channels: C of the data.
        hidden: width of every convolution (the first strided one has half).
        res_hidden: width inside the residual blocks.
        out_channels: D, the code dimension.
        downsamples: number of stride-2 convolutions (each halves every spatial axis).
        residual_blocks: number of residual blocks.
        spatial_dims: 1, 2 or 3.

    Shapes:
        ``(B, C, *S) -> (B, D, *S / 2**downsamples)``
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
    ) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        if downsamples < 1:
            raise ValueError(f"downsamples must be >= 1, got {downsamples}")
        conv = _CONV[spatial_dims]
        widths = [in_channels] + [hidden // 2] * (downsamples - 1) + [hidden]
        layers: list[nn.Module] = []
        for i in range(downsamples):
            layers += [conv(widths[i], widths[i + 1], 4, stride=2, padding=1), nn.ReLU()]
        layers.append(conv(hidden, hidden, 3, padding=1))
        layers += [ResidualBlock(hidden, res_hidden, spatial_dims) for _ in range(residual_blocks)]
        layers += [nn.ReLU(), conv(hidden, out_channels, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """The encoder mirrored: 3x3 convolution, residual blocks, strided 4x4 transposed ones.

    Shapes:
        ``(B, D, *S) -> (B, out_channels, *S * 2**upsamples)``
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
    ) -> None:
        super().__init__()
        _check_dims(spatial_dims)
        if upsamples < 1:
            raise ValueError(f"upsamples must be >= 1, got {upsamples}")
        conv, conv_t = _CONV[spatial_dims], _CONV_T[spatial_dims]
        layers: list[nn.Module] = [conv(in_channels, hidden, 3, padding=1)]
        layers += [ResidualBlock(hidden, res_hidden, spatial_dims) for _ in range(residual_blocks)]
        layers.append(nn.ReLU())
        widths = [hidden] + [hidden // 2] * (upsamples - 1) + [out_channels]
        for i in range(upsamples):
            layers.append(conv_t(widths[i], widths[i + 1], 4, stride=2, padding=1))
            if i < upsamples - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)
