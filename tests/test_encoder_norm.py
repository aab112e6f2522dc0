"""Two levers of the training recipe beyond the schedule: group normalisation in the encoder
(``--encoder-norm``) and Adam's beta2 (``--adam-beta2``); and a constant rate as the paper's recipe."""

import json

import pytest
import torch
from torch import nn

import vqvae
from vqvae import VAE, VQVAE, VQVAEConfig
from vqvae.autoencoder import VAEConfig
from vqvae.cli import main
from vqvae.modalities.image.task import IMAGE_MODEL, IMAGE_TRAIN
from vqvae.nets import Encoder
from vqvae.train import TrainConfig

TINY = {"hidden": 16, "res_hidden": 8, "codebook_size": 16, "code_dim": 4}


def _norms(encoder: Encoder) -> list[nn.GroupNorm]:
    return [m for m in encoder.net if isinstance(m, nn.GroupNorm)]


@pytest.mark.parametrize("dims, shape", [(1, (2, 1, 32)), (2, (2, 3, 16, 16)), (3, (2, 3, 8, 8, 8))])
def test_group_norm_follows_each_strided_and_the_3x3_convolution(dims, shape):
    torch.manual_seed(0)
    plain = Encoder(shape[1], 32, 8, 4, downsamples=2, spatial_dims=dims)
    normed = Encoder(shape[1], 32, 8, 4, downsamples=2, spatial_dims=dims, norm="group")
    assert _norms(plain) == []
    norms = _norms(normed)
    assert [n.num_channels for n in norms] == [16, 32, 32]  # hidden // 2, hidden, then before the blocks
    assert [n.num_groups for n in norms] == [16, 16, 16]
    x = torch.randn(shape)
    assert normed(x).shape == plain(x).shape
    # the normalised features have zero mean per group, whatever the input's scale
    features = normed.net[:2](x * 100 + 7)
    groups = features.reshape(shape[0], 16, -1)
    assert groups.mean(-1).abs().max() < 1e-4


def test_group_count_divides_odd_widths():
    norms = _norms(Encoder(1, 24, 8, 4, norm="group"))  # 12 and 24 channels: gcd with 16 is 4 and 8
    assert [n.num_groups for n in norms] == [4, 8, 8]


def test_encoder_norm_is_checked_saved_and_absent_from_old_configs():
    with pytest.raises(ValueError, match="--encoder-norm"):
        VQVAEConfig(encoder_norm="batch")
    with pytest.raises(ValueError, match="norm must be one of"):
        Encoder(1, 16, 8, 4, norm="layer")
    normed = VQVAEConfig(encoder_norm="group", **TINY)
    assert normed.to_dict()["encoder_norm"] == "group"
    assert VQVAEConfig.from_dict(normed.to_dict()) == normed
    assert "encoder_norm" not in VQVAEConfig(**TINY).to_dict()  # the paper's: written as before it existed
    assert VQVAEConfig.from_dict(VQVAEConfig(**TINY).to_dict()).encoder_norm == "none"
    for model in (VQVAE(in_channels=1, encoder_norm="group", **TINY),
                  VAE(VAEConfig(in_channels=1, hidden=16, res_hidden=8, latent_dim=4, encoder_norm="group"))):
        assert len(_norms(model.encoder)) == 3
        again = type(model)(model.config)
        again.load_state_dict(model.state_dict(), strict=True)


def test_adam_beta2_reaches_the_optimizer_and_is_checked(tmp_path):
    from vqvae.train import new_state

    model = nn.Linear(2, 2)
    assert new_state(tmp_path, model, TrainConfig(device="cpu"), False).optimizer.defaults["betas"] == (0.9, 0.999)
    state = new_state(tmp_path, model, TrainConfig(device="cpu", adam_beta2=0.99), False)
    assert state.optimizer.defaults["betas"] == (0.9, 0.99)
    for bad in (1.0, -0.1, True, "0.99"):
        with pytest.raises(ValueError, match="--adam-beta2"):
            TrainConfig(adam_beta2=bad)


def test_the_levers_are_flags_and_a_constant_rate_is_the_papers_recipe(tmp_path, tiny_images):
    tiny = ["--data", str(tiny_images), "--hidden", "16", "--res-hidden", "8", "--codebook-size", "16",
            "--code-dim", "4", "--batch-size", "8", "--max-steps", "1", "--val-every", "1", "--no-progress"]

    def config(run):
        return json.loads((run / "config.json").read_text())

    assert main(["train", *tiny, "--out", str(tmp_path / "new")]) == 0
    new = config(tmp_path / "new")
    assert "encoder_norm" not in new["model"]  # the paper's encoder, written as before the option existed
    assert (new["train"]["adam_beta2"], new["train"]["warmup_steps"]) == (0.99, IMAGE_TRAIN["warmup_steps"])
    assert new["model"]["decay"] == IMAGE_MODEL["vqvae"]["decay"] == 0.95  # the image recipe's codebook
    assert main(["train", *tiny, "--out", str(tmp_path / "levers"), "--encoder-norm", "group",
                 "--adam-beta2", "0.99"]) == 0
    levers = config(tmp_path / "levers")
    assert (levers["model"]["encoder_norm"], levers["train"]["adam_beta2"]) == ("group", 0.99)
    assert len(_norms(vqvae.load(tmp_path / "levers").encoder)) == 3
    assert main(["train", *tiny, "--out", str(tmp_path / "paper"), "--schedule", "constant", "--lr", "2e-4"]) == 0
    paper = config(tmp_path / "paper")
    train = paper["train"]
    # a constant rate comes without the decaying recipe's warm-up, beta2 and codebook decay:
    # the paper's recipe in two flags
    assert (train["schedule"], train["lr"], train["warmup_steps"]) == ("constant", 2e-4, 0)
    assert (train["adam_beta2"], paper["model"]["decay"]) == (0.999, 0.99)
    assert main(["train", *tiny, "--out", str(tmp_path / "mixed"), "--schedule", "constant", "--warmup", "5"]) == 0
    mixed = config(tmp_path / "mixed")["train"]
    assert (mixed["warmup_steps"], mixed["lr"]) == (5, IMAGE_TRAIN["lr"])
    # the continuous baseline takes the training recipe; a codebook decay does not apply to it
    vae_flags = tiny[:6] + tiny[10:]  # without --codebook-size and --code-dim
    assert main(["train", *vae_flags, "--model", "vae", "--latent-dim", "4", "--out", str(tmp_path / "vae")]) == 0
    vae = config(tmp_path / "vae")
    assert "decay" not in vae["model"] and vae["train"]["adam_beta2"] == IMAGE_TRAIN["adam_beta2"]


def test_resuming_a_run_from_before_the_levers_accepts_their_defaults(tmp_path, tiny_images, capsys):
    run = tmp_path / "old"
    tiny = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "4", "--batch-size", "8",
            "--val-every", "1", "--no-progress", "--out", str(run)]
    assert main(["train", "--data", str(tiny_images), *tiny, "--max-steps", "1"]) == 0
    config = json.loads((run / "config.json").read_text())
    del config["train"]["adam_beta2"]  # as written before the flag existed
    (run / "config.json").write_text(json.dumps(config))
    assert main(["train", *tiny, "--resume", "--max-steps", "2", "--encoder-norm", "none", "--adam-beta2", "0.999"]) == 0
    assert main(["train", *tiny, "--resume", "--max-steps", "3", "--adam-beta2", "0.9"]) != 0
    assert "adam_beta2=0.9 (run has 0.999)" in capsys.readouterr().err
