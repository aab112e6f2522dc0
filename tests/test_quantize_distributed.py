"""Two gloo processes under torch.distributed keep one codebook."""

import os
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vqvae import EMAVectorQuantizer, VectorQuantizer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batches(rank: int, steps: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(100 + rank)  # every rank sees different data
    return [torch.randn(2, 4, 3, 3, generator=g) * (1 + rank) for _ in range(steps)]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(rank)  # construction must not depend on the rank's global RNG
        results = {}
        for name, cls in (("ema", EMAVectorQuantizer), ("grad", VectorQuantizer)):
            q = cls(32, 4, kmeans_init=True, dead_code_window=2, seed=7).train()
            for z in _batches(rank, 8):
                q(z)
            results[name] = {k: v.clone() for k, v in q.state_dict().items()}
        # EMA without resets: the statistics equal those of one process seeing both batches.
        q = EMAVectorQuantizer(32, 4, dead_code_window=None, seed=7).train()
        for z in _batches(rank, 5):
            q(z)
        results["ema_plain"] = {k: v.clone() for k, v in q.state_dict().items()}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_keep_identical_codebooks(tmp_path):
    mp.start_processes(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for name in ("ema", "grad"):
        for key in ("codebook", "steps", "last_used", "usage_counts", "initialized"):
            assert torch.equal(r0[name][key], r1[name][key]), (name, key)
    for key in ("codebook", "cluster_size", "embed_sum"):
        assert torch.equal(r0["ema"][key], r1["ema"][key]), key
        assert torch.equal(r0["ema_plain"][key], r1["ema_plain"][key]), key

    single = EMAVectorQuantizer(32, 4, dead_code_window=None, seed=7).train()
    for z0, z1 in zip(_batches(0, 5), _batches(1, 5), strict=True):
        single(torch.cat([z0, z1]))
    for key in ("codebook", "cluster_size", "embed_sum", "usage_counts"):
        torch.testing.assert_close(r0["ema_plain"][key], single.state_dict()[key])
