"""The ``vqvae`` command line: generic sub-commands over the modality registry.

The data (``vqvae train --data``) or the run's ``config.json`` pick the modality; each
modality adds its own flags to the generic commands (``Modality.options``) and may add
commands of its own (``convert`` for speech). User errors (bad paths, shapes, configs)
surface as ``error: ...`` on stderr with exit status 2 and no traceback.

One module per group of commands: :mod:`vqvae.cli.tokenizer` (train, evaluate, encode,
decode, reconstruct) and :mod:`vqvae.cli.prior` (train-prior, sample, evaluate-samples);
:mod:`vqvae.cli.common` holds the flag machinery they share.
"""

from __future__ import annotations

import argparse
import sys

import vqvae
from vqvae.cli.common import CLIError, format_table, run_modality
from vqvae.cli.data import add_data_commands
from vqvae.cli.prior import add_prior_commands
from vqvae.cli.report import add_report_commands
from vqvae.cli.retrieval import add_retrieval_commands
from vqvae.cli.tokenizer import add_run_commands, add_train
from vqvae.modalities import MODALITIES

__all__ = ["CLIError", "build_parser", "format_table", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqvae", description="VQ-VAE: discrete representation learning (van den Oord et al. 2017)."
    )
    parser.add_argument("--version", action="version", version=f"vqvae {vqvae.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_train(sub)
    add_run_commands(sub)
    add_prior_commands(sub)
    add_report_commands(sub)
    add_retrieval_commands(sub)
    add_data_commands(sub)
    for modality in MODALITIES.values():
        modality.add_commands(sub)
    demo = sub.add_parser("demo", help="train a tokenizer and a prior on real digits, offline, into runs/demo "
                                       "(--video: record ViZDoom, predict frames, into runs/demo-video)")
    demo.add_argument("--out", default=None, help="run directory (default: runs/demo, or runs/demo-video)")
    demo.add_argument("--video", action="store_true",
                      help="the video journey instead: record ViZDoom episodes, train a 3-D tokenizer and an "
                           "action-conditioned prior, predict 10 frames from 6 (about 9 minutes on 2 cores)")
    demo.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                      help="cap the training time of each stage (default: the demo's fixed step counts; "
                           "with --video, capped at 5 minutes a stage)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def _demo(args: argparse.Namespace) -> str:
    from vqvae.demo import run_demo, run_video_demo

    if args.video:
        return "\n".join(run_video_demo(args.out or "runs/demo-video", seed=args.seed, time_budget=args.time_budget))
    return "\n".join(run_demo(args.out or "runs/demo", seed=args.seed, time_budget=args.time_budget))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from vqvae import distributed
    from vqvae.train import TrainingInterrupted

    def say(text: str, stream=sys.stdout) -> None:  # one process speaks for a torchrun job
        distributed.on_main(print, text, file=stream)

    try:
        distributed.init_from_env()
        if getattr(args, "modality_command", False):
            message = args.func(args, run_modality(args.run))
        else:
            message = args.func(args)
        if message:
            say(message)
        distributed.barrier()  # no rank tears the process group down while a peer still uses it
    except TrainingInterrupted as exc:
        say(str(exc), sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, IndexError, OSError) as exc:
        rank = f"rank {distributed.rank()}: " if distributed.is_distributed() else ""
        print(f"error: {rank}{exc}", file=sys.stderr)  # every rank: the failing one may not be rank 0
        return 2
    except KeyboardInterrupt:
        say("interrupted", sys.stderr)
        return 130
    finally:
        if distributed.is_distributed():
            distributed.dist.destroy_process_group()
    return 0
