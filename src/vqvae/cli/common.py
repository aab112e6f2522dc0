"""What the commands share: the error type, modality flags, data flags, tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from vqvae.modalities import MODALITIES, Modality, Option, modality_of
from vqvae.runs import read_config


class CLIError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit status 2."""


PRECISION_HELP = ("auto (default): bf16 autocast where the hardware computes bf16 natively, else fp32. "
                  "Quantizer distances and losses stay fp32")


def add_modality_options(p: argparse.ArgumentParser, command: str) -> None:
    """Add each flag that some modality declares for ``command`` once, with every meaning."""
    declared: dict[str, list[tuple[Modality, Option]]] = {}
    for modality in MODALITIES.values():
        for option in modality.options.get(command, ()):
            declared.setdefault(option.flag, []).append((modality, option))
    for flag, owners in declared.items():
        first = owners[0][1]
        text = "; ".join(f"{m.name}: {o.help}" for m, o in owners)
        if first.switch == "optional":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif first.switch == "on":
            p.add_argument(flag, action="store_true", default=None, help=text)
        else:
            p.add_argument(flag, type=first.type, choices=first.choices, default=None, help=text)


def modality_options(args: argparse.Namespace, command: str, modality: Modality) -> dict:
    """The values of ``modality``'s own flags that were given; other modalities' flags are errors."""
    own = {o.dest for o in modality.options.get(command, ())}
    for other in MODALITIES.values():
        for option in other.options.get(command, ()):
            if option.dest not in own and getattr(args, option.dest, None) is not None:
                users = [m.name for m in MODALITIES.values() if option in m.options.get(command, ())]
                raise CLIError(f"{option.flag} does not apply to {modality.name} data: it is for "
                               f"{' and '.join(users)} data")
    return {dest: getattr(args, dest) for dest in own if getattr(args, dest, None) is not None}


def add_data_flags(p: argparse.ArgumentParser) -> None:
    names = ", ".join(f"{name} ({desc})" for m in MODALITIES.values() for name, desc in m.datasets().items())
    p.add_argument("--data", metavar="SPEC",
                   help=f"a registered data set, or a path to a folder (or tar) of images or of WAV "
                        f"files (the data decide the modality). Registered: {names}")
    p.add_argument("--data-dir", metavar="DIR", help="where the data set's files are")


def run_modality(run: str | Path) -> Modality:
    return modality_of(read_config(run))


def report(metrics: dict, json_path: str | None) -> str:
    from vqvae.atomic import write_json

    lines = [format_table(metrics)]
    if json_path:
        write_json(json_path, metrics)
        lines.append(f"wrote {json_path}")
    return "\n".join(lines)


def format_table(metrics: dict) -> str:
    width = max(len(k) for k in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for key, value in metrics.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_schedule_flags(p: argparse.ArgumentParser, lr: str, schedule: str, warmup: str) -> None:
    """``--lr`` (the peak), ``--schedule`` and ``--warmup``, with the command's defaults in their help."""
    from vqvae.schedule import SCHEDULES

    p.add_argument("--lr", type=float, help=f"Adam learning rate: the peak of the schedule (default {lr})")
    p.add_argument("--schedule", choices=SCHEDULES,
                   help="constant, or cosine / linear decay to zero at the end of the run (--max-steps, or what "
                        f"--time-budget buys, estimated from the step time); default {schedule}")
    p.add_argument("--warmup", type=int, metavar="STEPS", dest="warmup_steps",
                   help=f"steps of linear warm-up to the peak rate (default {warmup})")


def add_compile_flag(p: argparse.ArgumentParser) -> None:
    """``--compile``: the training step through ``torch.compile`` (recorded in the run's config)."""
    p.add_argument("--compile", action="store_true", default=None,
                   help="train through torch.compile: a one-off compilation (a minute or more), then faster "
                        "steps where the compiler helps (docs/scale.md has CPU numbers); the saved weights are "
                        "the plain model's")
