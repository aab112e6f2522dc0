"""The ``vqvae`` command line: generic sub-commands over the modality registry.

The data (``vqvae train --data``) or the run's ``config.json`` pick the modality; each
modality adds its own flags to the generic commands (``Modality.options``) and may add
commands of its own (``convert`` for speech). User errors (bad paths, shapes, configs)
surface as ``error: ...`` on stderr with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import vqvae
from vqvae.modalities import MODALITIES, Modality, Option, detect, modality_of
from vqvae.runs import read_config


class CLIError(Exception):
    """A user-facing error: printed as ``error: <message>``, exit status 2."""


TRAIN_FLAGS = {
    "--batch-size": ("batch_size", int, "batch size (default 128)"),
    "--lr": ("lr", float, "Adam learning rate, constant (default 2e-4)"),
    "--val-every": ("val_every", int, "validate every N steps (default 1000)"),
    "--log-every": ("log_every", int, "log every N steps (default 50)"),
    "--checkpoint-every": ("checkpoint_every", int, "checkpoint every N steps (default 1000)"),
    "--ema-decay": ("ema_decay", float, "validate and save a moving average of the weights with "
                    "this decay, e.g. 0.999 (default: off, the live weights)"),
    "--grad-clip": ("grad_clip", float, "clip the global gradient norm to this value before each "
                    "step (default: off)"),
}
PRECISION_HELP = ("auto (default): bf16 autocast where the hardware computes bf16 natively, else fp32. "
                  "Quantizer distances and losses stay fp32")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqvae", description="VQ-VAE: discrete representation learning (van den Oord et al. 2017)."
    )
    parser.add_argument("--version", action="version", version=f"vqvae {vqvae.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_train(sub)
    _add_run_commands(sub)
    _add_prior_commands(sub)
    for modality in MODALITIES.values():
        modality.add_commands(sub)
    demo = sub.add_parser("demo", help="train a tokenizer and a prior on real digits, offline, into runs/demo")
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    demo.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                      help="cap the training time (default: the demo's fixed step count)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


# ------------------------------------------------------------ modality flags


def _add_modality_options(p: argparse.ArgumentParser, command: str) -> None:
    """Add each flag that some modality declares for ``command`` once, with every meaning."""
    declared: dict[str, list[tuple[Modality, Option]]] = {}
    for modality in MODALITIES.values():
        for option in modality.options.get(command, ()):
            declared.setdefault(option.flag, []).append((modality, option))
    for flag, owners in declared.items():
        first = owners[0][1]
        text = "; ".join(f"{m.name}: {o.help}" for m, o in owners)
        if first.switch == "optional":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif first.switch == "on":
            p.add_argument(flag, action="store_true", default=None, help=text)
        else:
            p.add_argument(flag, type=first.type, choices=first.choices, default=None, help=text)


def _modality_options(args: argparse.Namespace, command: str, modality: Modality) -> dict:
    """The values of ``modality``'s own flags that were given; other modalities' flags are errors."""
    own = {o.dest for o in modality.options.get(command, ())}
    for other in MODALITIES.values():
        for option in other.options.get(command, ()):
            if option.dest not in own and getattr(args, option.dest, None) is not None:
                users = [m.name for m in MODALITIES.values() if option in m.options.get(command, ())]
                raise CLIError(f"{option.flag} does not apply to {modality.name} data: it is for "
                               f"{' and '.join(users)} data")
    return {dest: getattr(args, dest) for dest in own if getattr(args, dest, None) is not None}


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    names = ", ".join(f"{name} ({desc})" for m in MODALITIES.values() for name, desc in m.datasets().items())
    p.add_argument("--data", metavar="SPEC",
                   help=f"a registered data set, or a path to a folder (or tar) of images or of WAV "
                        f"files (the data decide the modality). Registered: {names}")
    p.add_argument("--data-dir", metavar="DIR", help="where the data set's files are")


def _run_modality(run: str | Path) -> Modality:
    return modality_of(read_config(run))


# ------------------------------------------------------------------ train


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a tokenizer (VQ-VAE) or the VAE baseline")
    _add_data_flags(p)
    models = sorted({name for m in MODALITIES.values() for name in m.models})
    p.add_argument("--model", choices=models, default=None,
                   help="vqvae (default) or vae: the continuous baseline on the same networks (images)")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory")
    _add_modality_options(p, "train")
    for flag, (_, kind, text) in TRAIN_FLAGS.items():
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--max-steps", type=int, help="total steps of the run (default 250000)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="wall-time limit of this invocation's training loop, validation included")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None, help=PRECISION_HELP)
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    options = _modality_options(args, "train", modality)
    fields = {o.dest: o.field for o in modality.options.get("train", ()) if o.field}
    model = {fields[d]: v for d, v in options.items() if d in fields}
    data_options = {d: v for d, v in options.items() if d not in fields}
    known = {f.name for f in dataclasses.fields(modality.config_class(kind))}
    foreign = [f"--{k.replace('_', '-')}" for k in model if k not in known]
    if foreign:
        raise CLIError(f"{', '.join(foreign)} does not apply to --model {args.model or kind}")
    train = {field: getattr(args, _dest(flag)) for flag, (field, _, _) in TRAIN_FLAGS.items()}
    train.update(seed=args.seed, device=args.device, precision=args.precision)
    train = {k: v for k, v in train.items() if v is not None}
    if args.resume:
        _check_resume_matches(Path(args.out), args, modality, kind, model, data_options, train)
    else:
        if args.max_steps is not None:
            train["max_steps"] = args.max_steps
        train = {**modality.train_defaults, **train}
        start_run(args.out, args.data, model, TrainConfig(**train), model=args.model, data_dir=args.data_dir,
                  options=data_options, force=args.force, modality=modality)
    summary = train_tokenizer(args.out, max_steps=args.max_steps, time_budget=args.time_budget,
                              resume=args.resume, progress=not args.no_progress)
    state = "finished" if summary.finished else "stopped by the time budget"
    lines = [f"{state} at step {summary.step}; run directory: {summary.run}"]
    if summary.val and modality.summary(summary.val):
        lines.append("validation: " + modality.summary(summary.val))
    return "\n".join(lines)


def _check_resume_matches(run: Path, args, modality: Modality, kind: str, model: dict, data: dict,
                          train: dict) -> None:
    from vqvae.checkpoint import MODEL_FILE

    config = read_config(run)
    if not (run / MODEL_FILE).exists():
        raise CLIError(f"{run} has no checkpoint yet: start it again with --force")
    if args.model is not None and modality.models.get(args.model) != kind:
        raise CLIError(f"--model {args.model} differs from the run's model {kind}")
    if args.data is not None and args.data != config["data"]["spec"]:
        raise CLIError(f"--data {args.data} differs from the run's data {config['data']['spec']}")
    given = {("model", k): v for k, v in model.items()}
    given.update({("data", k): v for k, v in data.items()})
    given.update({("train", k): v for k, v in train.items() if k != "device"})
    changed = [f"{k}={v} (run has {config[s].get(k)})" for (s, k), v in given.items() if config[s].get(k) != v]
    if changed:
        raise CLIError(f"--resume continues the run as configured; these flags differ: {', '.join(changed)}")


# ------------------------------------------------------------------ using a run


def _add_run_commands(sub) -> None:
    p = sub.add_parser("evaluate", help="reconstruction and codebook metrics of a run; for speech, classifier "
                                        "accuracies on real, reconstructed, converted and sampled audio")
    p.add_argument("run", metavar="RUN")
    _add_data_flags(p)
    p.add_argument("--split", choices=["train", "val", "test"], help="default: test when the data have one, else val")
    p.add_argument("--prior", metavar="NAME",
                   help="image: with --bits-per-dim, also the latent term under this prior of the run; "
                        "speech: the prior whose digit-conditioned samples are judged")
    _add_modality_options(p, "evaluate")
    p.add_argument("--json", metavar="OUT", help="also write the metrics as JSON")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("encode", help="data -> integer codes (.npz with codes and labels)")
    p.add_argument("run", metavar="RUN")
    _add_data_flags(p)
    p.add_argument("--split", choices=["train", "val", "test"], help="default: train")
    p.add_argument("-o", "--out", required=True, help="output .npz file")
    p.add_argument("--device", default="cpu")
    _add_modality_options(p, "encode")
    p.set_defaults(func=_encode)

    p = sub.add_parser("decode", help="integer codes (.npz or .npy) -> images and a grid, or WAVs")
    p.add_argument("run", metavar="RUN")
    p.add_argument("codes", help=".npz (array 'codes') or .npy file")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    _add_modality_options(p, "decode")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_decode)

    p = sub.add_parser("reconstruct", help="originals beside their reconstructions: a PNG grid of "
                                           "images, or a folder of WAVs and spectrogram PNGs")
    p.add_argument("run", metavar="RUN")
    _add_data_flags(p)
    p.add_argument("--split", choices=["train", "val", "test"])
    p.add_argument("-n", type=int, help="number of items (default: images 32, clips 8)")
    p.add_argument("-o", "--out", required=True, help="output PNG (images) or folder (audio)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_reconstruct)


def _evaluate(args: argparse.Namespace) -> str:
    modality = _run_modality(args.run)
    metrics = modality.evaluate(Path(args.run), data=args.data, data_dir=args.data_dir, split=args.split,
                                batch_size=args.batch_size, device=args.device, prior=args.prior,
                                options=_modality_options(args, "evaluate", modality))
    return _report(metrics, args.json)


def _report(metrics: dict, json_path: str | None) -> str:
    from vqvae.atomic import write_json

    lines = [format_table(metrics)]
    if json_path:
        write_json(json_path, metrics)
        lines.append(f"wrote {json_path}")
    return "\n".join(lines)


def format_table(metrics: dict) -> str:
    width = max(len(k) for k in metrics)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for key, value in metrics.items():
        text = f"{value:.6g}" if isinstance(value, float) else str(value)
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)


def _encode(args: argparse.Namespace) -> str:
    from vqvae.runs import save_codes

    modality = _run_modality(args.run)
    file = modality.encode(Path(args.run), data=args.data, data_dir=args.data_dir, split=args.split,
                           device=args.device, options=_modality_options(args, "encode", modality))
    codes = file.rows() if file.lengths is not None else file.codes
    save_codes(args.out, codes, read_config(args.run)["model"]["codebook_size"], file.labels, **file.extras)
    return f"wrote {args.out}: codes {tuple(file.codes.shape)}, {len(file.codes)} items"


def _decode(args: argparse.Namespace) -> str:
    from vqvae.runs import load_codes

    modality = _run_modality(args.run)
    options = _modality_options(args, "decode", modality)
    return modality.decode(Path(args.run), load_codes(args.codes), Path(args.out), device=args.device,
                           options=options)


def _reconstruct(args: argparse.Namespace) -> str:
    modality = _run_modality(args.run)
    return modality.reconstruct(Path(args.run), Path(args.out), data=args.data, data_dir=args.data_dir,
                                split=args.split, n=args.n or modality.reconstruct_count, device=args.device)


# ------------------------------------------------------------------ priors


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


def _add_prior_commands(sub) -> None:
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
    _add_data_flags(p)
    p.add_argument("--batch-size", type=int, help="batch size (default 128)")
    p.add_argument("--lr", type=float, help="Adam learning rate, constant after 100 warm-up steps (default 2e-3)")
    p.add_argument("--max-steps", type=int, help="total steps of the run (default 100000)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="wall-time limit of this invocation's training loop, validation included")
    p.add_argument("--val-every", type=int, help="validate every N steps (default 500)")
    p.add_argument("--ema-decay", type=float,
                   help="decay of the moving average of the weights that validation and the saved "
                   "prior use (default 0.99; 0: the live weights)")
    p.add_argument("--grad-clip", type=float, help="clip the global gradient norm to this value (default: off)")
    _add_modality_options(p, "train-prior")
    p.add_argument("--seed", type=int, default=None, help="seed (default 0)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default=None, help=PRECISION_HELP)
    p.add_argument("--resume", action="store_true", help="continue the prior in RUN/priors/NAME")
    p.add_argument("--force", action="store_true", help="overwrite an existing prior of that name")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_train_prior)

    p = sub.add_parser("sample", help="sample codes from a prior and decode them (images or WAVs)")
    p.add_argument("run", metavar="RUN")
    p.add_argument("--prior", metavar="NAME", help="which prior (default: the run's only one)")
    p.add_argument("-n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--label", type=int, help="class index for a class-conditional prior (the digit for FSDD)")
    _add_modality_options(p, "sample")
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
    modality = _run_modality(args.run)
    options = _modality_options(args, "train-prior", modality)
    model = {k: v for k, v in (("width", args.width), ("depth", args.depth), ("heads", args.heads),
                               ("label_dropout", args.label_dropout)) if v is not None}
    if args.heads is not None and args.arch != "transformer":
        raise CLIError("--heads applies to --arch transformer only")
    train = {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr), ("seed", args.seed),
                               ("val_every", args.val_every), ("ema_decay", args.ema_decay),
                               ("grad_clip", args.grad_clip), ("device", args.device),
                               ("precision", args.precision)) if v is not None}
    if args.resume:
        if args.force:
            raise CLIError("--resume and --force contradict each other: choose one")
        settings = [f"--{k.replace('_', '-')}" for k in [*model, *train, *options] if k not in ("device", "precision")]
        if settings:
            raise CLIError(f"--resume continues the prior as configured: drop {', '.join(settings)}")
    else:
        if args.max_steps is not None:
            train["max_steps"] = args.max_steps
        start_prior_run(args.run, args.arch, name=name, model_settings=model,
                        train=dataclasses.replace(PRIOR_TRAIN, **train), data=args.data,
                        data_dir=args.data_dir, options=options, force=args.force)
    summary = train_prior(folder, max_steps=args.max_steps, time_budget=args.time_budget,
                          resume=args.resume, progress=not args.no_progress)
    state = "finished" if summary.finished else "stopped by the time budget"
    lines = [f"{state} at step {summary.step}; prior saved in {folder}"]
    if summary.val:
        lines.append(f"validation NLL: {summary.val['bits_per_code']:.4f} bits per code")
    return "\n".join(lines)


def _sampling(args: argparse.Namespace) -> dict:
    return {"temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p, "guidance": args.guidance}


def _sample(args: argparse.Namespace) -> str:
    from vqvae.generate import sample_codes

    modality = _run_modality(args.run)
    options = _modality_options(args, "sample", modality)
    codes, _ = sample_codes(args.run, args.n, prior=args.prior, label=args.label, seed=args.seed,
                            device=args.device, **_sampling(args))
    out = Path(args.out or Path(args.run) / "samples")
    return modality.write_samples(Path(args.run), codes, out, device=args.device, options=options)


def _evaluate_samples(args: argparse.Namespace) -> str:
    modality = _run_modality(args.run)
    report = modality.evaluate_samples(Path(args.run), prior=args.prior, per_class=args.per_class, real=args.real,
                                       sampling={**_sampling(args), "seed": args.seed}, device=args.device)
    return _report(report, args.json)


def _demo(args: argparse.Namespace) -> str:
    from vqvae.demo import run_demo

    return "\n".join(run_demo(args.out, seed=args.seed, time_budget=args.time_budget))


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from vqvae.train import TrainingInterrupted

    try:
        if getattr(args, "modality_command", False):
            message = args.func(args, _run_modality(args.run))
        else:
            message = args.func(args)
        if message:
            print(message)
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
