"""Learning-rate schedules and their horizon: values, budget estimates, resume."""

import dataclasses
import json
import math

import pytest
import safetensors.torch
import torch

from vqvae import checkpoint as ckpt
from vqvae.modalities.image.task import ImageTask
from vqvae.schedule import MEASURE_AFTER, Horizon, learning_rate
from vqvae.train import TrainConfig, TrainingInterrupted
from vqvae.workflow import start_run, train_tokenizer

MODEL = {"hidden": 16, "res_hidden": 8, "codebook_size": 16, "code_dim": 4}
TRAIN = TrainConfig(batch_size=8, max_steps=8, log_every=1, val_every=4, val_images=16, checkpoint_every=4,
                    lr=1e-3, schedule="cosine", warmup_steps=2)


def test_schedule_values_at_warmup_middle_and_end():
    peak = 1e-3
    # warm-up: linear from peak/warmup to the peak
    assert learning_rate(peak, "cosine", 4, 0, 104) == pytest.approx(peak / 4)
    assert learning_rate(peak, "linear", 4, 3, 104) == pytest.approx(peak)
    # middle of the decay (50 of 100 decaying steps): cosine and linear both at half the peak
    assert learning_rate(peak, "cosine", 4, 54, 104) == pytest.approx(peak / 2)
    assert learning_rate(peak, "linear", 4, 54, 104) == pytest.approx(peak / 2)
    assert learning_rate(peak, "cosine", 4, 29, 104) == pytest.approx(peak * 0.5 * (1 + math.cos(math.pi / 4)))
    # end: zero at the horizon and beyond
    for schedule in ("cosine", "linear"):
        assert learning_rate(peak, schedule, 4, 104, 104) == 0.0
        assert learning_rate(peak, schedule, 4, 500, 104) == 0.0
    # constant: the paper's rate after warm-up, whatever the horizon
    assert learning_rate(peak, "constant", 4, 1000, 104) == peak
    with pytest.raises(ValueError, match="schedule"):
        TrainConfig(schedule="step")


def test_horizon_is_estimated_from_the_measured_step_time():
    h = Horizon(max_steps=10_000, deadline=100.0, step=0)
    assert h.update(MEASURE_AFTER - 1, 5.0) == 10_000 and h.record is None  # start-up steps: no estimate
    h.update(MEASURE_AFTER, 10.0)  # the clock starts here
    # 20 more steps in 10 s: 2 steps/s; 80 s left buy 160 more steps
    assert h.update(MEASURE_AFTER + 20, 20.0) == MEASURE_AFTER + 20 + 160
    assert h.record == MEASURE_AFTER + 180
    assert Horizon(max_steps=50, deadline=100.0, step=0, recorded=180).steps == 50  # capped by max_steps
    no_budget = Horizon(max_steps=300, deadline=None, step=0)
    assert no_budget.update(200, 1.0) == 300 and no_budget.record is None


def _weights(run) -> dict[str, torch.Tensor]:
    return safetensors.torch.load_file(str(run / ckpt.MODEL_FILE))


def test_resume_with_a_schedule_is_exact(tmp_path, tiny_images, monkeypatch):
    whole = start_run(tmp_path / "whole", str(tiny_images), MODEL, TRAIN)
    train_tokenizer(whole, progress=False)
    split = start_run(tmp_path / "split", str(tiny_images), MODEL, TRAIN)
    real = ImageTask.forward

    def interrupt_at_step_4(self, step):
        if step == 4:  # right after the checkpoint of step 4
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(ImageTask, "forward", interrupt_at_step_4)
    with pytest.raises(TrainingInterrupted):
        train_tokenizer(split, progress=False)
    monkeypatch.setattr(ImageTask, "forward", real)
    assert train_tokenizer(split, resume=True, progress=False).step == 8
    a, b = _weights(whole), _weights(split)
    assert all(torch.equal(a[k], b[k]) for k in a)
    rates = [r["lr"] for r in map(json.loads, (whole / "metrics.jsonl").read_text().splitlines()) if "lr" in r]
    expected = [learning_rate(1e-3, "cosine", 2, step, 8) for step in range(8)]
    assert rates == pytest.approx(expected)  # metrics.jsonl logs the rate of each step


def test_budget_horizon_is_recorded_and_finishes_the_schedule_on_resume(tmp_path, tiny_images, monkeypatch):
    import vqvae.train as train_module

    clock = iter(range(0, 10_000))  # one "second" per call of time.monotonic
    monkeypatch.setattr(train_module.time, "monotonic", lambda: float(next(clock)))
    config = dataclasses.replace(TRAIN, max_steps=1000, val_every=1000, checkpoint_every=1000)
    run = start_run(tmp_path / "budget", str(tiny_images), MODEL, config)
    summary = train_tokenizer(run, time_budget=1.0, progress=False)  # 60 fake seconds
    with safetensors.safe_open(str(run / ckpt.STATE_FILE), "pt") as f:
        horizon = json.loads(f.metadata()["info"])["horizon"]
    assert horizon is not None and summary.step <= horizon < 1000
    # without a budget, the resumed run finishes the schedule it was on, at that horizon
    again = train_tokenizer(run, resume=True, progress=False)
    assert again.step == horizon and again.finished


def test_schedule_flags_reach_the_config(tmp_path, tiny_images, capsys):
    from vqvae.cli import main

    run = tmp_path / "flags"
    assert main(["train", "--data", str(tiny_images), "--out", str(run), "--hidden", "16", "--res-hidden", "8",
                 "--codebook-size", "16", "--code-dim", "4", "--batch-size", "8", "--max-steps", "2",
                 "--val-every", "2", "--schedule", "linear", "--warmup", "3", "--lr", "1e-3",
                 "--no-progress"]) == 0
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["schedule"], train["warmup_steps"], train["lr"]) == ("linear", 3, 1e-3)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--schedule", "cosine", "--no-progress"]) == 2
    assert "schedule=cosine (run has linear)" in capsys.readouterr().err


def test_new_runs_take_their_modality_recipe_and_the_paper_is_one_flag_away(tmp_path, tiny_images):
    from vqvae.cli import main
    from vqvae.modalities.image.task import IMAGE_TRAIN

    tiny = ["--data", str(tiny_images), "--hidden", "16", "--res-hidden", "8", "--codebook-size", "16",
            "--code-dim", "4", "--batch-size", "8", "--max-steps", "1", "--val-every", "1", "--no-progress"]

    def recipe(run):
        train = json.loads((run / "config.json").read_text())["train"]
        return train["schedule"], train["lr"], train["warmup_steps"]

    assert main(["train", *tiny, "--out", str(tmp_path / "new")]) == 0
    assert recipe(tmp_path / "new") == (IMAGE_TRAIN["schedule"], IMAGE_TRAIN["lr"], IMAGE_TRAIN["warmup_steps"])
    assert recipe(tmp_path / "new")[0] == "cosine"
    assert main(["train", *tiny, "--out", str(tmp_path / "paper"), "--schedule", "constant", "--lr", "2e-4",
                 "--warmup", "0"]) == 0
    assert recipe(tmp_path / "paper") == ("constant", 2e-4, 0)
    # configs written before schedules existed have no such fields: they keep the paper's recipe
    assert (TrainConfig().schedule, TrainConfig().lr, TrainConfig().warmup_steps) == ("constant", 2e-4, 0)
