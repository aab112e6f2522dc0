"""An index of items by their discrete codes: build, save, load, search.

The index never asks what its items are: a modality (see :class:`RetrievalModality`)
encodes data into :class:`~vqvae.retrieval.items.RetrievalItems`, reads query files and
writes results; the index holds the codes and the search structures of the three
representations (:mod:`vqvae.retrieval.representations`). An index is tied to the
tokenizer that wrote its codes by the sha256 of its weights: queries encoded by any other
tokenizer are refused.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vqvae.retrieval import representations as reps
from vqvae.retrieval.items import RetrievalError, RetrievalItems, tokenizer_hash
from vqvae.retrieval.representations import REPRESENTATIONS, CodeBase, Settings
from vqvae.retrieval.store import (
    FORMAT,
    FORMAT_VERSION,
    read_arrays,
    read_codes,
    read_manifest,
    write_index_folder,
)
from vqvae.retrieval.tuning import choose_shift
from vqvae.runs import CodeFile

__all__ = ["Index", "RetrievalModality", "SearchResults", "TokenizerMismatch"]


class TokenizerMismatch(RetrievalError):
    """Codes from another tokenizer than the one that built the index."""


class RetrievalModality(Protocol):
    """What an index needs from a modality (:class:`vqvae.modalities.base.Modality` implements it)."""

    name: str

    def retrieval_items(self, run: Path, *, data: str | None, data_dir: str | None, split: str,
                        device: str, batch_size: int) -> RetrievalItems: ...

    def query_items(self, run: Path, queries: Any, *, names: Sequence[str] | None, device: str) -> RetrievalItems: ...

    def read_query(self, run: Path, path: Path) -> Any: ...

    def retrieval_media(self, run: Path, data: dict, rows: np.ndarray) -> list: ...

    def write_search_results(self, run: Path, queries: list, hits: list[list], out: Path) -> list[Path]: ...


@dataclass
class SearchResults:
    """The ``k`` nearest database items of each query, best first.

    Attributes:
        representation: which representation ranked them.
        queries: a name per query (its file, or its id in a data split).
        rows: ``(Q, k)`` int64 database rows, −1 where the database held fewer than ``k``.
        scores: ``(Q, k)`` float32 similarities (higher is nearer; −inf for a missing row).
        ids, labels, paths: ``(Q, k)`` nested lists of the neighbours' ids, label names (or
            None) and paths (or None).
    """

    representation: str
    queries: list[str]
    rows: np.ndarray
    scores: np.ndarray
    ids: list[list[str | None]]
    labels: list[list[str | None]]
    paths: list[list[str | None]]

    def records(self) -> list[dict]:
        """One record per (query, rank): what ``results.json`` holds."""
        return [{"query": q, "rank": r + 1, "id": self.ids[i][r], "label": self.labels[i][r],
                 "path": self.paths[i][r], "score": float(self.scores[i, r])}
                for i, q in enumerate(self.queries) for r in range(self.rows.shape[1]) if self.rows[i, r] >= 0]


class Index:
    """Items searchable by their codes. Make one with :meth:`build` (data through a modality),
    :meth:`from_items` (already encoded) or :meth:`load` (a saved folder)."""

    def __init__(self, manifest: dict, codes: CodeFile, ids: list[str], paths: list[str] | None,
                 representations: dict, base: CodeBase, modality: RetrievalModality | None = None,
                 vectors: dict[str, np.ndarray] | None = None, folder: Path | None = None) -> None:
        self.manifest, self.codes, self.ids, self.paths = manifest, codes, ids, paths
        self.representations, self.base, self.modality = representations, base, modality
        self.settings = Settings.from_dict(manifest["settings"])
        self._vectors, self.folder = vectors, folder

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def run(self) -> Path:
        return Path(self.manifest["run"])

    @property
    def default(self) -> str:
        return self.settings.default

    # ---------------------------------------------------------------- making one

    @classmethod
    def build(cls, run: str | os.PathLike, data: str | None, *, modality: RetrievalModality,
              data_dir: str | None = None, split: str = "train", device: str = "cpu",
              settings: Settings | None = None, batch_size: int = 256) -> Index:
        """Encode a split of ``data`` with the tokenizer ``run`` (in batches) and index it."""
        items = modality.retrieval_items(Path(run), data=data, data_dir=data_dir, split=split, device=device,
                                         batch_size=batch_size)
        source = {"spec": data, "data_dir": str(Path(data_dir).resolve()) if data_dir else None, "split": split}
        return cls.from_items(items, settings, modality=modality, run=run, data=source)

    @classmethod
    def from_items(cls, items: RetrievalItems, settings: Settings | None = None, *,
                   modality: RetrievalModality | None = None, run: str | os.PathLike | None = None,
                   data: dict | None = None) -> Index:
        """An index of items already encoded (by ``run``, whose modality is ``modality``)."""
        if len(items) == 0:
            raise RetrievalError("nothing to index: the data hold no items; pass a split with at least one item")
        settings = settings or Settings()
        grids = items.codes.codes.numpy()
        k = len(items.codebook)
        base = CodeBase(grids.astype(np.int16 if k <= 32768 else np.int32), items.codebook.astype(np.float32),
                        fixed=items.codes.lengths is None)
        built = {name: reps.build(name, base, settings) for name in REPRESENTATIONS}
        tuning = {}
        if settings.shift is None:  # chosen from the items' own labels, then fixed in the manifest
            shift, tuning["shift"] = choose_shift(built["ngram"], items.labels)
            settings = dataclasses.replace(settings, shift=shift)
            for representation in built.values():
                representation.settings = settings
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION,
            "modality": getattr(modality, "name", None),
            "run": str(Path(run).resolve()) if run is not None else None,
            "tokenizer_sha256": items.tokenizer,
            "codebook_size": k, "code_shape": list(grids.shape[1:]), "fixed_shape": base.fixed,
            "data": data or {}, "items": len(items), "baseline": items.baseline_name,
            "classes": list(items.classes), "speakers": list(items.speaker_names),
            "settings": settings.to_dict(), "tuning": tuning,
            "engines": {"pooled": built["pooled"].engine.describe()},
        }
        vectors = {"codebook": items.codebook, "continuous": items.continuous, "baseline": items.baseline}
        return cls(manifest, items.codes, items.ids, items.paths, built, base, modality, vectors)

    def save(self, out: str | os.PathLike) -> Path:
        """Write the index into the folder ``out`` (atomically; an older index there is replaced)."""
        arrays = {name: rep.state() for name, rep in self.representations.items()}
        arrays["items"] = {"ids": np.array(self.ids, dtype=np.str_),
                           "paths": np.array(self.paths if self.paths is not None else [], dtype=np.str_)}
        arrays["vectors"] = self.vectors()
        self.folder = write_index_folder(out, self.manifest, self.codes, self.manifest["codebook_size"], arrays)
        return self.folder

    @classmethod
    def load(cls, folder: str | os.PathLike, *, modality: RetrievalModality | None = None,
             run: str | os.PathLike | None = None) -> Index:
        """An index saved by :meth:`save`; ``run`` points at its tokenizer where the run folder
        moved (its weights must be the ones that built the index)."""
        folder = Path(folder)
        manifest = read_manifest(folder)
        if run is not None:
            check_tokenizer(manifest, run, folder)
            manifest = {**manifest, "run": str(Path(run).resolve())}
        settings = Settings.from_dict(manifest["settings"])
        codes = read_codes(folder)
        codebook = read_arrays(folder, "vectors", ("codebook",))["codebook"]
        grids = codes.codes.numpy().astype(np.int16 if len(codebook) <= 32768 else np.int32)
        base = CodeBase(grids, codebook, fixed=manifest["fixed_shape"])
        built = {name: reps.restore(name, base, settings, read_arrays(folder, name)) for name in REPRESENTATIONS}
        listed = read_arrays(folder, "items")
        paths = [str(p) for p in listed["paths"]] if len(listed["paths"]) else None
        return cls(manifest, codes, [str(i) for i in listed["ids"]], paths, built, base, modality, folder=folder)

    def vectors(self) -> dict[str, np.ndarray]:
        """The codebook, pooled continuous vectors and baseline features (read on first use)."""
        if self._vectors is None:
            assert self.folder is not None
            self._vectors = read_arrays(self.folder, "vectors")
        return self._vectors

    def database(self) -> RetrievalItems:
        """The indexed items, as :class:`~vqvae.retrieval.items.RetrievalItems`."""
        v = self.vectors()
        return RetrievalItems(self.codes, v["codebook"], v["continuous"], v["baseline"], self.manifest["baseline"],
                              self.ids, self.manifest["tokenizer_sha256"], self.paths,
                              tuple(self.manifest["classes"]), tuple(self.manifest["speakers"]))

    # ---------------------------------------------------------------- searching

    def encode(self, queries: Any, *, names: Sequence[str] | None = None, device: str = "cpu") -> RetrievalItems:
        """Queries as items: files (paths) or the modality's raw data, encoded by the index's tokenizer."""
        if isinstance(queries, RetrievalItems):
            return queries
        modality = self._need_modality()
        check_tokenizer(self.manifest, self.run, self.folder)
        if isinstance(queries, (str, os.PathLike)):
            queries = [queries]
        if isinstance(queries, (list, tuple)) and queries and all(isinstance(q, (str, os.PathLike)) for q in queries):
            names = [str(q) for q in queries]
            queries = [modality.read_query(self.run, Path(q)) for q in queries]
        return modality.query_items(self.run, queries, names=names, device=device)

    def read_queries(self, paths: Sequence[str | os.PathLike]) -> list:
        """Query files read by the index's modality (images, WAV clips), checked against its run."""
        modality = self._need_modality()
        return [modality.read_query(self.run, Path(p)) for p in paths]

    def encode_split(self, data: str | None, data_dir: str | None, split: str, *, device: str = "cpu",
                     batch_size: int = 256) -> RetrievalItems:
        """A split encoded as queries by the index's tokenizer; ``data=None``: the indexed data."""
        modality = self._need_modality()
        check_tokenizer(self.manifest, self.run, self.folder)
        if data is None:
            data, data_dir = self.manifest["data"].get("spec"), data_dir or self.manifest["data"].get("data_dir")
        return modality.retrieval_items(self.run, data=data, data_dir=data_dir, split=split, device=device,
                                        batch_size=batch_size)

    def media(self, data: dict, rows: np.ndarray) -> list:
        """Raw items (images, clips) at ``rows`` of the data ``{"spec", "data_dir", "split"}``."""
        source = dict(data)
        if source.get("spec") is None:
            source.update(spec=self.manifest["data"].get("spec"),
                          data_dir=source.get("data_dir") or self.manifest["data"].get("data_dir"))
        return self._need_modality().retrieval_media(self.run, source, rows)

    def search(self, queries: Any, k: int = 10, *, representation: str | None = None,
               device: str = "cpu") -> SearchResults:
        """The ``k`` nearest items to each query.

        Args:
            queries: :class:`~vqvae.retrieval.items.RetrievalItems`, a path or list of paths
                of query files, or the modality's raw data (an image batch ``(B, C, H, W)``, a
                list of waveforms).
            k: neighbours per query.
            representation: ``bag``, ``pooled`` or ``ngram``; default the index's default.
        """
        items = self.encode(queries, device=device)
        scores, rows = self.neighbours(items, k, representation)
        return self.results(items.ids, scores, rows, representation or self.default)

    def neighbours(self, items: RetrievalItems, k: int, representation: str | None = None,
                   exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, rows)``, each ``(Q, k)``, of encoded query items; ``exclude``: database rows
        to leave out of this search."""
        name = representation or self.default
        if name not in self.representations:
            raise RetrievalError(f"unknown representation {name!r}: choose one of {', '.join(REPRESENTATIONS)}")
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise RetrievalError(f"k must be a positive number of neighbours, got {k!r}")
        if items.tokenizer != self.manifest["tokenizer_sha256"]:
            raise TokenizerMismatch(f"the queries were encoded by tokenizer weights {items.tokenizer[:12]}..., but "
                                    f"the index by {self.manifest['tokenizer_sha256'][:12]}...: encode the queries "
                                    f"with the index's run ({self.manifest['run']}) or rebuild the index")
        grids = self._query_grids(items)
        return self.representations[name].search(grids, int(k), exclude)

    def results(self, names: Sequence[str], scores: np.ndarray, rows: np.ndarray, representation: str) -> SearchResults:
        labels = None if self.codes.labels is None else self.codes.labels.numpy()
        classes = self.manifest["classes"]
        pick = lambda values: [[values[r] if r >= 0 else None for r in row] for row in rows.tolist()]  # noqa: E731
        label_names = ([classes[int(x)] if classes else int(x) for x in labels] if labels is not None
                       else [None] * len(self))
        return SearchResults(representation, list(names), rows, scores, pick(self.ids), pick(label_names),
                             pick(self.paths or [None] * len(self)))

    def write_results(self, results: SearchResults, queries: Any, out: str | os.PathLike) -> list[Path]:
        """What the modality shows of a search: a contact sheet, copies of the found clips."""
        modality = self._need_modality()
        found = np.unique(results.rows[results.rows >= 0])
        media = dict(zip(found.tolist(), self.media(self.manifest["data"], found), strict=True))
        hits = [[media[r] for r in row if r >= 0] for row in results.rows.tolist()]
        return modality.write_search_results(self.run, queries, hits, Path(out))

    def _query_grids(self, items: RetrievalItems) -> np.ndarray:
        grids = items.codes.codes.numpy()
        shape = tuple(self.manifest["code_shape"])
        k = self.manifest["codebook_size"]
        if len(grids) == 0:
            raise RetrievalError("no queries given: pass at least one query")
        if self.base.fixed and grids.shape[1:] != shape:
            raise RetrievalError(f"query codes have shape {grids.shape[1:]} but this index holds {shape} grids: "
                                 "the queries are of another size than the indexed data")
        if not self.base.fixed and grids.ndim != len(shape) + 1:
            raise RetrievalError(f"query codes have {grids.ndim - 1} latent axes, the index {len(shape)}")
        if grids.max(initial=0) >= k:
            raise RetrievalError(f"query codes reach {int(grids.max())} but the tokenizer has K={k} codes")
        return grids

    def _need_modality(self) -> RetrievalModality:
        if self.modality is None:
            raise RetrievalError(f"this index cannot read or encode raw queries: its tokenizer run "
                                 f"{self.manifest.get('run')} is not readable here; load it with "
                                 "vqvae.Index.load(folder, run=RUN), or search with encoded RetrievalItems")
        return self.modality


def check_tokenizer(manifest: dict, run: str | os.PathLike | None, folder: Path | None) -> None:
    """Refuse a tokenizer whose weights are not the ones that built the index."""
    if run is None:
        raise RetrievalError("the index names no tokenizer run: pass run=RUN")
    found = tokenizer_hash(run)
    if found != manifest["tokenizer_sha256"]:
        raise TokenizerMismatch(
            f"index {folder or ''} was built by tokenizer weights sha256 {manifest['tokenizer_sha256'][:12]}..., "
            f"but {Path(run) / 'model.safetensors'} has sha256 {found[:12]}... (another or retrained tokenizer): "
            f"rebuild the index with vqvae index {run} --data SPEC -o INDEX_DIR, or use the run that built it")
