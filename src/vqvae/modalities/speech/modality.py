"""Speech: 1-D code sequences from raw audio, conditioned on speakers (the paper's §4.3)."""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import Tensor, nn

from vqvae.modalities.base import Modality, Option
from vqvae.modalities.options import encoder_options, quantizer_options
from vqvae.modalities.speech import evaluation, retrieval, run
from vqvae.modalities.speech.data import audio_datasets, is_audio, load_audio
from vqvae.modalities.speech.model import SpeechVQVAEConfig
from vqvae.modalities.speech.task import SPEECH_SEGMENT_SECONDS, SPEECH_TRAIN, SpeechTask
from vqvae.runs import CodeFile
from vqvae.train import LoopState, TrainConfig

TRAIN_OPTIONS = (
    *encoder_options(256, 128, 1, "6 gives one code per 64 samples (default 6)"),
    *quantizer_options(1024),
    Option("--decoder", "spectral (default: predicts STFT frames at the code rate, then an inverse "
           "STFT) or upsample (transposed convolutions up to the sample rate)", str, field="decoder"),
    Option("--decoder-width", "decoder channels at the code rate (default 256)", int, field="decoder_width"),
    Option("--decoder-depth", "ConvNeXt blocks of the spectral decoder (default 8)", int, field="decoder_depth"),
    Option("--speaker-dim", "size of the learned speaker embedding (default 64)", int, field="speaker_dim"),
    Option("--mel-weight", "weight of the log-mel term of the loss (default 1)", float, field="mel_weight"),
    Option("--content-norm", "instance-normalise the encoder over each clip after each strided "
           "convolution and at its output (layers, the default), at its output only (output), or not "
           "(none)", str, choices=("none", "output", "layers"), field="content_norm"),
    Option("--jitter", "while training, replace each code step the decoder sees by a neighbour with this "
           "probability (default 0.12; 0 turns it off)", float, field="jitter"),
    Option("--sample-rate", "resample every clip to this rate (default 8000)", int),
    Option("--segment", "samples per training crop, a multiple of 64 (default 0.5 s)", int),
)
SPEAKER = Option("--speaker", "the voice (one of the run's speakers; default: the code file's speakers, "
                 "or the speakers in turn for samples)")


class SpeechModality(Modality):
    name = "speech"
    models = {"vqvae": "speech"}
    train_defaults = SPEECH_TRAIN
    options = {
        "train": TRAIN_OPTIONS,
        "evaluate": (
            Option("--classifier-steps", "training steps of the digit and speaker classifiers (default 1500)", int),
            Option("--samples-per-digit", "digit-conditioned samples per digit when the run has a prior "
                   "(default 20)", int),
        ),
        "decode": (SPEAKER,),
        "sample": (SPEAKER,),
        "train-prior": (Option("--window", "the prior models windows of this many seconds of codes (default 1)",
                               float),),
    }

    def datasets(self) -> dict[str, str]:
        return audio_datasets()

    def recognises(self, spec: str, data_dir: str | None) -> bool:
        return is_audio(spec, data_dir)

    def start(self, kind: str, spec: str, data_dir: str | None, model: dict, train: TrainConfig,
              options: dict) -> dict:
        data = load_audio(spec, "train", data_dir=data_dir, sample_rate=options.get("sample_rate"))
        rate = data.sample_rate
        settings = SpeechVQVAEConfig(**{"sample_rate": rate, "num_speakers": len(data.speaker_names),
                                        "seed": train.seed, **model})
        hop = settings.hop
        segment = options.get("segment") or max(hop, round(SPEECH_SEGMENT_SECONDS * rate / hop) * hop)
        if segment < hop or segment % hop:
            raise ValueError(f"--segment must be a positive multiple of {hop} samples (one code per {hop}), "
                             f"got {segment}")
        return {
            "model": settings.to_dict(),
            "data": {
                "spec": spec,
                "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
                "sample_rate": rate,
                "segment": segment,
                "train_clips": len(data),
                "classes": list(data.classes),
                "speakers": list(data.speaker_names),
            },
        }

    def config_class(self, kind: str) -> type:
        self.check_kind(kind)
        return SpeechVQVAEConfig

    def build(self, config: dict) -> nn.Module:
        self.check_kind(config["kind"])
        return run.build_speech(config)

    def task(self, state: LoopState, config: dict) -> SpeechTask:
        data = config["data"]
        load = {"data_dir": data["data_dir"], "sample_rate": data["sample_rate"]}
        return SpeechTask(state, load_audio(data["spec"], "train", **load), load_audio(data["spec"], "val", **load),
                          data)

    def summary(self, val: dict) -> str:
        return (f"reconstruction loss (STFT + mel + waveform) {val['reconstruction_loss']:.4f}, "
                f"perplexity {val['perplexity']:.1f}, codes used {val['codes_used']}")

    # ---------------------------------------------------------------- using a run

    def evaluate(self, run_dir, *, data, data_dir, split, batch_size, device, prior, options) -> dict:
        return evaluation.evaluate_speech_run(
            run_dir, data, data_dir, split, device, prior=prior,
            samples_per_class=options.get("samples_per_digit", 20),
            classifier_steps=options.get("classifier_steps", evaluation.CLASSIFIER_STEPS))

    def encode(self, run_dir, *, data, data_dir, split, device, options) -> CodeFile:
        return run.encode_audio(run_dir, data, data_dir, split, device)

    def decode(self, run_dir, codes: CodeFile, out: Path, *, device, options) -> str:
        paths = run.decode_audio_file(run_dir, codes, out, options.get("speaker"), device)
        return f"wrote {len(paths)} WAV files to {out}"

    def reconstruct(self, run_dir, out: Path, *, data, data_dir, split, n, device) -> str:
        folder = run.reconstruct_audio(run_dir, out, data, data_dir, split, n, device)
        return f"wrote originals, reconstructions and spectrograms to {folder}"

    # ---------------------------------------------------------------- stage 2

    def prior_shape(self, config: dict, options: dict) -> tuple[int, ...]:
        window = options.get("window")
        if window is not None and not window > 0:
            raise ValueError(f"--window must be a positive number of seconds, got {window}")
        model = SpeechVQVAEConfig.from_dict(config["model"])
        return (max(1, round((window or 1.0) * model.sample_rate / model.hop)),)

    def prior_codes(self, run_dir, split, data, data_dir, shape) -> tuple[Tensor, Tensor | None]:
        return run.code_windows(run_dir, split, shape[0], data, data_dir)

    def write_samples(self, run_dir, codes: Tensor, out: Path, *, device, options) -> str:
        paths = run.write_samples(run_dir, codes, out, options.get("speaker"), device)
        return f"wrote {len(paths)} WAV samples and codes.npy to {out}"

    def report_media(self, run_dir, *, device, samples_per_class, seed) -> list:
        from vqvae.modalities.speech.report import report_sections

        return report_sections(Path(run_dir), device, samples_per_class, seed)

    # ---------------------------------------------------------------- retrieval

    def retrieval_items(self, run_dir, *, data, data_dir, split, device, batch_size=32):
        return retrieval.retrieval_items(run_dir, data, data_dir, split, device, batch_size)

    def query_items(self, run_dir, queries, *, names, device):
        return retrieval.query_items(run_dir, queries, names, device)

    def read_query(self, run_dir, path):
        return retrieval.read_query(run_dir, path)

    def retrieval_media(self, run_dir, data, rows):
        return retrieval.retrieval_media(run_dir, data, rows)

    def write_search_results(self, run_dir, queries, hits, out):
        return retrieval.write_hits(run_dir, queries, hits, out)

    # ---------------------------------------------------------------- own commands

    def add_commands(self, sub) -> None:
        p = sub.add_parser("convert", help="speech: re-speak WAV files with another speaker's voice")
        p.add_argument("run", metavar="RUN", help="a trained speech run")
        p.add_argument("inputs", nargs="+", metavar="IN.wav")
        p.add_argument("--speaker", required=True, help="target speaker (one of the run's)")
        p.add_argument("-o", "--out", required=True, help="output WAV for one input, else an output folder")
        p.add_argument("--device", default="cpu")
        p.set_defaults(func=self._convert, modality_command=True)

    def _convert(self, args: argparse.Namespace, modality: Modality) -> str:
        if modality is not self:
            raise ValueError(f"{args.run} is not a speech run: convert re-speaks audio with a speech VQ-VAE")
        paths = run.convert_files(args.run, args.inputs, args.speaker, args.out, args.device)
        return f"wrote {paths[0] if len(paths) == 1 else f'{len(paths)} files to {args.out}'}"
