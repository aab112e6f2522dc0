"""The speech VQ-VAE: shapes, speaker conversion, errors, the STFT loss, training, config."""

import json
import math

import numpy as np
import pytest
import torch

from vqvae.modalities.speech.mel import log_mel
from vqvae.modalities.speech.model import (
    ConvNeXtBlock,
    DilatedResidualUnit,
    SpeechVQVAE,
    SpeechVQVAEConfig,
    mel_loss,
    mel_sizes,
    multi_resolution_stft_loss,
)
from vqvae.quantize import EMAVectorQuantizer, QuantizerConfig, VectorQuantizer

RESOLUTIONS = ((128, 32, 128), (64, 16, 64))
TINY = {
    "hidden": 16,
    "res_hidden": 8,
    "codebook_size": 32,
    "code_dim": 8,
    "decoder_width": 32,
    "decoder_depth": 2,
    "decoder_dilations": (1, 3),
    "speaker_dim": 8,
    "stft_resolutions": RESOLUTIONS,
    "kmeans_init": False,
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is fastest, and stable under load


def tiny(**settings) -> SpeechVQVAE:
    torch.manual_seed(0)
    return SpeechVQVAE(**{**TINY, **settings})


def sines(batch: int, samples: int, seed: int = 0) -> torch.Tensor:
    """Speech-like test signals ``(B, 1, T)``: three harmonics of a random pitch with a
    syllable-rate envelope (peak about 0.5) over a faint noise floor, as in a recording."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 8000.0
    f0 = 100 + 150 * torch.rand(batch, 1, generator=g)  # (B, 1) Hz
    phase = 2 * math.pi * torch.rand(batch, 3, 1, generator=g)
    harmonics = torch.arange(1, 4).view(1, 3, 1)
    wave = (torch.sin(2 * math.pi * f0.unsqueeze(1) * harmonics * t + phase) / harmonics).sum(1)
    envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 4 * t)
    noise = 0.01 * torch.randn(batch, samples, generator=g)
    return (0.3 * wave * envelope + noise).unsqueeze(1)


# -------------------------------------------------------------------------- shapes


def test_lengths_go_from_t_to_t_over_64_and_back():
    model = tiny(num_speakers=3).eval()
    x, speakers = sines(2, 1024), torch.tensor([0, 2])
    out = model(x, speakers)
    assert model.hop == 64
    assert out.reconstruction.shape == x.shape
    assert out.indices.shape == (2, 16) and out.indices.dtype == torch.int64
    codes = model.encode(x)
    assert torch.equal(codes, out.indices)
    audio = model.decode(codes, speakers)
    assert audio.shape == (2, 1, 1024)
    assert audio.abs().max() < 1


def test_encode_pads_a_length_that_is_not_a_multiple_of_the_hop():
    model = tiny().eval()
    x = sines(2, 1000)
    codes = model.encode(x)
    assert codes.shape == (2, 16) == (2, model.latent_length(1000))
    padded = torch.nn.functional.pad(x, (0, 24))
    assert torch.equal(codes, model.encode(padded))
    assert model.latent_length(1024) == 16 and model.latent_length(1025) == 17


def test_convert_returns_the_input_length():
    model = tiny(num_speakers=2).eval()
    x = sines(1, 1000)
    assert model.convert(x, torch.tensor([1])).shape == (1, 1, 1000)


def test_forward_needs_a_multiple_of_the_hop():
    with pytest.raises(ValueError, match="not a multiple of 64.*960"):
        tiny()(sines(1, 1000))


def test_the_paper_encoder_has_six_stride_two_window_four_convolutions():
    strided = [
        m
        for m in SpeechVQVAE().encoder.modules()
        if isinstance(m, torch.nn.Conv1d) and m.stride == (2,)
    ]
    assert [(m.kernel_size, m.stride) for m in strided] == [((4,), (2,))] * 6


def test_decoder_channels_halve_down_to_the_floor():
    model = SpeechVQVAE(decoder="upsample", decoder_width=256)
    assert model.decoder.widths == (256, 128, 64, 32, 32, 32, 32)


# ------------------------------------------------------------------------ speakers


@pytest.mark.parametrize("decoder", ["spectral", "upsample"])
def test_conversion_changes_only_the_speaker_input(decoder):
    model = tiny(num_speakers=4, decoder=decoder).eval()
    x = sines(3, 512)
    a, b = torch.tensor([0, 1, 2]), torch.tensor([3, 3, 0])
    codes = model.encode(x)
    # The codes are the speaker-independent content: the speaker never reaches the encoder.
    assert torch.equal(model(x, a).indices, codes)
    assert torch.equal(model(x, b).indices, codes)
    assert torch.equal(model.convert(x, b), model.decode(codes, b))
    # ... and the voice comes from the speaker input alone.
    same = model.decode(codes, a)
    assert torch.equal(model.decode(codes, a), same)
    changed = (model.decode(codes, b) - same).abs().amax(dim=(1, 2))  # (B,)
    assert (changed > 1e-3 * same.abs().amax(dim=(1, 2))).all(), changed  # far above rounding


@pytest.mark.parametrize(
    "decoder, unit, count",
    [("upsample", DilatedResidualUnit, 6 * 2), ("spectral", ConvNeXtBlock, TINY["decoder_depth"])],
)
def test_every_decoder_unit_is_conditioned_on_the_speaker(decoder, unit, count):
    units = [m for m in tiny(num_speakers=2, decoder=decoder).decoder.modules() if isinstance(m, unit)]
    assert len(units) == count
    assert all(u.film is not None for u in units)
    assert all(u.film is None for u in tiny(decoder=decoder).decoder.modules() if isinstance(u, unit))
    assert tiny().speaker_embedding is None


def test_spectral_decoder_speaker_shift_or_film_and_old_configs_keep_film():
    width = TINY["decoder_width"]
    for scale, outputs in [(False, width), (True, 2 * width)]:
        model = tiny(num_speakers=3, speaker_scale=scale).eval()
        assert model.decoder.blocks[0].film.out_features == outputs
        codes = model.encode(sines(2, 512))
        assert not torch.equal(model.decode(codes, torch.tensor([0, 0])), model.decode(codes, torch.tensor([1, 2])))
    saved = tiny(num_speakers=3).config.to_dict()
    assert saved["speaker_scale"] is False
    del saved["speaker_scale"]
    assert SpeechVQVAEConfig.from_dict(saved).speaker_scale is True


def test_speakers_are_required_forbidden_and_range_checked():
    x = sines(2, 512)
    with pytest.raises(ValueError, match=r"conditioned on 3 speakers.*\[0, 3\)"):
        tiny(num_speakers=3)(x)
    with pytest.raises(ValueError, match="num_speakers=0"):
        tiny()(x, torch.tensor([0, 0]))
    model = tiny(num_speakers=3).eval()
    with pytest.raises(IndexError, match=r"\[0, 3\).*\[0, 3\]"):
        model(x, torch.tensor([0, 3]))
    with pytest.raises(IndexError, match=r"\[0, 3\)"):
        model.decode(model.encode(x), torch.tensor([-1, 0]))
    with pytest.raises(TypeError, match="integer tensor"):
        model(x, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model(x, torch.tensor([0, 1, 2]))


def test_wrong_inputs_are_refused_with_the_fix():
    model = tiny().eval()
    with pytest.raises(ValueError, match=r"\(B, 1, T\).*unsqueeze\(1\)"):
        model(torch.zeros(2, 512))
    with pytest.raises(ValueError, match=r"\(B, 1, T\)"):
        model.encode(torch.zeros(2, 2, 512))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(2, 1, 512, dtype=torch.int16))
    with pytest.raises(ValueError, match=r"\(B, L\)"):
        model.decode(torch.zeros(2, 1, 8, dtype=torch.long))
    with pytest.raises(IndexError, match=r"\[0, 32\)"):
        model.decode(torch.full((1, 8), 32))


# ------------------------------------------------------------------------ STFT loss


def _reference_stft_loss(x: np.ndarray, y: np.ndarray, n_fft: int, hop: int) -> tuple[float, float]:
    """The loss at one resolution (win = n_fft), written out with NumPy framing and rfft."""
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann

    def magnitudes(s):
        s = np.pad(s, (n_fft // 2, n_fft // 2))
        frames = np.stack([s[i : i + n_fft] for i in range(0, len(s) - n_fft + 1, hop)])
        return np.maximum(np.abs(np.fft.rfft(frames * window, axis=1)), 1e-7**0.5)

    s, s_hat = magnitudes(x), magnitudes(y)
    convergence = np.linalg.norm(s - s_hat) / np.linalg.norm(s)
    return convergence, np.abs(np.log(s) - np.log(s_hat)).mean()


def test_stft_loss_matches_a_numpy_reference():
    x, y = sines(1, 600, seed=1), sines(1, 600, seed=2)
    convergence, log_distance = multi_resolution_stft_loss(x, y, [(128, 32, 128)])
    ref = _reference_stft_loss(x[0, 0].double().numpy(), y[0, 0].double().numpy(), 128, 32)
    assert convergence.item() == pytest.approx(ref[0], rel=1e-4)
    assert log_distance.item() == pytest.approx(ref[1], rel=1e-4)


def test_stft_loss_is_zero_for_equal_positive_for_different_finite_on_silence():
    x = sines(2, 512)
    assert all(v.item() == 0 for v in multi_resolution_stft_loss(x, x.clone(), RESOLUTIONS))
    different = multi_resolution_stft_loss(x, 0.9 * x, RESOLUTIONS)
    assert all(v.item() > 0 for v in different)
    silence = torch.zeros(2, 1, 512)
    assert all(v.item() == 0 for v in multi_resolution_stft_loss(silence, silence, RESOLUTIONS))
    noise = 0.1 * torch.randn(2, 1, 512)
    # A silent target, and a silent estimate (where |S| has an infinite slope at 0).
    for target, estimate in ((silence, noise), (noise, silence)):
        estimate = estimate.clone().requires_grad_()
        losses = multi_resolution_stft_loss(target, estimate, RESOLUTIONS)
        sum(losses).backward()
        assert all(torch.isfinite(v) and v > 0 for v in losses)
        assert torch.isfinite(estimate.grad).all()


def test_stft_loss_runs_in_fp32_under_autocast():
    model = tiny().eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(sines(2, 512))
    assert out.stft_loss.dtype == torch.float32 and torch.isfinite(out.loss)


def test_loss_is_stft_plus_weighted_mel_and_l1_plus_quantizer_loss():
    model = tiny(waveform_weight=2.5, mel_weight=0.5).eval()
    x = sines(2, 512)
    out = model(x)
    stft = sum(multi_resolution_stft_loss(x, out.reconstruction, RESOLUTIONS))
    mel = mel_loss(x, out.reconstruction, 8000)
    l1 = (x - out.reconstruction).abs().mean()
    torch.testing.assert_close(out.stft_loss, stft)
    torch.testing.assert_close(out.mel_loss, mel)
    torch.testing.assert_close(out.waveform_loss, l1)
    torch.testing.assert_close(out.reconstruction_loss, stft + 0.5 * mel + 2.5 * l1)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + out.quantizer_loss)
    assert tiny(mel_weight=0.0).eval()(x).mel_loss.item() == 0


def test_mel_loss_is_the_mean_log_mel_distance_zero_for_equal_finite_on_silence():
    assert mel_sizes(8000) == (512, 64) and mel_sizes(16000) == (1024, 128)
    x, y = sines(2, 2048), 0.5 * sines(2, 2048, seed=1)
    n_fft, hop = mel_sizes(8000)
    expected = (log_mel(x, 8000, n_fft, hop, 64) - log_mel(y, 8000, n_fft, hop, 64)).abs().mean()
    torch.testing.assert_close(mel_loss(x, y, 8000), expected)
    assert mel_loss(x, x.clone(), 8000).item() == 0
    silence = torch.zeros(2, 1, 2048)
    estimate = (0.1 * torch.randn(2, 1, 2048)).requires_grad_()
    loss = mel_loss(silence, estimate, 8000)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0 and torch.isfinite(estimate.grad).all()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert mel_loss(x, y, 8000).dtype == torch.float32
    with pytest.raises(ValueError, match="same shape"):
        mel_loss(x, y[..., :100], 8000)


# ------------------------------------------------------------------------- training


@pytest.mark.parametrize("quantizer", ["ema", "grad"])
def test_gradients_pass_the_straight_through_estimator_to_the_encoder(quantizer):
    model = tiny(quantizer=quantizer, num_speakers=2)
    out = model(sines(2, 512), torch.tensor([0, 1]))
    # Only the reconstruction term: the commitment loss alone would also reach the encoder.
    out.reconstruction_loss.backward()
    for name, module in (
        ("encoder", model.encoder),
        ("decoder", model.decoder),
        ("speaker_embedding", model.speaker_embedding),
    ):
        grads = [p.grad for p in module.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(g.abs().sum() for g in grads) > 0, name


def test_a_few_optimisation_steps_reduce_the_loss():
    model = tiny(num_speakers=2)
    x, speakers = sines(4, 1024), torch.tensor([0, 1, 0, 1])
    model.eval()
    before = model(x, speakers)
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(30):
        optimiser.zero_grad()
        model(x, speakers).loss.backward()
        optimiser.step()
    model.eval()
    after = model(x, speakers)
    ratio = after.loss.item() / before.loss.item()
    assert ratio < 0.75, ratio  # seeds 0-4 give 0.45 to 0.52
    assert after.stft_loss.item() < before.stft_loss.item()


# --------------------------------------------------------------------------- config


def test_config_survives_a_json_round_trip():
    config = SpeechVQVAEConfig(
        num_speakers=6,
        decoder_dilations=(1, 2, 4, 8),
        stft_resolutions=((256, 64, 200), (64, 16, 64)),
        quantizer="grad",
    )
    again = SpeechVQVAEConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert isinstance(again.stft_resolutions[0], tuple) and isinstance(
        again.decoder_dilations, tuple
    )
    model = SpeechVQVAE(again)
    assert model.config is again and model.speaker_embedding.num_embeddings == 6
    with pytest.raises(ValueError, match="unknown speech model settings"):
        SpeechVQVAEConfig.from_dict({**config.to_dict(), "wavenet_layers": 30})


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"downsamples": 0}, "downsamples"),
        ({"num_speakers": -1}, "num_speakers"),
        ({"quantizer": "rvq"}, "quantizer"),
        ({"decay": 1.0}, "decay"),
        ({"decoder_dilations": ()}, "decoder_dilations"),
        ({"decoder_dilations": (1, 0)}, "decoder_dilations"),
        ({"stft_resolutions": ((128, 32),)}, r"\(n_fft, hop, win\)"),
        ({"stft_resolutions": ((128, 32, 256),)}, "window"),
        ({"waveform_weight": -1.0}, "waveform_weight"),
        ({"dead_code_window": 0}, "dead_code_window"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message):
        SpeechVQVAEConfig(**settings)


def test_content_norm_removes_each_channels_clip_statistics_and_ignores_padding():
    model = tiny(content_norm="output").eval()
    with torch.no_grad():  # a trained encoder's output varies far more than the norm's epsilon
        model.encoder.net[-1].weight.mul_(100)
    x = sines(3, 1024)
    with torch.no_grad():
        z = model._content(x)  # (B, D, L)
    torch.testing.assert_close(z.mean(-1), torch.zeros(3, z.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.var(-1, unbiased=False), torch.ones(3, z.shape[1]), atol=1e-3, rtol=0)
    # A short clip padded into a batch: its statistics come from its own 10 steps only.
    padded = torch.cat([torch.nn.functional.pad(x[:1, :, :640], (0, 384)), x[1:2]])
    with torch.no_grad():
        z = model._content(padded, torch.tensor([640, 1024]))
        raw = model.encoder(padded)[0, :, :10]  # (D, 10)
    mean, var = raw.mean(-1, keepdim=True), raw.var(-1, unbiased=False, keepdim=True)
    torch.testing.assert_close(z[0, :, :10], (raw - mean) / torch.sqrt(var + 1e-5))
    torch.testing.assert_close(z[1], model._content(x[1:2])[0], atol=1e-4, rtol=1e-4)
    assert tiny().config.content_norm == "layers"
    assert SpeechVQVAEConfig.from_dict({"num_speakers": 2}).content_norm == "none"
    with pytest.raises(ValueError, match="content_norm"):
        tiny(content_norm=True)


def test_layer_norms_follow_each_strided_convolution_and_skip_padding():
    model = tiny(content_norm="layers").eval()
    seen = []  # what each ReLU after a strided convolution receives
    for conv, relu in zip(model.encoder.net[:-1], model.encoder.net[1:], strict=True):
        if isinstance(conv, torch.nn.Conv1d) and conv.stride[0] == 2:
            relu.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    x = sines(2, 1024)
    padded = torch.cat([torch.nn.functional.pad(x[:1, :, :640], (0, 384)), x[1:2]])
    with torch.no_grad():
        z = model._content(padded, torch.tensor([640, 1024]))
    assert len(seen) == 6 and z.shape == (2, 8, 16)
    for i, h in enumerate(seen):  # row 0: statistics of its first ceil(640 / 2^(i+1)) steps
        valid = -(-640 // 2 ** (i + 1))
        torch.testing.assert_close(h[0, :, :valid].mean(-1), torch.zeros(h.shape[1]), atol=1e-4, rtol=0)
        torch.testing.assert_close(h[1].mean(-1), torch.zeros(h.shape[1]), atol=1e-4, rtol=0)
        assert h[0, :, valid:].abs().sum() > 0  # the padding is normalised too, not counted


def test_instance_norm_counts_only_the_given_steps():
    from vqvae.modalities.speech.model import _instance_norm

    z = torch.randn(2, 3, 10)
    out = _instance_norm(z, torch.tensor([4, 10]))
    head = z[0, :, :4]
    expected = (head - head.mean(-1, keepdim=True)) / torch.sqrt(head.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(out[0, :, :4], expected)
    torch.testing.assert_close(out[1], _instance_norm(z[1:])[0])


def test_a_single_step_clip_encodes_and_normalises_to_zero():
    from vqvae.modalities.speech.model import _instance_norm

    assert torch.equal(_instance_norm(torch.randn(2, 3, 1)), torch.zeros(2, 3, 1))
    assert tiny().encode(sines(1, 64)).shape == (1, 1)


# A config.json["model"] written before the quantizer settings moved into QuantizerConfig.
OLD_FLAT_CONFIG = {
    "sample_rate": 8000, "hidden": 128, "res_hidden": 128, "residual_blocks": 1,
    "downsamples": 6, "codebook_size": 32, "code_dim": 8, "quantizer": "ema", "beta": 0.25,
    "decay": 0.9, "kmeans_init": True, "dead_code_window": 50, "num_speakers": 4,
    "speaker_dim": 64, "speaker_scale": False, "decoder": "spectral", "decoder_width": 256,
    "decoder_depth": 8, "decoder_dilations": [1, 3, 9],
    "stft_resolutions": [[512, 128, 512], [256, 64, 256], [128, 32, 128]],
    "waveform_weight": 1.0, "mel_weight": 1.0, "content_norm": "layers", "seed": 0,
}


def test_an_old_flat_config_loads_and_writes_the_same_settings():
    config = SpeechVQVAEConfig.from_dict(OLD_FLAT_CONFIG)
    assert isinstance(config, QuantizerConfig)
    assert (config.codebook_size, config.decay, config.dead_code_window) == (32, 0.9, 50)
    assert json.loads(json.dumps(config.to_dict())) == OLD_FLAT_CONFIG  # same keys and values


@pytest.mark.parametrize("kind, cls", [("ema", EMAVectorQuantizer), ("grad", VectorQuantizer)])
def test_the_speech_model_builds_its_quantizer_from_the_config(kind, cls):
    model = tiny(quantizer=kind, beta=0.3, decay=0.8, dead_code_window=6, seed=2)
    q = model.quantizer
    assert type(q) is cls
    assert (q.codebook_size, q.dim, q.beta, q.dead_code_window, q.seed) == (32, 8, 0.3, 6, 2)
    assert bool(q.initialized)  # TINY has kmeans_init=False
    if kind == "ema":
        assert q.decay == 0.8
    names = {k.removeprefix("quantizer.") for k in model.state_dict() if k.startswith("quantizer.")}
    expected = {"steps", "initialized", "last_used", "usage_counts", "usage_steps", "reservoir",
                "reservoir_written", "codebook"}
    assert names == expected | ({"cluster_size", "embed_sum"} if kind == "ema" else set())


def test_jitter_moves_steps_to_a_neighbour_only_while_training():
    model = tiny(jitter=0.5)
    steps = torch.arange(200.0).view(1, 1, 200).expand(4, 3, 200)  # (B, D, L): each step holds its index
    torch.manual_seed(0)
    jittered = model.train()._jitter(steps)
    assert torch.equal(jittered[:, 0:1].expand_as(jittered), jittered)  # a step moves as a whole vector
    shift = jittered[:, 0] - steps[:, 0]
    assert set(shift.unique().tolist()) <= {-1.0, 0.0, 1.0}  # only ever a neighbour
    moved = (shift != 0).float().mean().item()
    assert 0.4 < moved < 0.6  # about half the steps at p = 0.5 (the ends clamp to themselves)
    assert (shift == -1).sum() > 0 and (shift == 1).sum() > 0
    assert shift[:, 0].min() >= 0 and shift[:, -1].max() <= 0
    assert torch.equal(model.eval()._jitter(steps), steps)
    assert torch.equal(tiny(jitter=0.0).train()._jitter(steps), steps)  # 0 turns it off
    assert not torch.equal(tiny().train()._jitter(steps), steps)  # on by default (0.12)


def test_jitter_is_checked_and_saved_only_when_on():
    assert "jitter" not in tiny(jitter=0.0).config.to_dict()  # older releases can still read it
    assert SpeechVQVAEConfig.from_dict(tiny(jitter=0.0).config.to_dict()).jitter == 0.0
    assert SpeechVQVAEConfig.from_dict({"num_speakers": 2}).jitter == 0.0  # a config from before jitter
    config = tiny().config
    assert config.jitter == 0.12
    assert SpeechVQVAEConfig.from_dict(json.loads(json.dumps(config.to_dict()))).jitter == 0.12
    for bad in (-0.1, 1.5, "0.1", math.nan):
        with pytest.raises(ValueError, match="jitter"):
            tiny(jitter=bad)
