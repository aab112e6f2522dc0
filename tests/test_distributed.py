"""Training under torchrun: two gloo processes equal one, SIGTERM saves one consistent
checkpoint, and a two-process run resumes in one. Each test starts real ``torchrun`` jobs."""

import json
import os
import signal
import subprocess
import sys
import time

import safetensors.torch
import torch

from vqvae.cli import main

# k-means and dead-code re-seeding draw from rank 0's slice of the batch under DDP, so the
# equivalence with one process holds with both off (the quantizer's statistics are all-reduced)
TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "4", "--batch-size", "8",
        "--no-kmeans-init", "--dead-code-window", "100000", "--precision", "fp32", "--log-every", "1",
        "--no-progress"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "VQVAE_DIST_BACKEND": "gloo"}


def torchrun(*args, processes: int = 2, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               "-m", "vqvae", *map(str, args)]
    return subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(process: subprocess.Popen, timeout: float = 240) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]
    return out


def weights(run) -> dict[str, torch.Tensor]:
    tensors = safetensors.torch.load_file(str(run / "model.safetensors"))
    return {k: v for k, v in tensors.items() if k != "quantizer.reservoir"}  # rank 0's own samples


def assert_close(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key].float(), b[key].float(), rtol=1e-5, atol=1e-6, msg=key)


def test_two_processes_train_the_tokenizer_and_a_prior_as_one(tmp_path, tiny_images, capsys):
    flags = ["--data", tiny_images, *TINY, "--max-steps", 12, "--val-every", 6]
    out = finish(torchrun("train", *flags, "--out", tmp_path / "two"))
    assert out.count("finished at step 12") == 1  # one process speaks
    assert main(["train", *map(str, flags), "--out", str(tmp_path / "one")]) == 0
    assert_close(weights(tmp_path / "two"), weights(tmp_path / "one"))
    records = (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()
    assert all('"world_size": 2' in line for line in records)
    assert len(records) == 12 + 2  # every step once, and two validations: rank 0 alone writes

    prior = ["--arch", "transformer", "--width", 16, "--depth", 1, "--heads", 1, "--batch-size", 8,
             "--max-steps", 6, "--val-every", 6, "--no-progress", "--precision", "fp32"]
    finish(torchrun("train-prior", tmp_path / "one", *prior, "--name", "two"))
    assert main(["train-prior", str(tmp_path / "one"), *map(str, prior), "--name", "one"]) == 0
    assert_close(weights(tmp_path / "one" / "priors" / "two"), weights(tmp_path / "one" / "priors" / "one"))


def test_sigterm_saves_a_checkpoint_that_resumes_in_one_process(tmp_path, tiny_images):
    flags = ["--data", tiny_images, *TINY, "--val-every", 1000, "--checkpoint-every", 1000]
    job = torchrun("train", *flags, "--max-steps", 100_000, "--out", tmp_path / "killed", start_new_session=True)
    metrics = tmp_path / "killed" / "metrics.jsonl"
    deadline = time.monotonic() + 180
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        assert job.poll() is None and time.monotonic() < deadline, "training did not start"
        time.sleep(0.5)
    os.killpg(job.pid, signal.SIGTERM)  # what a scheduler sends to the whole job
    out, _ = job.communicate(timeout=120)
    assert "checkpoint saved" in out and "--resume" in out, out[-3000:]
    with safetensors.safe_open(str(tmp_path / "killed" / "train_state.safetensors"), "pt") as state:
        step = int(json.loads(state.metadata()["info"])["step"])
    assert step >= 5
    # resume in one process to step + 4, against one uninterrupted process
    assert main(["train", "--out", str(tmp_path / "killed"), "--resume", "--max-steps", str(step + 4),
                 "--no-progress"]) == 0
    assert main(["train", *map(str, flags), "--max-steps", str(step + 4), "--out", str(tmp_path / "whole")]) == 0
    assert_close(weights(tmp_path / "killed"), weights(tmp_path / "whole"))


def test_a_global_batch_must_divide_among_the_processes(tmp_path, tiny_images):
    job = torchrun("train", "--data", tiny_images, *TINY, "--batch-size", 7, "--max-steps", 2,
                   "--out", tmp_path / "odd")
    out, _ = job.communicate(timeout=240)
    assert job.returncode != 0
    assert "--batch-size 7 is the global batch and must divide evenly among 2 processes" in out


def test_local_slice_without_a_process_group_is_the_whole_batch():
    from vqvae.distributed import local_slice

    batch = torch.arange(12)
    assert torch.equal(local_slice(batch), batch)
