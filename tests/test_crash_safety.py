"""Crash safety: checkpoints are complete pairs, a kill at any moment leaves one to resume from,
numerical faults stop training before they reach a checkpoint."""

import json
import math

import pytest
import safetensors.torch
import torch

from vqvae import checkpoint as ckpt
from vqvae import checkpoint_pair
from vqvae.checkpoint_pair import PREVIOUS_DIR, load_checkpoint, save_checkpoint
from vqvae.faults import NonFiniteLossError, NonFiniteWeightsError, check_loss, check_weights
from vqvae.runs import append_metrics, truncate_metrics


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs, not even ``except Exception``."""


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


def _train(model, optimizer, steps):
    for _ in range(steps):
        x = torch.randn(5, 3)  # from the global generator, whose state the checkpoint keeps
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()


def _save(run, model, optimizer, step):
    save_checkpoint(run, model, optimizer, {"step": step, "elapsed": 0.0})


def _load(run):
    model = _model(seed=99)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    return load_checkpoint(run, model, optimizer), model, optimizer


def _meta(path):
    return checkpoint_pair._metadata(path)


def test_a_checkpoint_is_a_stamped_pair_and_the_previous_pair_is_kept(tmp_path):
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    _save(tmp_path, model, optimizer, 1)
    first = _meta(tmp_path / ckpt.MODEL_FILE)["checkpoint"]
    _train(model, optimizer, 1)
    _save(tmp_path, model, optimizer, 2)
    model_meta, state_meta = _meta(tmp_path / ckpt.MODEL_FILE), _meta(tmp_path / ckpt.STATE_FILE)
    assert model_meta["checkpoint"] == state_meta["checkpoint"] != first and model_meta["step"] == "2"
    previous = tmp_path / PREVIOUS_DIR
    assert _meta(previous / ckpt.MODEL_FILE)["checkpoint"] == _meta(previous / ckpt.STATE_FILE)["checkpoint"] == first
    info, loaded, _ = _load(tmp_path)
    assert info["step"] == 2 and all(torch.equal(a, b) for a, b in zip(loaded.parameters(), model.parameters(), strict=True))


def test_a_kill_between_the_two_writes_resumes_from_the_previous_pair(tmp_path, monkeypatch):
    model = _model()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    _train(model, optimizer, 2)
    _save(tmp_path, model, optimizer, 2)
    at_two = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, optimizer, 2)

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(checkpoint_pair, "save_model", killed)  # the state at 4 is written, the weights not
    with pytest.raises(Killed):
        _save(tmp_path, model, optimizer, 4)
    monkeypatch.undo()
    assert _meta(tmp_path / ckpt.STATE_FILE)["checkpoint"] != _meta(tmp_path / ckpt.MODEL_FILE)["checkpoint"]
    assert ckpt.load_weights(_model(), tmp_path) == 2  # the weights users load belong to a complete pair
    with pytest.warns(UserWarning, match="incomplete.*at step 2.*resuming from the previous one, at step 2"):
        info, loaded, _ = _load(tmp_path)
    assert info["step"] == 2
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in at_two.items())


def test_resuming_after_a_kill_right_after_a_checkpoint_ends_where_an_uninterrupted_run_ends(tmp_path):
    torch.manual_seed(1)
    whole = _model()
    optimizer = torch.optim.Adam(whole.parameters(), lr=0.01)
    _train(whole, optimizer, 6)

    torch.manual_seed(1)
    parts = _model()
    optimizer = torch.optim.Adam(parts.parameters(), lr=0.01)
    _train(parts, optimizer, 3)
    _save(tmp_path, parts, optimizer, 3)
    _train(parts, optimizer, 1)  # then killed: this step is lost
    info, resumed, optimizer = _load(tmp_path)
    _train(resumed, optimizer, 6 - info["step"])
    for a, b in zip(whole.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(a, b)


def test_files_of_different_checkpoints_are_never_loaded_together(tmp_path):
    a, b = _model(1), _model(2)
    _save(tmp_path / "a", a, torch.optim.Adam(a.parameters()), 5)
    _save(tmp_path / "b", b, torch.optim.Adam(b.parameters()), 5)  # the same step, another checkpoint
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / ckpt.MODEL_FILE).write_bytes((tmp_path / "a" / ckpt.MODEL_FILE).read_bytes())
    (mixed / ckpt.STATE_FILE).write_bytes((tmp_path / "b" / ckpt.STATE_FILE).read_bytes())
    with pytest.raises(ckpt.CheckpointError, match="no complete checkpoint.*at step 5.*at step 5.*--force"):
        _load(mixed)


def test_files_written_before_checkpoint_ids_pair_up_by_step(tmp_path):
    model = _model()
    optimizer = torch.optim.Adam(model.parameters())
    ckpt.save_model(tmp_path, model, 7)
    ckpt.save_train_state(tmp_path, optimizer, {"step": 7})
    assert _load(tmp_path)[0]["step"] == 7
    ckpt.save_train_state(tmp_path, optimizer, {"step": 8})
    with pytest.raises(ckpt.CheckpointError, match="model.safetensors at step 7, train_state.safetensors at step 8"):
        _load(tmp_path)


def test_a_run_without_weights_has_no_checkpoint_yet(tmp_path):
    assert _load(tmp_path)[0] is None
    model = _model()
    ckpt.save_train_state(tmp_path, torch.optim.Adam(model.parameters()), {"step": 1}, checkpoint="x")
    assert _load(tmp_path)[0] is None  # killed after the first state, before the first weights
    ckpt.save_model(tmp_path / "weights-only", model, 3)
    with pytest.raises(ckpt.CheckpointError, match="train_state.safetensors missing or unreadable"):
        _load(tmp_path / "weights-only")


def test_a_truncated_newest_file_falls_back_to_the_previous_pair_and_debris_is_removed(tmp_path):
    model = _model()
    optimizer = torch.optim.Adam(model.parameters())
    _save(tmp_path, model, optimizer, 1)
    _train(model, optimizer, 1)
    _save(tmp_path, model, optimizer, 2)
    state = tmp_path / ckpt.STATE_FILE
    state.write_bytes(state.read_bytes()[:-100])  # bit rot or a foreign tool, not our writes
    (tmp_path / f".{ckpt.MODEL_FILE}.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    with pytest.warns(UserWarning, match="not a readable safetensors file"):
        assert _load(tmp_path)[0]["step"] == 1
    assert not list(tmp_path.rglob("*.tmp"))


def test_the_state_file_is_checked_before_it_is_used(tmp_path):
    model = _model()
    optimizer = torch.optim.Adam(model.parameters())
    _train(model, optimizer, 1)
    _save(tmp_path, model, optimizer, 1)
    tensors, metadata = ckpt.load_tensors(tmp_path / ckpt.STATE_FILE)
    broken = [
        ({**tensors, "optimizer/0/exp_avg": torch.zeros(9)}, metadata, "has shape"),
        ({k: v for k, v in tensors.items() if k != "rng/torch"}, metadata, "rng/torch"),
        (tensors, {**metadata, "info": "[1, 2]"}, "must be an object"),
        (tensors, {k: v for k, v in metadata.items() if k != "param_groups"}, "param_groups"),
        ({**tensors, "optimizer/7/exp_avg": torch.zeros(1)}, metadata, "IndexError"),
    ]
    for tensors_, metadata_, words in broken:
        safetensors.torch.save_file(tensors_, tmp_path / ckpt.STATE_FILE, metadata=metadata_)
        with pytest.raises(ckpt.CheckpointError, match=words):
            ckpt.load_train_state(tmp_path, torch.optim.Adam(_model().parameters()))


def test_weights_must_keep_their_kind_of_dtype(tmp_path):
    model = _model()
    weights = {k: v.to(torch.int64) if k == "0.bias" else v.double() for k, v in model.state_dict().items()}
    safetensors.torch.save_file(weights, tmp_path / ckpt.MODEL_FILE, metadata={"step": "0"})
    with pytest.raises(ckpt.CheckpointError, match=r"dtype mismatch 0.bias: file torch.int64 vs model torch.float32"):
        ckpt.load_weights(_model(), tmp_path)
    weights["0.bias"] = weights["0.bias"].double()  # float64 into float32: a change of precision only
    safetensors.torch.save_file(weights, tmp_path / ckpt.MODEL_FILE, metadata={"step": "0"})
    assert ckpt.load_weights(_model(), tmp_path) == 0


# ------------------------------------------------------------------ numerical faults


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_loss_stops_with_the_step_and_the_likely_cause(value):
    with pytest.raises(NonFiniteLossError, match=r"loss is (nan|inf|-inf) at step 8;.*checkpoint is intact.*diverged"
                                                 r".*--lr.*--precision fp32") as info:
        check_loss(torch.tensor(value, dtype=torch.bfloat16), 7)
    assert info.value.step == 8 and isinstance(info.value, ValueError)
    with pytest.raises(NonFiniteLossError, match="at step 1;.*in the data"):
        check_loss(torch.tensor([1.0, value]), 0)
    check_loss(torch.tensor(3.5), 7)


def test_non_finite_weights_are_never_saved(tmp_path):
    model = _model()
    optimizer = torch.optim.Adam(model.parameters())
    _save(tmp_path, model, optimizer, 1)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with torch.no_grad():
        model[2].bias[1] = math.nan
    with pytest.raises(NonFiniteWeightsError, match=r"parameter '2.bias' holds NaN.*step 2: no checkpoint was "
                                                    r"written"):
        _save(tmp_path, model, optimizer, 2)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    masked = torch.nn.Linear(2, 2)
    masked.register_buffer("mask", torch.tensor([0.0, -math.inf]))  # infinite buffers (masks) are fine
    check_weights(masked, 0)
    masked.mask[0] = math.nan
    with pytest.raises(NonFiniteWeightsError, match="buffer 'mask'"):
        check_weights(masked, 0)


def test_a_metrics_line_cut_short_by_a_kill_is_dropped_on_resume(tmp_path):
    for step in (1, 2, 3):
        append_metrics(tmp_path, {"step": step, "loss": 0.5})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 4, "lo')
    truncate_metrics(tmp_path, 2)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2]
