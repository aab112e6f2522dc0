"""One script for a GPU machine: the CUDA tests, bf16, throughput, peers, memory; JSON out.

Run it where a CUDA GPU is visible (``pip install -e '.[test,bench]'`` first)::

    python benchmarks/gpu_check.py            # everything, about 5 minutes on an H100/H200
    python benchmarks/gpu_check.py --quick    # fewer rounds

It records, in ``benchmarks/results/gpu_check.json``:

* the ``cuda``-marked tests (``tests/test_cuda.py``): pass/fail counts;
* a bf16-autocast training step of the CIFAR-10 model (128 hidden, K = 512, D = 64): the
  fraction of positions whose codes equal the fp32 codes of the same weights (>= 0.98);
* images/s of that model's training step at batch 128 and 512, fp32 and bf16;
* the quantizer's forward+backward against vector-quantize-pytorch on the same GPU
  (B = 128, 8x8, D = 64, K = 512 and 8192), medians of alternating rounds;
* Transformer prior sampling tokens/s at batch 16 with and without the KV cache;
* peak GPU memory of each measurement.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from vqvae import VQVAE, EMAVectorQuantizer, TransformerPrior
from vqvae.precision import autocast_for

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu_check.json"
CIFAR = {"in_channels": 3, "hidden": 128, "res_hidden": 32, "codebook_size": 512, "code_dim": 64}


def timed(fn, rounds: int) -> tuple[float, int]:
    """Median seconds of ``fn()`` over ``rounds`` after two warm-up calls, and peak bytes."""
    for _ in range(2):
        fn()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times), torch.cuda.max_memory_allocated()


def cuda_tests() -> dict:
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", str(ROOT / "tests" / "test_cuda.py")],
                            capture_output=True, text=True)
    return {"returncode": result.returncode, "summary": result.stdout.strip().splitlines()[-1:]}


def bf16_codes() -> dict:
    torch.manual_seed(0)
    model = VQVAE(**CIFAR).cuda().eval()
    x = torch.rand(256, 3, 32, 32, device="cuda")
    exact = model.encode(x)
    with autocast_for("bf16", torch.device("cuda")):
        fast = model.encode(x)
    return {"bf16_codes_equal_fp32": float((fast == exact).float().mean())}


def training_throughput(rounds: int) -> dict:
    out = {}
    for batch in (128, 512):
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = VQVAE(**CIFAR).cuda().train()
            optimizer = torch.optim.Adam(model.parameters(), lr=2e-4)
            x = torch.rand(batch, 3, 32, 32, device="cuda")

            def step(model=model, optimizer=optimizer, x=x, precision=precision):
                with autocast_for(precision, torch.device("cuda")):
                    loss = model(x).loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()

            seconds, peak = timed(step, rounds)
            out[f"batch{batch}_{precision}"] = {"images_per_s": batch / seconds, "peak_mib": peak / 2**20}
    return out


def quantizer_vs_peer(rounds: int) -> dict:
    try:
        from vector_quantize_pytorch import VectorQuantize
    except ImportError:
        return {"skipped": "vector-quantize-pytorch is not installed: pip install -e '.[bench]'"}
    out = {}
    for k in (512, 8192):
        ours = EMAVectorQuantizer(k, 64, kmeans_init=False).cuda().train()
        peer = VectorQuantize(dim=64, codebook_size=k).cuda().train()
        z = torch.randn(128, 64, 8, 8, device="cuda", requires_grad=True)
        z_peer = z.detach().flatten(2).transpose(1, 2).contiguous().requires_grad_()  # (B, HW, D)

        def run_ours(ours=ours, z=z):
            q = ours(z)
            (q.quantized.sum() + q.loss).backward()

        def run_peer(peer=peer, z_peer=z_peer):
            quantized, _, loss = peer(z_peer)
            (quantized.sum() + loss.sum()).backward()

        ours_s, ours_peak = timed(run_ours, rounds)
        peer_s, peer_peak = timed(run_peer, rounds)
        out[f"K{k}"] = {"ours_ms": ours_s * 1e3, "peer_ms": peer_s * 1e3, "speedup": peer_s / ours_s,
                        "ours_peak_mib": ours_peak / 2**20, "peer_peak_mib": peer_peak / 2**20}
    return out


def sampling(rounds: int) -> dict:
    prior = TransformerPrior(512, (8, 8), width=256, depth=4).cuda().eval()
    out = {}
    for cached in (True, False):
        seconds, peak = timed(lambda cached=cached: prior.sample(16, use_cache=cached), max(1, rounds // 4))
        out["cached" if cached else "uncached"] = {"tokens_per_s": 16 * 64 / seconds, "peak_mib": peak / 2**20}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device is visible: run this on a GPU machine")
    rounds = 5 if args.quick else 20
    report = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "tests": cuda_tests(),
              **bf16_codes(), "training": training_throughput(rounds), "quantizer": quantizer_vs_peer(rounds),
              "sampling": sampling(rounds)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
