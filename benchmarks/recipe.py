"""Benchmark: the training recipe (schedule, peak rate, warm-up) on the CIFAR-10 tokenizer.

Runs the documented CIFAR-10 command once per variant, each variant adding its flags,
then ``vqvae evaluate`` on the held-out split (the fixed 10 % of the training archive that
the loader holds out), and records NMSE, perplexity and the steps taken::

    vqvae train --data ../shared/data/cifar10/cifar10-train-jpeg.tar.gz --image-size 32 \\
        --hidden 128 --res-hidden 32 --codebook-size 512 --code-dim 64 --quantizer ema \\
        --batch-size 128 --time-budget 10 --seed 0 [variant flags]

``--max-steps N`` replaces the time budget by a fixed step count: a comparison at equal
steps does not depend on how busy the machine is (the 10-minute budget buys about 4,500
steps on an idle 2-core machine of this kind).

    python benchmarks/recipe.py --variants paper cosine-1e-3 --max-steps 1500
    python benchmarks/recipe.py --time-budget 10            # the exact command, every variant

Results go to ``benchmarks/results/recipe.json`` (merged by variant and setting).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import machine_info, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VQVAE_SHARED_DATA", ROOT.parent / "shared" / "data")) / "cifar10" / "cifar10-train-jpeg.tar.gz"
COMMAND = ["--image-size", "32", "--hidden", "128", "--res-hidden", "32", "--codebook-size", "512",
           "--code-dim", "64", "--quantizer", "ema", "--batch-size", "128"]
VARIANTS = {
    "paper": ["--schedule", "constant", "--lr", "2e-4"],
    "cosine-5e-4": ["--schedule", "cosine", "--lr", "5e-4", "--warmup", "100"],
    "cosine-1e-3": ["--schedule", "cosine", "--lr", "1e-3", "--warmup", "100"],
    "cosine-2e-3": ["--schedule", "cosine", "--lr", "2e-3", "--warmup", "200"],
    "linear-1e-3": ["--schedule", "linear", "--lr", "1e-3", "--warmup", "100"],
}
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "recipe.json"


def run_variant(name: str, limit: list[str], seed: int, runs: Path) -> dict:
    run = runs / f"{name}-seed{seed}-{'-'.join(limit).lstrip('-')}"
    vqvae = [sys.executable, "-m", "vqvae"]
    start = time.monotonic()
    subprocess.run([*vqvae, "train", "--data", str(DATA), *COMMAND, *limit, "--seed", str(seed),
                    *VARIANTS[name], "--out", str(run), "--force", "--no-progress"], check=True)
    seconds = time.monotonic() - start
    report = run / "eval.json"
    subprocess.run([*vqvae, "evaluate", str(run), "--json", str(report)], check=True, capture_output=True)
    metrics = json.loads(report.read_text())
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = max(r["step"] for r in records)
    return {"variant": name, "flags": VARIANTS[name], "limit": limit, "seed": seed, "steps": steps,
            "load_average": os.getloadavg()[0],
            "train_seconds": round(seconds, 1), "split": metrics["split"], "nmse": metrics["nmse"],
            "psnr": metrics["psnr"], "perplexity": metrics["perplexity"], "codes_used": metrics["codes_used"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--max-steps", type=int)
    limit.add_argument("--time-budget", type=float, default=10.0)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "recipe")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} not found: the benchmark needs the development data folder")
    setting = ["--max-steps", str(args.max_steps)] if args.max_steps else ["--time-budget", str(args.time_budget)]
    results = json.loads(args.out.read_text())["results"] if args.out.exists() else []
    for seed in args.seeds:
        for name in args.variants:
            row = run_variant(name, setting, seed, args.runs)
            results = [r for r in results if (r["variant"], r["limit"], r["seed"]) != (name, setting, seed)]
            results.append(row)
            load = dict(zip(("1min", "5min", "15min"), os.getloadavg(), strict=True))
            write_json_atomic({"machine": machine_info(load), "command": COMMAND, "results": results}, args.out)
            print(json.dumps(row))


if __name__ == "__main__":
    main()
