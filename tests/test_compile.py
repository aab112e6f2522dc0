"""``vqvae train --compile``: the training step runs through torch.compile, and the run saves
the plain model's weights (no ``_orig_mod.`` prefix), which load strictly."""

import functools

import pytest
import torch
import torch._dynamo
from safetensors.torch import load_file
from torch._dynamo.utils import counters

from vqvae.cli import main
from vqvae.train import TrainConfig

TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "4", "--batch-size", "8",
        "--max-steps", "2", "--log-every", "1", "--val-every", "100", "--precision", "fp32", "--no-progress"]


def test_compile_trains_and_saves_the_plain_weights(tmp_path, tiny_images, monkeypatch):
    # Dynamo's "eager" backend: the same tracing, graph breaks and wrapper as the default
    # (inductor) backend, without its C++ code generation (a minute on a small CPU).
    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    counters.clear()
    assert main(["train", "--data", str(tiny_images), *TINY, "--compile", "--out", str(tmp_path / "compiled")]) == 0
    assert counters["frames"]["ok"] > 0  # it did go through the compiler
    assert main(["train", "--data", str(tiny_images), *TINY, "--out", str(tmp_path / "eager")]) == 0
    compiled, eager = (load_file(tmp_path / name / "model.safetensors") for name in ("compiled", "eager"))
    assert compiled.keys() == eager.keys() and not any("_orig_mod" in key for key in compiled)
    for key in compiled:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-5, atol=1e-6, msg=key)
    from vqvae.modalities.image.modality import ImageModality

    ImageModality().load(tmp_path / "compiled")  # strict load into the plain model


def test_compile_is_a_boolean_and_old_configs_load_without_it():
    old = {k: v for k, v in TrainConfig().__dict__.items() if k != "compile"}
    assert TrainConfig(**old).compile is False
    with pytest.raises(ValueError, match="train.compile"):
        TrainConfig(compile="yes")
