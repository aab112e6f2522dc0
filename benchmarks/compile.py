"""Benchmark: ``vqvae train --compile`` (torch.compile of the training step) against eager, on CPU.

What is measured: the CIFAR-size tokenizer of ``benchmarks/train_images.py``
(``VQVAE(in_channels=3, hidden=128, res_hidden=32, code_dim=64, codebook_size=512,
quantizer="ema")``, k-means initialisation at the first step, dead-code window 100) on
batches of ``--batch`` (128) uniform random 3x32x32 images, Adam 2e-4, each step as the
training loop runs it: the image task's forward through ``LoopState.call`` (compiled when
``TrainConfig.compile``, the only difference between the two contenders), under the
loop's autocast (``--precision``, default ``auto`` as ``vqvae train``), then
``zero_grad`` / ``backward`` / ``step``.

* **compile_seconds**: the first ``--warmup`` compiled steps (compilation and
  recompilations: the first step runs k-means, later ones do not) minus the same eager
  steps.
* **images/s**: ``--steps`` steps per round, ``--rounds`` rounds alternating which
  contender goes first; medians with every round.
* **graphs**: what Dynamo captured (graphs, graph breaks and their reasons): breaks fall
  back to eager Python between graphs and bound what compiling gains.

Timings under load are void: the JSON records the 1-minute load average at start and end.

Rerun::

    python benchmarks/compile.py                                  # ~3-6 minutes on 2 cores
    python benchmarks/compile.py --hidden 32 --batch 32 --steps 3 --rounds 2   # smoke test

Results go to ``benchmarks/results/compile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import machine_info, write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "compile.json"
SETTINGS = {"in_channels": 3, "hidden": 128, "res_hidden": 32, "code_dim": 64, "codebook_size": 512, "quantizer": "ema"}


def contender(compiled: bool, batch: int, precision: str, settings: dict, seed: int = 0):
    """A loop state and image task over one fixed random batch, as ``vqvae train`` builds them."""
    from vqvae.autoencoder import VQVAE, VQVAEConfig
    from vqvae.modalities.image.data import ImageData
    from vqvae.modalities.image.task import ImageTask
    from vqvae.train import LoopState, TrainConfig

    torch.manual_seed(seed)
    model = VQVAE(VQVAEConfig(**settings))
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    data = ImageData(images, None, (), "random", "train")
    train = TrainConfig(batch_size=batch, device="cpu", precision=precision, compile=compiled, seed=seed)
    state = LoopState(Path(tempfile.mkdtemp(prefix="vqvae-compile-")), model,
                      torch.optim.Adam(model.parameters(), lr=2e-4), train, torch.device("cpu"))
    return state, ImageTask(state, data, data, 0.06)


def step(state, task, index: int) -> None:
    from vqvae.precision import autocast_for

    with autocast_for(state.train.precision, state.device):
        loss, _, _ = task.forward(index)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    state.optimizer.step()


def timed(state, task, first: int, count: int) -> float:
    start = time.perf_counter()
    for index in range(first, first + count):
        step(state, task, index)
    return time.perf_counter() - start


def graph_report() -> dict:
    from torch._dynamo.utils import counters

    breaks = {reason.split("\n", 1)[0][:120]: n for reason, n in counters["graph_break"].items()}
    return {"frames_ok": counters["frames"]["ok"], "unique_graphs": counters["stats"]["unique_graphs"],
            "graph_breaks": sum(breaks.values()), "break_reasons": breaks}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per round and contender")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3, help="untimed first steps (compilation for the compiled)")
    parser.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto")
    parser.add_argument("--hidden", type=int, default=SETTINGS["hidden"], help="channels (128: the CIFAR model)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    settings = {**SETTINGS, "hidden": args.hidden}
    contenders = {"eager": contender(False, args.batch, args.precision, settings),
                  "compiled": contender(True, args.batch, args.precision, settings)}
    warmup = {name: timed(*pair, 0, args.warmup) for name, pair in contenders.items()}
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(args.rounds):  # alternating order, so drifting load hits both alike
        for name in sorted(contenders, reverse=bool(r % 2)):
            first = args.warmup + r * args.steps
            rates[name].append(round(args.steps * args.batch / timed(*contenders[name], first, args.steps), 1))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    result = {
        "benchmark": "compile",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "settings": {"model": settings, "batch": args.batch, "image_shape": [3, 32, 32], "steps": args.steps,
                     "rounds": args.rounds, "warmup_steps": args.warmup, "precision": args.precision,
                     "backend": "inductor (torch.compile default)"},
        "compile_seconds": round(warmup["compiled"] - warmup["eager"], 1),
        "warmup_seconds": {k: round(v, 2) for k, v in warmup.items()},
        "images_per_s": {name: {"median": medians[name], "rounds": rates[name]} for name in rates},
        "compiled_over_eager": round(medians["compiled"] / medians["eager"], 3),
        "graphs": graph_report(),
        "note": "measured on a shared machine: see load_average_1min; rerun on a quiet one before quoting",
        "machine": machine_info({"start": load_start, "end": os.getloadavg()[0]}),
    }
    write_json_atomic(result, args.out)
    print(json.dumps({k: result[k] for k in ("compile_seconds", "images_per_s", "compiled_over_eager")}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
