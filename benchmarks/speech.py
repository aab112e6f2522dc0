"""Benchmark: the speech VQ-VAE, decoding speed against real time and (``--quality``) the
quality run.

**Speed**: decoding codes to a waveform, one utterance at batch 1, in a warm process:
``model.decode(codes, speaker)`` for the codes of ``--seconds`` of 8 kHz audio (default
1 s = 125 codes), timed over ``--repeats`` calls per round, ``--rounds`` rounds, median
reported; with 1 thread and with every thread. The model is the default
``SpeechVQVAE`` with 6 speakers (or the trained run given by ``--run``: the speed does
not depend on the weights). Encoding is timed the same way. Target: decoding ≥ 20×
faster than real time.

**Quality** (``--quality``): the exact command, ``vqvae train --data fsdd
--data-dir ../shared/data/fsdd --time-budget 15 --seed 0``, then ``vqvae evaluate``,
which judges held-out clips with classifiers trained on the run's real audio. The
shared copy holds only the training takes (5–49), so the held-out clips are the
validation takes 5–9, not the canonical test takes 0–4. Targets: digit accuracy on
reconstructions ≥ 90 % of that on real audio; conversions classified as the target
speaker ≥ 70 % with the digit kept ≥ 80 %.

    python benchmarks/speech.py                 # speed, ~1 minute
    python benchmarks/speech.py --quality       # + the 15-minute run and its evaluation
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from common import machine_info, write_json_atomic
from vqvae import load
from vqvae.modalities.speech.model import SpeechVQVAE

ROOT = Path(__file__).resolve().parents[1]
FSDD = ROOT.parent / "shared" / "data" / "fsdd"


def time_call(fn, repeats: int, rounds: int) -> list[float]:
    """Seconds per call, one median-able value per round."""
    fn()  # warm-up: allocator, oneDNN kernels
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        out.append((time.perf_counter() - start) / repeats)
    return out


def speed(model: SpeechVQVAE, seconds: float, repeats: int, rounds: int) -> dict:
    rate = model.config.sample_rate
    samples = round(seconds * rate) // model.hop * model.hop
    x = torch.randn(1, 1, samples).clamp(-1, 1) * 0.3
    codes = model.encode(x)
    speaker = torch.zeros(1, dtype=torch.long) if model.config.num_speakers else None
    results = {"seconds_of_audio": samples / rate, "codes": codes.shape[1]}
    for threads in sorted({1, os.cpu_count() or 1}):
        torch.set_num_threads(threads)
        decode = time_call(lambda: model.decode(codes, speaker), repeats, rounds)
        encode = time_call(lambda: model.encode(x), repeats, rounds)
        results[f"threads_{threads}"] = {
            "decode_seconds": decode, "encode_seconds": encode,
            "decode_median_s": statistics.median(decode),
            "decode_x_real_time": samples / rate / statistics.median(decode),
            "encode_x_real_time": samples / rate / statistics.median(encode),
        }
    return results


def quality(out: Path, budget: float) -> dict:
    run = out / "fsdd"
    train = [sys.executable, "-m", "vqvae", "train", "--data", "fsdd", "--data-dir", str(FSDD),
             "--time-budget", str(budget), "--seed", "0", "--out", str(run), "--force", "--no-progress"]
    subprocess.run(train, check=True, cwd=ROOT)
    report = run / "speech_eval.json"
    subprocess.run([sys.executable, "-m", "vqvae", "evaluate", str(run), "--json", str(report)], check=True, cwd=ROOT)
    metrics = json.loads(report.read_text())
    steps = max(json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines())
    return {
        "command": f"vqvae train --data fsdd --data-dir ../shared/data/fsdd --time-budget {budget:g} --seed 0",
        "held_out": "validation takes 5-9 (the shared copy has no test takes 0-4)",
        "steps": steps,
        "metrics": metrics,
        "targets": {
            "reconstruction_digit_ratio": ">= 0.9",
            "conversion_speaker_accuracy": ">= 0.7",
            "conversion_digit_accuracy": ">= 0.8",
        },
        "met": {
            "reconstruction_digit_ratio": metrics["reconstruction_digit_ratio"] >= 0.9,
            "conversion_speaker_accuracy": metrics["conversion_speaker_accuracy"] >= 0.7,
            "conversion_digit_accuracy": metrics["conversion_digit_accuracy"] >= 0.8,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", help="a trained speech run (default: an untrained default model)")
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quality", action="store_true", help="also the 15-minute FSDD run")
    parser.add_argument("--budget", type=float, default=15.0, help="minutes of the quality run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results" / "speech.json")
    args = parser.parse_args()

    load_avg = {"start": os.getloadavg()[0]}
    result: dict = {}
    if args.quality:
        result["quality"] = quality(args.out, args.budget)
        args.run = args.run or str(args.out / "fsdd")
    model = load(args.run) if args.run else SpeechVQVAE(num_speakers=6).eval()
    result["speed"] = {"model": args.run or "default SpeechVQVAE, 6 speakers, untrained",
                       **speed(model, args.seconds, args.repeats, args.rounds), "target_x_real_time": 20}
    load_avg["end"] = os.getloadavg()[0]
    result["machine"] = machine_info(load_avg)
    if not args.quality and args.results.exists():  # keep an earlier quality run
        previous = json.loads(args.results.read_text())
        if "quality" in previous:
            result["quality"] = previous["quality"]
    write_json_atomic(result, args.results)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


if __name__ == "__main__":
    main()
