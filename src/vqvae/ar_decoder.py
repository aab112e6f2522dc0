"""Autoregressive pixel decoder ``p(x | cond)``: a gated PixelCNN conditioned on latents.

The VQ-VAE paper (van den Oord et al. 2017, §4.1) argues that a VAE with a powerful
autoregressive decoder ignores its latents (posterior collapse) while a VQ-VAE keeps using
them. This module is that powerful decoder: the gated PixelCNN of "Conditional Image
Generation with PixelCNN Decoders" (van den Oord et al. 2016) over the pixels, with the
latents (upsampled to full resolution by the caller) entering every layer as a *spatial*
conditioning bias ``V * cond`` on both gates (§2.3, "location-dependent" conditioning).

The gated layers are the prior's :class:`~vqvae.priors.pixelcnn.GatedLayer`: vertical and
horizontal stacks, mask type A in the first layer, no blind spot. The spatial bias at
(i, j) is added to the vertical pre-activations at (i, j) and to the horizontal context at
(i, j) *after* the link from the rows above is shifted down, so it is aligned with the
position it conditions and carries no pixel information.

Letters: B batch, C data channels, P parameters per channel, D ``cond`` channels,
F ``width`` (features of both stacks), H W the image.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vqvae.priors.pixelcnn import GatedLayer

__all__ = ["PixelCNNDecoder"]


class PixelCNNDecoder(nn.Module):
    """``p(x | cond) = ∏ p(x_ij | x_<ij, cond)`` over pixels in raster order.

    Every channel of pixel (i, j) is predicted from all channels of the pixels before it in
    raster order and from ``cond`` anywhere; the channels of one pixel are conditionally
    independent given those (no within-pixel R→G→B ordering), so one forward pass gives
    the parameters of all of them.

    Args:
        data_channels: C, channels of the image (1 for MNIST).
        cond_channels: D, channels of the conditioning map.
        params_per_channel: P, distribution parameters per channel and pixel (e.g. 256
            logits of a categorical over 8-bit levels); their meaning is the caller's.
        width: F, channels of both stacks.
        depth: number of gated layers (the first is mask type A).
        kernel_size: odd filter size of the layers after the first.
        first_kernel_size: odd filter size of the first layer.
        head_width: channels of the hidden 1x1 convolution of the output head;
            None: ``4 * width``.
    """

    def __init__(
        self,
        data_channels: int,
        cond_channels: int,
        params_per_channel: int,
        width: int = 64,
        depth: int = 8,
        kernel_size: int = 3,
        first_kernel_size: int = 7,
        head_width: int | None = None,
    ) -> None:
        super().__init__()
        head_width = 4 * width if head_width is None else head_width
        for name, value in [
            ("data_channels", data_channels),
            ("cond_channels", cond_channels),
            ("params_per_channel", params_per_channel),
            ("width", width),
            ("depth", depth),
            ("head_width", head_width),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name, value in [("kernel_size", kernel_size), ("first_kernel_size", first_kernel_size)]:
            if isinstance(value, bool) or not isinstance(value, int) or value < 3 or value % 2 == 0:
                raise ValueError(f"{name} must be an odd int >= 3, got {value!r}")
        self.data_channels = data_channels
        self.cond_channels = cond_channels
        self.params_per_channel = params_per_channel
        self.width = width
        # A 1x1 convolution of the raw intensity (not an embedding of 256 levels): the first
        # layer's mask A keeps the current pixel out, whatever the input features are.
        self.input = nn.Conv2d(data_channels, width, 1)
        # One 1x1 convolution gives every layer's (B, 2F, H, W) bias at once: cheaper than
        # `depth` small ones and the same function.
        self.cond_bias = nn.Conv2d(cond_channels, depth * 2 * width, 1)
        self.layers = nn.ModuleList(
            GatedLayer(width, first_kernel_size if i == 0 else kernel_size, i == 0, None)
            for i in range(depth)
        )
        self.head = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(width, head_width, 1),
            nn.ReLU(),
            nn.Conv2d(head_width, data_channels * params_per_channel, 1),
        )

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        """Parameters of every pixel given the pixels before it in raster order and ``cond``.

        Args:
            x: image in ``[0, 1]`` (float).
            cond: conditioning map at the image's resolution (the upsampled latents).

        Returns:
            Parameters, channel-major: ``params[:, c * P : (c + 1) * P]`` belong to channel
            c. Position (i, j) depends only on ``x[:, :, :i]``, ``x[:, :, i, :j]`` and
            ``cond``.

        Shapes:
            ``(B, C, H, W), (B, D, H, W) -> (B, C * P, H, W)``
        """
        self._check_inputs(x, cond)
        biases = self._biases(cond)
        h = v = self.input(x - 0.5)  # (B, F, H, W), centred intensities
        for layer, bias in zip(self.layers, biases, strict=True):
            v, link = layer.vertical_stack(v, bias)
            context = F.pad(link, (0, 0, 1, 0))[:, :, :-1]  # shift down: row i sees rows < i
            h = layer.horizontal_stack(h, context + bias)  # the bias itself is not shifted
        return self.head(h)

    @torch.no_grad()
    def sample(self, cond: Tensor, draw: Callable[[Tensor], Tensor]) -> Tensor:
        """Generate images pixel by pixel in raster order, in eval mode.

        Each stack's features are computed once per position, as soon as the pixels they
        depend on are known (see :meth:`_finish_row`, :meth:`_params_at`): the whole image
        costs about two forward passes, and the parameters handed to ``draw`` are those
        :meth:`forward` gives on the finished image (up to float rounding).

        Args:
            cond: conditioning map; its size sets the image size.
            draw: turns one pixel's parameters ``(B, C * P, 1, 1)`` into values
                ``(B, C, 1, 1)`` in ``[0, 1]``, e.g. ``lambda p: likelihood.sample(p, g)``.

        Returns:
            Images in ``[0, 1]``, of ``cond``'s dtype and device.

        Shapes:
            ``(B, D, H, W) -> (B, C, H, W)``
        """
        if not callable(draw):
            raise TypeError(f"draw must be a callable params -> values, got {type(draw).__name__}")
        self._check_cond(cond)
        batch, _, height, width = cond.shape
        x = cond.new_zeros(batch, self.data_channels, height, width)
        was_training = self.training
        self.eval()
        try:
            biases = self._biases(cond)
            # Input of every layer's vertical stack, filled one finished row at a time.
            vertical = [cond.new_zeros(batch, self.width, height, width) for _ in self.layers]
            for i in range(height):
                contexts = [bias[:, :, i : i + 1] for bias in biases]  # (B, 2F, 1, W) each
                if i > 0:  # the link from the rows above: row i-1 shifted down
                    links = self._finish_row(vertical, x, biases, i - 1)
                    contexts = [c + link for c, link in zip(contexts, links, strict=True)]
                # Input of every layer's horizontal stack on row i, filled left to right.
                horizontal = [cond.new_zeros(batch, self.width, 1, width) for _ in self.layers]
                for j in range(width):
                    params = self._params_at(x, horizontal, contexts, i, j)  # (B, C * P, 1, 1)
                    x[:, :, i : i + 1, j : j + 1] = self._checked_draw(draw, params)
        finally:
            self.train(was_training)
        return x

    # ------------------------------------------------------------------ internals

    def _biases(self, cond: Tensor) -> list[Tensor]:
        """Per layer, the spatial conditioning bias ``(B, 2F, H, W)`` of both stacks."""
        return list(self.cond_bias(cond).chunk(len(self.layers), dim=1))

    # Incremental sampling. A layer's output at one position reads its input only at the
    # `reach` rows above (vertical) or columns to the left (horizontal) and at the position
    # itself, so each stack runs on that window alone and keeps the window's last output.
    # The stacks pad the window with zeros exactly as the full pass pads the image border.

    def _finish_row(
        self, vertical: list[Tensor], x: Tensor, biases: list[Tensor], r: int
    ) -> list[Tensor]:
        """Fill row r of every vertical input (row r of x is drawn); links ``(B, 2F, 1, W)``."""
        vertical[0][:, :, r : r + 1] = self.input(x[:, :, r : r + 1] - 0.5)
        links = []
        for n, (layer, bias) in enumerate(zip(self.layers, biases, strict=True)):
            top = max(0, r - layer.reach)
            v, link = layer.vertical_stack(vertical[n][:, :, top : r + 1], bias[:, :, top : r + 1])
            if n + 1 < len(self.layers):
                vertical[n + 1][:, :, r : r + 1] = v[:, :, -1:]
            links.append(link[:, :, -1:])
        return links

    def _params_at(
        self, x: Tensor, horizontal: list[Tensor], contexts: list[Tensor], i: int, j: int
    ) -> Tensor:
        """Parameters ``(B, C * P, 1, 1)`` at (i, j); fills column j of the horizontal inputs."""
        # The first layer's input is recomputed from x: its column j changes once x(i, j) is
        # drawn, and mask A means it is read only at later columns.
        left = max(0, j - self.layers[0].reach)
        horizontal[0][..., left : j + 1] = self.input(x[:, :, i : i + 1, left : j + 1] - 0.5)
        for n, (layer, context) in enumerate(zip(self.layers, contexts, strict=True)):
            left = max(0, j - layer.reach)
            h = layer.horizontal_stack(horizontal[n][..., left : j + 1], context[..., left : j + 1])
            if n + 1 < len(self.layers):
                horizontal[n + 1][..., j : j + 1] = h[..., -1:]
        return self.head(h[..., -1:])

    def _checked_draw(self, draw: Callable[[Tensor], Tensor], params: Tensor) -> Tensor:
        values = draw(params)
        expected = (params.shape[0], self.data_channels, 1, 1)
        if not isinstance(values, Tensor) or tuple(values.shape) != expected:
            shape = tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__
            raise ValueError(
                f"draw must return values of shape (B, C, 1, 1) = {expected} for params "
                f"{tuple(params.shape)}, got {shape}"
            )
        return values

    def _check_cond(self, cond: Tensor) -> None:
        if not isinstance(cond, Tensor) or not cond.is_floating_point():
            raise TypeError(f"cond must be a float tensor, got {_describe(cond)}")
        if cond.dim() != 4 or cond.shape[1] != self.cond_channels:
            raise ValueError(
                f"cond must have shape (B, {self.cond_channels}, H, W), got "
                f"{tuple(cond.shape)}: upsample the latents to the image size first"
            )

    def _check_inputs(self, x: Tensor, cond: Tensor) -> None:
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"x must be a float tensor in [0, 1], got {_describe(x)}")
        if x.dim() != 4 or x.shape[1] != self.data_channels:
            raise ValueError(
                f"x must have shape (B, {self.data_channels}, H, W), got {tuple(x.shape)}"
            )
        self._check_cond(cond)
        if cond.shape[0] != x.shape[0] or cond.shape[2:] != x.shape[2:]:
            raise ValueError(
                f"cond {tuple(cond.shape)} must match x {tuple(x.shape)} in batch size and "
                f"spatial size: upsample the latents to (H, W) = {tuple(x.shape[2:])}"
            )


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return type(value).__name__
