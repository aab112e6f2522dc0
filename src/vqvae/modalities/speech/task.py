"""Training the speech VQ-VAE: random crops of the clips, conditioned on their speakers."""

from __future__ import annotations

import torch

from vqvae.modalities.speech.data import AudioData
from vqvae.quantize import codebook_perplexity
from vqvae.train import BatchOrder, LoopState

# A new speech run's defaults: batches of 32 crops, and the recipe measured on the 15-minute
# FSDD command (docs/training.md#choosing-the-recipe): a cosine decay from a 2e-3 peak
# after 200 warm-up steps, against the constant 1e-3 of earlier releases.
SPEECH_TRAIN = {"batch_size": 32, "lr": 2e-3, "schedule": "cosine", "warmup_steps": 200, "val_every": 500,
                "val_images": 300, "checkpoint_every": 500}
SPEECH_SEGMENT_SECONDS = 0.5  # training crops; FSDD clips are 0.1-2.3 s, most under 0.6 s


def speaker_indices(data: AudioData, speakers: list[str]) -> torch.Tensor | None:
    """Speakers of ``data`` as indices into the run's speaker list (None without speakers)."""
    if not speakers:
        return None
    if data.speakers is None:
        raise ValueError(f"{data.source} has no speakers but the run was trained on {speakers}")
    position = {name: i for i, name in enumerate(speakers)}
    unknown = sorted(set(data.speaker_names) - set(position))
    if unknown:
        raise ValueError(f"{data.source} has speakers {unknown} the run does not know (it knows {speakers})")
    mapping = torch.tensor([position[name] for name in data.speaker_names])
    return mapping[data.speakers]


class SpeechTask:
    """Training the speech VQ-VAE on random crops of the clips, speaker-conditioned."""

    name = "train"
    panels = [("reconstruction_loss", "Reconstruction loss (STFT + mel + waveform)"),
              ("perplexity", "Codebook perplexity")]

    def __init__(self, state: LoopState, train_data: AudioData, val_data: AudioData, data: dict):
        self.s, self.train_data, self.val_data = state, train_data, val_data
        self.segment, self.rate = data["segment"], data["sample_rate"]
        self.train_speakers = speaker_indices(train_data, data["speakers"])
        self.val_speakers = speaker_indices(val_data, data["speakers"])
        self.batches = BatchOrder(len(train_data), state.train.batch_size, state.train.seed)

    def forward(self, step: int):
        idx = self.batches.indices(step)
        crops = torch.Generator().manual_seed(self.s.train.seed * 7_919 + step)  # a function of the step
        # crops are drawn for the global batch, then each process takes its slice
        x = self.s.local(self.train_data.crops(idx, self.segment, crops)).to(self.s.device)  # (B, 1, T)
        speakers = None if self.train_speakers is None else self.s.local(self.train_speakers[idx]).to(self.s.device)
        out = self.s.call("forward", x, speakers)
        return out.loss, out, x.shape[0] * self.segment / self.rate

    def log_record(self, out, seconds_per_s: float) -> dict:
        usage = self.s.model.quantizer.codebook_usage(reset=True)
        return {
            "loss": out.loss.item(),
            "reconstruction_loss": out.reconstruction_loss.item(),
            "stft_loss": out.stft_loss.item(),
            "mel_loss": out.mel_loss.item(),
            "waveform_loss": out.waveform_loss.item(),
            "commitment_loss": out.commitment_loss.item(),
            "perplexity": usage.perplexity,
            "codes_used": usage.codes_used,
            "dead_codes": usage.dead_codes,
            "audio_seconds_per_s": seconds_per_s,
        }

    def postfix(self, record: dict) -> dict:
        return {"loss": f"{record['loss']:.3f}", "ppl": f"{record['perplexity']:.0f}"}

    def validate(self, step: int) -> dict:
        """Losses on fixed crops of the first ``val_images`` held-out clips."""
        n = min(len(self.val_data), self.s.train.val_images)
        crops = torch.Generator().manual_seed(0)
        totals = {"reconstruction_loss": 0.0, "stft_loss": 0.0, "mel_loss": 0.0, "waveform_loss": 0.0}
        codes = []
        for start in range(0, n, 64):
            idx = torch.arange(start, min(n, start + 64))
            x = self.val_data.crops(idx, self.segment, crops).to(self.s.device)
            speakers = None if self.val_speakers is None else self.val_speakers[idx].to(self.s.device)
            out = self.s.eval_model(x, speakers)
            for key in totals:
                totals[key] += float(getattr(out, key)) * len(idx)
            codes.append(out.indices.flatten())
        counts = torch.bincount(torch.cat(codes).cpu(), minlength=self.s.eval_model.config.codebook_size)
        return {**{k: v / n for k, v in totals.items()}, "clips": n,
                "perplexity": codebook_perplexity(counts), "codes_used": int((counts > 0).sum())}

    @torch.no_grad()
    def media(self, step: int) -> dict:
        """The first held-out clip and its reconstruction in the same voice, for observers
        (TensorBoard)."""
        wave = self.val_data.waveforms[0]  # (T,)
        speaker = None if self.val_speakers is None else self.val_speakers[:1].to(self.s.device)
        recon = self.s.eval_model.convert(wave.view(1, 1, -1).to(self.s.device), speaker)[0, 0]  # (T,)
        return {"held_out/original": ("audio", (wave, self.rate)),
                "held_out/reconstruction": ("audio", (recon.float().cpu(), self.rate))}
