"""Video tokenizers that halve time fewer times than space (``time_downsamples``)."""

from __future__ import annotations

import json

import pytest
import torch

from vqvae.autoencoder import VAE, VQVAE, AutoencoderConfig, VQVAEConfig
from vqvae.nets import Decoder, Encoder

TINY = {"in_channels": 1, "hidden": 8, "res_hidden": 4, "residual_blocks": 1, "codebook_size": 16,
        "code_dim": 4, "spatial_dims": 3, "kmeans_init": False}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny ops: one thread is fastest, and stable under load


@pytest.mark.parametrize("time_downsamples, latent", [(1, (8, 16, 16)), (None, (4, 16, 16)), (0, (16, 16, 16)),
                                                      (2, (4, 16, 16))])
def test_a_window_of_16x64x64_maps_to_the_expected_grid_and_back(time_downsamples, latent):
    model = VQVAE(downsamples=2, time_downsamples=time_downsamples, **TINY).eval()
    x = torch.rand(1, 1, 16, 64, 64)
    assert model.latent_shape((16, 64, 64)) == latent
    codes = model.encode(x)
    assert codes.shape == (1, *latent)
    assert model.decode(codes).shape == x.shape
    assert model(x).reconstruction.shape == x.shape


def test_the_kept_time_axis_uses_3x4x4_stride_1x2x2_convolutions_mirrored_in_the_decoder():
    encoder = Encoder(1, 8, 4, 4, downsamples=3, residual_blocks=1, spatial_dims=3, time_downsamples=1)
    strided = [m for m in encoder.net if isinstance(m, torch.nn.Conv3d) and m.stride != (1, 1, 1)]
    assert [(m.kernel_size, m.stride, m.padding) for m in strided] == [
        ((4, 4, 4), (2, 2, 2), (1, 1, 1)),  # the first halves time too
        ((3, 4, 4), (1, 2, 2), (1, 1, 1)),
        ((3, 4, 4), (1, 2, 2), (1, 1, 1)),
    ]
    decoder = Decoder(4, 8, 4, 1, upsamples=3, residual_blocks=1, spatial_dims=3, time_upsamples=1)
    transposed = [m for m in decoder.net if isinstance(m, torch.nn.ConvTranspose3d)]
    assert [m.stride for m in transposed] == [(1, 2, 2), (1, 2, 2), (2, 2, 2)]  # the last doubles time
    z = encoder(torch.rand(2, 1, 4, 16, 16))
    assert z.shape == (2, 4, 2, 2, 2)
    assert decoder(z).shape == (2, 1, 4, 16, 16)


def test_unset_keeps_the_old_networks_state_names_and_config_keys():
    plain = VQVAE(downsamples=2, **TINY)
    halving = VQVAE(downsamples=2, time_downsamples=2, **TINY)  # every conv halves time: the same network
    kept = VQVAE(downsamples=2, time_downsamples=1, **TINY)
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    assert {k: v.shape for k, v in halving.state_dict().items()} == shapes
    assert kept.state_dict().keys() == plain.state_dict().keys()
    assert kept.state_dict()["encoder.net.2.weight"].shape[2] == 3  # the second conv keeps time
    assert "time_downsamples" not in plain.config.to_dict()  # configs of old runs keep their keys
    saved = json.loads(json.dumps(kept.config.to_dict()))
    assert saved["time_downsamples"] == 1 and VQVAEConfig.from_dict(saved) == kept.config
    old = plain.config.to_dict()
    assert VQVAEConfig.from_dict(old).time_downsamples is None


@pytest.mark.parametrize("settings, message", [
    ({"spatial_dims": 2, "time_downsamples": 1}, "model.time_downsamples applies to 3-D data"),
    ({"spatial_dims": 1, "time_downsamples": 0}, "spatial_dims is 1: leave it None"),
    ({"spatial_dims": 3, "time_downsamples": 3}, r"model.time_downsamples must be an int in \[0, downsamples=2\]"),
    ({"spatial_dims": 3, "time_downsamples": -1}, "got -1"),
    ({"spatial_dims": 3, "time_downsamples": 1.0}, "got 1.0"),
    ({"spatial_dims": 3, "time_downsamples": True}, "got True"),
])
def test_bad_time_downsamples_are_refused_by_name(settings, message):
    with pytest.raises(ValueError, match=message):
        AutoencoderConfig(**settings)
    with pytest.raises(ValueError, match=message):
        VAE(in_channels=1, hidden=8, res_hidden=4, **settings)


def test_the_networks_refuse_bad_values_too():
    with pytest.raises(ValueError, match="applies to 3-D data"):
        Encoder(1, 8, 4, 4, downsamples=2, spatial_dims=2, time_downsamples=1)
    with pytest.raises(ValueError, match=r"\[0, downsamples=2\]"):
        Decoder(4, 8, 4, 1, upsamples=2, spatial_dims=3, time_upsamples=3)


def test_a_time_axis_that_does_not_divide_names_the_frames():
    model = VQVAE(downsamples=2, time_downsamples=1, **TINY)
    with pytest.raises(ValueError, match=r"time axis \(15\) is not divisible by 2.*multiple of 2, e.g. 14"):
        model.latent_shape((15, 64, 64))
    assert model.latent_shape((6, 8, 8)) == (3, 2, 2)  # time needs only a factor 2 here
    with pytest.raises(ValueError, match="not divisible by 4"):
        model.encode(torch.rand(1, 1, 6, 8, 6))
