"""A test-only modality: synthetic 1-D signals (two classes of sine waves).

It exists to prove that a modality is one package plus one registry line: it is built
only from the public interface (``vqvae.modalities.base``) and core pieces (the 1-D
``VQVAE``, the loop's ``BatchOrder``, the code-file format), and the generic commands
take it from ``vqvae train --data signal:N`` to samples without any change to core files.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from vqvae import VQVAE, VQVAEConfig
from vqvae.modalities.base import Modality, Option
from vqvae.runs import CodeFile, codes_cache_path, load_codes, read_config, save_codes
from vqvae.train import BatchOrder, LoopState, TrainConfig

CLASSES = ("slow", "fast")
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


def signals(spec: str, split: str, length: int) -> tuple[Tensor, Tensor]:
    """``(N, 1, length)`` sine waves in [0.1, 0.9] and their classes (slow or fast), a
    function of ``spec`` (``signal:N``: N training signals), the split and the length."""
    if not spec.startswith("signal:") or not spec[7:].isdigit() or int(spec[7:]) < 1:
        raise ValueError(f"--data {spec!r}: signal data are named signal:N with N >= 1 training signals")
    n = int(spec[7:]) if split == "train" else max(4, int(spec[7:]) // 4)
    g = torch.Generator().manual_seed(SPLIT_SEEDS[split])
    labels = torch.randint(2, (n,), generator=g)
    cycles = torch.where(labels == 0, 1.0, 4.0) + torch.rand(n, generator=g)  # per signal
    phase = 2 * math.pi * torch.rand(n, 1, generator=g)
    t = torch.linspace(0, 1, length)
    x = 0.5 + 0.4 * torch.sin(2 * math.pi * cycles[:, None] * t + phase)  # (N, length)
    return x.unsqueeze(1), labels


class SignalTask:
    name = "train"
    panels = [("reconstruction_loss", "Reconstruction loss"), ("perplexity", "Codebook perplexity")]

    def __init__(self, state: LoopState, config: dict) -> None:
        self.s = state
        data = config["data"]
        self.x, _ = signals(data["spec"], "train", data["length"])
        self.val, _ = signals(data["spec"], "val", data["length"])
        self.batches = BatchOrder(len(self.x), state.train.batch_size, state.train.seed)

    def forward(self, step: int):
        out = self.s.model(self.x[self.batches.indices(step)].to(self.s.device))
        return out.loss, out, len(out.indices)

    def log_record(self, out, items_per_s: float) -> dict:
        usage = self.s.model.quantizer.codebook_usage(reset=True)
        return {"loss": out.loss.item(), "reconstruction_loss": out.reconstruction_loss.item(),
                "perplexity": usage.perplexity, "signals_per_s": items_per_s}

    def postfix(self, record: dict) -> dict:
        return {"loss": f"{record['loss']:.4f}"}

    def validate(self, step: int) -> dict:
        out = self.s.eval_model(self.val.to(self.s.device))
        return {"reconstruction_loss": out.reconstruction_loss.item(), "perplexity": float(out.perplexity)}


class SignalModality(Modality):
    name = "signal"
    models = {"vqvae": "signal-vqvae"}
    options = {
        "train": (
            Option("--hidden", "encoder/decoder width", int, field="hidden"),
            Option("--codebook-size", "K", int, field="codebook_size"),
            Option("--code-dim", "D", int, field="code_dim"),
            Option("--signal-length", "samples per signal (default 32)", int),
        ),
        "decode": (Option("--gain", "scale the decoded signals", float),),
    }

    def recognises(self, spec: str, data_dir: str | None) -> bool:
        return spec.startswith("signal:")

    def start(self, kind, spec, data_dir, model, train: TrainConfig, options) -> dict:
        length = options.get("signal_length", 32)
        x, _ = signals(spec, "train", length)
        settings = VQVAEConfig(**{"in_channels": 1, "spatial_dims": 1, "downsamples": 2, "res_hidden": 8,
                                  "data_variance": float(x.var()), "seed": train.seed, **model})
        return {"model": settings.to_dict(), "data": {"spec": spec, "length": length, "classes": list(CLASSES)}}

    def config_class(self, kind: str) -> type:
        return VQVAEConfig

    def build(self, config: dict) -> nn.Module:
        return VQVAE(VQVAEConfig.from_dict(config["model"]))

    def task(self, state: LoopState, config: dict) -> SignalTask:
        return SignalTask(state, config)

    def encode(self, run, *, data, data_dir, split, device, options) -> CodeFile:
        config = read_config(run)
        x, labels = signals(data or config["data"]["spec"], split or "train", config["data"]["length"])
        return CodeFile(self.load(run, device).encode(x.to(device)).cpu(), labels)

    def decode(self, run, codes: CodeFile, out: Path, *, device, options) -> str:
        x = self.load(run, device).decode(codes.codes.to(device)).cpu() * options.get("gain", 1.0)
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "signals.npy", x.numpy())
        return f"wrote {len(x)} signals to {out}"

    def prior_shape(self, config: dict, options: dict) -> tuple[int, ...]:
        return (config["data"]["length"] // 2 ** config["model"]["downsamples"],)

    def prior_codes(self, run, split, data, data_dir, shape):
        path = codes_cache_path(run, split, (split,))
        if not path.exists():
            file = self.encode(run, data=data, data_dir=data_dir, split=split, device="cpu", options={})
            save_codes(path, file.codes, read_config(run)["model"]["codebook_size"], file.labels)
        file = load_codes(path)
        return file.codes, file.labels

    def write_samples(self, run, codes: Tensor, out: Path, *, device, options) -> str:
        return self.decode(run, CodeFile(codes), out, device=device, options={})
