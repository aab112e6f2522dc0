"""The Transformer prior conditioned on actions per time step, and sampling from a given
prefix of the code grid (frame prediction): where actions reach, cached == uncached,
dropout and guidance, training with actions, and the modality hooks that feed them."""

from __future__ import annotations

import json
import math

import pytest
import torch

import vqvae.priors.sampling as sampling_module
from signal_modality import SignalModality
from vqvae import checkpoint as ckpt
from vqvae.cli import main
from vqvae.generate import sample_codes
from vqvae.modalities import MODALITIES
from vqvae.priors import TransformerConfig, TransformerPrior, guide
from vqvae.priors.conditions import drop_actions
from vqvae.priors.training import PRIOR_TRAIN, fit_prior, load_prior
from vqvae.runs import write_config
from vqvae.workflow import start_prior_run, train_prior

K, A, F = 6, 3, 2  # codes, actions, actions per time step
SHAPE = (4, 3, 3)  # (T', H, W)
STEP = 9  # positions per time step
TINY = {"width": 32, "depth": 2, "heads": 2}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is fastest, and stable under load


def prior(shape=SHAPE, **settings) -> TransformerPrior:
    torch.manual_seed(0)
    return TransformerPrior(K, shape, **{**TINY, "num_actions": A, "actions_per_step": F, **settings})


def sharpened(model: TransformerPrior) -> TransformerPrior:
    """Large random weights: peaked logits that hinge on the context, so wrong context shows."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.eval()


def random_codes(n: int, shape=SHAPE, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (n, *shape), generator=torch.Generator().manual_seed(seed))


def random_actions(n: int, steps: int = SHAPE[0], seed: int = 0, high: int = A) -> torch.Tensor:
    return torch.randint(0, high, (n, steps, F), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------ where actions reach


@pytest.mark.parametrize("step", range(SHAPE[0]))
def test_the_actions_of_a_step_reach_its_positions_and_later_ones_never_earlier(step):
    model = sharpened(prior())
    codes, actions = random_codes(2), random_actions(2)
    changed = actions.clone()
    changed[:, step, 0] = (changed[:, step, 0] + 1) % (A + 1)  # "no action" counts as a value too
    delta = (model(codes, actions=actions) - model(codes, actions=changed)).abs().flatten(2).amax(dim=(0, 1))  # (T,)
    first = step * STEP
    assert torch.equal(delta[:first], torch.zeros(first))  # earlier time steps: exactly unchanged
    assert (delta[first : first + STEP] > 1e-3).all()  # every position of the step sees it directly
    if step + 1 < SHAPE[0]:
        assert delta[first + STEP :].max() > 1e-3  # later steps see it by attention


def test_each_offset_within_a_step_has_its_own_table():
    model = sharpened(prior())
    codes = random_codes(1)
    actions = torch.tensor([[[0, 1]] * SHAPE[0]])
    swapped = actions.flip(-1)  # the same actions in the other order
    assert (model(codes, actions=actions) - model(codes, actions=swapped)).abs().max() > 1e-3
    assert model.action_embedding.table.weight.shape == (F * (A + 1), TINY["width"])


def test_codes_stay_causal_with_actions():
    model = sharpened(prior())
    codes, actions = random_codes(2), random_actions(2)
    before = model(codes, actions=actions).flatten(2)
    for i in (0, 8, 9, 20, 35):
        changed = codes.clone().flatten(1)
        changed[:, i] = (changed[:, i] + 1) % K
        after = model(changed.view(codes.shape), actions=actions).flatten(2)
        assert torch.equal(after[..., : i + 1], before[..., : i + 1]), f"position <= {i} saw code {i}"
        if i + 1 < before.shape[-1]:
            assert (after[..., i + 1 :] - before[..., i + 1 :]).abs().max() > 1e-3


def test_no_actions_means_no_action_everywhere_and_the_logits_are_the_same():
    model = sharpened(prior())
    codes = random_codes(2)
    none = torch.full((2, SHAPE[0], F), A)
    torch.testing.assert_close(model(codes), model(codes, actions=none), rtol=0, atol=0)
    assert (model(codes) - model(codes, actions=random_actions(2))).abs().max() > 1e-3


# ------------------------------------------------------------------ sampling


def sample(model, n=3, *, cache, seed=7, **kwargs):
    return model.sample(n, generator=torch.Generator().manual_seed(seed), use_cache=cache, **kwargs)


@pytest.mark.parametrize("t0", [0, 1, 3])
@pytest.mark.parametrize("options", [{}, {"guidance": 2.0}, {"label": 1, "guidance": 2.5, "top_k": 4}],
                         ids=["plain", "guided", "labelled-guided"])
def test_cached_sampling_with_actions_and_a_prefix_gives_the_uncached_codes(t0, options):
    classes = {"num_classes": 3} if "label" in options else {}
    model = sharpened(prior(**classes))
    actions, prefix = random_actions(3, seed=1), random_codes(3, seed=2)[:, :t0]
    runs = [sample(model, cache=cache, actions=actions, prefix=prefix, **options) for cache in (True, False)]
    assert runs[0].shape == (3, *SHAPE)
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    assert torch.equal(runs[0][:, :t0], prefix)  # the given codes are kept verbatim
    other = sample(model, cache=True, actions=random_actions(3, seed=5), prefix=prefix, **options)
    assert not torch.equal(runs[0], other), "other actions should change some draws"


@pytest.mark.parametrize("use_cache", [True, False])
def test_sampling_logits_after_a_prefix_are_forward_logits(monkeypatch, use_cache):
    """With draws replaced by a teacher's codes, each sampled position's logits are those
    that forward() gives the whole grid: the prefill put the right keys in the cache."""
    model = sharpened(prior())
    target, actions = random_codes(2, seed=3), random_actions(2, seed=4)
    t0 = 2
    seen = []

    def teacher(logits, generator=None):
        seen.append(logits)
        return target.flatten(1)[:, t0 * STEP + len(seen) - 1]

    monkeypatch.setattr(sampling_module, "draw", teacher)
    codes = model.sample(2, actions=actions, prefix=target[:, :t0], use_cache=use_cache)
    assert torch.equal(codes, target) and len(seen) == (SHAPE[0] - t0) * STEP
    expected = model(target, actions=actions).flatten(2)[..., t0 * STEP :]  # (B, K, positions drawn)
    torch.testing.assert_close(torch.stack(seen, dim=-1), expected, atol=1e-4, rtol=1e-4)


def test_a_whole_prefix_is_returned_and_an_empty_one_is_no_prefix():
    model = sharpened(prior())
    actions, full = random_actions(2), random_codes(2)
    assert torch.equal(model.sample(2, actions=actions, prefix=full), full)
    plain = sample(model, 2, cache=True, actions=actions)
    empty = sample(model, 2, cache=True, actions=actions, prefix=full[:, :0])
    assert torch.equal(plain, empty)


def test_a_prior_without_actions_samples_a_prefix_too():
    torch.manual_seed(0)
    model = sharpened(TransformerPrior(K, (5,), **TINY))
    prefix = torch.tensor([[1, 2], [3, 4]])
    runs = [sample(model, 2, cache=cache, prefix=prefix) for cache in (True, False)]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0][:, :2], prefix)


# ------------------------------------------------------------------ dropout and guidance


def test_action_dropout_makes_no_action_rows_in_training_only():
    actions = random_actions(4)
    dropped = torch.tensor([True, False, True, False])
    out = drop_actions(actions, 0.1, A, dropped)
    assert (out[dropped] == A).all() and torch.equal(out[~dropped], actions[~dropped])
    assert drop_actions(actions, 0.0, A) is actions  # no dropout configured: untouched, no draw
    model = sharpened(prior(action_dropout=0.5))
    codes, actions = random_codes(4), random_actions(4)
    expected = model(codes, actions=torch.where(dropped[:, None, None], A, actions))
    model.train()
    torch.testing.assert_close(model(codes, actions=actions, dropped_actions=dropped), expected)
    many_codes, many_actions = random_codes(64), random_actions(64)
    torch.manual_seed(0)
    first, second = model(many_codes, actions=many_actions), model(many_codes, actions=many_actions)
    differs = (first - second).flatten(1).abs().amax(1) > 1e-4  # (B,): dropped in one call only
    assert 0.2 < differs.float().mean() < 0.8
    model.eval()
    torch.testing.assert_close(model(codes, actions=actions), model(codes, actions=actions), rtol=0, atol=0)


def test_guidance_contrasts_with_rows_that_have_neither_label_nor_actions(monkeypatch):
    """Each step guides (conditional rows, unconditional rows): the first are forward()'s
    logits for the label and actions, the second those with both dropped."""
    model = sharpened(prior(num_classes=3))
    target = random_codes(2, seed=6)
    seen = []

    def recording_guide(logits, guidance):
        seen.append(logits)
        return guide(logits, guidance)

    monkeypatch.setattr(sampling_module, "guide", recording_guide)
    monkeypatch.setattr(sampling_module, "draw", lambda logits, generator=None: target.flatten(1)[:, len(seen) - 1])
    actions = random_actions(2, seed=1)
    assert torch.equal(model.sample(2, label=2, actions=actions, guidance=3.0), target)
    rows = torch.stack(seen, dim=-1)  # (2B, K, T)
    torch.testing.assert_close(rows[:2], model(target, 2, actions=actions).flatten(2), atol=1e-4, rtol=1e-4)
    everything = torch.ones(2, dtype=torch.bool)
    model.train()  # dropout 0: training differs from eval only in what is dropped
    unconditional = model(target, 2, everything, actions, everything).flatten(2)
    model.eval()
    torch.testing.assert_close(rows[2:], unconditional, atol=1e-4, rtol=1e-4)
    assert (rows[2:] - rows[:2]).abs().max() > 1e-3


def test_guidance_over_actions_alone_runs_and_needs_action_dropout():
    model = sharpened(prior())
    actions = random_actions(3)
    guided = [sample(model, cache=cache, actions=actions, guidance=2.0) for cache in (True, False)]
    assert torch.equal(guided[0], guided[1])
    assert not torch.equal(guided[0], sample(model, cache=True, actions=actions))
    undropped = sharpened(prior(action_dropout=0.0))
    with pytest.raises(ValueError, match="label_dropout > 0 or action_dropout > 0"):
        undropped.sample(2, actions=actions[:2], guidance=2.0)


# ------------------------------------------------------------------ configs and errors


def test_old_configs_load_and_priors_without_actions_write_the_old_keys():
    plain = TransformerConfig(K, (4, 4), width=32, depth=1)
    saved = plain.to_dict()
    assert not {"num_actions", "actions_per_step", "action_dropout"} & set(saved)
    assert TransformerConfig.from_dict(saved) == plain
    assert "action_embedding.table.weight" not in TransformerPrior(plain).state_dict()
    acting = TransformerConfig(K, SHAPE, num_actions=A, actions_per_step=F, action_dropout=0.2, **TINY)
    restored = TransformerConfig.from_dict(json.loads(json.dumps(acting.to_dict())))
    assert restored == acting
    model = TransformerPrior(acting)
    TransformerPrior(restored).load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("settings, error, message", [
    ({"num_actions": 0}, ValueError, "num_actions must be a positive integer"),
    ({"actions_per_step": 0}, ValueError, "actions_per_step must be a positive integer"),
    ({"action_dropout": 1.0}, ValueError, r"action_dropout must lie in \[0, 1\)"),
    ({"action_dropout": "0.1"}, TypeError, "action_dropout must be a number"),
])
def test_bad_action_settings_are_refused(settings, error, message):
    with pytest.raises(error, match=message):
        TransformerConfig(K, SHAPE, **settings)


def test_bad_actions_and_prefixes_raise_clear_errors():
    model, codes = prior(), random_codes(2)
    with pytest.raises(ValueError, match=r"shape \(B, T', actions_per_step\) = \(2, 4, 2\)"):
        model(codes, actions=torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(IndexError, match=r"\[0, 3\] \(3 = no action\)"):
        model(codes, actions=torch.full((2, 4, 2), A + 1))
    with pytest.raises(TypeError, match="integer tensor"):
        model(codes, actions=torch.zeros(2, 4, 2))
    with pytest.raises(ValueError, match="takes no actions"):
        TransformerPrior(K, SHAPE, **TINY)(codes, actions=random_actions(2))
    with pytest.raises(ValueError, match="without action dropout, so it needs actions"):
        prior(action_dropout=0.0)(codes)
    with pytest.raises(ValueError, match=r"prefix must have shape \(n=2, t0, 3, 3\) with t0 <= 4"):
        model.sample(2, prefix=torch.zeros(2, 1, 3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="t0 <= 4"):
        model.sample(2, prefix=torch.zeros(2, 5, 3, 3, dtype=torch.long))
    with pytest.raises(IndexError, match=r"codes must lie in \[0, 6\)"):
        model.sample(2, prefix=torch.full((2, 1, 3, 3), K))
    with pytest.raises(TypeError, match="prefix must be a tensor"):
        model.sample(2, prefix=[[1]])


# ------------------------------------------------------------------ training with actions


def synthetic(n: int, seed: int):
    """Codes that the actions decide: every code of step t' is the first action of t'."""
    actions = torch.randint(0, A, (n, 3, F), generator=torch.Generator().manual_seed(seed))
    codes = actions[:, :, :1, None].expand(n, 3, 2, 2).contiguous()  # (N, 3, 2, 2)
    return codes, None, actions


def test_prior_task_learns_from_actions(tmp_path):
    model = TransformerConfig(K, (3, 2, 2), width=32, depth=1, heads=2, num_actions=A, actions_per_step=F,
                              action_dropout=0.1)
    train = {**PRIOR_TRAIN.__dict__, "batch_size": 32, "lr": 1e-2, "warmup_steps": 0, "max_steps": 50,
             "val_every": 50, "checkpoint_every": 50, "log_every": 1, "ema_decay": None}
    folder = write_config(tmp_path / "prior", {"format_version": ckpt.FORMAT_VERSION, "kind": "prior",
                                               "arch": "transformer", "model": model.to_dict(),
                                               "data": {"classes": []}, "train": train})
    (val_codes, _, val_actions) = synthetic(64, 1)
    summary = fit_prior(folder, synthetic(256, 0), synthetic(64, 1), progress=False)
    losses = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in losses if "split" not in r]  # the training records
    assert len(losses) == 50 and sum(losses[-5:]) < 0.2 * sum(losses[:5])
    assert summary.val["bits_per_code"] < 0.5 * math.log2(K)
    trained = load_prior(folder)
    right = trained.log_prob(val_codes, actions=val_actions).mean()
    wrong = trained.log_prob(val_codes, actions=val_actions.roll(1, 0)).mean()
    assert right > wrong + 1.0  # it learned to read the actions


def test_prior_task_refuses_an_action_prior_without_actions(tmp_path):
    model = TransformerConfig(K, (3, 2, 2), width=16, depth=1, num_actions=A)
    folder = write_config(tmp_path / "prior", {"format_version": ckpt.FORMAT_VERSION, "kind": "prior",
                                               "arch": "transformer", "model": model.to_dict(),
                                               "data": {"classes": []}, "train": PRIOR_TRAIN.__dict__})
    codes = synthetic(8, 0)[0]
    with pytest.raises(ValueError, match="takes actions.*came without them"):
        fit_prior(folder, (codes, None), (codes, None), max_steps=1, progress=False)


# ------------------------------------------------------------------ the modality hooks


class ActingSignals(SignalModality):
    """The test modality with actions: one per code, the code itself modulo 3."""

    def prior_settings(self, config: dict) -> dict:
        return {"num_actions": 3, "actions_per_step": 1}

    def prior_codes(self, run, split, data, data_dir, shape):
        codes, labels = super().prior_codes(run, split, data, data_dir, shape)
        return codes, labels, (codes % 3)[:, :, None]  # (N, T', 1)


def test_a_modality_with_actions_trains_and_samples_an_action_prior(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(MODALITIES, "signal", ActingSignals())
    run = tmp_path / "run"
    assert main(["train", "--data", "signal:16", "--out", str(run), "--hidden", "16", "--codebook-size", "8",
                 "--code-dim", "4", "--batch-size", "8", "--max-steps", "2", "--no-progress"]) == 0
    with pytest.raises(ValueError, match=r"pixelcnn prior has no settings \['actions_per_step', 'num_actions'\]"):
        start_prior_run(run, "pixelcnn")
    train = PRIOR_TRAIN.__class__(**{**PRIOR_TRAIN.__dict__, "batch_size": 8, "val_every": 3, "max_steps": 3})
    folder = start_prior_run(run, "transformer", model_settings={"width": 16, "depth": 1}, train=train)
    config = json.loads((folder / "config.json").read_text())["model"]
    assert (config["num_actions"], config["actions_per_step"], config["num_classes"]) == (3, 1, 2)
    summary = train_prior(folder, progress=False)
    assert summary.step == 3 and math.isfinite(summary.val["bits_per_code"])
    actions = torch.tensor([[0, 1, 2, 0, 1, 2, 0, 1]] * 3)[:, :, None]  # (n, T'=8, 1)
    prefix = torch.tensor([[1, 2, 3]] * 3)
    codes, guidance = sample_codes(run, 3, label=1, actions=actions, prefix=prefix, seed=0, batch_size=2)
    assert codes.shape == (3, 8) and torch.equal(codes[:, :3], prefix) and guidance == 2.0
    again, _ = sample_codes(run, 3, label=1, actions=actions, prefix=prefix, seed=0, batch_size=2)
    assert torch.equal(codes, again)
    with pytest.raises(ValueError, match=r"actions must be a tensor with one row per sample \(n=3\)"):
        sample_codes(run, 3, label=1, actions=actions[:2])
