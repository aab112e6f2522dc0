"""The one atomic-write helper: all or nothing under the final name, and a clear error when the disk is full."""

import errno
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vqvae.atomic import DiskFullError, atomic_write, write_bytes, write_json
from vqvae.checkpoint_pair import load_checkpoint, save_checkpoint
from vqvae.runs import append_metrics


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path):
    path = tmp_path / "sub" / "file.json"
    write_json(path, {"version": 1})

    def half_then_fail(tmp):
        with open(tmp, "w") as f:
            f.write('{"version": 2, "trunc')
        raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        atomic_write(path, half_then_fail)
    assert path.read_text() == '{\n  "version": 1\n}\n'
    assert sorted(p.name for p in path.parent.iterdir()) == ["file.json"]


def test_written_files_are_readable_by_others(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(b"abc"))
    assert path.read_bytes() == b"abc"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644


# ------------------------------------------------------------------ full disks


def test_a_write_that_does_not_fit_raises_disk_full_naming_the_file_and_size(tmp_path):
    path = tmp_path / "data.bin"
    write_bytes(path, b"old")

    def too_big(tmp):
        with open(tmp, "wb") as f:
            f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFullError, match=r"cannot write .*data\.bin: the disk is full.*needs more than the 7 "
                                            r"bytes that fitted.*Nothing was written") as info:
        atomic_write(path, too_big)
    assert isinstance(info.value, OSError) and info.value.errno == errno.ENOSPC
    assert info.value.path == path and info.value.written == 7 and info.value.needed is None
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.bin"]


def test_quota_and_file_size_limits_are_disk_full_too(tmp_path):
    for code, words in ((errno.EDQUOT, "quota"), (errno.EFBIG, "file-size limit")):
        def fail(tmp, code=code):
            raise OSError(code, os.strerror(code))

        with pytest.raises(DiskFullError, match=words):
            atomic_write(tmp_path / "x", fail, size=10)
    with pytest.raises(OSError, match="Permission") as info:  # any other error passes through unchanged
        atomic_write(tmp_path / "x", lambda tmp: (_ for _ in ()).throw(PermissionError("Permission denied")))
    assert not isinstance(info.value, DiskFullError)


# A child process under a 64 KiB file-size limit (RLIMIT_FSIZE: writes past it fail with
# EFBIG, which Python does not turn into a signal): works without root on any Linux.
_LIMITED_WRITES = """
import json, resource, sys, torch
from pathlib import Path
from vqvae.atomic import DiskFullError
from vqvae.checkpoint_pair import load_checkpoint, save_checkpoint
from vqvae.runs import save_codes
from vqvae.modalities.image.outputs import write_samples
from vqvae.modalities.speech.wav import write_wav

run = Path(sys.argv[1])
small, big = torch.nn.Linear(4, 4), torch.nn.Linear(400, 400)
opt = torch.optim.Adam(small.parameters())
save_checkpoint(run, small, opt, {"step": 1})
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
results = {}
writes = {
    "checkpoint": lambda: save_checkpoint(run, big, torch.optim.Adam(big.parameters()), {"step": 2}),
    "codes": lambda: save_codes(run / "codes.npz", torch.zeros(40000, dtype=torch.long), 512),
    "samples": lambda: write_samples(torch.zeros(4, 8, 8, dtype=torch.long), torch.rand(4, 3, 128, 128), run / "samples"),
    "wav": lambda: write_wav(run / "a.wav", torch.zeros(100000), 8000),
}
for name, write in writes.items():
    try:
        write()
        results[name] = "written"
    except DiskFullError as exc:
        results[name] = str(exc)
model = torch.nn.Linear(4, 4)
results["resumed_step"] = load_checkpoint(run, model, torch.optim.Adam(model.parameters()))["step"]
results["same_weights"] = bool(torch.equal(model.weight, small.weight))
print(json.dumps(results))
"""


def test_full_disk_under_a_file_size_limit_keeps_the_last_checkpoint(tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-c", _LIMITED_WRITES, str(run)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout.splitlines()[-1])
    # The training state (small: no optimizer step yet) fits, the weights do not: the new pair is
    # incomplete, and the previous one is loaded.
    assert re.search(r"cannot write .*model\.safetensors: it would exceed the file-size limit.*needs "
                     r"641,[\d,]+ bytes", results["checkpoint"]), results["checkpoint"]
    assert re.search(r"codes\.npz: .*needs 400,[\d,]+ bytes", results["codes"]), results["codes"]  # int16 + int64 labels
    assert "samples/" in results["samples"] and "a.wav" in results["wav"], results
    assert results["resumed_step"] == 1 and results["same_weights"]
    assert not list(run.rglob("*.tmp")) and not (run / "codes.npz").exists() and not (run / "a.wav").exists()


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs: a real ENOSPC. Needs root and mount; skipped elsewhere."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a tmpfs needs root and mount (the RLIMIT_FSIZE test covers the same paths)")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_disk_leaves_the_previous_checkpoint_loadable(tiny_disk):
    small, big = torch.nn.Linear(4, 4), torch.nn.Linear(300, 300)  # 361 kB of weights do not fit
    save_checkpoint(tiny_disk, small, torch.optim.Adam(small.parameters()), {"step": 1})
    with pytest.raises(DiskFullError, match=r"disk is full.*needs [\d,]+ bytes; [\d,]+ bytes are free") as info:
        save_checkpoint(tiny_disk, big, torch.optim.Adam(big.parameters()), {"step": 2})
    assert info.value.errno == errno.ENOSPC and info.value.needed > info.value.free
    model = torch.nn.Linear(4, 4)
    with pytest.warns(UserWarning, match="newest checkpoint is incomplete.*resuming from the previous one, at step 1"):
        assert load_checkpoint(tiny_disk, model, torch.optim.Adam(model.parameters()))["step"] == 1
    assert torch.equal(model.weight, small.weight)
    assert not list(tiny_disk.rglob("*.tmp"))
    with pytest.raises(DiskFullError, match="metrics.jsonl"):
        for _ in range(10_000):
            append_metrics(tiny_disk, {"step": 1, "loss": [0.5] * 100})
