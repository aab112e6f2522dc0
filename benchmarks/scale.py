"""Data larger than memory: resident memory and throughput of training from WebDataset shards.

1. Peak resident memory (``ru_maxrss``) of a ``vqvae train`` process that trains a fixed
   number of steps from a sharded synthetic set of 64x64 colour images, for a small and a
   10x larger set: streaming keeps it flat (target: the large run under 2 GiB and within
   10 % of the small one).
2. Images/s of training from shards with 2 DataLoader workers against the in-memory path
   (the same model, batch and process; target >= 0.9x), medians of several rounds.

    python benchmarks/scale.py                      # 20,000 vs 200,000 images (minutes of writing)
    python benchmarks/scale.py --small 2000 --large 20000 --steps 10 --rounds 2   # a quick look

Writes benchmarks/results/scale.json. The set is written once into --work (default a
temporary folder) as smooth random images (8x8 noise, upsampled), so PNG compresses them
as it does photographs.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from common import machine_info, write_json_atomic

RESULTS = Path(__file__).resolve().parent / "results" / "scale.json"
SIZE, VAL = 64, 1000
MODEL = ["--hidden", "64", "--res-hidden", "32", "--codebook-size", "128", "--code-dim", "16"]


def synthetic(n: int, seed: int) -> np.ndarray:
    """``n`` smooth uint8 images ``(n, 3, 64, 64)``."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8)
    return coarse.repeat(SIZE // 8, axis=2).repeat(SIZE // 8, axis=3)


def write_set(out: Path, n: int, size: int) -> str:
    """``n`` training images in shards of ``size`` plus 1,000 validation images; the pattern."""
    from webdataset import TarWriter

    from vqvae.atomic import atomic_write

    def shard(path: Path, start: int, count: int, seed: int) -> None:
        images = synthetic(count, seed)

        def write(tmp: str) -> None:
            with TarWriter(tmp, encoder=False) as sink:
                for i, pixels in enumerate(images):
                    buffer = io.BytesIO()
                    Image.fromarray(pixels.transpose(1, 2, 0)).save(buffer, format="PNG", compress_level=1)
                    sink.write({"__key__": f"{start + i:08d}", "png": buffer.getvalue(), "cls": b"0"})

        atomic_write(path, write)

    out.mkdir(parents=True, exist_ok=True)
    count = -(-n // size)
    for k in range(count):
        path = out / f"train-{k:06d}.tar"
        if not path.exists():
            shard(path, k * size, min(size, n - k * size), k)
    if not (out / "val-000000.tar").exists():
        shard(out / "val-000000.tar", 10**8, VAL, 10**6)
    return str(out / f"train-{{000000..{count - 1:06d}}}.tar")


_CHILD = """
import gc, json, resource, sys
from vqvae.cli import main
code = main(sys.argv[1:])
gc.collect()  # the finished task's DataLoader shuts its workers down, so RUSAGE_CHILDREN sees them
self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"code": code, "maxrss_mib": self_kib / 1024, "workers_maxrss_mib": workers_kib / 1024}))
"""


def peak_rss(pattern: str, run: Path, steps: int, batch: int) -> dict:
    """Peak RSS of a ``vqvae train`` process (and of its largest worker) over ``steps`` steps."""
    args = ["train", "--data", pattern, "--out", str(run), "--force", "--max-steps", str(steps), *MODEL,
            "--batch-size", str(batch), "--workers", "2", "--val-every", str(10**6), "--log-every", "5",
            "--checkpoint-every", str(10**6), "--no-progress", "--device", "cpu"]
    done = subprocess.run([sys.executable, "-c", _CHILD, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def throughput(pattern: str, steps: int, batch: int, rounds: int) -> dict:
    """Images/s of training steps fed from shards (2 workers) and from memory, medians of rounds."""
    from vqvae.autoencoder import VQVAE, VQVAEConfig
    from vqvae.modalities.image.data import ImageData
    from vqvae.modalities.image.stream import StreamImageTask, expand_shards, read_samples
    from vqvae.modalities.image.task import ImageTask
    from vqvae.train import LoopState, TrainConfig

    images, _ = read_samples(expand_shards(pattern), None)  # the same images, in memory
    data = ImageData(torch.from_numpy(images), None, (), "synthetic", "train")
    val = ImageData(data.images[:64], None, (), "synthetic", "val")
    options = dict(zip(MODEL[::2], MODEL[1::2], strict=True))
    config = VQVAEConfig(in_channels=3, hidden=int(options["--hidden"]), res_hidden=int(options["--res-hidden"]),
                         codebook_size=int(options["--codebook-size"]), code_dim=int(options["--code-dim"]))

    def state() -> LoopState:
        torch.manual_seed(0)
        model = VQVAE(config)
        train = TrainConfig(batch_size=batch, device="cpu")
        return LoopState(Path(tempfile.mkdtemp()), model, torch.optim.Adam(model.parameters()), train,
                         torch.device("cpu"))

    def rate(task, s: LoopState, first: int) -> float:
        for step in range(first, first + 3):  # warm-up: workers start, buffers fill
            _step(task, s, step)
        start = time.perf_counter()
        for step in range(first + 3, first + 3 + steps):
            _step(task, s, step)
        return steps * batch / (time.perf_counter() - start)

    result = {"memory": [], "shards_2_workers": []}
    tasks = {"memory": lambda s: ImageTask(s, data, val, 0.05),
             "shards_2_workers": lambda s: StreamImageTask(s, pattern, val, 0.05, (3, SIZE, SIZE), 2)}
    for r in range(rounds):  # interleaved, in alternating order, so a change in load hits both alike
        for name in sorted(tasks, reverse=bool(r % 2)):
            s = state()
            result[name].append(rate(tasks[name](s), s, r * 100))
    medians = {k: statistics.median(v) for k, v in result.items()}
    return {"images_per_s": result, "median_images_per_s": medians,
            "ratio": medians["shards_2_workers"] / medians["memory"]}


def _step(task, s, step: int) -> None:
    loss, _, _ = task.forward(step)
    s.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    s.optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=5000)
    parser.add_argument("--work", type=Path, default=None, help="folder for the shards (kept for reuse)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vqvae-scale-"))
    os.environ.setdefault("VQVAE_CACHE", str(work / "cache"))
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    patterns = {n: write_set(work / f"set-{n}-{args.shard_size}", n, args.shard_size) for n in (args.small, args.large)}
    write_s = time.perf_counter() - t0
    memory = {}
    for n, pattern in patterns.items():
        rounds = [peak_rss(pattern, work / f"run-{n}", args.steps, args.batch) for _ in range(args.rounds)]
        memory[str(n)] = {"rounds": rounds, "median_maxrss_mib": statistics.median(r["maxrss_mib"] for r in rounds)}
    small, large = (memory[str(n)]["median_maxrss_mib"] for n in (args.small, args.large))
    speed = throughput(patterns[args.small], args.steps, args.batch, args.rounds)
    result = {
        "benchmark": "scale",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "setup": {"image": [3, SIZE, SIZE], "shard_size": args.shard_size, "val_images": VAL, "steps": args.steps,
                  "batch_size": args.batch, "rounds": args.rounds, "model": MODEL, "workers": 2,
                  "write_seconds": round(write_s, 1)},
        "peak_rss": memory,
        "large_over_small": large / small,
        "throughput": speed,
        "targets": {"large_rss_under_2_gib": large < 2048, "large_within_10_percent": large <= 1.1 * small,
                    "shards_over_memory_at_least_0.9": speed["ratio"] >= 0.9},
        "note": "measured on a shared machine: see load_average_1min (before, after); a high load "
                "slows both paths, and the 2 decoding workers compete with training for the cores",
        "machine": machine_info({"before": load_before[0], "after": os.getloadavg()[0]}),
    }
    write_json_atomic(result, args.out)
    print(json.dumps({k: result[k] for k in ("peak_rss", "large_over_small", "throughput", "targets")}, indent=1))


if __name__ == "__main__":
    main()
