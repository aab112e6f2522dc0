"""The modality interface: what the generic commands need from one kind of data.

A modality (images, speech, ...) is one package under ``vqvae.modalities`` holding a
subclass of :class:`Modality` and one line in the ``MODALITIES`` registry. The core
(quantizer, networks, priors, the training loop, checkpoints, the run directory) never
asks which modality it serves; the commands look the modality up in the registry, from
the data (``vqvae train --data``) or from a run's ``config.json`` (``"modality"``).

Every method gets plain values, never parsed command-line arguments; a modality's own
flags arrive in ``options`` under their ``dest`` names (see :class:`Option`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from vqvae.checkpoint import CheckpointError, load_model
from vqvae.retrieval.items import RetrievalItems
from vqvae.runs import CodeFile
from vqvae.train import LoopState, Task, TrainConfig

if TYPE_CHECKING:
    from vqvae.report.sections import Section


@dataclass(frozen=True)
class Option:
    """A command-line flag that one modality adds to a generic command.

    Several modalities may declare the same flag (say ``--decoder``) with their own
    meaning; the command shows each modality's help and passes the value to the run's
    modality only. A flag given for a run of a modality that does not declare it is an
    error that names the modalities it applies to.

    Attributes:
        flag: ``--image-size``.
        help: what it means for this modality.
        type: the argparse type (``int``, ``float``, ``str``); None for a switch.
        choices: allowed values.
        switch: ``--x/--no-x`` (True/False) when ``"optional"``, a plain ``--x`` when ``"on"``.
        field: the model config field it sets (``vqvae train`` model flags), if any.
    """

    flag: str
    help: str
    type: Callable[[str], Any] | None = str
    choices: tuple | None = None
    switch: str | None = None
    field: str | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


class Modality:
    """One kind of data, end to end: data sets, models, training, outputs and judges.

    Subclasses set the class attributes and implement the methods their commands need;
    the defaults say that a command does not apply to this modality.
    """

    name: str = ""
    #: What ``vqvae train --model NAME`` picks, mapped to the config ``kind`` it trains;
    #: the first entry is the default.
    models: dict[str, str] = {}
    #: Flags per generic command (``"train"`` holds the model and data flags of ``vqvae train``).
    options: dict[str, tuple[Option, ...]] = {}
    #: Claims ``--data`` that no other modality recognises, so its loader's errors explain.
    fallback: bool = False
    #: Overrides of :class:`~vqvae.train.TrainConfig` defaults for this modality's tokenizers.
    train_defaults: dict[str, Any] = {}
    #: Overrides of the model config's defaults for a new run, per config ``kind``; like
    #: ``train_defaults`` (beyond the peak rate) they belong to the decaying recipe.
    model_defaults: dict[str, dict[str, Any]] = {}
    #: Defaults of ``-n`` for ``reconstruct``.
    reconstruct_count: int = 8

    # ---------------------------------------------------------------- data

    def datasets(self) -> dict[str, str]:
        """Registered data set names and one-line descriptions (for ``--help``)."""
        return {}

    def recognises(self, spec: str, data_dir: str | None) -> bool:
        """Whether ``--data spec`` (with ``--data-dir``) is data of this modality."""
        return False

    # ---------------------------------------------------------------- stage 1

    def start(self, kind: str, spec: str, data_dir: str | None, model: dict, train: TrainConfig,
              options: dict) -> dict:
        """``config.json``'s ``model`` and ``data`` entries of a new run, ``{"model":..., "data":...}``:
        the data decide what they must (channels, variance, speakers, ...)."""
        raise NotImplementedError

    def config_class(self, kind: str) -> type:
        """The dataclass of ``config["model"]`` for ``kind``."""
        raise NotImplementedError

    def build(self, config: dict) -> nn.Module:
        """The untrained model that a run's ``config.json`` describes."""
        raise NotImplementedError

    def load(self, run: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
        """The trained model of a run, in eval mode."""
        return load_model(run, self.build, device)

    def task(self, state: LoopState, config: dict) -> Task:
        """The training task of a run (see :class:`vqvae.train.Task`)."""
        raise NotImplementedError

    def summary(self, val: dict) -> str:
        """One line about a validation record, for the end of ``vqvae train``."""
        return ", ".join(f"{k} {v:.4g}" for k, v in val.items() if isinstance(v, float))

    # ---------------------------------------------------------------- using a run

    def evaluate(self, run: Path, *, data: str | None, data_dir: str | None, split: str | None,
                 batch_size: int, device: str, prior: str | None, options: dict) -> dict:
        return self._unsupported("evaluate")

    def encode(self, run: Path, *, data: str | None, data_dir: str | None, split: str | None,
               device: str, options: dict) -> CodeFile:
        return self._unsupported("encode")

    def decode(self, run: Path, codes: CodeFile, out: Path, *, device: str, options: dict) -> str:
        """Decode a code file into ``out``; returns what was written, for the user."""
        return self._unsupported("decode")

    def reconstruct(self, run: Path, out: Path, *, data: str | None, data_dir: str | None,
                    split: str | None, n: int, device: str) -> str:
        return self._unsupported("reconstruct")

    # ---------------------------------------------------------------- stage 2

    def prior_shape(self, config: dict, options: dict) -> tuple[int, ...]:
        """The code grid a prior over this run's codes models."""
        return self._unsupported("train-prior")

    def prior_settings(self, config: dict) -> dict:
        """Settings of a new prior over this run's codes beyond the code grid, from the run's
        ``config.json`` (say ``{"num_actions": A, "actions_per_step": F}`` for data with
        actions); the user's own settings override them. The default adds none."""
        return {}

    def prior_codes(self, run: Path, split: str, data: str | None, data_dir: str | None,
                    shape: tuple[int, ...]) -> tuple[Tensor, Tensor | None] | tuple[Tensor, Tensor | None, Tensor | None]:
        """Codes ``(N, *shape)`` and labels (or None) of a split, for training a prior; a
        modality with actions adds a third item, the actions of each code time step
        ``(N, shape[0], F)`` int64 (or None), for a prior made with :meth:`prior_settings`."""
        return self._unsupported("train-prior")

    def write_samples(self, run: Path, codes: Tensor, out: Path, *, device: str, options: dict) -> str:
        """Decode sampled codes ``(N, *S')`` and write them to ``out``; returns what was written."""
        return self._unsupported("sample")

    def evaluate_samples(self, run: Path, *, prior: str | None, per_class: int, real: int,
                         sampling: dict, device: str) -> dict:
        return self._unsupported("evaluate-samples")

    # ---------------------------------------------------------------- the run report

    def report_codes(self, run: Path, n: int, device: str) -> CodeFile:
        """Codes of up to ``n`` held-out items (the val split), for the code-usage histogram of
        ``vqvae report``. The default encodes the split with :meth:`encode` and keeps ``n`` rows."""
        file = self.encode(run, data=None, data_dir=None, split="val", device=device, options={})
        keep = slice(0, n)
        return CodeFile(file.codes[keep], None if file.labels is None else file.labels[keep],
                        None if file.lengths is None else file.lengths[keep])

    def report_media(self, run: Path, *, device: str, samples_per_class: int | None, seed: int) -> list[Section]:
        """This modality's sections of ``vqvae report`` (see :mod:`vqvae.report.sections`): what
        its data look like through the run, for example reconstructions over training and
        ``samples_per_class`` samples of each class from each prior (None: the modality's
        default), drawn with ``seed``. The default has none."""
        return []

    # ---------------------------------------------------------------- retrieval

    def retrieval_items(self, run: Path, *, data: str | None, data_dir: str | None, split: str,
                        device: str, batch_size: int) -> RetrievalItems:
        """A split encoded for an index (``vqvae index``): code rows, continuous latents pooled
        before quantization, the raw-data baseline features, labels, ids, paths, speakers."""
        return self._unsupported("index")

    def query_items(self, run: Path, queries: Any, *, names: list[str] | None, device: str) -> RetrievalItems:
        """Queries in this modality's raw form (what :meth:`read_query` returns, or a batch of
        data) encoded as :meth:`retrieval_items` encodes a split; ``names`` name them."""
        return self._unsupported("search")

    def read_query(self, run: Path, path: Path) -> Any:
        """A query file (an image, a WAV clip) as raw data fit for the run; errors name what fits."""
        return self._unsupported("search")

    def retrieval_media(self, run: Path, data: dict, rows: Any) -> list:
        """The indexed items at ``rows`` of the data ``{"spec", "data_dir", "split"}``, as raw
        data for :meth:`write_search_results`."""
        return self._unsupported("search")

    def write_search_results(self, run: Path, queries: list, hits: list[list], out: Path) -> list[Path]:
        """Show each query beside its hits (raw data, in rank order) in ``out``; returns the files."""
        return self._unsupported("search")

    def add_commands(self, sub) -> None:
        """Add this modality's own sub-commands to the ``vqvae`` parser (``convert``, ...)."""

    def _unsupported(self, command: str):
        raise ValueError(f"vqvae {command} does not apply to {self.name} runs")

    def check_kind(self, kind: str) -> None:
        if kind not in self.models.values():
            raise CheckpointError(f"the {self.name} modality has no model kind {kind!r}")

    # ---------------------------------------------------------------- encoding in parts (code shards)

    def encode_part(self, run: Path, *, data: str | None, data_dir: str | None, split: str | None,
                    device: str, options: dict, rank: int, world: int, batch_size: int = 256) -> Iterator[CodeFile]:
        """Codes of part ``rank`` of ``world`` of a split (:func:`vqvae.code_shards.part`), piece by
        piece in the data's order: the parts in rank order are what :meth:`encode` gives.
        ``vqvae encode --shards`` writes them as code shards, one part per process.

        The default encodes the whole split with :meth:`encode` and yields this part of it; a
        modality whose data may not fit in memory streams them instead (images do).
        """
        from vqvae.code_shards import part, take

        file = self.encode(run, data=data, data_dir=data_dir, split=split, device=device, options=options)
        mine = part(len(file.codes), rank, world)
        for start in range(mine.start, mine.stop, batch_size):
            yield take(file, start, min(start + batch_size, mine.stop))
