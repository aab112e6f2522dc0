"""Benchmark: codes as an index (``vqvae index`` / ``search`` / ``evaluate-retrieval``).

**Quality** (``--quality mnist cifar10 fsdd``): a tokenizer trained by the exact command in
``TRAIN`` (``--train`` runs it; else the run folder must exist), its training split indexed,
its held-out split as queries. The shared data hold only training splits, so the queries
are the loaders' fixed validation split: 10 % of the training images for MNIST and
CIFAR-10, FSDD takes 5-9 (the database is takes 10-49). Each representation is scored
beside the raw-data and continuous baselines (:func:`vqvae.retrieval.evaluate_index`), and
so are variants of the ``ngram`` defaults (n-gram order, re-ranking depth, TF-IDF
weighting, positional tags and shift-tolerant re-ranking on image grids). Targets: the default's precision@10 >= raw pixels' (MNIST, CIFAR-10); its
cross-speaker precision@10 >= the log-mel baseline's (FSDD).

**Speed** (``--speed``): ``--items`` (1,000,000) synthetic 8x8 code grids, K = 512, D = 64:
build time per representation, bytes per item, median latency of one query at k = 10
over ``--queries`` queries, recall@10 of the inverted-file index against exact search on
the pooled vectors, and exact vs inverted-file latency at growing sizes (where the
``exact_below`` threshold comes from). Targets: latency <= 10 ms, recall@10 >= 0.95.

    python benchmarks/retrieval.py --speed
    python benchmarks/retrieval.py --quality mnist cifar10 fsdd [--train]

Results merge into benchmarks/results/retrieval.json (one section per part).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import scipy
import sklearn

from common import machine_info, write_json_atomic
from vqvae.modalities.retrieval import Index
from vqvae.retrieval import DenseSettings, Settings, evaluate_index
from vqvae.retrieval import representations as reps
from vqvae.retrieval.engines import DenseEngine
from vqvae.retrieval.features import pooled_vectors
from vqvae.retrieval.representations import CodeBase

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
OUT = ROOT / "benchmarks" / "results" / "retrieval.json"
TRAIN = {
    "mnist": ["--data", "mnist", "--data-dir", str(SHARED / "mnist"), "--image-size", "28", "--time-budget", "6"],
    "cifar10": ["--data", str(SHARED / "cifar10" / "cifar10-train-jpeg.tar.gz"), "--image-size", "32", "--hidden",
                "128", "--res-hidden", "32", "--codebook-size", "512", "--code-dim", "64", "--quantizer", "ema",
                "--batch-size", "128", "--time-budget", "10", "--seed", "0"],
    "fsdd": ["--data", "fsdd", "--data-dir", str(SHARED / "fsdd"), "--time-budget", "15", "--seed", "0"],
}
TARGET = {"mnist": ("results", "pixels"), "cifar10": ("results", "pixels"), "fsdd": ("results_cross_speaker", "log_mel")}
VARIANTS = {  # questioning the defaults: each changes one setting of Settings()
    "ngram_n1": {"ngram": 1}, "ngram_n2": {"ngram": 2}, "ngram_n3": {"ngram": 3},
    "ngram_rerank0": {"rerank": 0}, "ngram_rerank100": {"rerank": 100}, "ngram_rerank300": {"rerank": 300},
    "ngram_raw_tf": {"sublinear_tf": False}, "ngram_unpositional": {"positional": False},
    "ngram_shift0": {"shift": 0}, "ngram_shift1": {"shift": 1},
}
GRID_ONLY = {"ngram_unpositional", "ngram_shift0", "ngram_shift1"}  # no-ops on audio rows (never positional, warped)


# ------------------------------------------------------------------ quality


def quality(name: str, run: Path, train: bool) -> dict:
    if train:
        subprocess.run([sys.executable, "-m", "vqvae", "train", *TRAIN[name], "--out", str(run), "--force",
                        "--no-progress"], check=True)
    if not (run / "model.safetensors").is_file():
        raise SystemExit(f"{run} has no trained tokenizer: pass --train, or train it with vqvae train "
                         f"{' '.join(TRAIN[name])} --out {run}")
    start = time.perf_counter()
    index = Index.build(run, None, split="train")
    build_s = time.perf_counter() - start
    queries = index.encode_split(None, None, "val")
    report = evaluate_index(index, queries)
    variants = {}
    database = index.database()
    for variant, change in VARIANTS.items():
        if variant in GRID_ONLY and not index.base.fixed:
            continue
        settings = dataclasses.replace(index.settings, **change)  # the default's settings, its shift as chosen
        other = Index.from_items(database, settings, modality=index.modality, run=run)
        variants[variant] = {"change": change, **evaluate_index(other, queries, ("ngram",))[_section(name)]["ngram"]}
    section, baseline = TARGET[name]
    config = json.loads((run / "config.json").read_text())
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "command": f"vqvae train {' '.join(TRAIN[name])} --out {run.relative_to(ROOT) if run.is_relative_to(ROOT) else run}",
        "tokenizer_steps": max(steps), "codebook_size": config["model"]["codebook_size"],
        "database": len(index), "queries": len(queries), "query_split": "val", "index_build_s": build_s,
        "shift_tuning": index.manifest["tuning"].get("shift"), **report, "variants_of_ngram": variants,
        "target": f"default {section}.{report['default']}.precision_at_10 >= {section}.{baseline}.precision_at_10",
        "target_met": report[section][report["default"]]["precision_at_10"] >= report[section][baseline]["precision_at_10"],
    }


def _section(name: str) -> str:
    return TARGET[name][0]


# ------------------------------------------------------------------ speed


def synthetic_grids(n: int, k: int, seed: int, scenes: int = 4096, noise: float = 0.4) -> np.ndarray:
    """``(n, 8, 8)`` codes: each copies one of ``scenes`` random grids, a fraction ``noise`` of
    its positions replaced by random codes (so that neighbours exist, as in real data)."""
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(0).integers(0, k, (scenes, 8, 8), dtype=np.int16)
    grids = prototypes[rng.integers(0, scenes, n)]
    replace = rng.random(grids.shape) < noise
    grids[replace] = rng.integers(0, k, int(replace.sum()), dtype=np.int16)
    return grids


def median_latency(search, grids: np.ndarray) -> float:
    """Median seconds of one query at a time. faiss searches on one thread here: a single
    query gains nothing from more, and OpenMP threads that spin-wait for a busy core (a
    shared machine) cost tens of milliseconds; every thread builds."""
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        search(grids[:1])  # warm-up
        times = []
        for i in range(len(grids)):
            start = time.perf_counter()
            search(grids[i : i + 1])
            times.append(time.perf_counter() - start)
    finally:
        faiss.omp_set_num_threads(threads)
    return statistics.median(times)


def speed(n: int, n_queries: int, rounds: int) -> dict:
    k, d = 512, 64
    codebook = np.random.default_rng(1).normal(size=(k, d)).astype(np.float32)
    start = time.perf_counter()
    base = CodeBase(synthetic_grids(n, k, 0), codebook, fixed=True)
    queries = synthetic_grids(n_queries, k, 1).astype(np.int64)
    out = {"items": n, "grid": [8, 8], "codebook_size": k, "code_dim": d, "queries": n_queries,
           "generate_s": time.perf_counter() - start, "representations": {}}
    settings = Settings()
    for name in reps.REPRESENTATIONS:
        start = time.perf_counter()
        rep = reps.build(name, base, settings)
        built = time.perf_counter() - start
        stored = sum(a.nbytes for a in rep.state().values()) + base.grids.nbytes
        latencies = [median_latency(lambda g, rep=rep: rep.search(g, 10), queries) for _ in range(rounds)]
        out["representations"][name] = {"build_s": built, "bytes_per_item": stored / n,
                                         "median_query_ms": 1000 * statistics.median(latencies),
                                         "rounds_ms": [1000 * t for t in latencies],
                                         "engine": getattr(getattr(rep, "engine", None), "kind", "sparse")}
        del rep
    out["approximate"] = approximate_recall(base, queries, rounds)
    out["threshold"] = threshold(base, queries[: min(200, n_queries)])
    return out


def approximate_recall(base: CodeBase, queries: np.ndarray, rounds: int) -> dict:
    """The inverted file against exact search on the pooled vectors, for a few nprobe."""
    vectors = _unit(pooled_vectors(base.grids, base.codebook))
    q = _unit(pooled_vectors(queries, base.codebook))
    exact = DenseEngine.build(vectors, DenseSettings(exact_below=len(vectors) + 1))
    _, truth = exact.search(q, 10)
    flat_ms = statistics.median(median_latency(lambda g: exact.search(g, 10), q) for _ in range(rounds)) * 1000
    rows = {"flat": {"recall_at_10": 1.0, "median_query_ms": flat_ms}}
    for pq in (None, 32):
        start = time.perf_counter()
        engine = DenseEngine.build(vectors, DenseSettings(exact_below=0, pq_bytes=pq))
        built = time.perf_counter() - start
        for nprobe in (16, 64, 128, 256, 512):
            engine.index.nprobe = nprobe
            _, found = engine.search(q, 10)
            recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth, strict=True)]))
            ms = statistics.median(median_latency(lambda g, e=engine: e.search(g, 10), q) for _ in range(rounds)) * 1000
            rows[f"{engine.kind}_nprobe{nprobe}"] = {"recall_at_10": recall, "median_query_ms": ms, "build_s": built,
                                                     "nlist": engine.index.nlist,
                                                     "bytes_per_vector": 4 * vectors.shape[1] if pq is None else pq}
    return rows


def threshold(base: CodeBase, queries: np.ndarray) -> dict:
    """Exact and inverted-file latency (and recall) at growing database sizes."""
    out = {}
    q = _unit(pooled_vectors(queries, base.codebook))
    for size in (10_000, 30_000, 100_000, 300_000, 1_000_000):
        if size > len(base.grids):
            break
        vectors = _unit(pooled_vectors(base.grids[:size], base.codebook))
        exact = DenseEngine.build(vectors, DenseSettings(exact_below=size + 1))
        ivf = DenseEngine.build(vectors, DenseSettings(exact_below=0))
        _, truth = exact.search(q, 10)
        _, found = ivf.search(q, 10)
        out[str(size)] = {"flat_ms": 1000 * median_latency(lambda g, e=exact: e.search(g, 10), q),
                          "ivf_ms": 1000 * median_latency(lambda g, e=ivf: e.search(g, 10), q),
                          "ivf_recall_at_10": float(np.mean([len(set(a) & set(b)) / 10
                                                             for a, b in zip(found, truth, strict=True)]))}
    return out


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", action="store_true")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quality", nargs="*", choices=sorted(TRAIN), default=[])
    parser.add_argument("--runs", default=str(ROOT / "runs" / "retrieval"), help="where the tokenizer runs are")
    parser.add_argument("--train", action="store_true", help="train the tokenizers first (the exact commands)")
    parser.add_argument("--json", type=Path, default=OUT, help=f"results file to merge into (default {OUT})")
    args = parser.parse_args()
    out = args.json
    results = json.loads(out.read_text()) if out.exists() else {}
    load = dict(zip(("1min", "5min", "15min"), os.getloadavg(), strict=True))
    for name in args.quality:
        results.setdefault("quality", {})[name] = quality(name, Path(args.runs) / name, args.train)
        results.setdefault("machine", {})[f"quality_{name}"] = machine_info(load, faiss=faiss.__version__,
                                                                             sklearn=sklearn.__version__)
        write_json_atomic(results, out)
        print(json.dumps(results["quality"][name], indent=1)[:3000])
    if args.speed:
        results["speed"] = speed(args.items, args.queries, args.rounds)
        results.setdefault("machine", {})["speed"] = machine_info(load, faiss=faiss.__version__,
                                                                  scipy=scipy.__version__, sklearn=sklearn.__version__)
        write_json_atomic(results, out)
        print(json.dumps(results["speed"], indent=1))


if __name__ == "__main__":
    os.chdir(ROOT)  # runs record their data paths as given, relative to the project's root
    main()
