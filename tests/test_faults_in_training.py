"""Faults during training: a NaN loss stops with the last checkpoint kept, a kill between the
two checkpoint files resumes exactly, resume before the first checkpoint, one writer per run."""

import math
import subprocess
import sys

import pytest
import torch

from vqvae import checkpoint as ckpt
from vqvae import checkpoint_pair
from vqvae.cli import main
from vqvae.faults import NonFiniteLossError
from vqvae.modalities.image.task import ImageTask
from vqvae.train import TrainConfig
from vqvae.workflow import start_run, train_tokenizer

MODEL = {"hidden": 16, "res_hidden": 8, "codebook_size": 16, "code_dim": 4, "dead_code_window": 3}
TRAIN = TrainConfig(batch_size=8, max_steps=8, log_every=2, val_every=4, val_images=16, checkpoint_every=4, seed=3)


def _weights(run):
    return ckpt.load_tensors(run / ckpt.MODEL_FILE)[0]


def test_a_nan_loss_stops_training_and_keeps_the_last_checkpoint(tmp_path, tiny_images, monkeypatch):
    run = start_run(tmp_path / "run", str(tiny_images), MODEL, TRAIN)
    real = ImageTask.forward

    def nan_at_step_6(self, step):
        loss, output, items = real(self, step)
        return (loss * math.nan if step == 5 else loss), output, items

    monkeypatch.setattr(ImageTask, "forward", nan_at_step_6)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 6"):
        train_tokenizer(run, progress=False)
    step4 = _weights(run)
    monkeypatch.setattr(ImageTask, "forward", real)
    assert train_tokenizer(run, resume=True, max_steps=4, progress=False).step == 4  # resumes at the good checkpoint
    assert all(torch.equal(step4[k], v) for k, v in _weights(run).items())


def test_a_kill_between_the_two_writes_resumes_and_ends_as_an_uninterrupted_run(tmp_path, tiny_images, monkeypatch):
    whole = start_run(tmp_path / "whole", str(tiny_images), MODEL, TRAIN)
    train_tokenizer(whole, progress=False)
    run = start_run(tmp_path / "run", str(tiny_images), MODEL, TRAIN)
    saves = []
    real = checkpoint_pair.save_model

    def killed_at_the_second_checkpoint(*args, **kwargs):
        saves.append(1)
        if len(saves) == 2:
            raise SystemExit("killed")  # the state of step 8 is written, its weights never are
        return real(*args, **kwargs)

    monkeypatch.setattr(checkpoint_pair, "save_model", killed_at_the_second_checkpoint)
    with pytest.raises(SystemExit):
        train_tokenizer(run, progress=False)
    monkeypatch.setattr(checkpoint_pair, "save_model", real)
    with pytest.warns(UserWarning, match="resuming from the previous one, at step 4"):
        assert train_tokenizer(run, resume=True, progress=False).step == 8
    a, b = _weights(whole), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_before_the_first_checkpoint_starts_at_step_0(tmp_path, tiny_images):
    run = start_run(tmp_path / "run", str(tiny_images), MODEL, TRAIN)
    assert train_tokenizer(run, resume=True, max_steps=2, progress=False).step == 2


def test_a_second_train_on_a_run_in_use_exits_2_naming_the_first(tmp_path, tiny_images, capsys):
    run = start_run(tmp_path / "run", str(tiny_images), MODEL, TRAIN)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom vqvae.lock import run_lock\n"
                               "with run_lock(sys.argv[1]):\n    print('held', flush=True); time.sleep(600)", str(run)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["train", "--out", str(run), "--resume", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert f"error: {run} is in use by another vqvae process" in err and f"pid {holder.pid}" in err
        assert main(["train", "--data", str(tiny_images), "--out", str(run), "--force", "--no-progress"]) == 2
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", "--out", str(run), "--resume", "--max-steps", "1", "--no-progress"]) == 0  # a dead holder's lock is taken over
