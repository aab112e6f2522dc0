"""Images: 2-D code grids; the VQ-VAE of the paper's §4.1 and the continuous VAE baseline."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from vqvae.autoencoder import MODELS
from vqvae.code_shards import concat_codes
from vqvae.data.errors import DataError
from vqvae.modalities.base import Modality, Option
from vqvae.modalities.image import evaluation, retrieval, stream
from vqvae.modalities.image.data import ImageData, image_datasets, load_images
from vqvae.modalities.image.outputs import write_images, write_samples
from vqvae.modalities.image.task import IMAGE_MODEL, IMAGE_TRAIN, ImageTask
from vqvae.modalities.options import encoder_options, quantizer_options
from vqvae.nets import ENCODER_NORMS
from vqvae.runs import CodeFile
from vqvae.train import LoopState, TrainConfig

TRAIN_OPTIONS = (
    *encoder_options(256, 256, 2, "2 gives 32x32 -> 8x8 (default 2)"),
    *quantizer_options(decay="0.95; 0.99 with --schedule constant"),
    Option("--encoder-norm", "none (default, the paper's encoder) or group: group normalisation after each "
           "strided and the 3x3 convolution of the encoder (better per step, slower per step on CPUs)", str,
           choices=ENCODER_NORMS, field="encoder_norm"),
    Option("--likelihood", "decoder likelihood: mse (default), bernoulli, or for 8-bit data and "
           "bits/dim logistic (discretised) or categorical (256-way)", str, field="likelihood"),
    Option("--mixtures", "components of the discretised logistic mixture (default 1)", int, field="mixtures"),
    Option("--latent-dim", "VAE only: Gaussian latent channels per position (default 64)", int, field="latent_dim"),
    Option("--decoder", "conv (default) or pixelcnn: autoregressive over pixels, conditioned on the "
           "latents", str, field="decoder"),
    Option("--decoder-width", "PixelCNN decoder channels (default 64)", int, field="decoder_width"),
    Option("--decoder-depth", "PixelCNN decoder gated layers (default 8)", int, field="decoder_depth"),
    Option("--image-size", "resize and centre-crop images to N x N", int),
    Option("--workers", "shard data ('DIR/train-{000000..000099}.tar'): DataLoader processes that read "
           "and decode the shards of each process (default 2; 0 reads in the training process)", int),
)


class ImageModality(Modality):
    name = "image"
    models = {"vqvae": "vqvae", "vae": "vae"}
    fallback = True  # the image loaders' errors explain unknown names and paths
    reconstruct_count = 32
    train_defaults = IMAGE_TRAIN
    model_defaults = IMAGE_MODEL
    options = {
        "train": TRAIN_OPTIONS,
        "evaluate": (Option("--bits-per-dim", "also the negative ELBO in bits per dimension, with its "
                            "reconstruction and latent terms (needs --likelihood logistic or categorical)",
                            None, switch="on"),),
        "encode": (Option("--precision", "auto (default) encodes under bf16 autocast where the hardware "
                          "computes bf16 natively, as training does (faster; a few codes differ); fp32 "
                          "gives the exact codes", str, choices=("fp32", "bf16", "auto")),),
    }

    def datasets(self) -> dict[str, str]:
        return image_datasets()

    def start(self, kind: str, spec: str, data_dir: str | None, model: dict, train: TrainConfig,
              options: dict) -> dict:
        if stream.is_shard_pattern(spec):
            return self._start_stream(kind, spec, model, train, options)
        if options.get("workers") is not None:
            raise DataError(f"--workers applies to shard data ('DIR/train-{{000000..000099}}.tar'), not to "
                            f"{spec!r}, which is read into memory")
        image_size = options.get("image_size")
        data = load_images(spec, "train", data_dir=data_dir, image_size=image_size)
        variance = data.pixel_variance()
        settings = self._settings(kind, data.images.shape[1], variance, train.seed, model)
        MODELS[kind][0](settings).latent_shape(tuple(data.images.shape[2:]))  # fails early on bad sizes
        return {
            "model": settings.to_dict(),
            "data": {
                "spec": spec,
                "data_dir": str(Path(data_dir).resolve()) if data_dir else None,
                "image_size": image_size,
                "shape": list(data.images.shape[1:]),
                "variance": variance,
                "train_images": len(data),
                "classes": list(data.classes),
            },
        }

    def _start_stream(self, kind: str, pattern: str, model: dict, train: TrainConfig, options: dict) -> dict:
        if options.get("image_size") is not None:
            raise DataError("--image-size does not apply to shard data: resize when writing the shards "
                            "(vqvae shard --image-size)")
        workers = 2 if options.get("workers") is None else options["workers"]
        if workers < 0:
            raise DataError(f"--workers must be 0 or more, got {workers}")
        shards = stream.expand_shards(pattern)
        stream.val_shards(pattern)  # fails early when there is no held-out set
        images, _ = stream.read_samples(shards, stream.VARIANCE_SAMPLES)
        sample = ImageData(torch.from_numpy(images), None, (), pattern, "train")
        variance = sample.pixel_variance()  # of the first samples in shard order
        settings = self._settings(kind, images.shape[1], variance, train.seed, model)
        MODELS[kind][0](settings).latent_shape(tuple(images.shape[2:]))  # fails early on bad sizes
        info = stream.shard_info(pattern)
        return {
            "model": settings.to_dict(),
            "data": {"spec": pattern, "data_dir": None, "image_size": None, "shape": list(images.shape[1:]),
                     "variance": variance, "train_images": info.get("counts", {}).get("train"),
                     "classes": list(info.get("classes", [])), "workers": workers},
        }

    def _settings(self, kind: str, channels: int, variance: float, seed: int, model: dict):
        """A new run's model config: the data's channels and pixel variance, then the flags."""
        return self.config_class(kind)(**{"in_channels": channels, "data_variance": variance, "seed": seed,
                                          **model})

    def config_class(self, kind: str) -> type:
        self.check_kind(kind)
        return MODELS[kind][1]

    def build(self, config: dict) -> nn.Module:
        self.check_kind(config["kind"])
        model_cls, config_cls = MODELS[config["kind"]]
        return model_cls(config_cls.from_dict(config["model"]))

    def task(self, state: LoopState, config: dict) -> ImageTask:
        data = config["data"]
        if stream.is_shard_pattern(data["spec"]):
            val = stream.shard_val_data(data["spec"], state.train.val_images)
            return stream.StreamImageTask(state, data["spec"], val, data["variance"], data["shape"],
                                          data.get("workers", 2))
        load = {"data_dir": data["data_dir"], "image_size": data["image_size"]}
        return ImageTask(state, load_images(data["spec"], "train", **load), load_images(data["spec"], "val", **load),
                         data["variance"])

    def summary(self, val: dict) -> str:
        parts = [f"NMSE {val['nmse']:.4f}, PSNR {val['psnr']:.2f} dB"] if "nmse" in val else []
        if "perplexity" in val:
            parts.append(f"perplexity {val['perplexity']:.1f}, codes used {val['codes_used']}")
        if "bits_per_dim" in val:
            parts.append(f"{val['bits_per_dim']:.3f} bits/dim ({val['reconstruction_bits_per_dim']:.3f} "
                         f"reconstruction + {val['latent_bits_per_dim']:.3f} latent)")
        return "; ".join(parts)

    # ---------------------------------------------------------------- using a run

    def evaluate(self, run, *, data, data_dir, split, batch_size, device, prior, options) -> dict:
        return evaluation.evaluate_run(self.load, run, data, data_dir, split, batch_size, device,
                                       bits_per_dim=bool(options.get("bits_per_dim")), prior=prior)

    def encode(self, run, *, data, data_dir, split, device, options) -> CodeFile:
        return concat_codes(list(self.encode_part(run, data=data, data_dir=data_dir, split=split, device=device,
                                                  options=options, rank=0, world=1)))

    def encode_part(self, run, *, data, data_dir, split, device, options, rank, world, batch_size=256):
        return evaluation.encode_part(self.load, run, data, data_dir, split, device,
                                      options.get("precision", "auto"), rank, world, batch_size)

    def decode(self, run, codes: CodeFile, out: Path, *, device, options) -> str:
        images = evaluation.decode_codes(self.load(run, device), codes.codes, device=device)
        grid = write_images(images, out)
        return f"wrote {len(images)} images and {grid}"

    def reconstruct(self, run, out: Path, *, data, data_dir, split, n, device) -> str:
        images = evaluation.run_data(run, data, data_dir, split, limit=n).images[:n]
        return f"wrote {evaluation.reconstruction_grid(self.load(run, device), images, out, device)}"

    # ---------------------------------------------------------------- stage 2

    def prior_shape(self, config: dict, options: dict) -> tuple[int, ...]:
        return self.build(config).latent_shape(tuple(config["data"]["shape"][1:]))

    def prior_codes(self, run, split, data, data_dir, shape) -> tuple[Tensor, Tensor | None]:
        return evaluation.cached_codes(self.load, run, split, data, data_dir)

    def write_samples(self, run, codes: Tensor, out: Path, *, device, options) -> str:
        images = evaluation.decode_codes(self.load(run, device), codes, device=device)
        return f"wrote {len(codes)} samples to {out} ({write_samples(codes, images, out)})"

    def evaluate_samples(self, run, *, prior, per_class, real, sampling, device) -> dict:
        sampling = dict(sampling)
        seed = sampling.pop("seed", 0)
        return evaluation.evaluate_samples(self.load, run, prior=prior, per_class=per_class, real=real,
                                           sampling=sampling, seed=seed, device=device)

    def report_codes(self, run, n, device) -> CodeFile:
        from vqvae.modalities.image.report import held_out_codes

        return held_out_codes(self.load, Path(run), n, device)

    def report_media(self, run, *, device, samples_per_class, seed) -> list:
        from vqvae.modalities.image.report import report_sections

        return report_sections(self.load, Path(run), device, samples_per_class, seed)

    # ---------------------------------------------------------------- retrieval

    def retrieval_items(self, run, *, data, data_dir, split, device, batch_size=256):
        return retrieval.retrieval_items(self.load, run, data, data_dir, split, device, batch_size)

    def query_items(self, run, queries, *, names, device):
        return retrieval.query_items(self.load, run, queries, names, device)

    def read_query(self, run, path):
        return retrieval.read_query(run, path)

    def retrieval_media(self, run, data, rows):
        return retrieval.retrieval_media(run, data, rows)

    def write_search_results(self, run, queries, hits, out):
        return retrieval.write_contact_sheet(queries, hits, out)
