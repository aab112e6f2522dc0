"""Benchmark: sampling speed of our priors against x-transformers, on CPU.

What is measured: tokens (codes) per second of a full ``sample`` call, ``batch × H × W``
codes over the call's wall time, for three implementations built at random init, in
eval mode, under ``torch.no_grad()``, with K = 512:

* **transformer**: ``TransformerPrior(512, (H, W), width=256, depth=4, heads=4)``,
  ``sample(batch, use_cache=...)``: cached is one position per step with a preallocated
  KV cache; uncached recomputes the whole prefix each step.
* **x-transformers** (the peer): ``TransformerWrapper(num_tokens=513, max_seq_len=H·W,
  attn_layers=Decoder(dim=256, depth=4, heads=4))`` with its defaults, driven by
  ``AutoregressiveWrapper.generate`` from a one-token (BOS = 512) prompt for H·W steps,
  ``cache_kv=True/False``, with a pass-through logits filter so that it, like ours,
  draws from the full softmax with ``torch.multinomial``.
* **pixelcnn**: ``PixelCNNPrior(512, (H, W), width=64, depth=15)`` (1.8 M parameters);
  cached is its default sampler (vertical stack once per row, horizontal stack on the
  current row), uncached one forward per position over the rows up to the current one.

Cases: 8×8 grids at batch 1 and 64, and 32×32 at batch 1, each cached and uncached.
After one warm-up call each, rounds alternate the implementations so that load drifts
hit all alike; medians are reported. The uncached 32×32 calls take tens of seconds
each (every step re-runs the model over up to 1,024 positions), so they get no
warm-up and ``--slow-rounds`` rounds (default 1). ``--quick`` (a smoke test) runs one
round everywhere without warm-up and swaps the 32×32 grid for 12×12: its numbers are
not the targets'.

Rerun (needs ``pip install -e '.[bench]'``)::

    python benchmarks/sampling.py                  # everything, a few minutes
    python benchmarks/sampling.py --quick          # smoke test
    python benchmarks/sampling.py --threads 1      # when other processes load the cores

Results go to ``benchmarks/results/sampling.json``; a markdown table goes to stdout.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from common import COMPARISONS, fmt, machine_info, write_json_atomic
from vqvae.priors import PixelCNNPrior, TransformerPrior

K = 512
TRANSFORMER = {"width": 256, "depth": 4, "heads": 4}
PIXELCNN = {"width": 64, "depth": 15}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "sampling.json"
IMPLEMENTATIONS = ("transformer", "x-transformers", "pixelcnn")
PEER_INSTALL_HINT = (
    "x-transformers is not installed; it is the benchmark's peer. "
    "Install the benchmark extra: pip install -e '.[bench]'"
)


@dataclass(frozen=True)
class Case:
    """One timed configuration: a grid, a batch size, cached or not."""

    grid: tuple[int, int]
    batch: int
    cached: bool

    @property
    def name(self) -> str:
        h, w = self.grid
        return f"{h}x{w} b{self.batch} {'cached' if self.cached else 'uncached'}"

    @property
    def tokens(self) -> int:
        return self.batch * self.grid[0] * self.grid[1]

    @property
    def slow(self) -> bool:
        """Uncached on a large grid: seconds to minutes per call."""
        return not self.cached and self.grid[0] * self.grid[1] > 64


def cases(large: int) -> list[Case]:
    return [
        Case((h, w), batch, cached)
        for (h, w), batch in [((8, 8), 1), ((8, 8), 64), ((large, large), 1)]
        for cached in (True, False)
    ]


# (name, case, metric, comparison, threshold): what the README promises.
TARGETS = [
    ("pixelcnn tokens/s (default sampler)", "8x8 b64 cached", "pixelcnn", ">=", 1000.0),
    ("transformer / x-transformers, cached", "8x8 b64 cached", "transformer_over_peer", ">=", 1.0),
    (
        "transformer cached / uncached",
        "LARGExLARGE b1 cached",
        "transformer_cache_speedup",
        ">=",
        10.0,
    ),
]


# ---------------------------------------------------------------- workloads


def import_peer():
    try:
        from x_transformers import AutoregressiveWrapper, Decoder, TransformerWrapper
    except ImportError:
        sys.exit(PEER_INSTALL_HINT)
    return AutoregressiveWrapper, Decoder, TransformerWrapper


def keep_all(logits: torch.Tensor, **_) -> torch.Tensor:
    """x-transformers' filter hook, as a pass-through: draw from the full softmax."""
    return logits


def build_models(grid: tuple[int, int]) -> dict[str, torch.nn.Module]:
    autoregressive_wrapper, decoder, transformer_wrapper = import_peer()
    torch.manual_seed(0)
    peer = transformer_wrapper(
        num_tokens=K + 1,  # the codes and a BOS token
        max_seq_len=grid[0] * grid[1],
        attn_layers=decoder(
            dim=TRANSFORMER["width"], depth=TRANSFORMER["depth"], heads=TRANSFORMER["heads"]
        ),
    )
    return {
        "transformer": TransformerPrior(K, grid, **TRANSFORMER).eval(),
        "x-transformers": autoregressive_wrapper(peer).eval(),
        "pixelcnn": PixelCNNPrior(K, grid, **PIXELCNN).eval(),
    }


def workload(impl: str, model: torch.nn.Module, case: Case) -> Callable[[], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    if impl == "x-transformers":
        prompt = torch.full((case.batch, 1), K)  # BOS
        steps = case.grid[0] * case.grid[1]
        return lambda: model.generate(
            prompt, steps, cache_kv=case.cached, filter_logits_fn=keep_all
        )
    return lambda: model.sample(case.batch, generator=generator, use_cache=case.cached)


# ------------------------------------------------------------------- timing


def tokens_per_second(call: Callable[[], torch.Tensor], tokens: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        codes = call()
    seconds = time.perf_counter() - start
    assert codes.numel() == tokens, (codes.shape, tokens)
    return tokens / seconds


def summarise(rates: list[float]) -> dict:
    return {
        "median": statistics.median(rates),
        "max": max(rates),
        "rounds": [round(r, 1) for r in rates],
    }


def time_case(
    case: Case, models: dict[str, torch.nn.Module], rounds: int, warmup: bool
) -> dict[str, dict]:
    """Alternate the implementations for ``rounds`` rounds, after one warm-up call each."""
    calls = {impl: workload(impl, models[impl], case) for impl in IMPLEMENTATIONS}
    if warmup:
        for call in calls.values():
            tokens_per_second(call, case.tokens)
    rates: dict[str, list[float]] = {impl: [] for impl in calls}
    for _ in range(rounds):
        for impl, call in calls.items():
            rates[impl].append(tokens_per_second(call, case.tokens))
    return {impl: summarise(r) for impl, r in rates.items()}


# ------------------------------------------------------------------ results


def case_result(case: Case, rates: dict[str, dict]) -> dict:
    median = {impl: rates[impl]["median"] for impl in rates}
    return {
        **asdict(case),
        "name": case.name,
        "tokens_per_call": case.tokens,
        "tokens_per_second": rates,
        "transformer_over_peer": median["transformer"] / median["x-transformers"],
    }


def add_cache_speedups(results: dict[str, dict]) -> None:
    """Cached over uncached tokens/s of each implementation, on the cached case's row."""
    for name, r in results.items():
        if not r["cached"]:
            continue
        uncached = results.get(name.replace("cached", "uncached"))
        for impl, key in [
            ("transformer", "transformer_cache_speedup"),
            ("x-transformers", "peer_cache_speedup"),
            ("pixelcnn", "pixelcnn_cache_speedup"),
        ]:
            r[key] = (
                r["tokens_per_second"][impl]["median"]
                / uncached["tokens_per_second"][impl]["median"]
                if uncached
                else None
            )


def check_targets(results: dict[str, dict], large: int) -> list[dict]:
    """Each target with its measured value; ``pass`` is None where it was not measured."""
    checks = []
    for name, case_name, metric, op, threshold in TARGETS:
        case_name = case_name.replace("LARGE", str(large))
        r = results.get(case_name, {})
        value = (
            r["tokens_per_second"][metric]["median"]
            if metric in IMPLEMENTATIONS and r
            else r.get(metric)
        )
        checks.append(
            {
                "target": name,
                "case": case_name,
                "metric": metric,
                "op": op,
                "threshold": threshold,
                "value": value,
                "pass": None if value is None else COMPARISONS[op](value, threshold),
            }
        )
    return checks


def markdown_tables(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"CPU: {m['cpu']}, {m['threads']} threads, torch {m['torch']}, x-transformers "
        f"{m['x_transformers']}, 1-min load average {m['load_average_1min']['start']:.1f} → "
        f"{m['load_average_1min']['end']:.1f}"
        + (" (quick: smoke test only)" if report["quick"] else ""),
        "",
        "tokens/s (median of rounds):",
        "",
        "| case | transformer | x-transformers | pixelcnn | transformer / x-transformers "
        "| cache speedup: transformer, x-transformers, pixelcnn |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for r in report["cases"].values():
        t = {impl: r["tokens_per_second"][impl]["median"] for impl in IMPLEMENTATIONS}
        speedups = (
            ", ".join(
                fmt(r.get(key), ".1f", "×")
                for key in (
                    "transformer_cache_speedup",
                    "peer_cache_speedup",
                    "pixelcnn_cache_speedup",
                )
            )
            if r["cached"]
            else ""
        )
        lines.append(
            f"| {r['name']} | {fmt(t['transformer'], ',.0f')} | {fmt(t['x-transformers'], ',.0f')} "
            f"| {fmt(t['pixelcnn'], ',.0f')} | {fmt(r['transformer_over_peer'], '.2f', '×')} | {speedups} |"
        )
    lines += ["", "| target | case | value | threshold | pass |", "|---|---|--:|--:|---|"]
    for c in report["targets"]:
        verdict = {True: "yes", False: "**no**", None: "not measured"}[c["pass"]]
        lines.append(
            f"| {c['target']} | {c['case']} | {fmt(c['value'], ',.2f')} "
            f"| {c['op']} {c['threshold']:g} | {verdict} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------- CLI


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per case (default 5)")
    p.add_argument(
        "--slow-rounds",
        type=int,
        default=1,
        help="timed rounds of the uncached large-grid case, tens of seconds a call (default 1)",
    )
    p.add_argument("--large", type=int, default=32, help="side of the large grid (default 32)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON results file")
    p.add_argument(
        "--quick", action="store_true", help="1 round, no warm-up, 12x12 large grid: smoke test"
    )
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = args.slow_rounds = 1
        args.large = 12
    if args.rounds < 1 or args.slow_rounds < 1:
        p.error("--rounds and --slow-rounds must be >= 1")
    if args.large < 2:
        p.error("--large must be >= 2")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    import_peer()  # fail early, before minutes of timing
    load_at_start = os.getloadavg()[0]
    results = {}
    models: dict[tuple[int, int], dict[str, torch.nn.Module]] = {}
    for case in cases(args.large):
        if case.grid not in models:
            models[case.grid] = build_models(case.grid)
        rounds = args.slow_rounds if case.slow else args.rounds
        warmup = not (case.slow or args.quick)
        results[case.name] = case_result(case, time_case(case, models[case.grid], rounds, warmup))
    add_cache_speedups(results)
    report = {
        "benchmark": "prior sampling tokens/s",
        "quick": args.quick,
        "settings": {
            "codebook_size": K,
            "transformer": TRANSFORMER,
            "pixelcnn": PIXELCNN,
            "rounds": args.rounds,
            "slow_rounds": args.slow_rounds,
            "large_grid": args.large,
        },
        "machine": machine_info(
            {"start": load_at_start, "end": os.getloadavg()[0]},
            x_transformers=importlib.metadata.version("x-transformers"),
        ),
        "cases": results,
        "targets": check_targets(results, args.large),
    }
    write_json_atomic(report, args.out)
    print(markdown_tables(report))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
