"""Training an image tokenizer (VQ-VAE) or the VAE baseline: batches, logs, validation."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vqvae.autoencoder import VAE
from vqvae.modalities.image.data import ImageData
from vqvae.modalities.image.metrics import likelihood_metrics, tokenizer_metrics
from vqvae.modalities.image.outputs import save_reconstruction_grid
from vqvae.train import BatchOrder, LoopState, on_main

# The recipe of a new image run unless its flags say otherwise: a peak rate of 2e-3 reached
# after 200 warm-up steps, decaying along a cosine to zero at the run's end (the step limit,
# or what --time-budget buys), with Adam's beta2 0.99 and, for the VQ-VAE, an EMA codebook
# that averages over 20 steps (decay 0.95) to keep up with an encoder moving at that rate.
# Each was measured on the 10-minute CIFAR-10 command (docs/training.md#choosing-the-recipe);
# `--schedule constant --lr 2e-4` is the paper's recipe, all of it (vqvae.cli.tokenizer).
IMAGE_TRAIN = {"lr": 2e-3, "schedule": "cosine", "warmup_steps": 200, "adam_beta2": 0.99}
IMAGE_MODEL = {"vqvae": {"decay": 0.95}}


def to_input(images: Tensor, device: torch.device) -> Tensor:
    """uint8 images ``(B, C, H, W)`` → floats in [0, 1] on ``device`` (channels-last on CPUs)."""
    x = images.to(device, non_blocking=True).float().div_(255)
    if device.type == "cpu" and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


class ImageTask:
    """Batches of whole images; the VQ-VAE logs codebook health, the VAE its KL."""

    name = "train"

    def __init__(self, state: LoopState, train_data: ImageData, val_data: ImageData, variance: float):
        self.s, self.train_data, self.val_data, self.variance = state, train_data, val_data, variance
        self.vae = isinstance(state.model, VAE)
        second = ("kl", "KL (nats per image)") if self.vae else ("perplexity", "Codebook perplexity")
        self.panels = [("reconstruction_loss", "Reconstruction loss"), second]
        self.batches = BatchOrder(len(train_data), state.train.batch_size, state.train.seed)
        if state.device.type == "cpu":
            state.model.to(memory_format=torch.channels_last)  # 2-4x faster convolutions on CPUs

    def forward(self, step: int):
        x = to_input(self.train_data.images[self.s.local(self.batches.indices(step))], self.s.device)
        out = self.s.call("forward", x)
        return out.loss, out, x.shape[0]

    def log_record(self, out, images_per_s: float) -> dict:
        record = {"loss": out.loss.item(), "reconstruction_loss": out.reconstruction_loss.item()}
        if self.vae:
            record["kl"] = out.kl.item()
        else:
            usage = self.s.model.quantizer.codebook_usage(reset=True)
            record.update(commitment_loss=out.commitment_loss.item(), perplexity=usage.perplexity,
                          codes_used=usage.codes_used, dead_codes=usage.dead_codes)
        return {**record, "images_per_s": images_per_s}

    def postfix(self, record: dict) -> dict:
        if self.vae:
            return {"loss": f"{record['loss']:.4f}", "kl": f"{record['kl']:.1f}"}
        return {"loss": f"{record['loss']:.4f}", "ppl": f"{record['perplexity']:.0f}",
                "used": record["codes_used"]}

    def validate(self, step: int) -> dict:
        """Reconstruction metrics and a grid (not for a PixelCNN decoder, whose reconstructions
        are drawn pixel by pixel), and bits/dim for a discrete likelihood."""
        model, run, device = self.s.eval_model, self.s.run, self.s.device
        images = self.val_data.images[: self.s.train.val_images]
        metrics: dict = {}
        if not model.autoregressive:
            metrics.update(tokenizer_metrics(model, images, self.variance, device=device))
            sample = images[:32].float().div(255)
            recon = model.reconstruct(to_input(images[:32], device)).cpu()
            on_main(save_reconstruction_grid, sample, recon, run / "reconstructions" / f"step_{step:07d}.png")
            on_main(save_reconstruction_grid, sample, recon, run / "reconstructions.png")
        if model.likelihood.discrete:
            metrics.update(likelihood_metrics(model, images, device=device, seed=step))
            metrics["reconstruction_loss"] = metrics["reconstruction_bits_per_dim"] * math.log(2)
        else:
            metrics["reconstruction_loss"] = metrics["nmse"] if model.config.likelihood == "mse" else None
        return metrics

    @torch.no_grad()
    def media(self, step: int) -> dict:
        """The reconstruction grid of the validation at ``step``, for observers (TensorBoard):
        rows of up to 8 held-out images, each followed by the row of their reconstructions, as
        one picture; none for a PixelCNN decoder, whose validation draws no reconstructions."""
        model = self.s.eval_model
        if model.autoregressive:
            return {}
        images = self.val_data.images[:32]
        originals = images.float().div(255)  # (N, C, H, W)
        recon = model.reconstruct(to_input(images, self.s.device)).float().cpu().clamp(0, 1)
        ncol = min(8, len(images))
        n = len(images) // ncol * ncol
        rows = [part for start in range(0, n, ncol) for part in (originals[start : start + ncol], recon[start : start + ncol])]
        tiles = torch.nn.functional.pad(torch.cat(rows), (1, 1, 1, 1), value=1.0)  # (2n, C, H+2, W+2), white frames
        c, h, w = tiles.shape[1:]
        grid = tiles.reshape(-1, ncol, c, h, w).permute(2, 0, 3, 1, 4).reshape(1, c, -1, ncol * w)  # (1, C, H', W')
        return {"reconstructions": ("images", grid)}
