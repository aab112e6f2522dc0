"""Benchmark: training killed with SIGKILL at random moments, then resumed.

Each trial starts a tiny image run, ``vqvae train --data IMAGES --out RUN ...`` (48 16x16
images, 24 steps, a checkpoint every 4), kills it with SIGKILL, inspects what the kill left
in ``RUN``, runs ``vqvae train --out RUN --resume`` and compares the final weights with
those of an uninterrupted run of the same command. The trials are drawn from a seeded
generator: some kill at a uniformly random moment of the run directory's life (from the
moment ``config.json`` exists to the end of the uninterrupted run), the others at a chosen
point of a chosen checkpoint: while the training state or the weights are being written
(after their bytes are out, before the rename), between the two files, right after a
complete checkpoint.

To hit those points the runs go through this script's own child wrapper
(``chaos.py --child ARGS``), which runs the ``vqvae`` command line with every atomic write
of :mod:`vqvae.atomic` reporting its progress to an event file and pausing ``--pause``
seconds after writing and after renaming (a test build: the library has no such hook).

Measured per trial: the kill's moment, whether every file under its final name reads
whole (no truncated ``config.json``, safetensors or metrics line), whether a complete
checkpoint pair loads, whether ``--resume`` exits 0 and finishes, whether the final
weights equal the uninterrupted run's. Targets: 30/30 resumed, 0 corrupt checkpoints,
the kills right after a checkpoint end identical (all do, since resume is exact).

    python benchmarks/chaos.py               # 30 trials, ~15 minutes on 2 cores
    python benchmarks/chaos.py --trials 5
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from common import machine_info, write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "chaos.json"
TRAIN = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "4", "--batch-size", "8",
         "--max-steps", "24", "--log-every", "2", "--val-every", "12", "--checkpoint-every", "4", "--seed", "3",
         "--device", "cpu", "--precision", "fp32", "--no-progress"]
STATE, MODEL = "train_state.safetensors", "model.safetensors"


# ------------------------------------------------------------------ the child


def child(argv: list[str]) -> int:
    """``vqvae ARGV`` with every atomic write reporting to $CHAOS_EVENTS and pausing $CHAOS_PAUSE s."""
    import vqvae.atomic
    import vqvae.cli
    import vqvae.workflow  # noqa: F401 - imports every module that writes, so all are patched

    events, pause = os.environ.get("CHAOS_EVENTS"), float(os.environ.get("CHAOS_PAUSE", "0"))
    original = vqvae.atomic.atomic_write

    def event(kind: str, path: Path) -> None:
        if events:
            with open(events, "a") as f:
                f.write(json.dumps({"t": time.time(), "event": kind, "file": Path(path).name}) + "\n")

    def atomic_write(path, write, size=None):
        def write_then_pause(tmp):
            write(tmp)
            event("written", path)
            time.sleep(pause)  # bytes out, not yet flushed and renamed

        event("begin", path)
        original(path, write_then_pause, size)
        event("renamed", path)
        time.sleep(pause)  # renamed, the next write not begun

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("vqvae") and getattr(module, "atomic_write", None) is original:
            module.atomic_write = atomic_write
    return vqvae.cli.main(argv)


# ------------------------------------------------------------------ the parent


def tiny_images(root: Path) -> Path:
    """48 16x16 colour images in two classes (the test suite's tiny set)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16]
    for label, name in enumerate(("discs", "stripes")):
        (root / name).mkdir(parents=True)
        for i in range(24):
            if label == 0:
                cy, cx, r = [*rng.uniform(4, 12, 2).tolist(), rng.uniform(2, 6)]
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            else:
                mask = ((xx + i) // 3) % 2 == 0
            img = np.zeros((16, 16, 3), np.uint8) + rng.integers(0, 40, 3).astype(np.uint8)
            img[mask] = rng.integers(60, 255, 3)
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


class Trial:
    def __init__(self, work: Path, images: Path, pause: float) -> None:
        self.work, self.images, self.pause = work, images, pause
        self.run = work / "run"
        self.events = work / "events.jsonl"

    def start(self, resume: bool = False, pause: float | None = None) -> subprocess.Popen:
        args = ["train", "--out", str(self.run), "--resume", "--no-progress"] if resume else \
            ["train", "--data", str(self.images), "--out", str(self.run), *TRAIN]
        env = {**os.environ, "CHAOS_EVENTS": str(self.events), "CHAOS_PAUSE": str(self.pause if pause is None else pause),
               "VQVAE_CACHE": str(self.work.parent / "cache")}
        return subprocess.Popen([sys.executable, __file__, "--child", *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def read_events(self) -> list[dict]:
        if not self.events.exists():
            return []
        return [json.loads(line) for line in self.events.read_text().splitlines() if line.endswith("}")]


def reference(work: Path, images: Path, pause: float) -> dict:
    """The uninterrupted run: its final weights, its events, and the life of its run directory."""
    trial = Trial(work / "reference", images, pause)
    trial.work.mkdir()
    started = time.time()
    proc = trial.start()
    born = _wait_for(trial.run / "config.json", proc)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"the uninterrupted run failed:\n{err[-3000:]}")
    ended = time.time()
    events = trial.read_events()
    return {"weights": _weights(trial.run / MODEL), "events": events, "life_s": ended - born,
            "startup_s": born - started, "total_s": ended - started,
            "order": [e["file"] for e in events if e["event"] == "renamed" and e["file"] in (STATE, MODEL)][:2]}


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 600) -> float:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"{path} never appeared: {proc.stderr.read()[-2000:] if proc.stderr else ''}")
        time.sleep(0.01)
    return time.time()


def _weights(path: Path) -> dict:
    import safetensors.torch

    return safetensors.torch.load(path.read_bytes())


def plan(trials: int, seed: int, ref: dict) -> list[dict]:
    """The kill of each trial: a random moment, or the k-th occurrence of a checkpoint event."""
    rng = random.Random(seed)
    first, second = ref["order"]
    points = [("written", first, f"while {first} is written"),
              ("renamed", first, f"between {first} and {second}"),
              ("written", second, f"while {second} is written"),
              ("renamed", second, "right after a complete checkpoint")]
    kills: list[dict] = []
    for i in range(trials):
        if i % 5 in (1, 3):  # two in five at a uniformly random moment
            kills.append({"kind": "random", "at_s": rng.uniform(0, ref["life_s"])})
            continue
        event, file, moment = points[sum(k["kind"] == "checkpoint" for k in kills) % len(points)]
        count = sum(e["event"] == event and e["file"] == file for e in ref["events"])
        kills.append({"kind": "checkpoint", "event": event, "file": file, "moment": moment,
                      "occurrence": rng.randint(1, count)})
    return kills


def kill(trial: Trial, proc: subprocess.Popen, spec: dict, order: list[str]) -> dict:
    """SIGKILL the child at the planned moment; what it had done by then."""
    born = _wait_for(trial.run / "config.json", proc)
    if spec["kind"] == "random":
        while time.time() < born + spec["at_s"] and proc.poll() is None:
            time.sleep(0.005)
    else:
        while proc.poll() is None:
            seen = [e for e in trial.read_events() if e["event"] == spec["event"] and e["file"] == spec["file"]]
            if len(seen) >= spec["occurrence"]:
                break
            time.sleep(0.005)
    if proc.poll() is not None:
        return {"killed": False}
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    events = trial.read_events()
    completed = _complete_checkpoints(events, order)
    last = events[-1] if events else {}
    return {"killed": True, "after_s": round(time.time() - born, 2), "complete_checkpoints_before": completed,
            "last_event": f"{last.get('event')} {last.get('file')}" if last else None}


def _complete_checkpoints(events: list[dict], order: list[str]) -> int:
    """Checkpoints whose second file was renamed after their first."""
    completed, previous = 0, None
    for e in events:
        if e["event"] == "renamed" and e["file"] in (STATE, MODEL):
            completed += e["file"] == order[1] and previous == order[0]
            previous = e["file"]
    return completed


def inspect(run: Path) -> dict:
    """What a kill left: files that do not read whole, and which checkpoint pair loads."""
    import safetensors.torch
    import torch

    from vqvae.checkpoint import CheckpointError
    from vqvae.checkpoint_pair import PREVIOUS_DIR, load_checkpoint
    from vqvae.modalities import modality_of

    broken = []
    for path in [run / "config.json", run / "metrics.jsonl", *run.glob("*.safetensors"),
                 *(run / PREVIOUS_DIR).glob("*.safetensors")]:
        if not path.exists():
            continue
        try:
            if path.suffix == ".safetensors":
                safetensors.torch.load(path.read_bytes())
            elif path.name == "config.json":
                json.loads(path.read_text())
            else:
                [json.loads(line) for line in path.read_text().splitlines()]
        except Exception as exc:  # noqa: BLE001 - any failure to read is what is counted
            broken.append(f"{path.relative_to(run)}: {type(exc).__name__}")
    result = {"unreadable_files": broken, "temporary_files": len(list(run.rglob("*.tmp")))}
    try:
        config = json.loads((run / "config.json").read_text())
        model = modality_of(config).build(config)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = load_checkpoint(run, model, torch.optim.Adam(model.parameters()))
        result["loads"] = "no checkpoint yet" if info is None else f"step {info['step']}"
        if any("previous one" in str(w.message) for w in caught):
            result["loads"] += " (the previous pair)"
    except (CheckpointError, OSError, ValueError) as exc:
        result["loads"] = f"refused: {str(exc)[:300]}"
    return result


def run_trial(work: Path, images: Path, pause: float, spec: dict, ref: dict) -> dict:
    trial = Trial(work, images, pause)
    work.mkdir()
    for _ in range(3):  # a random moment past the end of this (faster) run: draw again
        shutil.rmtree(trial.run, ignore_errors=True)
        trial.events.unlink(missing_ok=True)
        killed = kill(trial, trial.start(), spec, ref["order"])
        if killed["killed"]:
            break
        spec = {**spec, "at_s": spec.get("at_s", 0) * 0.5}
    result = {"plan": spec, **killed}
    if not killed["killed"]:
        return {**result, "note": "the run ended before the kill"}
    result["left"] = inspect(trial.run)
    started = time.time()
    proc = trial.start(resume=True, pause=0.0)
    out, err = proc.communicate()
    result["resume_s"] = round(time.time() - started, 1)
    result["resumed"] = proc.returncode == 0 and "finished at step 24" in out
    if not result["resumed"]:
        result["resume_error"] = (err.strip().splitlines() or ["(no message)"])[-1][:500]
        return result
    final = _weights(trial.run / MODEL)
    result["identical"] = final.keys() == ref["weights"].keys() and all(
        np.array_equal(final[k].numpy(), ref["weights"][k].numpy()) for k in final)
    steps = [json.loads(line)["step"] for line in (trial.run / "metrics.jsonl").read_text().splitlines()]
    result["metrics_in_order"] = steps == sorted(steps)
    shutil.rmtree(work, ignore_errors=True)
    return result


def summarise(results: list[dict]) -> dict:
    killed = [r for r in results if r.get("killed")]
    after = [r for r in killed if r["plan"].get("moment") == "right after a complete checkpoint"]
    corrupt = [r for r in killed if r["left"]["unreadable_files"]
               or (r["left"]["loads"].startswith("refused") and r["complete_checkpoints_before"] > 0)]
    return {
        "trials": len(results), "killed": len(killed),
        "killed_while_writing": sum(r["plan"].get("event") == "written" for r in killed),
        "killed_between_files": sum(r["plan"].get("moment", "").startswith("between") for r in killed),
        "killed_after_checkpoint": len(after), "killed_at_random": sum(r["plan"]["kind"] == "random" for r in killed),
        "resumed": sum(bool(r.get("resumed")) for r in killed),
        "identical": sum(bool(r.get("identical")) for r in killed),
        "after_checkpoint_identical": sum(bool(r.get("identical")) for r in after),
        "corrupt_checkpoints": len(corrupt),
        "unreadable_files": sum(len(r["left"]["unreadable_files"]) for r in killed),
        "temporary_files_left_by_kills": sum(r["left"]["temporary_files"] for r in killed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.15,
                        help="seconds each atomic write pauses after writing and after renaming (default 0.15)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        sys.exit(child(args.child))
    import vqvae

    load = {"start": os.getloadavg()[0]}
    work = Path(tempfile.mkdtemp(prefix="vqvae-chaos-"))
    try:
        images = tiny_images(work / "images")
        ref = reference(work, images, args.pause)
        print(f"uninterrupted run: {ref['total_s']:.1f} s ({ref['startup_s']:.1f} s before config.json); "
              f"checkpoint order {' then '.join(ref['order'])}", flush=True)
        results = []
        for i, spec in enumerate(plan(args.trials, args.seed, ref)):
            result = run_trial(work / f"trial-{i:02d}", images, args.pause, spec, ref)
            results.append(result)
            what = spec.get("moment") or f"at {spec['at_s']:.2f} s"
            print(f"trial {i:2d} killed {what:42s} -> left {result.get('left', {}).get('loads', '-')!s:40.40s} "
                  f"resumed {result.get('resumed')}  identical {result.get('identical')}"
                  + (f"  ({result['resume_error']})" if result.get("resume_error") else ""), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    load["end"] = os.getloadavg()[0]
    summary = summarise(results)
    write_json_atomic({
        "command": "python benchmarks/chaos.py " + " ".join(sys.argv[1:]),
        "vqvae": str(Path(vqvae.__file__).parent), "train_command": ["vqvae", "train", "--data", "IMAGES", *TRAIN],
        "pause_s": args.pause, "seed": args.seed, "uninterrupted_s": round(ref["total_s"], 1),
        "checkpoint_order": ref["order"], "summary": summary,
        "targets": {"resumed": summary["killed"], "corrupt_checkpoints": 0,
                    "after_checkpoint_identical": summary["killed_after_checkpoint"]},
        "trials": results, "machine": machine_info(load),
    }, args.out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
