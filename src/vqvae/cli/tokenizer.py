"""Commands on a tokenizer run: train, evaluate, encode, decode, reconstruct."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from vqvae.cli.common import (
    PRECISION_HELP,
    CLIError,
    add_compile_flag,
    add_data_flags,
    add_modality_options,
    add_schedule_flags,
    dest,
    modality_options,
    report,
    run_modality,
)
from vqvae.code_shards import concat_codes
from vqvae.modalities import MODALITIES, Modality, detect, modality_of
from vqvae.runs import read_config

TRAIN_FLAGS = {
    "--batch-size": ("batch_size", int, "batch size (default 128)"),
    "--val-every": ("val_every", int, "validate every N steps (default 1000)"),
    "--log-every": ("log_every", int, "log every N steps (default 50)"),
    "--checkpoint-every": ("checkpoint_every", int, "checkpoint every N steps (default 1000)"),
    "--ema-decay": ("ema_decay", float, "validate and save a moving average of the weights with "
                    "this decay, e.g. 0.999 (default: off, the live weights)"),
    "--grad-clip": ("grad_clip", float, "clip the global gradient norm to this value before each "
                    "step (default: off)"),
    "--adam-beta2": ("adam_beta2", float, "Adam's second-moment decay (default images 0.99, others "
                                          "0.999; 0.999 with --schedule constant)"),
}


def recipe_defaults(defaults: dict, schedule: str | None) -> dict:
    """A modality's defaults (training or model settings) for a new run whose ``--schedule``
    is ``schedule``: a constant rate is the paper's recipe, so of the decaying recipe it keeps
    only the peak rate (``--lr`` sets it) and drops the rest: warm-up, Adam's beta2, the
    codebook's decay (the run's own flags still apply)."""
    if schedule != "constant":
        return defaults
    return {k: v for k, v in defaults.items() if k == "lr"}


def add_train(sub) -> None:
    p = sub.add_parser("train", help="train a tokenizer (VQ-VAE) or the VAE baseline")
    add_data_flags(p)
    models = sorted({name for m in MODALITIES.values() for name in m.models})
    p.add_argument("--model", choices=models, default=None,
                   help="vqvae (default) or vae: the continuous baseline on the same networks (images)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory")
    add_modality_options(p, "train")
    for flag, (_, kind, text) in TRAIN_FLAGS.items():
        p.add_argument(flag, type=kind, help=text)
    add_schedule_flags(p, lr="images 2e-3, speech 2e-3, video 1e-3",
                       schedule="cosine; the paper's recipe is --schedule constant --lr 2e-4 (a constant rate "
                                "comes without warm-up unless --warmup is given)",
                       warmup="images 200, speech 200, video 300")
    p.add_argument("--max-steps", type=int, help="total steps of the run (default 250000)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="wall-time limit of this invocation's training loop, validation included")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None, help=PRECISION_HELP)
    add_compile_flag(p)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files to RUN/tensorboard/tokenizer (every logged metric; "
                        "reconstructions or audio at each validation): tensorboard --logdir RUN/tensorboard")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> str:
    from vqvae.train import TrainConfig
    from vqvae.workflow import start_run, train_tokenizer

    if args.resume:
        if args.force:
            raise CLIError("--resume and --force contradict each other: choose one")
        config = read_config(args.out)
        modality, kind = modality_of(config), config["kind"]
    else:
        if not args.data:
            raise CLIError("--data is required to start a run (see vqvae train --help)")
        modality = detect(args.data, args.data_dir)
        model_name = args.model or next(iter(modality.models))
        if model_name not in modality.models:
            raise CLIError(f"--model {model_name} is not available for {modality.name} data "
                           f"(it trains {', '.join(modality.models)})")
        kind = modality.models[model_name]
    options = modality_options(args, "train", modality)
    fields = {o.dest: o.field for o in modality.options.get("train", ()) if o.field}
    model = {fields[d]: v for d, v in options.items() if d in fields}
    data_options = {d: v for d, v in options.items() if d not in fields}
    known = {f.name for f in dataclasses.fields(modality.config_class(kind))}
    foreign = [f"--{k.replace('_', '-')}" for k in model if k not in known]
    if foreign:
        raise CLIError(f"{', '.join(foreign)} does not apply to --model {args.model or kind}")
    train = {field: getattr(args, dest(flag)) for flag, (field, _, _) in TRAIN_FLAGS.items()}
    train.update(seed=args.seed, device=args.device, precision=args.precision, lr=args.lr,
                 schedule=args.schedule, warmup_steps=args.warmup_steps, compile=args.compile)
    train = {k: v for k, v in train.items() if v is not None}
    if args.resume:
        _check_resume_matches(Path(args.out), args, modality, kind, model, data_options, train)
    else:
        if args.max_steps is not None:
            train["max_steps"] = args.max_steps
        train = {**recipe_defaults(modality.train_defaults, args.schedule), **train}
        model = {**recipe_defaults(modality.model_defaults.get(kind, {}), args.schedule), **model}
        start_run(args.out, args.data, model, TrainConfig(**train), model=args.model, data_dir=args.data_dir,
                  options=data_options, force=args.force, modality=modality)
    summary = train_tokenizer(args.out, max_steps=args.max_steps, time_budget=args.time_budget,
                              resume=args.resume, progress=not args.no_progress,
                              tensorboard=args.tensorboard)
    state = "finished" if summary.finished else "stopped by the time budget"
    lines = [f"{state} at step {summary.step}; run directory: {summary.run}"]
    if summary.val and modality.summary(summary.val):
        lines.append("validation: " + modality.summary(summary.val))
    return "\n".join(lines)


def _check_resume_matches(run: Path, args, modality: Modality, kind: str, model: dict, data: dict,
                          train: dict) -> None:
    config = read_config(run)
    if args.model is not None and modality.models.get(args.model) != kind:
        raise CLIError(f"--model {args.model} differs from the run's model {kind}")
    if args.data is not None and args.data != config["data"]["spec"]:
        raise CLIError(f"--data {args.data} differs from the run's data {config['data']['spec']}")
    if args.data_dir is not None:  # the data moved: record where they are now
        from vqvae.runs import write_config
        from vqvae.train import on_main

        config["data"]["data_dir"] = str(Path(args.data_dir).resolve())
        on_main(write_config, run, config)
    given = {("model", k): v for k, v in model.items()}
    given.update({("data", k): v for k, v in data.items()})
    given.update({("train", k): v for k, v in train.items() if k != "device"})
    from vqvae.train import TrainConfig

    # a setting the config lacks (written before it existed) has the value it is read with: the
    # model config's from_dict fills in what older runs meant, TrainConfig's defaults the rest
    model_config = modality.config_class(kind).from_dict(config["model"])
    recorded = {"model": dataclasses.asdict(model_config), "data": config["data"],
                "train": {**_defaults(TrainConfig), **config["train"]}}
    changed = [f"{k}={v} (run has {recorded[s].get(k)})" for (s, k), v in given.items() if recorded[s].get(k) != v]
    if changed:
        raise CLIError(f"--resume continues the run as configured; these flags differ: {', '.join(changed)}")


def _defaults(cls: type) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def add_run_commands(sub) -> None:
    p = sub.add_parser("evaluate", help="reconstruction and codebook metrics of a run; for speech, classifier "
                                        "accuracies on real, reconstructed, converted and sampled audio")
    p.add_argument("run", metavar="RUN")
    add_data_flags(p)
    p.add_argument("--split", choices=["train", "val", "test"], help="default: test when the data have one, else val")
    p.add_argument("--prior", metavar="NAME",
                   help="image: with --bits-per-dim, also the latent term under this prior of the run; "
                        "speech: the prior whose digit-conditioned samples are judged")
    add_modality_options(p, "evaluate")
    p.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("encode", help="data -> integer codes (.npz with codes and labels, or with --shards a "
                                      "folder of code shards, written batch by batch; under torchrun too)")
    p.add_argument("run", metavar="RUN")
    add_data_flags(p)
    p.add_argument("--split", choices=["train", "val", "test"], help="default: train")
    p.add_argument("-o", "--out", required=True, help="output .npz file, or with --shards a folder")
    p.add_argument("--shards", action="store_true",
                   help="stream the data and write codes-RANK-INDEX.npz shards and a manifest.json into the "
                        "folder -o, never holding the data or all codes; each torchrun process encodes its part")
    p.add_argument("--shard-size", type=int, help="with --shards: items per code shard (default 10000)")
    p.add_argument("--batch-size", type=int, default=256, help="items encoded at once (default 256)")
    p.add_argument("--force", action="store_true", help="with --shards: replace the code shards in -o")
    p.add_argument("--device", default="cpu", help="cpu or cuda (under torchrun: each process's own GPU)")
    add_modality_options(p, "encode")
    p.set_defaults(func=_encode)

    p = sub.add_parser("decode", help="integer codes (.npz or .npy, or a folder of code shards) -> images and "
                                      "a grid, or WAVs")
    p.add_argument("run", metavar="RUN")
    p.add_argument("codes", help=".npz (array 'codes') or .npy file, or a folder written by encode --shards")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    add_modality_options(p, "decode")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_decode)

    p = sub.add_parser("reconstruct", help="originals beside their reconstructions: a PNG grid of "
                                           "images, or a folder of WAVs and spectrogram PNGs")
    p.add_argument("run", metavar="RUN")
    add_data_flags(p)
    p.add_argument("--split", choices=["train", "val", "test"])
    p.add_argument("-n", type=int, help="number of items (default: images 32, clips 8)")
    p.add_argument("-o", "--out", required=True, help="output PNG (images) or folder (audio)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_reconstruct)


def _evaluate(args: argparse.Namespace) -> str:
    modality = run_modality(args.run)
    metrics = modality.evaluate(Path(args.run), data=args.data, data_dir=args.data_dir, split=args.split,
                                batch_size=args.batch_size, device=args.device, prior=args.prior,
                                options=modality_options(args, "evaluate", modality))
    return report(metrics, args.json)


def _encode(args: argparse.Namespace) -> str:
    from vqvae import distributed
    from vqvae.runs import save_codes

    modality, codebook_size = _tokenizer(args.run, "encode")
    options = modality_options(args, "encode", modality)
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be a positive number of items, got {args.batch_size}")
    if args.shards:
        return _encode_shards(args, modality, codebook_size, options)
    given = [flag for flag, value in (("--shard-size", args.shard_size), ("--force", args.force)) if value]
    if given:
        raise CLIError(f"{' and '.join(given)} apply to code shards: add --shards (and let -o name a folder)")
    if distributed.is_distributed():
        raise CLIError("under torchrun, vqvae encode writes code shards, one part per process: add --shards "
                       "and let -o name a folder")
    if Path(args.out).is_dir():
        raise CLIError(f"-o {args.out} is a folder: add --shards to write code shards into it, or name an .npz file")
    parts = modality.encode_part(Path(args.run), data=args.data, data_dir=args.data_dir, split=args.split,
                                 device=args.device, options=options, rank=0, world=1, batch_size=args.batch_size)
    file = concat_codes(list(parts))
    codes = file.rows() if file.lengths is not None else file.codes
    save_codes(args.out, codes, codebook_size, file.labels, **file.extras)
    return f"wrote {args.out}: codes {tuple(file.codes.shape)}, {len(file.codes)} items"


def _encode_shards(args: argparse.Namespace, modality: Modality, codebook_size: int, options: dict) -> str:
    from vqvae import distributed
    from vqvae.code_shards import write_code_shards

    out = Path(args.out)
    if out.suffix in (".npz", ".npy"):
        raise CLIError(f"--shards writes a folder of code shards: -o names a folder, not the file {out}")
    parts = modality.encode_part(Path(args.run), data=args.data, data_dir=args.data_dir, split=args.split,
                                 device=args.device, options=options, rank=distributed.rank(),
                                 world=distributed.world_size(), batch_size=args.batch_size)
    recorded = read_config(args.run)["data"]
    data = {"spec": args.data or recorded["spec"], "data_dir": args.data_dir if args.data else recorded["data_dir"],
            "split": args.split or "train"}
    manifest = write_code_shards(parts, out, run=args.run, codebook_size=codebook_size, data=data,
                                 shard_size=args.shard_size or 10_000, force=args.force)
    return (f"wrote {manifest['items']} items in {len(manifest['shards'])} code shards by "
            f"{manifest['world_size']} process(es), and {out / 'manifest.json'}")


def _decode(args: argparse.Namespace) -> str:
    from vqvae.code_shards import load_code_shards
    from vqvae.runs import load_codes

    modality, _ = _tokenizer(args.run, "decode")
    options = modality_options(args, "decode", modality)
    codes = load_code_shards(args.codes, args.run) if Path(args.codes).is_dir() else load_codes(args.codes)
    return modality.decode(Path(args.run), codes, Path(args.out), device=args.device, options=options)


def _tokenizer(run: str, command: str) -> tuple[Modality, int]:
    """The run's modality and K; a run without a codebook (the VAE) has no codes to work on."""
    config = read_config(run)
    if "codebook_size" not in config["model"]:
        raise CLIError(f"{run} is a {config['kind']} run without a codebook: vqvae {command} works on the "
                       f"integer codes of a VQ-VAE (use evaluate or reconstruct for its latents)")
    return modality_of(config), config["model"]["codebook_size"]


def _reconstruct(args: argparse.Namespace) -> str:
    modality = run_modality(args.run)
    return modality.reconstruct(Path(args.run), Path(args.out), data=args.data, data_dir=args.data_dir,
                                split=args.split, n=args.n or modality.reconstruct_count, device=args.device)



