"""The ``vqvae`` command line: argparse sub-commands over the library's functions.

User errors (bad paths, shapes, configs) surface as ``error: ...`` on stderr with exit
status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import vqvae


class CLIError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit status 2."""


# Model flags of `vqvae train`: flag → (VQVAEConfig field, type, help).
MODEL_FLAGS = {
    "--hidden": ("hidden", int, "encoder/decoder width (default 256)"),
    "--res-hidden": ("res_hidden", int, "width inside residual blocks (default 256)"),
    "--residual-blocks": ("residual_blocks", int, "residual blocks (default 2)"),
    "--downsamples": ("downsamples", int, "stride-2 convolutions: 2 gives 32x32 -> 8x8 (default 2)"),
    "--codebook-size": ("codebook_size", int, "K, number of codes (default 512)"),
    "--code-dim": ("code_dim", int, "D, code dimension (default 64)"),
    "--quantizer": ("quantizer", str, "ema (appendix A.1, default) or grad"),
    "--beta": ("beta", float, "commitment cost (default 0.25)"),
    "--decay": ("decay", float, "EMA decay (default 0.99)"),
    "--likelihood": ("likelihood", str, "mse (default) or bernoulli"),
    "--dead-code-window": ("dead_code_window", int, "re-seed codes unused this many steps (default 100)"),
}
TRAIN_FLAGS = {
    "--batch-size": ("batch_size", int, "batch size (default 128)"),
    "--lr": ("lr", float, "Adam learning rate, constant (default 2e-4)"),
    "--val-every": ("val_every", int, "validate every N steps (default 1000)"),
    "--log-every": ("log_every", int, "log every N steps (default 50)"),
    "--checkpoint-every": ("checkpoint_every", int, "checkpoint every N steps (default 1000)"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqvae", description="VQ-VAE: discrete representation learning (van den Oord et al. 2017)."
    )
    parser.add_argument("--version", action="version", version=f"vqvae {vqvae.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_train(sub)
    _add_evaluate(sub)
    _add_encode_decode(sub)
    _add_prior(sub)
    demo = sub.add_parser("demo", help="train a tokenizer on real digits, offline, into runs/demo")
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    demo.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                      help="cap the training time (default: the demo's fixed step count)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def _add_data_flags(p: argparse.ArgumentParser, required: bool) -> None:
    from vqvae.data import image_datasets

    names = ", ".join(f"{name} ({desc})" for name, desc in image_datasets().items())
    p.add_argument("--data", required=required, metavar="SPEC",
                   help=f"a registered data set or a path to an image folder or a tar of one. "
                        f"Registered: {names}")
    p.add_argument("--data-dir", metavar="DIR", help="where the data set's files are")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a tokenizer (VQ-VAE)")
    _add_data_flags(p, required=False)
    p.add_argument("--out", required=True, metavar="RUN", help="run directory")
    p.add_argument("--image-size", type=int, help="resize and centre-crop images to N x N")
    for flag, (_, kind, text) in {**MODEL_FLAGS, **TRAIN_FLAGS}.items():
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--kmeans-init", action=argparse.BooleanOptionalAction, default=None,
                   help="start the codebook from k-means on the first batch (default on)")
    p.add_argument("--max-steps", type=int, help="total steps of the run (default 250000)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="wall-time limit of this invocation's training loop, validation included")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None,
                   help="auto (default): bf16 autocast where the hardware computes bf16 natively, "
                        "else fp32. Quantizer distances and losses stay fp32")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _add_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="reconstruction and codebook metrics of a run")
    p.add_argument("run", metavar="RUN")
    _add_data_flags(p, required=False)
    p.add_argument("--split", choices=["train", "val", "test"],
                   help="default: test when the data have one, else val")
    p.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_evaluate)


def _add_encode_decode(sub) -> None:
    p = sub.add_parser("encode", help="data -> integer codes (.npz with codes and labels)")
    p.add_argument("run", metavar="RUN")
    _add_data_flags(p, required=False)
    p.add_argument("--split", choices=["train", "val", "test"], help="default: train")
    p.add_argument("-o", "--out", required=True, help="output .npz file")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_encode)

    p = sub.add_parser("decode", help="integer codes (.npz or .npy) -> images and a grid")
    p.add_argument("run", metavar="RUN")
    p.add_argument("codes", help=".npz (array 'codes') or .npy file")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_decode)

    p = sub.add_parser("reconstruct", help="a grid of originals beside their reconstructions")
    p.add_argument("run", metavar="RUN")
    _add_data_flags(p, required=False)
    p.add_argument("--split", choices=["train", "val", "test"])
    p.add_argument("-n", type=int, default=32, help="number of images (default 32)")
    p.add_argument("-o", "--out", required=True, help="output PNG")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_reconstruct)


def _add_prior(sub) -> None:
    p = sub.add_parser("train-prior", help="train an autoregressive prior over a run's codes")
    p.add_argument("run", metavar="RUN", help="a trained tokenizer run")
    p.add_argument("--arch", required=True, choices=["pixelcnn", "transformer"])
    p.add_argument("--name", help="saved as RUN/priors/NAME (default: the architecture)")
    p.add_argument("--width", type=int, help="channels (PixelCNN, default 64) or model width (Transformer, default 256)")
    p.add_argument("--depth", type=int, help="gated layers (default 15) or blocks (default 4)")
    p.add_argument("--heads", type=int, help="attention heads (Transformer; default width // 64)")
    _add_data_flags(p, required=False)
    p.add_argument("--batch-size", type=int, help="batch size (default 128)")
    p.add_argument("--lr", type=float, help="Adam learning rate, constant after 100 warm-up steps (default 1e-3)")
    p.add_argument("--max-steps", type=int, help="total steps of the run (default 100000)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="wall-time limit of this invocation's training loop, validation included")
    p.add_argument("--val-every", type=int, help="validate every N steps (default 500)")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None,
                   help="auto (default): bf16 autocast where the hardware computes bf16 natively")
    p.add_argument("--resume", action="store_true", help="continue the prior in RUN/priors/NAME")
    p.add_argument("--force", action="store_true", help="overwrite an existing prior of that name")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train_prior)

    p = sub.add_parser("sample", help="sample codes from a prior and decode them into images")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--prior", metavar="NAME", help="which prior (default: the run's only one)")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--label", type=int, help="class index for a class-conditional prior")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-o", "--out", metavar="DIR", help="output folder (default RUN/samples)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_sample)

    p = sub.add_parser("evaluate-samples",
                       help="judge class-conditional samples with a classifier trained on real data")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--prior", metavar="NAME", help="which prior (default: the run's only one)")
    p.add_argument("--per-class", type=int, default=100, help="samples per class (default 100)")
    p.add_argument("--real", type=int, default=1000, help="held-out real images (default 1000)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_evaluate_samples)


# ------------------------------------------------------------------ commands


def _train(args: argparse.Namespace) -> None:
    from vqvae.train import TrainConfig, start_run, train_tokenizer

    model = {field: getattr(args, _dest(flag)) for flag, (field, _, _) in MODEL_FLAGS.items()}
    model["kmeans_init"] = args.kmeans_init
    model = {k: v for k, v in model.items() if v is not None}
    train = {field: getattr(args, _dest(flag)) for flag, (field, _, _) in TRAIN_FLAGS.items()}
    train.update(seed=args.seed, device=args.device, precision=args.precision)
    train = {k: v for k, v in train.items() if v is not None}
    if args.resume:
        if args.force:
            raise CLIError("--resume and --force contradict each other: choose one")
        _check_resume_matches(Path(args.out), args, model, train)
    else:
        if not args.data:
            raise CLIError("--data is required to start a run (see vqvae train --help)")
        if args.max_steps is not None:
            train["max_steps"] = args.max_steps
        start_run(args.out, args.data, model, TrainConfig(**train), data_dir=args.data_dir,
                  image_size=args.image_size, force=args.force)
    summary = train_tokenizer(args.out, max_steps=args.max_steps, time_budget=args.time_budget,
                              resume=args.resume, progress=not args.no_progress)
    state = "finished" if summary.finished else "stopped by the time budget"
    print(f"{state} at step {summary.step}; run directory: {summary.run}")
    if summary.val:
        print(f"validation: NMSE {summary.val['nmse']:.4f}, PSNR {summary.val['psnr']:.2f} dB, "
              f"perplexity {summary.val['perplexity']:.1f}, codes used {summary.val['codes_used']}")


def _check_resume_matches(run: Path, args, model: dict, train: dict) -> None:
    from vqvae.checkpoint import MODEL_FILE, read_config

    config = read_config(run)
    if not (run / MODEL_FILE).exists():
        raise CLIError(f"{run} has no checkpoint yet: start it again with --force")
    given = {("model", k): v for k, v in model.items()}
    given.update({("train", k): v for k, v in train.items() if k != "device"})
    recorded_data = config["data"]
    if args.data is not None and args.data != recorded_data["spec"]:
        raise CLIError(f"--data {args.data} differs from the run's data {recorded_data['spec']}")
    if args.image_size is not None and args.image_size != recorded_data["image_size"]:
        raise CLIError(f"--image-size {args.image_size} differs from the run's {recorded_data['image_size']}")
    changed = [f"{k}={v} (run has {config[s][k]})" for (s, k), v in given.items() if config[s].get(k) != v]
    if changed:
        raise CLIError(f"--resume continues the run as configured; these flags differ: {', '.join(changed)}")


def _evaluate(args: argparse.Namespace) -> None:
    from vqvae.checkpoint import write_json
    from vqvae.tokenizer import evaluate_run

    metrics = evaluate_run(args.run, args.data, args.data_dir, args.split, args.batch_size, args.device)
    print(format_table(metrics))
    if args.json:
        write_json(args.json, metrics)
        print(f"wrote {args.json}")


def format_table(metrics: dict) -> str:
    width = max(len(k) for k in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for key, value in metrics.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def _encode(args: argparse.Namespace) -> None:
    from vqvae.checkpoint import read_config
    from vqvae.tokenizer import encode_run, save_codes

    codes, labels = encode_run(args.run, args.data, args.data_dir, args.split, device=args.device)
    save_codes(args.out, codes, labels, read_config(args.run)["model"]["codebook_size"])
    print(f"wrote {args.out}: codes {tuple(codes.shape)}, labels {tuple(labels.shape)}")


def _decode(args: argparse.Namespace) -> None:
    from vqvae.tokenizer import decode_codes, load_codes, write_images

    codes, _ = load_codes(args.codes)
    images = decode_codes(args.run, codes, device=args.device)
    grid = write_images(images, args.out)
    print(f"wrote {len(images)} images and {grid}")


def _reconstruct(args: argparse.Namespace) -> None:
    from vqvae.tokenizer import reconstruction_grid

    path = reconstruction_grid(args.run, args.out, args.data, args.data_dir, args.split, args.n, args.device)
    print(f"wrote {path}")


def _train_prior(args: argparse.Namespace) -> None:
    import dataclasses

    from vqvae.train import PRIOR_TRAIN, start_prior_run, train_prior

    name = args.name or args.arch
    folder = Path(args.run) / "priors" / name
    model = {k: v for k, v in (("width", args.width), ("depth", args.depth), ("heads", args.heads))
             if v is not None}
    if args.heads is not None and args.arch != "transformer":
        raise CLIError("--heads applies to --arch transformer only")
    train = {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr), ("seed", args.seed),
                               ("val_every", args.val_every), ("device", args.device),
                               ("precision", args.precision)) if v is not None}
    if args.resume:
        if args.force:
            raise CLIError("--resume and --force contradict each other: choose one")
        settings = [f"--{k.replace('_', '-')}" for k in [*model, *train] if k not in ("device", "precision")]
        if settings:
            raise CLIError(f"--resume continues the prior as configured: drop {', '.join(settings)}")
    else:
        if args.max_steps is not None:
            train["max_steps"] = args.max_steps
        start_prior_run(args.run, args.arch, name=name, model_settings=model,
                        train=dataclasses.replace(PRIOR_TRAIN, **train), data=args.data,
                        data_dir=args.data_dir, force=args.force)
    summary = train_prior(folder, max_steps=args.max_steps, time_budget=args.time_budget,
                          resume=args.resume, progress=not args.no_progress)
    state = "finished" if summary.finished else "stopped by the time budget"
    print(f"{state} at step {summary.step}; prior saved in {folder}")
    if summary.val:
        print(f"validation NLL: {summary.val['bits_per_code']:.4f} bits per code")


def _sample(args: argparse.Namespace) -> None:
    from vqvae.generate import sample_images, write_samples

    codes, images = sample_images(args.run, args.n, prior=args.prior, label=args.label,
                                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                  seed=args.seed, device=args.device)
    out = args.out or Path(args.run) / "samples"
    grid = write_samples(codes, images, out)
    print(f"wrote {len(codes)} samples to {out} ({grid})")


def _evaluate_samples(args: argparse.Namespace) -> None:
    from vqvae.checkpoint import write_json
    from vqvae.generate import evaluate_samples

    report = evaluate_samples(args.run, prior=args.prior, per_class=args.per_class, real=args.real,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              seed=args.seed, device=args.device)
    print(format_table(report))
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")


def _demo(args: argparse.Namespace) -> None:
    from vqvae.demo import run_demo

    for line in run_demo(args.out, seed=args.seed, time_budget=args.time_budget):
        print(line)


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from vqvae.train import TrainingInterrupted

    try:
        args.func(args)
    except TrainingInterrupted as exc:
        print(str(exc), file=sys.stderr)
        return 130
    except (CLIError, ValueError, TypeError, IndexError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
