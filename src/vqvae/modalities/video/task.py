"""Training a video tokenizer: random windows of ``frames`` frames each step, validation on
fixed held-out windows (per-frame PSNR and SSIM, codebook perplexity and usage)."""

from __future__ import annotations

import torch

from vqvae.modalities.video.codes import read_windows
from vqvae.modalities.video.data import VideoSet, fixed_windows, random_windows
from vqvae.modalities.video.metrics import frame_psnr, frame_ssim, summarise
from vqvae.modalities.video.outputs import save_film_strip, to_frames
from vqvae.quantize import codebook_perplexity
from vqvae.train import LoopState, on_main

# 8 windows of 16 frames a step. On this project's 2-core CPU the default tokenizer (hidden
# 64, 8x8x8 codes) trains at about 3 steps/s on one thread (bf16), a few thousand steps in
# a 15-minute budget; for runs that short lr 1e-3 beats the images' 2e-4 (ViZDoom, 300
# steps: 24.1 against 20.4 dB held-out PSNR; docs/video.md). The rate warms up over 300
# steps: without it, Moving MNIST's mostly black frames collapsed the encoder onto one code
# within 30 steps and it never recovered (held-out NMSE 0.93 after 2,250 steps); with it,
# NMSE 0.57 and 350 codes in use after 300 steps. At a constant 1e-3 the ViZDoom tokenizer
# of the 15-minute benchmark fell twice late in training (held-out PSNR 26.1 -> 19.5 dB at
# step 2,500, 25.8 -> 23.5 at 3,500, the codebook collapsing to 13 and 76 codes), so the
# rate decays to 0 at the end of the run (cosine, the horizon estimated from the budget).
VIDEO_TRAIN = {"batch_size": 8, "lr": 1e-3, "warmup_steps": 300, "schedule": "cosine", "log_every": 10,
               "val_every": 250, "val_images": 32, "checkpoint_every": 250}
VARIANCE_WINDOWS = 64  # windows whose pixel variance normalises the MSE loss


def pixel_variance(videos: VideoSet, frames: int, seed: int) -> float:
    """Variance of the pixels of ``VARIANCE_WINDOWS`` random training windows (seeded)."""
    video, _ = random_windows(videos, frames, VARIANCE_WINDOWS, torch.Generator().manual_seed(seed))
    return float(video.var())


class VideoTask:
    """Batches of random windows; validation on ``val_images`` fixed held-out windows."""

    name = "train"
    panels = [("reconstruction_loss", "Reconstruction loss (NMSE)"), ("perplexity", "Codebook perplexity")]

    def __init__(self, state: LoopState, train_data: VideoSet, val_data: VideoSet, data: dict):
        self.s, self.train_data, self.frames, self.variance = state, train_data, data["frames"], data["variance"]
        picks = fixed_windows(val_data, self.frames, state.train.val_images, seed=0)
        self.val_video, _ = read_windows(val_data, picks, self.frames)  # (N, C, T, H, W), a few MB

    def forward(self, step: int):
        # the windows are a function of (seed, step): a resumed run sees the same data
        generator = torch.Generator().manual_seed(self.s.train.seed * 1_000_003 + step)
        video, _ = random_windows(self.train_data, self.frames, self.s.train.batch_size, generator)
        x = self.s.local(video).to(self.s.device)  # drawn for the global batch; this process's slice
        out = self.s.call("forward", x)
        return out.loss, out, x.shape[0]

    def log_record(self, out, windows_per_s: float) -> dict:
        usage = self.s.model.quantizer.codebook_usage(reset=True)
        return {"loss": out.loss.item(), "reconstruction_loss": out.reconstruction_loss.item(),
                "commitment_loss": out.commitment_loss.item(), "perplexity": usage.perplexity,
                "codes_used": usage.codes_used, "dead_codes": usage.dead_codes, "windows_per_s": windows_per_s}

    def postfix(self, record: dict) -> dict:
        return {"loss": f"{record['loss']:.4f}", "ppl": f"{record['perplexity']:.0f}", "used": record["codes_used"]}

    def validate(self, step: int) -> dict:
        """Per-frame PSNR/SSIM (means, and the list over the window's frames), NMSE,
        perplexity and codes used over the held-out windows; a film strip of the first ones."""
        model, device = self.s.eval_model, self.s.device
        codes, recon = [], []
        for i in range(0, len(self.val_video), 8):
            q = model.encode(self.val_video[i : i + 8].to(device))
            codes.append(q.cpu())
            recon.append(model.decode(q).float().cpu())
        recon_video = torch.cat(recon)
        mse = float((recon_video - self.val_video).square().mean())
        counts = torch.bincount(torch.cat(codes).flatten(), minlength=model.config.codebook_size)
        metrics = {"windows": len(self.val_video), "reconstruction_loss": mse / self.variance, "mse": mse,
                   **summarise("psnr", frame_psnr(self.val_video, recon_video)),
                   **summarise("ssim", frame_ssim(self.val_video, recon_video)),
                   "perplexity": codebook_perplexity(counts), "codes_used": int((counts > 0).sum())}
        truth, other = to_frames(self.val_video[:4]), to_frames(recon_video[:4])
        rows = [clip for pair in zip(truth, other, strict=True) for clip in pair]
        on_main(save_film_strip, self.s.run / "reconstructions" / f"step_{step:07d}.png", rows)
        on_main(save_film_strip, self.s.run / "reconstructions.png", rows)
        return metrics

    @torch.no_grad()
    def media(self, step: int) -> dict:
        """Frames of the first held-out window above their reconstructions, for observers
        (TensorBoard): ``(2T, C, H, W)``."""
        video = self.val_video[:1]
        recon = self.s.eval_model.reconstruct(video.to(self.s.device)).float().cpu().clamp(0, 1)
        frames = torch.cat([video, recon])[:, :, : min(8, video.shape[2])]  # (2, C, T, H, W)
        return {"reconstructions": ("images", frames.transpose(1, 2).flatten(0, 1))}


def check_frames(frames: int) -> int:
    """``--frames``: a positive whole number."""
    if isinstance(frames, bool) or not isinstance(frames, int) or frames < 1:
        raise ValueError(f"--frames must be a positive whole number of frames, got {frames!r}")
    return frames

