"""Training runs: checkpoints, resume, Ctrl-C, clear errors with nothing half-written."""

import dataclasses
import json

import pytest
import safetensors.torch
import torch
from safetensors.torch import save_file

import vqvae
from vqvae import checkpoint as ckpt
from vqvae import train as train_module
from vqvae.modalities.image.task import ImageTask
from vqvae.train import TrainConfig, TrainingInterrupted
from vqvae.workflow import start_run, train_tokenizer

MODEL = {"hidden": 16, "res_hidden": 8, "codebook_size": 16, "code_dim": 4, "dead_code_window": 3}
TRAIN = TrainConfig(batch_size=8, max_steps=8, log_every=2, val_every=4, val_images=16,
                    checkpoint_every=4, seed=3)


def _run(tmp_path, tiny_images, name, **kwargs):
    return start_run(tmp_path / name, str(tiny_images), MODEL, TRAIN, **kwargs)


def _weights(run):
    return safetensors.torch.load((run / ckpt.MODEL_FILE).read_bytes())


def test_run_directory_and_checkpoint_round_trip(tmp_path, tiny_images):
    run = _run(tmp_path, tiny_images, "run")
    summary = train_tokenizer(run, progress=False)
    assert summary.finished and summary.step == 8
    for name in ("config.json", "model.safetensors", "train_state.safetensors", "metrics.jsonl",
                 "loss.png", "reconstructions.png", "reconstructions/step_0000004.png"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "vqvae" and config["format_version"] == 1
    assert config["data"]["variance"] > 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r.get("split") == "val"] == [4, 8]

    model = vqvae.load(run)
    x = torch.rand(4, 3, 16, 16)
    again = vqvae.load(run)
    assert torch.equal(model.reconstruct(x), again.reconstruct(x))
    assert not list((run).glob(".*.tmp"))  # no temporary files left


def test_resume_equals_an_uninterrupted_run(tmp_path, tiny_images):
    whole = _run(tmp_path, tiny_images, "whole")
    train_tokenizer(whole, progress=False)
    parts = _run(tmp_path, tiny_images, "parts")
    train_tokenizer(parts, max_steps=3, progress=False)
    train_tokenizer(parts, max_steps=8, resume=True, progress=False)
    a, b = _weights(whole), _weights(parts)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    steps = [json.loads(line)["step"] for line in (parts / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps)


def _live_weights(run):
    state = safetensors.torch.load((run / ckpt.STATE_FILE).read_bytes())
    return {k.removeprefix("live/"): v for k, v in state.items() if k.startswith("live/")}


def test_weight_averaging_resumes_exactly_and_saves_the_average(tmp_path, tiny_images):
    averaged = dataclasses.replace(TRAIN, ema_decay=0.9)
    whole = start_run(tmp_path / "whole", str(tiny_images), MODEL, averaged)
    train_tokenizer(whole, progress=False)
    parts = start_run(tmp_path / "parts", str(tiny_images), MODEL, averaged)
    train_tokenizer(parts, max_steps=3, progress=False)
    train_tokenizer(parts, max_steps=8, resume=True, progress=False)
    for a, b in [(_weights(whole), _weights(parts)), (_live_weights(whole), _live_weights(parts))]:
        assert a.keys() == b.keys() and a
        for key in a:
            assert torch.equal(a[key], b[key]), key
    # The saved weights are the average, not the live ones; the live ones are those of a
    # run without averaging (averaging never feeds back into training).
    plain = _run(tmp_path, tiny_images, "plain")
    train_tokenizer(plain, progress=False)
    average, live = _weights(whole), _live_weights(whole)
    assert all(torch.equal(live[k], _weights(plain)[k]) for k in live)
    assert any(not torch.equal(average[k], live[k]) for k in live if average[k].is_floating_point())
    # Decay 0 keeps the average equal to the live weights.
    zero = start_run(tmp_path / "zero", str(tiny_images), MODEL, dataclasses.replace(TRAIN, ema_decay=0.0))
    train_tokenizer(zero, progress=False)
    differ = [k for k in live if not torch.equal(_weights(zero)[k], _live_weights(zero)[k])]
    assert not differ, differ
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)


def test_ctrl_c_saves_a_checkpoint_that_resume_continues(tmp_path, tiny_images, monkeypatch):
    whole = _run(tmp_path, tiny_images, "whole")
    train_tokenizer(whole, progress=False)

    run = _run(tmp_path, tiny_images, "interrupted")
    real = ImageTask.forward

    def interrupt_at_step_5(self, step):
        if step == 5:
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(ImageTask, "forward", interrupt_at_step_5)
    with pytest.raises(TrainingInterrupted, match="step 5.*--resume"):
        train_tokenizer(run, progress=False)
    monkeypatch.setattr(ImageTask, "forward", real)
    train_tokenizer(run, resume=True, progress=False)
    a, b = _weights(whole), _weights(run)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_time_budget_stops_and_resume_finishes(tmp_path, tiny_images):
    run = _run(tmp_path, tiny_images, "budget")
    summary = train_tokenizer(run, time_budget=0.0, progress=False)
    assert summary.step == 0 and not summary.finished
    assert train_tokenizer(run, resume=True, progress=False).finished


def test_existing_run_needs_resume_or_force(tmp_path, tiny_images):
    run = _run(tmp_path, tiny_images, "exists")
    train_tokenizer(run, max_steps=1, progress=False)
    with pytest.raises(FileExistsError, match="--resume.*--force"):
        _run(tmp_path, tiny_images, "exists")
    _run(tmp_path, tiny_images, "exists", force=True)
    assert not (run / ckpt.MODEL_FILE).exists()


def test_bad_image_size_fails_before_writing(tmp_path, tiny_images):
    with pytest.raises(ValueError, match="divisible by 4"):
        start_run(tmp_path / "bad", str(tiny_images), MODEL, TRAIN, image_size=14)
    assert not (tmp_path / "bad").exists()


def test_corrupt_foreign_and_mismatched_checkpoints_are_explained(tmp_path, tiny_images):
    run = _run(tmp_path, tiny_images, "run")
    train_tokenizer(run, max_steps=1, progress=False)
    weights = _weights(run)

    (run / ckpt.MODEL_FILE).write_bytes(b"not a safetensors file at all")
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        vqvae.load(run)

    save_file({"fc.weight": torch.zeros(2, 2)}, run / ckpt.MODEL_FILE)
    with pytest.raises(ckpt.CheckpointError, match="missing .*unexpected fc.weight"):
        vqvae.load(run)

    save_file(weights, run / ckpt.MODEL_FILE)
    config = json.loads((run / "config.json").read_text())
    config["model"]["hidden"] = 32
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ckpt.CheckpointError, match="shape mismatch"):
        vqvae.load(run)

    (run / "config.json").write_text("{not json")
    with pytest.raises(ckpt.CheckpointError, match="not valid JSON"):
        vqvae.load(run)
    with pytest.raises(ckpt.CheckpointError, match="not a vqvae run"):
        vqvae.load(tmp_path)


def test_batch_order_depends_only_on_seed_and_step():
    order = train_module.BatchOrder(10, 4, seed=1)
    first = [order.indices(s).tolist() for s in range(5)]
    fresh = train_module.BatchOrder(10, 4, seed=1)
    assert [fresh.indices(s).tolist() for s in reversed(range(5))][::-1] == first
    assert sorted(sum(first[:5], [])[:10]) == list(range(10))  # an epoch is a permutation


def test_bf16_precision_trains_with_fp32_weights_and_statistics(tmp_path, tiny_images):
    import dataclasses

    run = start_run(tmp_path / "bf16", str(tiny_images), MODEL,
                    dataclasses.replace(TRAIN, precision="bf16", max_steps=3))
    summary = train_tokenizer(run, progress=False)
    assert summary.step == 3
    weights = _weights(run)
    assert all(t.dtype in (torch.float32, torch.int64, torch.bool) for t in weights.values())
    assert all(torch.isfinite(t.float()).all() for t in weights.values())
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")
