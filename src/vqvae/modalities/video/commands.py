"""The video modality's own commands: ``vqvae predict`` and ``vqvae collect doom``."""

from __future__ import annotations

import argparse

from vqvae.modalities.base import Modality
from vqvae.modalities.video.data import add_collect_arguments, collect_doom, open_video
from vqvae.modalities.video.outputs import FORMATS
from vqvae.modalities.video.predict import CONTEXT, predict_run


def add_predict(sub, video: Modality) -> None:
    p = sub.add_parser("predict", help="video: predict the next frames of held-out windows from their first "
                                       "frames and the actions taken (GIFs, a film strip, .npy, metrics)")
    p.add_argument("run", metavar="RUN", help="a trained video run with a prior")
    p.add_argument("--prior", metavar="NAME", help="which prior (default: the run's only one)")
    p.add_argument("--context", type=int, default=CONTEXT, help=f"frames given (default {CONTEXT}); a whole "
                   "number of code time steps")
    p.add_argument("--frames", type=int, help="frames per window, context included (default: the prior's, 16)")
    p.add_argument("-n", type=int, default=8, help="held-out windows to predict (default 8)")
    p.add_argument("--actions", metavar="FILE", help=".npy or .json actions instead of the recorded ones: "
                   "FRAMES per window (actions[t] takes frame t to t+1) or FRAMES - CONTEXT (those leading into "
                   "the predicted frames), one sequence for all windows or one per window; JSON may name them")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0.7)")
    p.add_argument("--top-k", type=int, help="keep the k most likely codes (default: all; 1 is greedy)")
    p.add_argument("--top-p", type=float, help="nucleus sampling: keep the codes that make up this probability")
    p.add_argument("--guidance", type=float, help="classifier-free guidance over the actions (default 2.5 for "
                   "a prior trained with action dropout, else 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=FORMATS, default="gif", help="animation format (mp4 needs imageio-ffmpeg)")
    p.add_argument("--data", metavar="SPEC", help="other video data (default: the run's own)")
    p.add_argument("--data-dir", metavar="DIR")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=lambda args, modality: _predict(args, modality, video), modality_command=True)


def _predict(args: argparse.Namespace, modality: Modality, video: Modality) -> str:
    if modality is not video:
        raise ValueError(f"{args.run} is a {modality.name} run: vqvae predict continues video windows")
    sampling = {key: value for key, value in (("temperature", args.temperature), ("top_k", args.top_k),
                                              ("top_p", args.top_p), ("guidance", args.guidance)) if value is not None}
    metrics = predict_run(video.load, args.run, args.out, prior=args.prior, context=args.context, frames=args.frames,
                          n=args.n, actions_file=args.actions, sampling=sampling, seed=args.seed, fmt=args.format,
                          device=args.device, data=args.data, data_dir=args.data_dir)
    return (f"predicted frames {metrics['context']}..{metrics['frames'] - 1} of {metrics['windows']} held-out "
            f"windows: PSNR {metrics['prediction_psnr']:.2f} dB, SSIM {metrics['prediction_ssim']:.3f} (copying "
            f"the last context frame: {metrics['copy_last_psnr']:.2f} dB, {metrics['copy_last_ssim']:.3f})\n"
            f"wrote {args.out}/: truth | prediction GIFs, strip.png, predicted.npy, metrics.json")


def add_collect(sub) -> None:
    p = sub.add_parser("collect", help="record a video data set: vqvae collect doom --out DIR")
    sources = p.add_subparsers(dest="source", metavar="SOURCE")
    sources.required = True
    doom = sources.add_parser("doom", help="ViZDoom episodes, headless, with a seeded random policy of sticky "
                                           "actions; frames squashed to 64x64; resumes where it stopped")
    add_collect_arguments(doom)
    doom.add_argument("--no-progress", action="store_true", help="no progress bar")
    doom.set_defaults(func=_collect_doom)


def _collect_doom(args: argparse.Namespace) -> str:
    out = collect_doom(args.scenario, args.episodes, args.seed, args.out, frame_skip=args.frame_skip,
                       max_frames=args.max_frames, progress=not args.no_progress)
    counts = {split: open_video(str(out), split) for split in ("train", "val")}
    frames = {split: int(v.lengths().sum()) for split, v in counts.items()}
    return (f"{out}: {len(counts['train'])} training episodes ({frames['train']} frames) and {len(counts['val'])} "
            f"held-out ({frames['val']} frames)\ntrain on it with: vqvae train --data {out} --out RUN")

