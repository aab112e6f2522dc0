"""The ``vqvae`` command line: argparse sub-commands over the library's functions.

User errors (bad paths, shapes, configs) surface as ``error: ...`` on stderr with exit
status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import sys

import vqvae


class CLIError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqvae", description="VQ-VAE: discrete representation learning (van den Oord et al. 2017)."
    )
    parser.add_argument("--version", action="version", version=f"vqvae {vqvae.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    demo = sub.add_parser("demo", help="quantize real digits offline and write results to runs/demo")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--steps", type=int, default=300, help="training steps (default: 300)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def _demo(args: argparse.Namespace) -> None:
    from vqvae.demo import quantizer_demo

    report = quantizer_demo(args.out, steps=args.steps, seed=args.seed)
    for line in report:
        print(line)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (CLIError, ValueError, TypeError, IndexError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
