"""``vqvae report``: one self-contained HTML page of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from vqvae.cli.common import CLIError, run_modality
from vqvae.runs import read_config


def add_report_commands(sub) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page of a run: config, curves, codebook usage, "
                                      "reconstructions, samples per class of each prior, evaluations")
    p.add_argument("run", metavar="RUN", help="a tokenizer run")
    p.add_argument("-o", "--out", metavar="HTML", help="output file (default RUN/report.html)")
    p.add_argument("--held-out", type=int, default=1000, metavar="N",
                   help="held-out items encoded for the code-usage histogram (default 1000)")
    p.add_argument("--samples-per-class", type=int, metavar="N",
                   help="samples of each class drawn from each prior (default: images 8, speech 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> str:
    from vqvae.report.build import build_report

    if read_config(args.run).get("kind") == "prior":
        tokenizer = Path(args.run).resolve().parent.parent
        raise CLIError(f"{args.run} is a prior: report its tokenizer run, whose page shows every prior "
                       f"(vqvae report {tokenizer})")
    if args.samples_per_class is not None and args.samples_per_class < 1:
        raise CLIError(f"--samples-per-class must be at least 1, got {args.samples_per_class}")
    path = build_report(args.run, run_modality(args.run), args.out, device=args.device, held_out=args.held_out,
                        samples_per_class=args.samples_per_class, seed=args.seed)
    return f"wrote {path}"
