"""Benchmark: the training recipe (schedule, peak rate, warm-up) on the documented commands.

Each task runs its exact command once per variant and seed, the variant adding its flags,
and scores the result on held-out data:

* ``cifar``: the CIFAR-10 tokenizer, then ``vqvae evaluate`` (NMSE, perplexity) on the fixed
  10 % of the training archive the loader holds out::

      vqvae train --data ../shared/data/cifar10/cifar10-train-jpeg.tar.gz --image-size 32 \\
          --hidden 128 --res-hidden 32 --codebook-size 512 --code-dim 64 --quantizer ema \\
          --batch-size 128 --time-budget 10 --seed S [variant flags]

* ``mnist-prior``: one MNIST tokenizer per seed with the defaults of the day
  (``vqvae train --data mnist --data-dir ../shared/data/mnist --image-size 28 --time-budget 6
  --seed S``), then per variant ``vqvae train-prior RUN --arch transformer --time-budget 8
  --seed S [variant flags]`` and ``vqvae evaluate-samples RUN`` (label accuracy, Fréchet
  distance of 100 samples per digit against 1,000 held-out digits).

* ``mnist``: the tokenizer's recipe judged through the prior: per variant the MNIST tokenizer
  command above with the variant's flags and ``vqvae evaluate`` (held-out NMSE), then the
  prior command without flags and ``vqvae evaluate-samples``.

* ``fsdd``: the speech tokenizer, ``vqvae train --data fsdd --data-dir ../shared/data/fsdd
  --time-budget 15 --seed S [variant flags]``, then ``vqvae evaluate`` with the robust judges
  (digit kept and target speaker heard in 1,500 conversions of held-out clips). The judges
  depend on the training clips only (their cache is keyed by a fingerprint of the clips,
  labels and recipe), so ``--judges FOLDER`` copies already trained ones into each run
  instead of training them again (about 9 minutes a run). Its variants other than the default
  model pin the earlier speech model (``EARLIER_SPEECH_MODEL``: 128-wide encoder, K = 512, no
  jitter), so that they measure what they measured when that model was the default.

``--max-steps N`` replaces the time budget of the trained model by a fixed step count: a
comparison at equal steps does not depend on how busy the machine is (the CIFAR-10 budget
buys about 4,500 steps on an idle 2-core machine of this kind). Time budgets are only
comparable on an otherwise idle machine; every row records the load average.

    python benchmarks/recipe.py --task cifar --variants paper cosine-1e-3 --max-steps 1500
    python benchmarks/recipe.py --task cifar --variants paper cosine-1e-3    # the exact command
    python benchmarks/recipe.py --task mnist-prior --variants constant cosine
    python benchmarks/recipe.py --task mnist --variants earlier defaults
    python benchmarks/recipe.py --task fsdd --seeds 0 1 --judges runs/judges/fsdd/classifiers

Results go to ``benchmarks/results/recipe.json`` (rows merged by task, variant, limit, seed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from common import machine_info, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VQVAE_SHARED_DATA", ROOT.parent / "shared" / "data"))
VQVAE = [sys.executable, "-m", "vqvae"]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "recipe.json"
COSINE_2E3 = ["--schedule", "cosine", "--lr", "2e-3", "--warmup", "200"]  # the image and speech default
# Adam's beta2 0.99 and the EMA codebook's decay 0.95: the best CIFAR-10 pair of the screens, now
# part of the image recipe. The CIFAR-10 variants measured before then start from the earlier
# recipe's (PyTorch's beta2, the paper's decay), so that they still run what their rows measured.
BETA2_DECAY = ["--adam-beta2", "0.99", "--decay", "0.95"]
EARLIER_IMAGE_RECIPE = ["--adam-beta2", "0.999", "--decay", "0.99"]

# The speech model before the 256-wide encoder, K = 1024 and jitter became the defaults (the flag
# given last wins, so a variant can change one of these). Rows recorded before then ran without it.
EARLIER_SPEECH_MODEL = ["--hidden", "128", "--codebook-size", "512", "--jitter", "0"]


@dataclass(frozen=True)
class Task:
    command: list[str]  # the documented command, without --seed and the variant's flags
    budget: float  # minutes of the trained model's --time-budget
    variants: dict[str, list[str]]
    data: Path  # what must exist to run


TASKS = {
    "cifar": Task(
        ["train", "--data", str(SHARED / "cifar10" / "cifar10-train-jpeg.tar.gz"), "--image-size", "32",
         "--hidden", "128", "--res-hidden", "32", "--codebook-size", "512", "--code-dim", "64",
         "--quantizer", "ema", "--batch-size", "128"],
        10.0,
        {"paper": ["--schedule", "constant", "--lr", "2e-4", "--warmup", "0"],  # the whole paper recipe
         **{name: [*EARLIER_IMAGE_RECIPE, *flags] for name, flags in {
             "cosine-5e-4": ["--schedule", "cosine", "--lr", "5e-4", "--warmup", "100"],
             "cosine-1e-3": ["--schedule", "cosine", "--lr", "1e-3", "--warmup", "100"],
             "cosine-2e-3": COSINE_2E3,
             "cosine-4e-3": ["--schedule", "cosine", "--lr", "4e-3", "--warmup", "200"],
             "linear-1e-3": ["--schedule", "linear", "--lr", "1e-3", "--warmup", "100"],
             "beta2-0.99": [*COSINE_2E3, "--adam-beta2", "0.99"],
             "beta2-0.99-3e-3": ["--schedule", "cosine", "--lr", "3e-3", "--warmup", "200", "--adam-beta2", "0.99"],
             "decay-0.95": [*COSINE_2E3, "--decay", "0.95"],
             "beta2-0.99-decay-0.95": [*COSINE_2E3, "--adam-beta2", "0.99", "--decay", "0.95"],
             "beta2-0.99-decay-0.9": [*COSINE_2E3, "--adam-beta2", "0.99", "--decay", "0.9"],
             # the best of the above, plus one change each
             "beta2-0.99-decay-0.95-dead-25": [*COSINE_2E3, *BETA2_DECAY, "--dead-code-window", "25"],
             "beta2-0.99-decay-0.95-linear": [*COSINE_2E3, *BETA2_DECAY, "--schedule", "linear"],
             "beta2-0.99-decay-0.95-3e-3": [*COSINE_2E3, *BETA2_DECAY, "--lr", "3e-3"],
             "group-norm": [*COSINE_2E3, "--encoder-norm", "group"],
             "group-norm-beta2-0.99": [*COSINE_2E3, "--encoder-norm", "group", "--adam-beta2", "0.99"],
             "group-norm-beta2-0.99-3e-3": ["--schedule", "cosine", "--lr", "3e-3", "--warmup", "200",
                                            "--encoder-norm", "group", "--adam-beta2", "0.99"],
         }.items()},
         "defaults": []},
        SHARED / "cifar10" / "cifar10-train-jpeg.tar.gz"),
    "mnist-prior": Task(
        ["train-prior", "{run}", "--arch", "transformer"],
        8.0,
        {"constant": ["--schedule", "constant", "--lr", "2e-3", "--warmup", "100"],
         "cosine": ["--schedule", "cosine", "--lr", "2e-3", "--warmup", "100"],
         "cosine-3e-3": ["--schedule", "cosine", "--lr", "3e-3", "--warmup", "100"],
         "defaults": []},
        SHARED / "mnist"),
    "mnist": Task(
        ["train", "--data", "mnist", "--data-dir", str(SHARED / "mnist"), "--image-size", "28"],
        6.0,
        {"earlier": EARLIER_IMAGE_RECIPE, "defaults": []},
        SHARED / "mnist"),
    "fsdd": Task(
        ["train", "--data", "fsdd", "--data-dir", str(SHARED / "fsdd")],
        15.0,
        {"constant-1e-3": ["--schedule", "constant", "--lr", "1e-3", "--warmup", "0", *EARLIER_SPEECH_MODEL],
         "cosine-1e-3": ["--schedule", "cosine", "--lr", "1e-3", "--warmup", "100", *EARLIER_SPEECH_MODEL],
         "cosine-2e-3": [*COSINE_2E3, *EARLIER_SPEECH_MODEL],
         "cosine-3e-3": ["--schedule", "cosine", "--lr", "3e-3", "--warmup", "200", *EARLIER_SPEECH_MODEL],
         "beta2-0.99": [*COSINE_2E3, *EARLIER_SPEECH_MODEL, "--adam-beta2", "0.99"],
         "codebook-256": [*COSINE_2E3, *EARLIER_SPEECH_MODEL, "--codebook-size", "256"],
         "jitter-0.12": [*COSINE_2E3, *EARLIER_SPEECH_MODEL, "--jitter", "0.12"],
         "codebook-1024-jitter-0.12": [*COSINE_2E3, *EARLIER_SPEECH_MODEL, "--codebook-size", "1024",
                                       "--jitter", "0.12"],
         "hidden-256": [*COSINE_2E3, *EARLIER_SPEECH_MODEL, "--hidden", "256"],
         # the default model of this release, spelled out
         "codebook-1024-jitter-0.12-hidden-256": [*COSINE_2E3, "--codebook-size", "1024", "--jitter", "0.12",
                                                  "--hidden", "256"],
         "defaults": []},
        SHARED / "fsdd"),
}
MNIST_TOKENIZER = ["train", "--data", "mnist", "--data-dir", str(SHARED / "mnist"), "--image-size", "28",
                   "--time-budget", "6"]


def vqvae(*args: str, quiet: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([*VQVAE, *args], check=True, capture_output=quiet, text=True)


def last_step(run: Path) -> int:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return max(r["step"] for r in records)


def limit_label(limit: list[str]) -> str:
    """``["--max-steps", "1500"]`` -> ``max-steps-1500``: part of a run's folder name."""
    return "-".join(limit).lstrip("-")


def train(command: list[str], limit: list[str], seed: int, flags: list[str], out: list[str]) -> float:
    start = time.monotonic()
    vqvae(*command, *limit, "--seed", str(seed), *flags, *out, "--force", "--no-progress")
    return round(time.monotonic() - start, 1)


def report(command: str, run: Path, path: Path, *args: str) -> dict:
    """``vqvae COMMAND RUN [ARGS] --json PATH``, read back."""
    vqvae(command, str(run), *args, "--json", str(path), quiet=True)
    return json.loads(path.read_text())


def sample_figures(m: dict) -> dict:
    """The row's figures from an ``evaluate-samples`` report."""
    return {"label_accuracy": m["label_accuracy"], "frechet_distance": m["frechet_distance"],
            "guidance": m["guidance"], "real_vs_real_frechet_distance": m["frechet_distance_real_train_vs_held_out"]}


def run_cifar(task: Task, name: str, limit: list[str], seed: int, runs: Path, judges: Path | None) -> dict:
    run = runs / f"cifar-{name}-seed{seed}-{limit_label(limit)}"
    seconds = train(task.command, limit, seed, task.variants[name], ["--out", str(run)])
    m = report("evaluate", run, run / "eval.json")
    return {"steps": last_step(run), "train_seconds": seconds, "split": m["split"], "nmse": m["nmse"],
            "psnr": m["psnr"], "perplexity": m["perplexity"], "codes_used": m["codes_used"]}


def run_mnist_prior(task: Task, name: str, limit: list[str], seed: int, runs: Path, judges: Path | None) -> dict:
    tokenizer = runs / f"mnist-tokenizer-seed{seed}"
    if not (tokenizer / "model.safetensors").exists():  # one tokenizer a seed, shared by the variants
        train(MNIST_TOKENIZER, [], seed, [], ["--out", str(tokenizer)])
        report("evaluate", tokenizer, tokenizer / "eval.json")
    tokenizer_nmse = json.loads((tokenizer / "eval.json").read_text())["nmse"]
    prior = f"transformer-{name}-{limit_label(limit)}"
    command = [part.replace("{run}", str(tokenizer)) for part in task.command]
    seconds = train(command, limit, seed, task.variants[name], ["--name", prior])
    samples = report("evaluate-samples", tokenizer, tokenizer / f"samples-{prior}.json", "--prior", prior)
    return {"tokenizer_steps": last_step(tokenizer), "tokenizer_nmse": tokenizer_nmse,
            "steps": last_step(tokenizer / "priors" / prior), "train_seconds": seconds, **sample_figures(samples)}


def run_mnist(task: Task, name: str, limit: list[str], seed: int, runs: Path, judges: Path | None) -> dict:
    tokenizer = runs / f"mnist-{name}-seed{seed}-{limit_label(limit)}"
    tokenizer_seconds = train(task.command, limit, seed, task.variants[name], ["--out", str(tokenizer)])
    tokenizer_eval = report("evaluate", tokenizer, tokenizer / "eval.json")
    prior = TASKS["mnist-prior"]
    command = [part.replace("{run}", str(tokenizer)) for part in prior.command]
    train(command, ["--time-budget", str(prior.budget)], seed, [], [])
    samples = report("evaluate-samples", tokenizer, tokenizer / "samples.json")
    return {"tokenizer_steps": last_step(tokenizer), "tokenizer_seconds": tokenizer_seconds,
            "tokenizer_nmse": tokenizer_eval["nmse"], "tokenizer_perplexity": tokenizer_eval["perplexity"],
            "prior_steps": last_step(tokenizer / "priors" / "transformer"), **sample_figures(samples)}


def run_fsdd(task: Task, name: str, limit: list[str], seed: int, runs: Path, judges: Path | None) -> dict:
    run = runs / f"fsdd-{name}-seed{seed}-{limit_label(limit)}"
    seconds = train(task.command, limit, seed, task.variants[name], ["--out", str(run)])
    if judges is not None:
        for judge in ("digit", "speaker"):
            shutil.copytree(judges / judge, run / "classifiers" / judge, dirs_exist_ok=True)
    m = report("evaluate", run, run / "eval.json")
    keys = ("reconstruction_digit_accuracy", "reconstruction_speaker_accuracy", "conversion_digit_accuracy",
            "conversion_speaker_accuracy", "conversion_source_speaker_rate", "codes_used")
    return {"steps": last_step(run), "train_seconds": seconds, **{k: m[k] for k in keys}}


RUNNERS = {"cifar": run_cifar, "mnist-prior": run_mnist_prior, "mnist": run_mnist, "fsdd": run_fsdd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="cifar")
    parser.add_argument("--variants", nargs="+", help="which variants (default: all of the task's)")
    parser.add_argument("--max-steps", type=int, help="a fixed step count instead of the task's time budget")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--judges", type=Path, help="fsdd: a run's classifiers/ folder whose judges to reuse")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "recipe")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    task = TASKS[args.task]
    unknown = sorted(set(args.variants or ()) - set(task.variants))
    if unknown:
        raise SystemExit(f"unknown variants for {args.task}: {unknown}; choose from {sorted(task.variants)}")
    if not task.data.exists():
        raise SystemExit(f"{task.data} not found: the benchmark needs the development data folder")
    limit = ["--max-steps", str(args.max_steps)] if args.max_steps else ["--time-budget", str(task.budget)]
    results = json.loads(args.out.read_text())["results"] if args.out.exists() else []
    for seed in args.seeds:
        for name in args.variants or task.variants:
            row = {"task": args.task, "variant": name, "flags": task.variants[name], "limit": limit, "seed": seed,
                   **RUNNERS[args.task](task, name, limit, seed, args.runs, args.judges),
                   "load_average": os.getloadavg()[0]}
            key = (args.task, name, limit, seed)
            results = [r for r in results if (r.get("task", "cifar"), r["variant"], r["limit"], r["seed"]) != key]
            results.append(row)
            load = dict(zip(("1min", "5min", "15min"), os.getloadavg(), strict=True))
            write_json_atomic({"machine": machine_info(load), "tasks": {k: ["vqvae", *t.command] for k, t in
                                                                        TASKS.items()},
                               "results": results}, args.out)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
