"""Commands on a run's priors: train-prior, sample, evaluate-samples."""

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
    modality_options,
    report,
    run_modality,
)


def _add_sampling_flags(p: argparse.ArgumentParser) -> None:
    """How ``sample`` and ``evaluate-samples`` draw from a prior."""
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--guidance", type=float,
                   help="classifier-free guidance scale: 1 samples the prior as it is, above 1 "
                   "follows the label more closely (default 2 for a class-conditional prior "
                   "trained with label dropout, else 1)")
    p.add_argument("--seed", type=int, default=0)


def add_prior_commands(sub) -> None:
    p = sub.add_parser("train-prior", help="train an autoregressive prior over a run's codes")
    p.add_argument("run", metavar="RUN", help="a trained tokenizer run")
    p.add_argument("--arch", required=True, choices=["pixelcnn", "transformer"])
    p.add_argument("--name", help="saved as RUN/priors/NAME (default: the architecture)")
    p.add_argument("--width", type=int, help="channels (PixelCNN, default 64) or model width (Transformer, default 256)")
    p.add_argument("--depth", type=int, help="gated layers (default 15) or blocks (default 4)")
    p.add_argument("--heads", type=int, help="attention heads (Transformer; default width // 64)")
    p.add_argument("--label-dropout", type=float,
                   help="a class-conditional prior trains with its label dropped this often, which "
                   "lets sampling use --guidance (default 0.1; 0: no guidance)")
    add_data_flags(p)
    p.add_argument("--batch-size", type=int, help="batch size (default 128)")
    add_schedule_flags(p, lr="2e-3", schedule="constant (with --ema-decay 0.99 weight averaging it matched a "
                       "cosine decay on MNIST, docs/training.md)", warmup="100")
    p.add_argument("--max-steps", type=int, help="total steps of the run (default 100000)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="wall-time limit of this invocation's training loop, validation included")
    p.add_argument("--val-every", type=int, help="validate every N steps (default 500)")
    p.add_argument("--ema-decay", type=float,
                   help="decay of the moving average of the weights that validation and the saved "
                   "prior use (default 0.99; 0: the live weights)")
    p.add_argument("--grad-clip", type=float, help="clip the global gradient norm to this value (default: off)")
    add_modality_options(p, "train-prior")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None, help=PRECISION_HELP)
    add_compile_flag(p)
    p.add_argument("--resume", action="store_true", help="continue the prior in RUN/priors/NAME")
    p.add_argument("--force", action="store_true", help="overwrite an existing prior of that name")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard event files of every logged metric to RUN/tensorboard/prior-NAME: "
                        "tensorboard --logdir RUN/tensorboard")
    p.set_defaults(func=_train_prior)

    p = sub.add_parser("sample", help="sample codes from a prior and decode them (images or WAVs)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--prior", metavar="NAME", help="which prior (default: the run's only one)")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--label", type=int, help="class index for a class-conditional prior (the digit for FSDD)")
    add_modality_options(p, "sample")
    _add_sampling_flags(p)
    p.add_argument("-o", "--out", metavar="DIR", help="output folder (default RUN/samples)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_sample)

    p = sub.add_parser("evaluate-samples",
                       help="judge class-conditional samples with a classifier trained on real data")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--prior", metavar="NAME", help="which prior (default: the run's only one)")
    p.add_argument("--per-class", type=int, default=100, help="samples per class (default 100)")
    p.add_argument("--real", type=int, default=1000, help="held-out real images (default 1000)")
    _add_sampling_flags(p)
    p.add_argument("--json", metavar="OUT", help="also write the report as JSON")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_evaluate_samples)


def _train_prior(args: argparse.Namespace) -> str:
    from vqvae.priors.training import PRIOR_TRAIN
    from vqvae.workflow import start_prior_run, train_prior

    name = args.name or args.arch
    folder = Path(args.run) / "priors" / name
    modality = run_modality(args.run)
    options = modality_options(args, "train-prior", modality)
    model = {k: v for k, v in (("width", args.width), ("depth", args.depth), ("heads", args.heads),
                               ("label_dropout", args.label_dropout)) if v is not None}
    if args.heads is not None and args.arch != "transformer":
        raise CLIError("--heads applies to --arch transformer only")
    train = {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr), ("seed", args.seed),
                               ("schedule", args.schedule), ("warmup_steps", args.warmup_steps),
                               ("val_every", args.val_every), ("ema_decay", args.ema_decay),
                               ("grad_clip", args.grad_clip), ("device", args.device),
                               ("precision", args.precision), ("compile", args.compile)) if v is not None}
    if args.resume:
        if args.force:
            raise CLIError("--resume and --force contradict each other: choose one")
        flags = {"warmup_steps": "warmup"}
        settings = [f"--{flags.get(k, k).replace('_', '-')}" for k in [*model, *train, *options]
                    if k not in ("device", "precision")]
        if settings:
            raise CLIError(f"--resume continues the prior as configured: drop {', '.join(settings)}")
    else:
        if args.max_steps is not None:
            train["max_steps"] = args.max_steps
        start_prior_run(args.run, args.arch, name=name, model_settings=model,
                        train=dataclasses.replace(PRIOR_TRAIN, **train), data=args.data,
                        data_dir=args.data_dir, options=options, force=args.force)
    summary = train_prior(folder, max_steps=args.max_steps, time_budget=args.time_budget,
                          resume=args.resume, progress=not args.no_progress, tensorboard=args.tensorboard)
    state = "finished" if summary.finished else "stopped by the time budget"
    lines = [f"{state} at step {summary.step}; prior saved in {folder}"]
    if summary.val:
        lines.append(f"validation NLL: {summary.val['bits_per_code']:.4f} bits per code")
    return "\n".join(lines)


def _sampling(args: argparse.Namespace) -> dict:
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "guidance": args.guidance}


def _sample(args: argparse.Namespace) -> str:
    from vqvae.generate import sample_codes

    modality = run_modality(args.run)
    options = modality_options(args, "sample", modality)
    codes, _ = sample_codes(args.run, args.n, prior=args.prior, label=args.label, seed=args.seed,
                            device=args.device, **_sampling(args))
    out = Path(args.out or Path(args.run) / "samples")
    return modality.write_samples(Path(args.run), codes, out, device=args.device, options=options)


def _evaluate_samples(args: argparse.Namespace) -> str:
    modality = run_modality(args.run)
    metrics = modality.evaluate_samples(Path(args.run), prior=args.prior, per_class=args.per_class, real=args.real,
                                       sampling={**_sampling(args), "seed": args.seed}, device=args.device)
    return report(metrics, args.json)



