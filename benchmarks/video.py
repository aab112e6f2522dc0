"""Benchmark: video, the quality targets (``--quality``) and the 3-D prior's sampling speed
(``--speed``).

**Quality** (``--quality --dataset doom|moving-mnist``): the exact commands, run in this
process through ``vqvae.cli.main`` (so ``--threads`` holds for all of them):

    vqvae collect doom --scenario health_gathering --episodes 200 --seed 0 --out DATA   (doom only)
    vqvae train --data DATA --time-budget 15 --seed 0 --out RUN
    vqvae train-prior RUN --arch transformer --width 128 --depth 4 --batch-size 16 --time-budget 15 --seed 0
    vqvae evaluate RUN --prior transformer --json RUN/video_eval.json

on held-out windows of 16 frames: 6 given, 10 predicted. Targets (doom): predictions with
the true actions beat, in mean PSNR over the 10 predicted frames with the paired bootstrap
interval of the gain above zero, those with shuffled actions and copying the last context
frame.
Moving MNIST (unconditional): reconstruction and prediction PSNR/SSIM against copy-last.
Run each data set as its own process on a quiet machine, e.g.

    python benchmarks/video.py --quality --dataset doom --threads 2
    python benchmarks/video.py --quality --dataset moving-mnist --threads 2

``--prior-only`` keeps the recorded data and trained tokenizer of an earlier run in
``--out`` and runs the last two commands again (a new prior recipe, the same tokenizer);
``--evaluate-only`` keeps its prior too and runs the evaluation again (new sampling defaults).
``--budget-scale 0.02`` (with ``--episodes 12``) is a smoke test of the whole path in a
minute or two: its numbers are not the targets'.

**Speed** (``--speed``): tokens per second of ``TransformerPrior.sample`` at batch 16 over
the default video code grid (8 code steps of 8x8 codes, K = 512, conditioned on 2 of
health_gathering's 4 actions per step; width 128, depth 4, the benchmark's prior), built at
random init (the speed does not depend on the weights),
cached (KV cache, one position per step) against uncached (the whole prefix recomputed each
step), in the same process, rounds alternating, medians reported. Both draw the last code
time step given the 7 before it (the longest context, where the cache matters most); the
cached sampler is also timed on the prediction itself (3 steps given, 5 drawn).

Results go to ``benchmarks/results/video.json`` (one entry per data set, and ``speed``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from common import machine_info, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "mnist"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "video.json"
BUDGET = 15.0  # minutes, for the tokenizer and for the prior
PRIOR_FLAGS = ["--arch", "transformer", "--width", "128", "--depth", "4", "--batch-size", "16"]
GRID = (8, 8, 8)  # the default tokenizer's code grid of a 16-frame window


def run_cli(args: list[str]) -> None:
    """One ``vqvae`` command, in this process; a failure stops the benchmark."""
    from vqvae.cli import main

    print("$ vqvae " + " ".join(args), flush=True)
    code = main(args)
    if code != 0:
        raise SystemExit(f"vqvae {args[0]} failed with exit status {code}")


def last_step(run: Path) -> int:
    return max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines())


def quality(dataset: str, out: Path, scale: float, episodes: int, windows: int, reuse: str | None = None) -> dict:
    """The quality commands; ``reuse`` "tokenizer" or "prior" keeps what an earlier run of them
    left in ``out`` and runs only the commands after it."""
    budget = f"{BUDGET * scale:g}"
    run = out / f"video-{dataset}"
    commands = []
    if dataset == "doom":
        data = str(out / "doom-health_gathering")
        commands.append(["collect", "doom", "--scenario", "health_gathering", "--episodes", str(episodes),
                         "--seed", "0", "--out", data, "--no-progress"])
        data_flags = ["--data", data]
    else:
        data_flags = ["--data", "moving-mnist"] + (["--data-dir", str(MNIST)] if MNIST.exists() else [])
    report = run / "video_eval.json"
    commands += [
        ["train", *data_flags, "--time-budget", budget, "--seed", "0", "--out", str(run), "--force", "--no-progress"],
        ["train-prior", str(run), *PRIOR_FLAGS, "--time-budget", budget, "--seed", "0", "--force", "--no-progress"],
        ["evaluate", str(run), "--prior", "transformer", "--windows", str(windows), "--json", str(report)],
    ]
    started = time.monotonic()
    kept = {"tokenizer": run / "model.safetensors", "prior": run / "priors" / "transformer" / "model.safetensors"}
    if reuse is not None and not kept[reuse].exists():
        raise SystemExit(f"no trained {reuse} in {run}: run the benchmark without reusing it first")
    for command in {None: commands, "tokenizer": commands[-2:], "prior": commands[-1:]}[reuse]:
        run_cli(command)
    metrics = json.loads(report.read_text())
    result = {
        "commands": ["vqvae " + " ".join(c) for c in commands],
        "budget_minutes": float(budget),
        "tokenizer_steps": last_step(run),
        "prior_steps": last_step(run / "priors" / "transformer"),
        "wall_minutes": (time.monotonic() - started) / 60,
        **({"reused": {"tokenizer": "the data and tokenizer of an earlier run of these commands (--prior-only)",
                       "prior": "the data, tokenizer and prior of an earlier run of these commands: only the "
                                "evaluation ran again (--evaluate-only)"}[reuse]} if reuse else {}),
        "metrics": metrics,
        "rows": {name: {"psnr": metrics.get(f"{name}_psnr"), "ssim": metrics.get(f"{name}_ssim")}
                 for name in ("prediction", "shuffled_actions", "copy_last", "ceiling", "reconstruction")
                 if f"{name}_psnr" in metrics},
    }
    beats_copy_last = metrics["copy_last_gain_psnr_interval"][0] > 0
    result["targets"] = {"prediction_beats_copy_last": "bootstrap interval of the PSNR gain over copy-last above 0"}
    result["met"] = {"prediction_beats_copy_last": beats_copy_last}
    if "action_gain_psnr_interval" in metrics:
        result["targets"]["prediction_beats_shuffled_actions"] = "bootstrap interval of the PSNR gain above 0"
        result["met"]["prediction_beats_shuffled_actions"] = metrics["action_gain_psnr_interval"][0] > 0
    return result


def speed(batch: int, rounds: int, width: int, depth: int) -> dict:
    from vqvae.priors import TransformerPrior

    steps, height, width_codes = GRID
    torch.manual_seed(0)
    prior = TransformerPrior(512, GRID, width=width, depth=depth, num_actions=4, actions_per_step=2).eval()
    actions = torch.randint(0, 5, (batch, steps, 2))
    codes = torch.randint(0, 512, (batch, *GRID))
    per_step = height * width_codes
    cases = {  # name: (given code steps, cached)
        "last_step_cached": (steps - 1, True),
        "last_step_uncached": (steps - 1, False),
        "prediction_cached": (3, True),
    }

    def call(given: int, cached: bool) -> float:
        generator = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        prior.sample(batch, actions=actions, prefix=codes[:, :given], generator=generator, use_cache=cached)
        return time.perf_counter() - start

    for given, cached in cases.values():
        call(given, cached)  # warm-up
    seconds: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):  # alternate, so that load drifts hit every case alike
        for name, (given, cached) in cases.items():
            seconds[name].append(call(given, cached))
    result = {"grid": list(GRID), "batch": batch, "width": width, "depth": depth, "rounds": rounds}
    for name, (given, _) in cases.items():
        tokens = batch * (steps - given) * per_step
        result[name] = {"tokens": tokens, "seconds": seconds[name],
                        "tokens_per_s": tokens / statistics.median(seconds[name])}
    result["cache_speedup_last_step"] = (result["last_step_cached"]["tokens_per_s"]
                                         / result["last_step_uncached"]["tokens_per_s"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quality", action="store_true", help="the 15 + 15 minute runs and their evaluation")
    parser.add_argument("--dataset", choices=["doom", "moving-mnist"], default="doom")
    parser.add_argument("--speed", action="store_true", help="3-D prior sampling, cached against uncached")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="multiply the 15-minute budgets (0.02: a smoke test, not the targets)")
    parser.add_argument("--prior-only", action="store_true",
                        help="keep the data and tokenizer of an earlier run in --out; train the prior and evaluate")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="keep the data, tokenizer and prior of an earlier run in --out; evaluate again")
    parser.add_argument("--episodes", type=int, default=200, help="doom episodes to record (default 200)")
    parser.add_argument("--windows", type=int, default=64, help="held-out windows judged (default 64)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--prior-width", type=int, default=128)
    parser.add_argument("--prior-depth", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--results", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if not (args.quality or args.speed):
        parser.error("choose --quality (with --dataset) and/or --speed")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    result = json.loads(args.results.read_text()) if args.results.exists() else {}  # keep the other entries
    if args.quality:
        load = {"start": os.getloadavg()[0]}
        reuse = "prior" if args.evaluate_only else "tokenizer" if args.prior_only else None
        entry = quality(args.dataset, args.out, args.budget_scale, args.episodes, args.windows, reuse)
        if args.budget_scale != 1.0:
            entry["note"] = f"budget scale {args.budget_scale}: a smoke test, not the targets' numbers"
        load["end"] = os.getloadavg()[0]
        result[args.dataset] = {**entry, "machine": machine_info(load)}
        print(json.dumps({k: entry[k] for k in ("rows", "met", "tokenizer_steps", "prior_steps")}, indent=1))
    if args.speed:
        load = {"start": os.getloadavg()[0]}
        entry = speed(args.batch, args.rounds, args.prior_width, args.prior_depth)
        load["end"] = os.getloadavg()[0]
        result["speed"] = {**entry, "machine": machine_info(load)}
        print(json.dumps({k: v["tokens_per_s"] for k, v in entry.items() if isinstance(v, dict)}, indent=1))
    write_json_atomic(result, args.results)


if __name__ == "__main__":
    main()
