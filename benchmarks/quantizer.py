"""Benchmark: our EMA vector quantizer against vector-quantize-pytorch, on CPU.

What is measured, per shape (B batch, H W latent grid, D code dimension, K codebook size,
N = B·H·W vectors):

* **time** of one training-mode fp32 forward+backward: forward, then
  ``(quantized * upstream).sum() + loss`` backward, with ``upstream`` a fixed random
  tensor of the output's shape and an input that requires grad (its grad is cleared
  between calls, outside the clock). Ours gets ``(B, D, H, W)``; the peer,
  ``VectorQuantize(dim=D, codebook_size=K)`` with its own defaults, gets the same values
  in its native layout ``(B, H·W, D)``. After 2 warm-up calls each, rounds alternate
  ours, peer, matmul, ... so that load drifts hit all three alike; medians are reported.
* **matmul**: one fp32 ``torch.matmul`` of ``(N, D)·(D, K)`` into a preallocated output,
  the floor any exact nearest-code search must pay, timed in the same rounds.
* **peak memory**: extra peak RSS of forward+backward, in a fresh subprocess per
  (implementation, shape) because peak RSS is a high-water mark. The child builds the
  module and inputs, resets the high-water mark (``/proc/self/clear_refs``; where that
  is refused, it reads the mark instead), runs forward+backward twice (the first call
  included: its one-off allocations are part of what a training step costs), and
  reports ``VmHWM`` after minus ``VmRSS`` before, in MiB.

Shapes: (a) B=128, 8×8, D=64, K=512; (b) B=16, 32×32, D=64, K=512; (c) as (b) with
K=8192 (the peer takes ~3 s a call there, hence its own, smaller ``--peer-rounds-c``);
and, for memory only, ``b65k``: (b) with K=65,536, ours only: the peer builds several
N×K fp32 tensors per call (3.1 GiB extra at (c)), tens of GiB there.

Rerun (needs ``pip install -e '.[bench]'``)::

    python benchmarks/quantizer.py                 # everything
    python benchmarks/quantizer.py --quick --shapes a --skip-memory   # smoke test

Results go to ``benchmarks/results/quantizer.json``; a markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from common import COMPARISONS, fmt, machine_info, write_json_atomic
from vqvae import EMAVectorQuantizer

WARMUP_CALLS = 2
CHILD_TIMEOUT_S = 300  # the peer's child at (c) takes ~10 s; a hung one must not stall the run
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "quantizer.json"
PEER_INSTALL_HINT = (
    "vector-quantize-pytorch is not installed; it is the benchmark's peer. "
    "Install the benchmark extra: pip install -e '.[bench]'"
)
PEER_SKIP_REASON = (
    "the peer builds several N x K fp32 tensors per call (distances and their "
    "intermediates, a one-hot assignment matrix), 4 GiB each at 16,384 x 65,536: "
    "tens of GiB in all"
)


@dataclass(frozen=True)
class Shape:
    """One benchmark configuration; ``timed`` False means memory only."""

    batch: int
    height: int
    width: int
    dim: int
    codebook_size: int
    timed: bool = True
    peer_memory: bool = True

    @property
    def n_vectors(self) -> int:
        return self.batch * self.height * self.width

    def label(self) -> str:
        return f"{self.batch}×{self.height}×{self.width}, D={self.dim}, K={self.codebook_size:,}"


SHAPES = {
    "a": Shape(batch=128, height=8, width=8, dim=64, codebook_size=512),
    "b": Shape(batch=16, height=32, width=32, dim=64, codebook_size=512),
    "c": Shape(batch=16, height=32, width=32, dim=64, codebook_size=8192),
    "b65k": Shape(
        batch=16, height=32, width=32, dim=64, codebook_size=65536, timed=False, peer_memory=False
    ),
}

# (name, shape, metric, comparison, threshold): what the README promises.
TARGETS = [
    ("peer/ours speedup", "a", "speedup_peer_over_ours", ">=", 6.0),
    ("peer/ours speedup", "b", "speedup_peer_over_ours", ">=", 6.0),
    ("peer/ours speedup", "c", "speedup_peer_over_ours", ">=", 10.0),
    ("ours/matmul time ratio", "c", "ratio_ours_over_matmul", "<=", 2.0),
    ("ours extra peak memory (MiB)", "c", "ours_memory_mib", "<", 150.0),
    ("ours extra peak memory (MiB)", "b65k", "ours_memory_mib", "<", 1024.0),
]


# ---------------------------------------------------------------- workloads


@dataclass
class Workload:
    """A call to time, and the input whose gradient is cleared before each call."""

    call: Callable[[], object]
    inputs: torch.Tensor | None = None

    def clear_grad(self) -> None:
        if self.inputs is not None:
            self.inputs.grad = None


def import_peer():
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError:
        sys.exit(PEER_INSTALL_HINT)
    return VectorQuantize


def latents(shape: Shape) -> tuple[torch.Tensor, torch.Tensor]:
    """The same input and upstream gradient for both implementations, ``(B, D, H, W)``."""
    g = torch.Generator().manual_seed(0)
    size = (shape.batch, shape.dim, shape.height, shape.width)
    return torch.randn(size, generator=g), torch.randn(size, generator=g)


def ours_workload(shape: Shape) -> Workload:
    quantizer = EMAVectorQuantizer(codebook_size=shape.codebook_size, dim=shape.dim).train()
    z, upstream = latents(shape)  # (B, D, H, W)
    z.requires_grad_()

    def call() -> None:
        out = quantizer(z)
        ((out.quantized * upstream).sum() + out.loss).backward()

    return Workload(call, z)


def peer_workload(shape: Shape) -> Workload:
    vector_quantize = import_peer()
    torch.manual_seed(0)  # the peer draws its initial codebook from the global generator
    quantizer = vector_quantize(dim=shape.dim, codebook_size=shape.codebook_size).train()
    z, upstream = (t.flatten(2).transpose(1, 2).contiguous() for t in latents(shape))  # (B, HW, D)
    z.requires_grad_()

    def call() -> None:
        quantized, _, loss = quantizer(z)
        ((quantized * upstream).sum() + loss).backward()

    return Workload(call, z)


def matmul_workload(shape: Shape) -> Workload:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(shape.n_vectors, shape.dim, generator=g)  # (N, D)
    b = torch.randn(shape.dim, shape.codebook_size, generator=g)  # (D, K)
    c = torch.empty(shape.n_vectors, shape.codebook_size)  # (N, K)
    return Workload(lambda: torch.matmul(a, b, out=c))


WORKLOADS = {"ours": ours_workload, "peer": peer_workload, "matmul": matmul_workload}


# ------------------------------------------------------------------- timing


def time_call_ms(workload: Workload) -> float:
    workload.clear_grad()
    start = time.perf_counter()
    workload.call()
    return (time.perf_counter() - start) * 1e3


def summarise(times_ms: list[float]) -> dict:
    return {
        "median": statistics.median(times_ms),
        "min": min(times_ms),
        "rounds": [round(t, 3) for t in times_ms],
    }


def time_shape(shape: Shape, rounds: int, peer_rounds: int) -> dict[str, dict]:
    """Alternate ours, peer, matmul for ``rounds`` rounds (the peer stops after ``peer_rounds``)."""
    workloads = {name: make(shape) for name, make in WORKLOADS.items()}
    for workload in workloads.values():
        for _ in range(WARMUP_CALLS):
            time_call_ms(workload)
    times: dict[str, list[float]] = {name: [] for name in workloads}
    for i in range(max(rounds, peer_rounds)):
        for name, workload in workloads.items():
            wanted = peer_rounds if name == "peer" else rounds
            if i < wanted:
                times[name].append(time_call_ms(workload))
    return {name: summarise(t) for name, t in times.items()}


# ------------------------------------------------------------------- memory


def read_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found in /proc/self/status (Linux only)")


def reset_peak_rss() -> bool:
    """Set VmHWM to the current RSS (Linux >= 4.0); False where that is refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def child_measure_memory(impl: str, shape_name: str) -> None:
    """Run in a fresh process: print one JSON line with the extra peak RSS of two calls."""
    workload = WORKLOADS[impl](SHAPES[shape_name])
    reset = reset_peak_rss()
    # After a reset the mark equals the RSS; without one, the mark is the best baseline left.
    before_kib = read_status_kib("VmRSS" if reset else "VmHWM")
    for _ in range(2):
        workload.clear_grad()
        workload.call()
    after_kib = read_status_kib("VmHWM")
    print(json.dumps({"extra_mib": (after_kib - before_kib) / 1024, "hwm_reset": reset}))


def measure_memory(impl: str, shape_name: str) -> dict:
    """Extra peak RSS of ``impl`` at ``shape_name``, from a fresh subprocess."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", impl, shape_name]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"extra_mib": None, "error": f"timed out after {CHILD_TIMEOUT_S} s"}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return {"extra_mib": None, "error": tail[0]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_for_shape(shape_name: str) -> dict[str, dict]:
    memory = {"ours": measure_memory("ours", shape_name)}
    if SHAPES[shape_name].peer_memory:
        memory["peer"] = measure_memory("peer", shape_name)
    else:
        memory["peer"] = {"extra_mib": None, "skipped": PEER_SKIP_REASON}
    return memory


# ------------------------------------------------------------------ results


def shape_result(shape: Shape, times: dict | None, memory: dict | None) -> dict:
    result = {
        **asdict(shape),
        "label": shape.label(),
        "n_vectors": shape.n_vectors,
        "time_ms": times,
        "memory": memory,
    }
    result["speedup_peer_over_ours"] = (
        times["peer"]["median"] / times["ours"]["median"] if times else None
    )
    result["ratio_ours_over_matmul"] = (
        times["ours"]["median"] / times["matmul"]["median"] if times else None
    )
    result["ours_memory_mib"] = memory["ours"]["extra_mib"] if memory else None
    result["peer_memory_mib"] = memory["peer"]["extra_mib"] if memory else None
    return result


def check_targets(shapes: dict[str, dict]) -> list[dict]:
    """Each target with its measured value; ``pass`` is None where it was not measured."""
    checks = []
    for name, shape_name, metric, op, threshold in TARGETS:
        value = shapes.get(shape_name, {}).get(metric)
        passed = None
        if value is not None:
            passed = COMPARISONS[op](value, threshold)
        checks.append(
            {
                "target": name,
                "shape": shape_name,
                "metric": metric,
                "op": op,
                "threshold": threshold,
                "value": value,
                "pass": passed,
            }
        )
    return checks


def memory_cell(entry: dict | None) -> str:
    if entry is None:
        return "—"
    if entry.get("skipped"):
        return "skipped"
    return "failed" if entry.get("error") else fmt(entry["extra_mib"], ".0f")


def markdown_tables(report: dict) -> str:
    lines = [
        f"CPU: {report['machine']['cpu']}, {report['machine']['threads']} threads, "
        f"torch {report['machine']['torch']}, 1-min load average "
        f"{report['machine']['load_average_1min']['start']:.1f} → "
        f"{report['machine']['load_average_1min']['end']:.1f}",
        "",
        "| shape | B×H×W, D, K | ours ms | peer ms | matmul ms | peer/ours | ours/matmul "
        "| ours MiB | peer MiB |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    notes = []
    for name, r in report["shapes"].items():
        t = r["time_ms"] or {}
        median = {impl: t[impl]["median"] if impl in t else None for impl in WORKLOADS}
        memory = r["memory"] or {}
        lines.append(
            f"| {name} | {r['label']} "
            f"| {fmt(median['ours'], '.1f')} | {fmt(median['peer'], '.1f')} "
            f"| {fmt(median['matmul'], '.1f')} | {fmt(r['speedup_peer_over_ours'], '.1f', '×')} "
            f"| {fmt(r['ratio_ours_over_matmul'], '.2f', '×')} | {memory_cell(memory.get('ours'))} "
            f"| {memory_cell(memory.get('peer'))} |"
        )
        for impl, entry in memory.items():
            why = entry.get("skipped") or entry.get("error")
            if why:
                notes.append(f"{name}, {impl} memory: {why}.")
    if notes:
        lines += ["", *notes]
    lines += ["", "| target | shape | value | threshold | pass |", "|---|---|--:|--:|---|"]
    for c in report["targets"]:
        verdict = {True: "yes", False: "**no**", None: "not measured"}[c["pass"]]
        lines.append(
            f"| {c['target']} | {c['shape']} | {fmt(c['value'], '.2f')} "
            f"| {c['op']} {c['threshold']:g} | {verdict} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=9, help="timed rounds per shape (default 9)")
    p.add_argument(
        "--peer-rounds-c",
        type=int,
        default=5,
        help="timed rounds of the peer at shape c, ~3 s a call (default 5)",
    )
    p.add_argument(
        "--shapes",
        default="a,b,c,b65k",
        help=f"comma-separated subset of {','.join(SHAPES)} (b65k is memory only)",
    )
    p.add_argument("--skip-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument("--quick", action="store_true", help="2 rounds everywhere, for smoke tests")
    p.add_argument("--child", nargs=2, metavar=("IMPL", "SHAPE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in args.shapes if s not in SHAPES]
    if unknown:
        p.error(f"unknown shape(s) {unknown}; choose from {','.join(SHAPES)}")
    if args.quick:
        args.rounds = args.peer_rounds_c = 2
    if args.rounds < 1 or args.peer_rounds_c < 1:
        p.error("--rounds and --peer-rounds-c must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        child_measure_memory(*args.child)
        return
    import_peer()  # fail early, with the install hint
    load_at_start = os.getloadavg()[0]
    shapes = {}
    for name in args.shapes:
        shape = SHAPES[name]
        if not shape.timed and args.skip_memory:
            print(f"[{name}] memory-only shape, skipped with --skip-memory", file=sys.stderr)
            continue
        print(f"[{name}] {shape.label()}", file=sys.stderr, flush=True)
        peer_rounds = args.peer_rounds_c if name == "c" else args.rounds
        times = time_shape(shape, args.rounds, peer_rounds) if shape.timed else None
        memory = None if args.skip_memory else memory_for_shape(name)
        shapes[name] = shape_result(shape, times, memory)
    report = {
        "machine": machine_info(
            {"start": load_at_start, "end": os.getloadavg()[0]},
            vector_quantize_pytorch=importlib.metadata.version("vector-quantize-pytorch"),
        ),
        "settings": {
            "rounds": args.rounds,
            "peer_rounds_c": args.peer_rounds_c,
            "warmup_calls": WARMUP_CALLS,
            "shapes": args.shapes,
            "memory": not args.skip_memory,
        },
        "shapes": shapes,
        "targets": check_targets(shapes),
    }
    write_json_atomic(report, args.out)
    print(markdown_tables(report))
    print(f"\nwrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
