"""Video: 3-D code grids over time, height and width (Moving MNIST, ViZDoom recordings),
and action-conditioned frame prediction with a Transformer prior over them."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vqvae.autoencoder import VQVAE, VQVAEConfig
from vqvae.modalities.base import Modality, Option
from vqvae.modalities.options import encoder_options, quantizer_options
from vqvae.modalities.video import commands, outputs
from vqvae.modalities.video.codes import (
    decode_clips,
    encode_clips,
    prior_windows,
    read_windows,
    run_videos,
    strided_windows,
    time_factor,
)
from vqvae.modalities.video.data import fixed_windows, is_video_spec, open_video, video_datasets
from vqvae.modalities.video.evaluation import WINDOWS, evaluate_video
from vqvae.modalities.video.predict import CONTEXT
from vqvae.modalities.video.task import VIDEO_TRAIN, VideoTask, check_frames, pixel_variance
from vqvae.runs import CodeFile, read_config
from vqvae.train import LoopState, TrainConfig

FRAMES = 16
# The tokenizer's defaults (docs/video.md has the measurements): 64x64 frames -> 8x8 codes,
# and only the first strided convolution halves time, so 16 frames -> 8 code steps of 2
# frames each (6 context frames are then exactly 3 code steps): 512 codes per window, a
# grid that a Transformer prior can learn on a CPU in minutes (8x16x16 is 4x the cost).
VIDEO_MODEL = {"hidden": 64, "res_hidden": 32, "residual_blocks": 2, "downsamples": 3, "time_downsamples": 1,
               "codebook_size": 512, "code_dim": 64, "quantizer": "ema"}
DOOM_TICS_PER_SECOND = 35  # ViZDoom's game clock; a recorded frame every frame_skip tics
DEFAULT_FPS = 10.0  # for data without a clock (Moving MNIST)

TRAIN_OPTIONS = (
    *encoder_options(64, 32, 2, "3 gives 64x64 -> 8x8 (default 3), 2 gives 16x16"),
    Option("--time-downsamples", "how many of the strided convolutions also halve time: 1 gives 16 frames -> 8 "
           "code steps (default 1), 2 gives 4", int, field="time_downsamples"),
    *quantizer_options(),
    Option("--frames", f"frames per training window (default {FRAMES})", int),
)
SAMPLING_OPTIONS = (
    Option("--temperature", "sampling temperature of the predictions (default 0.7)", float),
    Option("--top-k", "keep the k most likely codes when predicting (default: all; 1 is greedy)", int),
    Option("--guidance", "classifier-free guidance over the actions (default 2.5 for a prior trained "
           "with action dropout, else 1)", float),
    Option("--seed", "seeds the predictions (default 0)", int),
)


def fps_of(description: dict) -> float:
    """Frames per second of the data, for animations."""
    skip = description.get("frame_skip")
    return DOOM_TICS_PER_SECOND / skip if skip else DEFAULT_FPS


class VideoModality(Modality):
    name = "video"
    models = {"vqvae": "vqvae"}
    train_defaults = VIDEO_TRAIN
    reconstruct_count = 4
    options = {
        "train": TRAIN_OPTIONS,
        "evaluate": (
            Option("--context", f"frames given before the predicted ones (default {CONTEXT})", int),
            Option("--windows", f"held-out windows judged (default {WINDOWS})", int),
            *SAMPLING_OPTIONS,
        ),
        "train-prior": (Option("--frames", "frames per window the prior models (default: the tokenizer's)", int),),
        "encode": (Option("--frames", "frames per encoded window (default: the run's)", int),),
    }

    def datasets(self) -> dict[str, str]:
        return video_datasets()

    def recognises(self, spec: str, data_dir: str | None) -> bool:
        return is_video_spec(spec, data_dir)

    def start(self, kind: str, spec: str, data_dir: str | None, model: dict, train: TrainConfig,
              options: dict) -> dict:
        frames = check_frames(options.get("frames", FRAMES))
        videos = open_video(spec, "train", data_dir)
        channels, height, width = videos.frame_shape
        variance = pixel_variance(videos, frames, train.seed)
        settings = VQVAEConfig(**{**VIDEO_MODEL, "in_channels": channels, "data_variance": variance,
                                  "spatial_dims": 3, "seed": train.seed, **model})
        latent = VQVAE(settings).latent_shape((frames, height, width))  # fails early on bad sizes
        description = videos.describe()
        return {
            "model": settings.to_dict(),
            "data": {
                "spec": str(Path(spec).resolve()) if Path(spec).is_dir() else spec,  # a folder, from anywhere
                "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
                "frames": frames,
                "shape": [channels, frames, height, width],
                "latent_shape": list(latent),
                "variance": variance,
                "num_actions": videos.num_actions,
                "action_names": videos.action_names,
                "fps": fps_of(description),
                "train_episodes": len(videos),
                "classes": [],
                "description": description,
            },
        }

    def config_class(self, kind: str) -> type:
        self.check_kind(kind)
        return VQVAEConfig

    def build(self, config: dict) -> nn.Module:
        self.check_kind(config["kind"])
        return VQVAE(VQVAEConfig.from_dict(config["model"]))

    def task(self, state: LoopState, config: dict) -> VideoTask:
        data = config["data"]
        return VideoTask(state, open_video(data["spec"], "train", data["data_dir"]),
                         open_video(data["spec"], "val", data["data_dir"]), data)

    def summary(self, val: dict) -> str:
        return (f"per-frame PSNR {val['psnr']:.2f} dB, SSIM {val['ssim']:.3f}, NMSE {val['reconstruction_loss']:.4f}; "
                f"perplexity {val['perplexity']:.1f}, codes used {val['codes_used']}")

    # ---------------------------------------------------------------- using a run

    def evaluate(self, run, *, data, data_dir, split, batch_size, device, prior, options) -> dict:
        sampling = {key: options[key] for key in ("temperature", "top_k", "guidance") if key in options}
        return evaluate_video(self.load, run, data=data, data_dir=data_dir, split=split, prior=prior,
                              windows=options.get("windows", WINDOWS), context=options.get("context", CONTEXT),
                              sampling=sampling, seed=options.get("seed", 0), device=device,
                              batch_size=min(batch_size, 16))

    def encode(self, run, *, data, data_dir, split, device, options) -> CodeFile:
        """Codes of back-to-back windows of every episode of a split (default train), with the
        episode and first frame of each window."""
        frames = check_frames(options.get("frames", read_config(run)["data"]["frames"]))
        videos = run_videos(run, split or "train", data, data_dir)
        picks = strided_windows(videos, frames, frames)
        model = self.load(run, device)
        codes = torch.cat([encode_clips(model, read_windows(videos, picks[i : i + 64], frames)[0], device)
                           for i in range(0, len(picks), 64)])
        episodes, starts = (torch.tensor(column) for column in zip(*picks, strict=True))
        return CodeFile(codes, None, None, {"episodes": episodes, "starts": starts})

    def decode(self, run, codes: CodeFile, out: Path, *, device, options) -> str:
        clips = decode_clips(self.load(run, device), codes.codes, device)
        strip = outputs.write_clips(outputs.to_frames(clips), out, read_config(run)["data"]["fps"])
        return f"wrote {len(clips)} GIFs to {out} and the film strip {strip}"

    def reconstruct(self, run, out: Path, *, data, data_dir, split, n, device) -> str:
        config = read_config(run)
        videos = run_videos(run, split or "val", data, data_dir)
        video, _ = read_windows(videos, fixed_windows(videos, config["data"]["frames"], n, seed=0),
                                config["data"]["frames"])
        model = self.load(run, device)
        recon = decode_clips(model, encode_clips(model, video, device), device)
        strip = outputs.write_pairs(outputs.to_frames(video), outputs.to_frames(recon), out, config["data"]["fps"])
        return f"wrote {len(video)} GIFs (original | reconstruction) to {out} and the film strip {strip}"

    # ---------------------------------------------------------------- stage 2

    def prior_shape(self, config: dict, options: dict) -> tuple[int, ...]:
        frames = check_frames(options.get("frames", config["data"]["frames"]))
        _, _, height, width = config["data"]["shape"]
        return self.build(config).latent_shape((frames, height, width))

    def prior_settings(self, config: dict) -> dict:
        """K + 1 symbols, the last for still steps (:mod:`~vqvae.modalities.video.still`); an
        action-conditioned prior for data with actions: ``f`` actions per code step."""
        symbols = {"codebook_size": config["model"]["codebook_size"] + 1}
        actions = config["data"].get("num_actions")
        return {**symbols, "num_actions": actions, "actions_per_step": time_factor(config)} if actions else symbols

    def prior_codes(self, run, split, data, data_dir, shape) -> tuple[Tensor, None, Tensor | None]:
        codes, actions = prior_windows(self.load, run, split, shape[0], data, data_dir)
        return codes, None, actions

    def write_samples(self, run, codes: Tensor, out: Path, *, device, options) -> str:
        clips = outputs.to_frames(decode_clips(self.load(run, device), codes, device))
        strip = outputs.write_clips(clips, out, read_config(run)["data"]["fps"])
        outputs.save_npy(Path(out) / "codes.npy", codes.numpy())
        outputs.save_npy(Path(out) / "frames.npy", clips)
        return f"wrote {len(codes)} sampled clips to {out} (GIFs, {strip.name}, codes.npy, frames.npy)"

    # ---------------------------------------------------------------- own commands

    def add_commands(self, sub) -> None:
        commands.add_predict(sub, self)
        commands.add_collect(sub)
