"""Codes as an index: ``vqvae index``, ``vqvae search`` and ``vqvae evaluate-retrieval``."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from vqvae.atomic import write_json
from vqvae.cli.common import CLIError, add_data_flags
from vqvae.retrieval.representations import REPRESENTATIONS, Settings

__all__ = ["add_retrieval_commands"]


def add_retrieval_commands(sub) -> None:
    p = sub.add_parser("index", help="encode a data split with a tokenizer and index it by its codes")
    p.add_argument("run", metavar="RUN", help="a trained tokenizer run")
    add_data_flags(p)
    p.add_argument("--split", default="train", help="the split to index (default: train)")
    p.add_argument("-o", "--out", required=True, metavar="INDEX_DIR", help="the index folder to write")
    p.add_argument("--default", choices=REPRESENTATIONS, default=Settings.default,
                   help=f"the representation search uses unless told (default: {Settings.default})")
    p.add_argument("--ngram", type=int, default=Settings.ngram,
                   help="ngram representation: longest run of neighbouring codes that is a token (default: 1 on "
                        "image grids, 2 on audio rows)")
    p.add_argument("--rerank", type=int, default=Settings.rerank,
                   help=f"ngram representation: candidates re-ranked by aligned code distance (default {Settings.rerank})")
    p.add_argument("--shift", type=int, default=Settings.shift,
                   help="ngram representation on image grids: how many latent positions a code may move to match "
                        "in the re-ranking (default: 0 or 1, whichever finds more same-label neighbours among the "
                        "indexed items themselves; 0 without labels)")
    p.add_argument("--batch-size", type=int, default=256, help="items encoded at once (default 256)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_index)

    p = sub.add_parser("search", help="find the indexed items nearest to query files or to items of a data split")
    p.add_argument("index", metavar="INDEX_DIR", help="an index made by vqvae index")
    p.add_argument("queries", nargs="*", metavar="QUERY",
                   help="image or WAV files; with --split, positions of items in the split (default: the first -n)")
    add_data_flags(p)
    p.add_argument("--split", help="query with items of this split (of --data, else of the indexed data; "
                   "default with --data: test)")
    p.add_argument("-n", type=int, default=8, help="with --split and no QUERY: how many of the split's items (default 8)")
    p.add_argument("-k", type=int, default=10, help="neighbours per query (default 10)")
    p.add_argument("--representation", choices=REPRESENTATIONS, help="default: the index's default")
    p.add_argument("-o", "--out", metavar="DIR", help="where results.json and the pictures or WAVs go "
                   "(default: INDEX_DIR/searches)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_search)

    p = sub.add_parser("evaluate-retrieval", help="precision@1, @10 and mAP@10 of same-label neighbours of "
                       "held-out queries, per representation and for raw-data and continuous baselines")
    p.add_argument("index", metavar="INDEX_DIR", help="an index made by vqvae index")
    add_data_flags(p)
    p.add_argument("--split", default="test", help="the held-out queries (default: test; val where the data "
                   "have no test split)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_evaluate)


def _index(args: argparse.Namespace) -> str:
    from vqvae.modalities.retrieval import Index

    settings = Settings(default=args.default, ngram=args.ngram, rerank=args.rerank, shift=args.shift)
    index = Index.build(args.run, args.data, data_dir=args.data_dir, split=args.split, device=args.device,
                        settings=settings, batch_size=args.batch_size)
    out = index.save(args.out)
    engine = index.manifest["engines"]["pooled"]["kind"]
    return (f"indexed {len(index)} items (split {args.split}) into {out}; default representation "
            f"{index.default}, pooled vectors in a {engine} faiss index")


def _search(args: argparse.Namespace) -> str:
    from vqvae.modalities.retrieval import Index

    index = Index.load(args.index)
    if args.data is not None or args.data_dir is not None or args.split is not None:
        queries, raw = _split_queries(index, args, args.split or "test")
    else:
        if not args.queries:
            raise CLIError("give query files, or --split SPLIT (with --data SPEC for other data than the indexed) "
                           "to query with items of a data split")
        raw = index.read_queries(args.queries)
        queries = index.encode(raw, names=args.queries, device=args.device)
    results = index.search(queries, args.k, representation=args.representation, device=args.device)
    out = Path(args.out) if args.out else Path(args.index) / "searches"
    write_json(out / "results.json", {"index": str(args.index), "representation": results.representation,
                                      "results": results.records()})
    written = index.write_results(results, raw, out)
    return "\n".join([_table(results.records()), f"wrote {out / 'results.json'} and {len(written)} file(s) in {out}"])


def _split_queries(index, args: argparse.Namespace, split: str):
    items = index.encode_split(args.data, args.data_dir, split, device=args.device)
    if args.queries:
        try:
            rows = [int(q) for q in args.queries]
        except ValueError:
            raise CLIError(f"with --split, QUERY names items of the split by position (0..{len(items) - 1}), "
                           f"got {args.queries}") from None
        bad = [r for r in rows if not 0 <= r < len(items)]
        if bad:
            raise CLIError(f"query positions {bad} lie outside the split's {len(items)} items")
    else:
        rows = list(range(min(args.n, len(items))))
    source = {"spec": args.data, "data_dir": args.data_dir, "split": split}
    return items.select(np.asarray(rows)), index.media(source, np.asarray(rows, dtype=np.int64))


def _evaluate(args: argparse.Namespace) -> str:
    from vqvae.modalities.retrieval import Index
    from vqvae.retrieval import evaluate_index

    index = Index.load(args.index)
    queries = index.encode_split(args.data, args.data_dir, args.split, device=args.device)
    report = evaluate_index(index, queries)
    lines = [f"{len(queries)} queries ({args.split}) against {len(index)} indexed items; default: {report['default']}"]
    for key in ("results", "results_cross_speaker"):
        if key in report:
            lines += ["", "neighbours by other speakers only:"] if key != "results" else []
            lines.append(_scores_table(report[key]))
    if args.json:
        write_json(args.json, report)
        lines.append(f"wrote {args.json}")
    return "\n".join(lines)


def _scores_table(results: dict) -> str:
    width = max(len(name) for name in results)
    lines = [f"{'representation':<{max(width, 14)}}  P@1     P@10    mAP@10"]
    for name, scores in results.items():
        lines.append(f"{name:<{max(width, 14)}}  {scores['precision_at_1']:.4f}  {scores['precision_at_10']:.4f}  "
                     f"{scores['map_at_10']:.4f}")
    return "\n".join(lines)


def _table(records: list[dict]) -> str:
    header = ("query", "rank", "id", "label", "score")
    rows = [(str(r["query"]), str(r["rank"]), str(r["id"]), str(r["label"]), f"{r['score']:.4f}") for r in records]
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
