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
    "--hidden": ("hidden", int, "encoder/decoder width (default 256; audio: encoder 128)"),
    "--res-hidden": ("res_hidden", int, "width inside residual blocks (default 256; audio 128)"),
    "--residual-blocks": ("residual_blocks", int, "residual blocks (default 2; audio 1)"),
    "--downsamples": ("downsamples", int, "stride-2 convolutions: 2 gives 32x32 -> 8x8 (default 2; audio 6, one code per 64 samples)"),
    "--codebook-size": ("codebook_size", int, "K, number of codes (default 512)"),
    "--code-dim": ("code_dim", int, "D, code dimension (default 64)"),
    "--quantizer": ("quantizer", str, "ema (appendix A.1, default) or grad"),
    "--beta": ("beta", float, "commitment cost (default 0.25)"),
    "--decay": ("decay", float, "EMA decay (default 0.99)"),
    "--likelihood": ("likelihood", str, "decoder likelihood: mse (default), bernoulli, or for 8-bit data "
                     "and bits/dim logistic (discretised) or categorical (256-way)"),
    "--mixtures": ("mixtures", int, "components of the discretised logistic mixture (default 1)"),
    "--dead-code-window": ("dead_code_window", int, "re-seed codes unused this many steps (default 100)"),
    "--latent-dim": ("latent_dim", int, "VAE only: Gaussian latent channels per position (default 64)"),
    "--decoder": ("decoder", str, "conv (default) or pixelcnn: autoregressive over pixels, "
                  "conditioned on the latents; audio: spectral (default: predicts STFT frames "
                  "at the code rate, then an inverse STFT) or upsample (transposed convolutions "
                  "up to the sample rate)"),
    "--decoder-width": ("decoder_width", int, "PixelCNN decoder channels (default 64); audio: decoder channels at the code rate (default 256)"),
    "--decoder-depth": ("decoder_depth", int, "PixelCNN decoder gated layers (default 8); "
                        "audio: ConvNeXt blocks of the spectral decoder (default 8)"),
    "--speaker-dim": ("speaker_dim", int, "audio only: size of the learned speaker embedding (default 64)"),
    "--mel-weight": ("mel_weight", float, "audio only: weight of the log-mel term of the loss (default 1)"),
}
TRAIN_FLAGS = {
    "--batch-size": ("batch_size", int, "batch size (default 128)"),
    "--lr": ("lr", float, "Adam learning rate, constant (default 2e-4)"),
    "--val-every": ("val_every", int, "validate every N steps (default 1000)"),
    "--log-every": ("log_every", int, "log every N steps (default 50)"),
    "--checkpoint-every": ("checkpoint_every", int, "checkpoint every N steps (default 1000)"),
    "--ema-decay": ("ema_decay", float, "validate and save a moving average of the weights with "
                    "this decay, e.g. 0.999 (default: off, the live weights)"),
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
    p = sub.add_parser("convert", help="speech: re-speak WAV files with another speaker's voice")
    p.add_argument("run", metavar="RUN", help="a trained speech run")
    p.add_argument("inputs", nargs="+", metavar="IN.wav")
    p.add_argument("--speaker", required=True, help="target speaker (one of the run's)")
    p.add_argument("-o", "--out", required=True, help="output WAV for one input, else an output folder")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_convert)
    demo = sub.add_parser("demo", help="train a tokenizer on real digits, offline, into runs/demo")
    demo.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
    demo.add_argument("--time-budget", type=float, default=None, metavar="MINUTES",
                      help="cap the training time (default: the demo's fixed step count)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_demo)
    return parser


def _add_data_flags(p: argparse.ArgumentParser, required: bool) -> None:
    from vqvae.modalities.image.data import image_datasets
    from vqvae.modalities.speech.data import audio_datasets

    registered = {**image_datasets(), **audio_datasets()}
    names = ", ".join(f"{name} ({desc})" for name, desc in registered.items())
    p.add_argument("--data", required=required, metavar="SPEC",
                   help=f"a registered data set, or a path to a folder (or tar) of images or of WAV "
                        f"files (audio trains the speech model). Registered: {names}")
    p.add_argument("--data-dir", metavar="DIR", help="where the data set's files are")


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train a tokenizer (VQ-VAE) or the VAE baseline")
    _add_data_flags(p, required=False)
    p.add_argument("--model", choices=["vqvae", "vae"], default=None,
                   help="vqvae (default) or vae: the continuous baseline on the same networks")
    p.add_argument("--out", required=True, metavar="RUN", help="run directory")
    p.add_argument("--image-size", type=int, help="resize and centre-crop images to N x N")
    p.add_argument("--sample-rate", type=int, help="audio: resample every clip to this rate (default 8000)")
    p.add_argument("--segment", type=int, metavar="SAMPLES",
                   help="audio: samples per training crop, a multiple of 64 (default 0.5 s)")
    for flag, (_, kind, text) in {**MODEL_FLAGS, **TRAIN_FLAGS}.items():
        p.add_argument(flag, type=kind, help=text)
    p.add_argument("--kmeans-init", action=argparse.BooleanOptionalAction, default=None,
                   help="start the codebook from k-means on the first batch (default on)")
    p.add_argument("--content-norm", choices=["none", "output", "layers"], default=None,
                   help="audio: instance-normalise the encoder over each clip after each strided "
                        "convolution and at its output (layers, the default), at its output only "
                        "(output), or not (none)")
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
    p = sub.add_parser("evaluate", help="reconstruction and codebook metrics of a run; for speech, "
                                        "classifier accuracies on real, reconstructed, converted and sampled audio")
    p.add_argument("run", metavar="RUN")
    _add_data_flags(p, required=False)
    p.add_argument("--split", choices=["train", "val", "test"],
                   help="default: test when the data have one, else val")
    p.add_argument("--bits-per-dim", action="store_true",
                   help="also the negative ELBO in bits per dimension, with its reconstruction and "
                        "latent terms (needs --likelihood logistic or categorical)")
    p.add_argument("--prior", metavar="NAME",
                   help="with --bits-per-dim: also the latent term under this prior of the run; "
                        "speech: the prior whose digit-conditioned samples are judged")
    p.add_argument("--classifier-steps", type=int, default=1500,
                   help="speech: training steps of the digit and speaker classifiers (default 1500)")
    p.add_argument("--samples-per-digit", type=int, default=20,
                   help="speech: digit-conditioned samples per digit when the run has a prior (default 20)")
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
    p.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="auto",
                   help="images: auto (default) encodes under bf16 autocast where the hardware "
                   "computes bf16 natively, as training does (faster; a few codes differ); "
                   "fp32 gives the exact codes")
    p.set_defaults(func=_encode)

    p = sub.add_parser("decode", help="integer codes (.npz or .npy) -> images and a grid, or WAVs")
    p.add_argument("run", metavar="RUN")
    p.add_argument("codes", help=".npz (array 'codes') or .npy file")
    p.add_argument("-o", "--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--speaker", help="speech: the voice to decode with (default: the file's speakers)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_decode)

    p = sub.add_parser("reconstruct", help="originals beside their reconstructions: a PNG grid of "
                                           "images, or a folder of WAVs and spectrogram PNGs")
    p.add_argument("run", metavar="RUN")
    _add_data_flags(p, required=False)
    p.add_argument("--split", choices=["train", "val", "test"])
    p.add_argument("-n", type=int, help="number of images (default 32) or clips (default 8)")
    p.add_argument("-o", "--out", required=True, help="output PNG (images) or folder (audio)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=_reconstruct)


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


def _add_prior(sub) -> None:
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
    _add_data_flags(p, required=False)
    p.add_argument("--batch-size", type=int, help="batch size (default 128)")
    p.add_argument("--lr", type=float, help="Adam learning rate, constant after 100 warm-up steps (default 2e-3)")
    p.add_argument("--max-steps", type=int, help="total steps of the run (default 100000)")
    p.add_argument("--time-budget", type=float, metavar="MINUTES",
                   help="wall-time limit of this invocation's training loop, validation included")
    p.add_argument("--val-every", type=int, help="validate every N steps (default 500)")
    p.add_argument("--ema-decay", type=float,
                   help="decay of the moving average of the weights that validation and the saved "
                   "prior use (default 0.99; 0: the live weights)")
    p.add_argument("--window", type=float, metavar="SECONDS",
                   help="speech runs: the prior models windows of this many seconds of codes (default 1)")
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
    p.add_argument("--label", type=int, help="class index for a class-conditional prior (the digit for FSDD)")
    p.add_argument("--speaker", help="speech: the voice of the samples (default: the speakers in turn)")
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


# ------------------------------------------------------------------ commands


def _train(args: argparse.Namespace) -> None:
    import dataclasses

    from vqvae.checkpoint import read_config
    from vqvae.modalities.speech.data import is_audio
    from vqvae.train import SPEECH_TRAIN, TOKENIZERS, TrainConfig, start_run, train_tokenizer

    model = {field: getattr(args, _dest(flag)) for flag, (field, _, _) in MODEL_FLAGS.items()}
    model["kmeans_init"] = args.kmeans_init
    model["content_norm"] = args.content_norm
    model = {k: v for k, v in model.items() if v is not None}
    if args.resume:
        kind = read_config(args.out)["kind"]
    elif args.data and is_audio(args.data, args.data_dir):
        kind = "speech"
    else:
        kind = args.model or "vqvae"
    if kind not in TOKENIZERS:
        raise CLIError(f"{args.out} holds a {kind!r} run, which vqvae train does not continue")
    if kind == "speech" and args.model not in (None, "vqvae"):
        raise CLIError(f"--model {args.model} is for images: audio data train the speech VQ-VAE")
    fields = {f.name for f in dataclasses.fields(TOKENIZERS[kind][1])}
    foreign = [f"--{k.replace('_', '-')}" for k in model if k not in fields]
    if foreign:
        what = "audio data" if kind == "speech" else f"--model {kind}"
        raise CLIError(f"{', '.join(foreign)} does not apply to {what}")
    audio = {k: v for k, v in (("sample_rate", args.sample_rate), ("segment", args.segment)) if v is not None}
    if audio and kind != "speech":
        raise CLIError(f"{', '.join('--' + k.replace('_', '-') for k in audio)} applies to audio data only")
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
        if kind == "speech":
            if args.image_size is not None:
                raise CLIError("--image-size applies to images, not audio")
            train = {**SPEECH_TRAIN, **train}
        start_run(args.out, args.data, model, TrainConfig(**train), model="vqvae" if kind == "speech" else kind,
                  data_dir=args.data_dir, image_size=args.image_size, audio=audio, force=args.force)
    summary = train_tokenizer(args.out, max_steps=args.max_steps, time_budget=args.time_budget,
                              resume=args.resume, progress=not args.no_progress)
    state = "finished" if summary.finished else "stopped by the time budget"
    print(f"{state} at step {summary.step}; run directory: {summary.run}")
    val = summary.val or {}
    if kind == "speech" and val:
        print(f"validation: reconstruction loss (STFT + mel + waveform) {val['reconstruction_loss']:.4f}, "
              f"perplexity {val['perplexity']:.1f}, codes used {val['codes_used']}")
        return
    parts = [f"NMSE {val['nmse']:.4f}, PSNR {val['psnr']:.2f} dB"] if "nmse" in val else []
    if "perplexity" in val:
        parts.append(f"perplexity {val['perplexity']:.1f}, codes used {val['codes_used']}")
    if "bits_per_dim" in val:
        parts.append(f"{val['bits_per_dim']:.3f} bits/dim ({val['reconstruction_bits_per_dim']:.3f} "
                     f"reconstruction + {val['latent_bits_per_dim']:.3f} latent)")
    if parts:
        print("validation: " + "; ".join(parts))


def _check_resume_matches(run: Path, args, model: dict, train: dict) -> None:
    from vqvae.checkpoint import MODEL_FILE, read_config

    config = read_config(run)
    if not (run / MODEL_FILE).exists():
        raise CLIError(f"{run} has no checkpoint yet: start it again with --force")
    given = {("model", k): v for k, v in model.items()}
    given.update({("train", k): v for k, v in train.items() if k != "device"})
    recorded_data = config["data"]
    if args.model is not None and args.model != config["kind"]:
        raise CLIError(f"--model {args.model} differs from the run's model {config['kind']}")
    if args.data is not None and args.data != recorded_data["spec"]:
        raise CLIError(f"--data {args.data} differs from the run's data {recorded_data['spec']}")
    if args.image_size is not None and args.image_size != recorded_data.get("image_size"):
        raise CLIError(f"--image-size {args.image_size} differs from the run's {recorded_data.get('image_size')}")
    changed = [f"{k}={v} (run has {config[s][k]})" for (s, k), v in given.items() if config[s].get(k) != v]
    if changed:
        raise CLIError(f"--resume continues the run as configured; these flags differ: {', '.join(changed)}")


def _is_speech(run: str) -> bool:
    from vqvae.checkpoint import read_config

    return read_config(run)["kind"] == "speech"


def _evaluate(args: argparse.Namespace) -> None:
    from vqvae.checkpoint import write_json
    from vqvae.tokenizer import evaluate_run

    if _is_speech(args.run):
        from vqvae.modalities.speech.run import evaluate_speech_run

        if args.bits_per_dim:
            raise CLIError("--bits-per-dim is for 8-bit images; a speech run reports classifier accuracies")
        metrics = evaluate_speech_run(args.run, args.data, args.data_dir, args.split, args.device, prior=args.prior,
                                      samples_per_class=args.samples_per_digit,
                                      classifier_steps=args.classifier_steps)
        print(format_table(metrics))
        if args.json:
            write_json(args.json, metrics)
            print(f"wrote {args.json}")
        return
    metrics = evaluate_run(args.run, args.data, args.data_dir, args.split, args.batch_size, args.device,
                           bits_per_dim=args.bits_per_dim, prior=args.prior)
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

    if _is_speech(args.run):
        from vqvae.checkpoint import load
        from vqvae.modalities.speech.run import (
            encode_clips,
            run_speakers,
            save_audio_codes,
            speech_data,
        )

        audio = speech_data(args.run, args.data, args.data_dir, args.split, default_split="train")
        rows = encode_clips(load(args.run, args.device), audio.waveforms, device=args.device)
        save_audio_codes(args.out, rows, audio.labels, run_speakers(args.run, audio))
        print(f"wrote {args.out}: {len(rows)} clips, {sum(r.numel() for r in rows)} codes")
        return
    codes, labels = encode_run(args.run, args.data, args.data_dir, args.split, device=args.device,
                               precision=args.precision)
    save_codes(args.out, codes, labels, read_config(args.run)["model"]["codebook_size"])
    print(f"wrote {args.out}: codes {tuple(codes.shape)}, labels {tuple(labels.shape)}")


def _decode(args: argparse.Namespace) -> None:
    from vqvae.tokenizer import decode_codes, load_codes, write_images

    if _is_speech(args.run):
        from vqvae.modalities.speech.run import decode_audio_file

        paths = decode_audio_file(args.run, args.codes, args.out, args.speaker, args.device)
        print(f"wrote {len(paths)} WAV files to {args.out}")
        return
    if args.speaker is not None:
        raise CLIError("--speaker applies to speech runs only")
    codes, _ = load_codes(args.codes)
    images = decode_codes(args.run, codes, device=args.device)
    grid = write_images(images, args.out)
    print(f"wrote {len(images)} images and {grid}")


def _reconstruct(args: argparse.Namespace) -> None:
    from vqvae.tokenizer import reconstruction_grid

    if _is_speech(args.run):
        from vqvae.modalities.speech.run import reconstruct_audio

        out = reconstruct_audio(args.run, args.out, args.data, args.data_dir, args.split, args.n or 8, args.device)
        print(f"wrote originals, reconstructions and spectrograms to {out}")
        return
    path = reconstruction_grid(args.run, args.out, args.data, args.data_dir, args.split, args.n or 32, args.device)
    print(f"wrote {path}")


def _train_prior(args: argparse.Namespace) -> None:
    import dataclasses

    from vqvae.train import PRIOR_TRAIN, start_prior_run, train_prior

    name = args.name or args.arch
    folder = Path(args.run) / "priors" / name
    model = {k: v for k, v in (("width", args.width), ("depth", args.depth), ("heads", args.heads),
                               ("label_dropout", args.label_dropout)) if v is not None}
    if args.heads is not None and args.arch != "transformer":
        raise CLIError("--heads applies to --arch transformer only")
    train = {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr), ("seed", args.seed),
                               ("val_every", args.val_every), ("ema_decay", args.ema_decay),
                               ("device", args.device),
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
                        data_dir=args.data_dir, window=args.window, force=args.force)
    summary = train_prior(folder, max_steps=args.max_steps, time_budget=args.time_budget,
                          resume=args.resume, progress=not args.no_progress)
    state = "finished" if summary.finished else "stopped by the time budget"
    print(f"{state} at step {summary.step}; prior saved in {folder}")
    if summary.val:
        print(f"validation NLL: {summary.val['bits_per_code']:.4f} bits per code")


def _sample(args: argparse.Namespace) -> None:
    from vqvae.generate import sample_images, write_samples

    if _is_speech(args.run):
        _sample_speech(args)
        return
    if args.speaker is not None:
        raise CLIError("--speaker applies to speech runs only")
    codes, images = sample_images(args.run, args.n, prior=args.prior, label=args.label,
                                  temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                  guidance=args.guidance, seed=args.seed, device=args.device)
    out = args.out or Path(args.run) / "samples"
    grid = write_samples(codes, images, out)
    print(f"wrote {len(codes)} samples to {out} ({grid})")


def _sample_speech(args: argparse.Namespace) -> None:
    import io

    import numpy as np

    from vqvae.checkpoint import read_config, write_bytes
    from vqvae.modalities.speech.data import write_wav
    from vqvae.modalities.speech.run import sample_speech

    codes, audio = sample_speech(args.run, args.n, prior=args.prior, label=args.label, speaker=args.speaker,
                                 temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                                 guidance=args.guidance, seed=args.seed, device=args.device)
    out = Path(args.out or Path(args.run) / "samples")
    rate = read_config(args.run)["data"]["sample_rate"]
    for i, clip in enumerate(audio):
        write_wav(out / f"{i:06d}.wav", clip, rate)
    buffer = io.BytesIO()
    np.save(buffer, codes.numpy().astype(np.int16))
    write_bytes(out / "codes.npy", buffer.getvalue())
    print(f"wrote {len(audio)} WAV samples and codes.npy to {out}")


def _convert(args: argparse.Namespace) -> None:
    from vqvae.modalities.speech.run import convert_files

    if not _is_speech(args.run):
        raise CLIError(f"{args.run} is not a speech run: convert re-speaks audio with a speech VQ-VAE")
    paths = convert_files(args.run, args.inputs, args.speaker, args.out, args.device)
    print(f"wrote {paths[0] if len(paths) == 1 else f'{len(paths)} files to {args.out}'}")


def _evaluate_samples(args: argparse.Namespace) -> None:
    from vqvae.checkpoint import write_json
    from vqvae.generate import evaluate_samples

    report = evaluate_samples(args.run, prior=args.prior, per_class=args.per_class, real=args.real,
                              temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                              guidance=args.guidance, seed=args.seed, device=args.device)
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
