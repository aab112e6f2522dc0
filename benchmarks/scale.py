"""Data larger than memory: resident memory and throughput of training from WebDataset shards.

1. Peak resident memory (``ru_maxrss``) of a ``vqvae train`` process that trains a fixed
   number of steps from a sharded synthetic set of 64x64 colour images, for a small and a
   10x larger set: streaming keeps it flat (target: the large run under 2 GiB and within
   10 % of the small one).
2. Images/s of training from shards with 2 DataLoader workers against the in-memory path
   (the same model, batch and process; target >= 0.9x), medians of several rounds.
3. With ``--ddp``, only this: images/s of ``vqvae train`` in one process against
   ``torchrun --nproc-per-node 2`` (gloo DDP, the same global batch), on a folder of
   ``--ddp-images`` synthetic images read into memory (and one process limited to one
   thread, for scale); each round runs all three, in alternating order, and takes the median over the logged windows of ``metrics.jsonl``
   after the first (which holds start-up); the result is the median over rounds. torchrun
   gives each of its processes one thread, the single process has all the cores.

    python benchmarks/scale.py                      # 20,000 vs 200,000 images (minutes of writing)
    python benchmarks/scale.py --small 2000 --large 20000 --steps 10 --rounds 2   # a quick look
    python benchmarks/scale.py --ddp                # 1 process vs 2 DDP processes (a few minutes)
    python benchmarks/scale.py --ddp --steps 10 --rounds 1   # a quick look

Writes benchmarks/results/scale.json (``--ddp``: benchmarks/results/scale_ddp.json). The set
is written once into --work (default a temporary folder) as smooth random images (8x8
noise, upsampled), so PNG compresses them as it does photographs.
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
DDP_RESULTS = RESULTS.with_name("scale_ddp.json")
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


def write_folder(out: Path, n: int) -> Path:
    """``n`` synthetic 64x64 images as a PNG folder (one class): an in-memory source."""
    folder = out / "images"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for i, pixels in enumerate(synthetic(n, 7)):
            Image.fromarray(pixels.transpose(1, 2, 0)).save(folder / f"{i:06d}.png", compress_level=1)
    return out


def ddp_throughput(folder: Path, work: Path, steps: int, batch: int, rounds: int, log_every: int) -> dict:
    """Images/s (global) of ``vqvae train`` in 1 process (all threads, and 1 thread) and under
    torchrun with 2 gloo processes of 1 thread each."""
    env = {**os.environ, "VQVAE_DIST_BACKEND": "gloo"}
    train = ["train", "--data", str(folder), "--force", "--max-steps", str(steps), *MODEL, "--batch-size", str(batch),
             "--log-every", str(log_every), "--val-every", str(10**6), "--checkpoint-every", str(10**6),
             "--no-progress", "--device", "cpu"]
    one = [sys.executable, "-m", "vqvae"]
    contenders = {  # name: (command, processes, extra environment)
        "1_process": (one, 1, {}),
        "1_process_1_thread": (one, 1, {"OMP_NUM_THREADS": "1"}),
        "2_processes": ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                         "vqvae"], 2, {}),
    }
    subprocess.run([*one, *train, "--max-steps", "1", "--out", str(work / "ddp-warm")], env=env,
                   capture_output=True, check=True)  # decodes and caches the folder before any timing
    result: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(rounds):
        for name in sorted(contenders, reverse=bool(r % 2)):
            command, processes, extra = contenders[name]
            run = work / f"ddp-{name}"
            done = subprocess.run([*command, *train, "--out", str(run)], env={**env, **extra}, capture_output=True,
                                  text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
            records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
            windows = [x["images_per_s"] for x in records if "images_per_s" in x and x["world_size"] == processes]
            result[name].append(round(statistics.median(windows[1:] or windows), 2))
    medians = {name: statistics.median(v) for name, v in result.items()}
    return {"images_per_s": {name: {"median": medians[name], "rounds": result[name]} for name in result},
            "two_over_one": medians["2_processes"] / medians["1_process"],
            "two_over_one_thread": medians["2_processes"] / medians["1_process_1_thread"]}


def ddp_main(args: argparse.Namespace, work: Path) -> None:
    load_before = os.getloadavg()
    folder = write_folder(work / f"folder-{args.ddp_images}", args.ddp_images)
    speed = ddp_throughput(folder, work, args.steps, args.batch, args.rounds, args.log_every)
    result = {
        "benchmark": "scale --ddp",
        "command": " ".join([os.path.basename(sys.executable), *sys.argv]),
        "setup": {"image": [3, SIZE, SIZE], "images": args.ddp_images, "steps": args.steps,
                  "global_batch_size": args.batch, "rounds": args.rounds, "log_every": args.log_every,
                  "model": MODEL, "backend": "gloo", "threads": "1_process: torch's default (all cores); 1_process_1_thread: "
                  "OMP_NUM_THREADS=1; 2_processes: 1 each (torchrun's default OMP_NUM_THREADS=1)"},
        "throughput": speed,
        "note": "global images/s (every process's images) from metrics.jsonl, first logged window dropped; "
                "measured on a shared machine: see load_average_1min (before, after)",
        "machine": machine_info({"before": load_before[0], "after": os.getloadavg()[0]}),
    }
    write_json_atomic(result, args.out or DDP_RESULTS)
    print(json.dumps(speed, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--steps", type=int, default=30, help="training steps per measurement")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shard-size", type=int, default=5000)
    parser.add_argument("--work", type=Path, default=None, help="folder for the shards (kept for reuse)")
    parser.add_argument("--out", type=Path, default=None, help=f"default {RESULTS} ({DDP_RESULTS} with --ddp)")
    parser.add_argument("--ddp", action="store_true", help="measure 1 process against 2 gloo DDP processes only")
    parser.add_argument("--ddp-images", type=int, default=2000, help="--ddp: images in the in-memory folder")
    parser.add_argument("--log-every", type=int, default=5, help="--ddp: steps per measured window")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="vqvae-scale-"))
    os.environ.setdefault("VQVAE_CACHE", str(work / "cache"))
    if args.ddp:
        ddp_main(args, work)
        return
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
    write_json_atomic(result, args.out or RESULTS)
    print(json.dumps({k: result[k] for k in ("peak_rss", "large_over_small", "throughput", "targets")}, indent=1))


if __name__ == "__main__":
    main()
