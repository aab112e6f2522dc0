"""One writer per run directory: a second one is refused with the first one's name; a dead
one's lock is taken over."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import vqvae.lock
from vqvae.lock import LOCK_FILE, RunInUseError, RunLock, check_unused, run_lock
from vqvae.runs import fresh_run

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")

# The lock module loaded on its own (it imports nothing of vqvae, so no torch): the child
# processes start in a fraction of a second.
_LOAD = (
    "import importlib.util, sys, time\n"
    f"spec = importlib.util.spec_from_file_location('lock', {str(Path(vqvae.lock.__file__))!r})\n"
    "lock_module = importlib.util.module_from_spec(spec); spec.loader.exec_module(lock_module)\n"
)
# A holder that takes the lock, says so, and waits to be killed.
_HOLDER = _LOAD + """
lock = lock_module.RunLock(sys.argv[1], "train")
lock.acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path / "run"), "--out", "x"],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_with_the_first_ones_pid_host_and_start(tmp_path, holder):
    with pytest.raises(RunInUseError) as info:
        RunLock(tmp_path / "run", "train").acquire()
    message = str(info.value)
    assert f"pid {holder.pid} on this host ({socket.gethostname()})" in message
    assert "running '-c " in message and "since 20" in message and f"kill {holder.pid}" in message
    assert isinstance(info.value, OSError) and info.value.holder["pid"] == holder.pid
    with pytest.raises(RunInUseError):
        check_unused(tmp_path / "run")
    with pytest.raises(RunInUseError):  # --force never deletes a run that is being trained
        fresh_run(tmp_path / "run", force=True)
    assert (tmp_path / "run" / LOCK_FILE).exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, holder):
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    record = json.loads((tmp_path / "run" / LOCK_FILE).read_text())
    assert record["pid"] == holder.pid  # the file outlives its process...
    check_unused(tmp_path / "run")  # ...but not its flock
    with run_lock(tmp_path / "run", "train-prior") as lock:
        assert lock.stale["pid"] == holder.pid
        assert json.loads((tmp_path / "run" / LOCK_FILE).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_released_lock_is_removed_and_can_be_taken_again(tmp_path):
    for _ in range(2):
        with run_lock(tmp_path, "train") as lock:
            assert lock.stale is None and (tmp_path / LOCK_FILE).exists()
            with pytest.raises(RunInUseError, match="this very process"):
                RunLock(tmp_path).acquire()
        assert list(tmp_path.iterdir()) == []


def test_racing_writers_get_one_lock_between_them(tmp_path):
    # Six processes try at the same moment (after a "go" file appears); the winner holds the
    # lock until the test has every answer.
    script = _LOAD + """
from pathlib import Path
folder = Path(sys.argv[1])
print("ready", flush=True)
while not (folder / "go").exists():
    time.sleep(0.005)
try:
    lock = lock_module.RunLock(folder / "run"); lock.acquire()
except lock_module.RunInUseError:
    print("refused", flush=True)
else:
    print("held", flush=True)
    while not (folder / "done").exists():
        time.sleep(0.005)
    lock.release()
"""
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    try:
        assert [p.stdout.readline().strip() for p in procs] == ["ready"] * 6
        (tmp_path / "go").touch()
        answers = [p.stdout.readline().strip() for p in procs]
        assert answers.count("held") == 1 and answers.count("refused") == 5, answers
    finally:
        (tmp_path / "done").touch()
        for p in procs:
            p.communicate(timeout=60)
    assert not (tmp_path / "run" / LOCK_FILE).exists()


def test_a_lock_file_that_is_not_a_record_is_still_a_lock(tmp_path):
    (tmp_path / LOCK_FILE).write_text("garbage")  # left by a dead process: nobody holds its flock
    started = time.monotonic()
    with run_lock(tmp_path) as lock:
        assert lock.stale == {} and time.monotonic() - started < 5
