"""Benchmark: every file reader against thousands of hostile and corrupt inputs.

The readers and the inputs are those of ``tests/hostile_inputs.py``: IDX files, CIFAR-10
binary batches (a folder or the tarball), image folders and tars (path-traversal names,
links, devices, forged sizes), WAV files (forged chunk sizes, rates, channels), code files
(``.npz`` / ``.npy``: pickled objects, forged shapes, a deflate bomb), ``config.json``
(wrong types, missing keys, unknown kinds, other format versions, deep nesting) and
safetensors checkpoints (forged headers, dtypes, shapes and offsets). Each input is
generated from a seed (``random.Random("READER-SEED")``), written to disk, and read in a
worker process whose address space is capped (``RLIMIT_AS``: what it had after importing,
plus ``--memory-mb``) and which is killed after ``--timeout`` seconds.

Outcomes per reader: inputs tried, inputs loaded, clean errors by type (a ValueError or
OSError subclass with a message: the project's errors), and the defects: tracebacks of
any other type (MemoryError included), hangs, crashed workers, failed checks (a pickle
that was unpickled, a tar member written outside its folder), empty messages. Targets:
0 of each. Peak memory: the largest resident set while reading one input (VmHWM, reset
before each), beside the worker's resident set after its imports.

    python benchmarks/fuzz.py                    # 1,000 inputs per reader, ~15 minutes on 2 cores
    python benchmarks/fuzz.py --cases 50 --readers idx,wav
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from common import machine_info, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the generators live beside the fast fuzz tests

import hostile_inputs  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "fuzz.json"


# ------------------------------------------------------------------ the worker


def worker(reader_name: str, memory_mb: int) -> None:
    """Read the paths that arrive on stdin, one per line; answer one JSON line each."""
    os.environ["VQVAE_CACHE"] = tempfile.mkdtemp(prefix="vqvae-fuzz-cache-")
    reader = hostile_inputs.READERS[reader_name]
    vm = _vm_bytes()
    if vm is not None:
        limit = vm + memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    _warm_up(reader)
    print(json.dumps({"ready": True, "baseline_rss_mb": _status_mb("VmRSS")}), flush=True)
    for line in sys.stdin:
        folder, path = (Path(p) for p in json.loads(line))
        _reset_peak()
        answer: dict = {"outcome": "loaded"}
        try:
            reader.read(path)
        except hostile_inputs.CLEAN as exc:
            answer = {"outcome": "clean", "type": type(exc).__name__, "empty": not str(exc).strip()}
        except BaseException as exc:  # every other exception is the defect counted here
            answer = {"outcome": "traceback", "type": type(exc).__name__, "message": str(exc)[:300],
                      "traceback": traceback.format_exc()[-1500:]}
        problem = reader.check(folder) if reader.check else None
        print(json.dumps({**answer, "check": problem, "rss_mb": _status_mb("VmHWM")}), flush=True)


def _warm_up(reader: hostile_inputs.Reader) -> None:
    """Import what the reader imports lazily (under the cap, like everything it does)."""
    folder = Path(tempfile.mkdtemp(prefix="vqvae-fuzz-warm-"))
    for seed in range(5):
        case = folder / str(seed)
        case.mkdir()
        with contextlib.suppress(Exception):  # warming up only
            reader.read(reader.make(random.Random(seed), case))
    shutil.rmtree(folder, ignore_errors=True)
    hostile_inputs._BOMB.clear()  # the parent makes the inputs: the worker need not keep one


def _vm_bytes() -> int | None:
    size = _status_mb("VmSize")
    return None if size is None else int(size * 2**20)


def _status_mb(field: str) -> float | None:
    """A field of /proc/self/status in MiB (VmRSS now, VmHWM its peak, VmSize the address space)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> None:
    """Start VmHWM afresh, so that it is the peak of the next input alone (Linux >= 4.0)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


# ------------------------------------------------------------------ the campaign


class Worker:
    def __init__(self, reader: str, memory_mb: int) -> None:
        self.reader, self.memory_mb = reader, memory_mb
        self.baseline_mb = 0.0
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--worker", self.reader, "--memory-mb", str(self.memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        ready = self._answer(300)
        if ready is None or not ready.get("ready"):
            raise RuntimeError(f"the {self.reader} worker did not start")
        self.baseline_mb = ready["baseline_rss_mb"]

    def ask(self, folder: Path, path: Path, timeout: float) -> dict:
        self.proc.stdin.write(json.dumps([str(folder), str(path)]) + "\n")
        self.proc.stdin.flush()
        answer = self._answer(timeout)
        if answer is None:
            hung = self.proc.poll() is None
            self.proc.kill()
            self.proc.wait()
            answer = {"outcome": "hang" if hung else "crash", "returncode": self.proc.returncode}
            self.start()
        return answer

    def _answer(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        return json.loads(line) if line else None

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def campaign(reader: str, cases: int, seed: int, timeout: float, memory_mb: int, work: Path) -> dict:
    make = hostile_inputs.READERS[reader].make
    worker_ = Worker(reader, memory_mb)
    result: dict = {"inputs": 0, "loaded": 0, "clean_errors": {}, "tracebacks": [], "hangs": [], "crashes": [],
                    "check_failures": [], "empty_messages": 0, "baseline_rss_mb": worker_.baseline_mb}
    peak, started = worker_.baseline_mb, time.monotonic()
    for i in range(seed, seed + cases):
        folder = work / reader / str(i)
        folder.mkdir(parents=True)
        path = make(random.Random(f"{reader}-{i}"), folder)
        answer = worker_.ask(folder, path, timeout)
        result["inputs"] += 1
        peak = max(peak, answer.get("rss_mb", 0.0))
        outcome = answer["outcome"]
        if outcome == "loaded":
            result["loaded"] += 1
        elif outcome == "clean":
            result["clean_errors"][answer["type"]] = result["clean_errors"].get(answer["type"], 0) + 1
            result["empty_messages"] += answer["empty"]
        elif outcome == "traceback":
            result["tracebacks"].append({"seed": i, **{k: answer[k] for k in ("type", "message", "traceback")}})
        else:
            result["hangs" if outcome == "hang" else "crashes"].append({"seed": i, **answer})
        if answer.get("check"):
            result["check_failures"].append({"seed": i, "problem": answer["check"]})
        shutil.rmtree(folder, ignore_errors=True)
    worker_.close()
    result["peak_rss_mb"] = round(peak, 1)
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="inputs per reader (default 1000)")
    parser.add_argument("--readers", default=",".join(hostile_inputs.READERS),
                        help=f"comma-separated, of {', '.join(hostile_inputs.READERS)}")
    parser.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per input (default 30)")
    parser.add_argument("--memory-mb", type=int, default=1024,
                        help="address space a worker may add after its imports, MiB (default 1024)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.memory_mb)
        return
    names = args.readers.split(",")
    unknown = [n for n in names if n not in hostile_inputs.READERS]
    if unknown:
        parser.error(f"unknown readers {unknown}; known: {', '.join(hostile_inputs.READERS)}")
    load = {"start": os.getloadavg()[0]}
    work = Path(tempfile.mkdtemp(prefix="vqvae-fuzz-"))
    readers = {}
    try:
        for name in names:
            readers[name] = campaign(name, args.cases, args.seed, args.timeout, args.memory_mb, work)
            r = readers[name]
            print(f"{name:13s} {r['inputs']:5d} inputs  {r['loaded']:4d} loaded  "
                  f"{sum(r['clean_errors'].values()):5d} clean errors  {len(r['tracebacks'])} tracebacks  "
                  f"{len(r['hangs'])} hangs  {len(r['crashes'])} crashes  {len(r['check_failures'])} failed checks  "
                  f"peak {r['peak_rss_mb']:.0f} MiB ({r['seconds']:.0f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load["end"] = os.getloadavg()[0]
    defects = ("tracebacks", "hangs", "crashes", "check_failures")
    totals = {"inputs": sum(r["inputs"] for r in readers.values()),
              **{d: sum(len(r[d]) for r in readers.values()) for d in defects},
              "empty_messages": sum(r["empty_messages"] for r in readers.values())}
    write_json_atomic({
        "command": "python benchmarks/fuzz.py " + " ".join(sys.argv[1:]),
        "cases_per_reader": args.cases, "first_seed": args.seed, "timeout_s": args.timeout,
        "memory_limit_mb": args.memory_mb, "targets": {d: 0 for d in (*defects, "empty_messages")},
        "totals": totals, "readers": readers, "machine": machine_info(load),
    }, args.out)
    print(f"total: {totals['inputs']} inputs, " + ", ".join(f"{totals[d]} {d}" for d in (*defects, "empty_messages"))
          + f"; written to {args.out}")


if __name__ == "__main__":
    main()
