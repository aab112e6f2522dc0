"""What every benchmark script reports the same way: the machine, targets, atomic JSON."""

from __future__ import annotations

import datetime
import json
import operator
import os
import platform
from pathlib import Path

import torch

COMPARISONS = {">=": operator.ge, "<=": operator.le, "<": operator.lt}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown"


def machine_info(load: dict[str, float], **versions: str) -> dict:
    """The machine and software a run measured; ``versions`` names the peers' versions.

    Other processes on the cores inflate every timing (threads spin-wait for a
    descheduled peer): a high 1-minute load average voids a run.
    """
    return {
        "torch": torch.__version__,
        **versions,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1min": load,
    }


def write_json_atomic(data: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp")  # the .gitignore covers results/*.tmp
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "—" if value is None else format(value, spec) + suffix
