"""Commands on data sets: ``vqvae shard`` writes WebDataset shards for data larger than memory."""

from __future__ import annotations

import argparse
from pathlib import Path

from vqvae.cli.common import CLIError


def add_data_commands(sub) -> None:
    p = sub.add_parser("shard", help="write an image data set as WebDataset shards (train-000000.tar, "
                                     "val-000000.tar, ...) to train on with --data 'DIR/train-{000000..N}.tar'")
    p.add_argument("spec", metavar="SPEC", help="mnist, cifar10, mnist-mini, or an image folder (or tar of one)")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="folder for the shards")
    p.add_argument("--shard-size", type=int, default=10_000, help="samples per shard (default 10000)")
    p.add_argument("--image-size", type=int, default=None, help="resize and centre-crop images to N x N")
    p.add_argument("--data-dir", metavar="DIR", help="where the data set's files are")
    p.add_argument("--force", action="store_true", help="write into a folder that already holds shards")
    p.set_defaults(func=_shard)


def _shard(args: argparse.Namespace) -> str:
    from vqvae.modalities.image.data import available_splits, load_images
    from vqvae.modalities.image.stream import write_info, write_shards

    out = Path(args.out)
    if any(out.glob("*.tar")) and not args.force:
        raise CLIError(f"{out} already holds .tar shards: choose another -o or pass --force to replace them")
    if args.shard_size < 1:
        raise CLIError(f"--shard-size must be a positive number of samples, got {args.shard_size}")
    splits = ["train", "val"] + (["test"] if "test" in available_splits(args.spec, args.data_dir) else [])
    lines, counts, classes, shape = [], {}, (), None
    for split in splits:
        data = load_images(args.spec, split, data_dir=args.data_dir, image_size=args.image_size)
        paths = write_shards(data, out, split, args.shard_size)
        for stale in set(out.glob(f"{split}-*.tar")) - set(paths):  # left by an earlier, larger --force write
            stale.unlink()
        counts[split], classes, shape = len(data), data.classes, list(data.images.shape[1:])
        last = f"{len(paths) - 1:06d}"
        lines.append(f"{split}: {len(data)} images in {len(paths)} shards, {out}/{split}-{{000000..{last}}}.tar")
    write_info(out, {"source": args.spec, "classes": list(classes), "shape": shape, "counts": counts,
                     "shard_size": args.shard_size})
    last = f"{-(-counts['train'] // args.shard_size) - 1:06d}"
    lines.append(f"train on them with: vqvae train --data '{out}/train-{{000000..{last}}}.tar' --out RUN")
    return "\n".join(lines)
