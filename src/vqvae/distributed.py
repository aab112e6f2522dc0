"""Many processes, one run: what the loop needs from ``torch.distributed`` under ``torchrun``.

``torchrun --nproc-per-node N -m vqvae train ...`` starts N copies of the command; each
joins the process group (gloo on CPUs, NCCL on GPUs, one GPU per ``LOCAL_RANK``). The
batch of a step is global: every process draws the same seeded batch, with the same
per-sample random choices, and trains on its slice of it, so N processes see exactly the
samples one process sees. Gradients are averaged by DistributedDataParallel. Files are
written by rank 0 alone (:func:`on_main`), and the ranks agree every step on whether to
stop, so they stop at the same step, also on a time budget or a signal.
"""

from __future__ import annotations

import datetime
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["MethodCaller", "agree", "barrier", "init_from_env", "is_distributed", "local_slice", "main_first", "on_main",
           "rank", "stop_signals", "world_size"]

TIMEOUT = datetime.timedelta(minutes=int(os.environ.get("VQVAE_DIST_TIMEOUT_MINUTES", "10")))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def on_main(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Call ``fn`` in the main process only (rank 0 of a distributed job, else always).

    Progress, logs, figures and checkpoints go through here, so a multi-process run
    writes each file once.
    """
    if rank() != 0:
        return None
    return fn(*args, **kwargs)


def main_first(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Call ``fn`` on rank 0 while the other ranks wait (they get None): for work that writes
    files the others then read. A failure on rank 0 fails every rank, none waits forever."""
    result, error = None, None
    if rank() == 0:
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:  # re-raised below, after the other ranks heard of it
            error = exc
    if is_distributed():
        failed = torch.tensor([int(error is not None)])
        dist.all_reduce(failed, op=dist.ReduceOp.MAX)  # also the barrier
        if failed and error is None:
            raise RankFailedError("rank 0 could not prepare the run (its error is above)")
    if error is not None:
        raise error
    return result


class RankFailedError(ValueError):
    """Another rank of a multi-process job failed; this one stops too."""


def init_from_env() -> str | None:
    """Join the process group when started by ``torchrun`` (``WORLD_SIZE`` > 1).

    Returns:
        The device this rank should use when its job runs on GPUs (``cuda:LOCAL_RANK``),
        else None.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return None
    cuda = torch.cuda.is_available() and os.environ.get("VQVAE_DIST_BACKEND", "") != "gloo"
    device = None
    if cuda:
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return device


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def agree(stop: bool, horizon: int) -> tuple[bool, int]:
    """Every rank stops when one wants to, on rank 0's horizon (one all-reduce per step)."""
    if not is_distributed():
        return stop, horizon
    flags = torch.tensor([int(stop), horizon if rank() == 0 else 0], dtype=torch.long)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0]), int(flags[1])


def local_slice(batch: Tensor) -> Tensor:
    """This rank's contiguous slice of a global batch ``(B, ...)``; B must divide evenly."""
    n = world_size()
    if n == 1:
        return batch
    if batch.shape[0] % n:
        raise ValueError(f"--batch-size {batch.shape[0]} is the global batch and must divide evenly among "
                         f"{n} processes: choose a multiple of {n}")
    size = batch.shape[0] // n
    return batch[rank() * size : (rank() + 1) * size]


class MethodCaller(nn.Module):
    """Lets DistributedDataParallel synchronise gradients through any method of a model.

    DDP hooks only ``forward``; a prior trains through ``loss``. ``MethodCaller(model)``
    has the model's parameters, and its ``forward(name, ...)`` calls ``model.name(...)``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, name: str, *args, **kwargs):
        return getattr(self.model, name)(*args, **kwargs)


def wrap(model: nn.Module, device: torch.device) -> Callable[..., Any]:
    """``call(name, *args)``: ``model.name(*args)``, through DDP in a distributed job."""
    if not is_distributed():
        return lambda name, *args, **kwargs: getattr(model, name)(*args, **kwargs)
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(MethodCaller(model), device_ids=ids)
    return ddp


@contextmanager
def stop_signals() -> Iterator[list[int]]:
    """While training, SIGTERM (and, in a multi-process job, SIGINT) asks to stop instead of
    killing: the list gets the signal, and the loop saves one consistent checkpoint first.

    ``torchrun`` forwards the terminal's Ctrl-C and its own shutdown as these signals to
    every rank; a single process keeps Ctrl-C as ``KeyboardInterrupt``.
    """
    received: list[int] = []
    wanted = [signal.SIGTERM] + ([signal.SIGINT] if is_distributed() else [])
    try:
        previous = {s: signal.signal(s, lambda number, frame: received.append(number)) for s in wanted}
    except ValueError:  # not the main thread: signals stay as they are
        yield received
        return
    try:
        yield received
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
