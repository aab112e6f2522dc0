"""The command line end to end, in a temporary directory, on small real image sets."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import vqvae
from vqvae.cli import main

TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "4",
        "--batch-size", "8", "--val-every", "4", "--log-every", "2", "--no-progress"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_version_and_help():
    result = subprocess.run([sys.executable, "-m", "vqvae", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("vqvae ")
    result = subprocess.run([sys.executable, "-m", "vqvae", "train", "--help"], capture_output=True, text=True)
    for name in ("mnist", "cifar10", "mnist-mini", "--time-budget", "--quantizer"):
        assert name in result.stdout


def test_train_evaluate_encode_decode_reconstruct(tmp_path, tiny_images, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--data", tiny_images, "--out", run, "--max-steps", 6, *TINY)
    assert code == 0, err
    assert "finished at step 6" in out

    code, out, err = run_cli(capsys, "evaluate", run, "--json", tmp_path / "eval.json")
    assert code == 0, err
    metrics = json.loads((tmp_path / "eval.json").read_text())
    for key in ("mse", "nmse", "psnr", "ssim", "perplexity", "codes_used", "dead_codes",
                "bits_per_image", "compression_ratio"):
        assert key in metrics, key
    assert metrics["split"] == "val"  # an image folder without a test split
    assert metrics["codes_used"] + metrics["dead_codes"] == 16
    assert metrics["bits_per_image"] == 4 * 4 * 4  # 4x4 latents of log2(16) bits
    assert metrics["compression_ratio"] == pytest.approx(3 * 16 * 16 * 8 / 64)
    assert "psnr" in out

    codes_file = tmp_path / "codes.npz"
    code, out, err = run_cli(capsys, "encode", run, "--split", "val", "-o", codes_file)
    assert code == 0, err
    with np.load(codes_file, allow_pickle=False) as f:
        codes, labels = f["codes"], f["labels"]
    assert codes.dtype == np.int16 and codes.shape[1:] == (4, 4)
    assert labels.shape == (codes.shape[0],) and set(labels) <= {0, 1}
    # --precision fp32 gives exactly the model's own codes; bf16 nearly always the same ones.
    from vqvae.modalities.image.evaluation import encode_images, run_data

    images = run_data(run, split="val").images
    model = vqvae.load(run)
    exact = model.encode(images.float() / 255)
    assert torch.equal(encode_images(model, images, precision="fp32"), exact)
    fast = encode_images(model, images, precision="bf16")
    assert fast.shape == exact.shape and (fast == exact).float().mean() > 0.8
    code, _, err = run_cli(capsys, "encode", run, "--split", "val", "--precision", "fp32", "-o", tmp_path / "c.npz")
    assert code == 0, err
    with np.load(tmp_path / "c.npz", allow_pickle=False) as f:
        assert np.array_equal(f["codes"], exact.numpy())

    code, out, err = run_cli(capsys, "decode", run, codes_file, "-o", tmp_path / "decoded")
    assert code == 0, err
    assert (tmp_path / "decoded" / "grid.png").exists()
    assert len(list((tmp_path / "decoded").glob("0*.png"))) == codes.shape[0]

    code, out, err = run_cli(capsys, "reconstruct", run, "-n", 8, "-o", tmp_path / "recon.png")
    assert code == 0, err
    assert (tmp_path / "recon.png").stat().st_size > 0


def test_resume_continues_and_rejects_changed_settings(tmp_path, tiny_images, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--data", tiny_images, "--out", run, "--max-steps", 2, *TINY)[0] == 0
    code, out, err = run_cli(capsys, "train", "--out", run, "--resume", "--max-steps", 4, "--no-progress")
    assert code == 0, err
    assert "finished at step 4" in out
    code, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--hidden", 32, "--no-progress")
    assert code == 2 and "hidden=32 (run has 16)" in err
    code, _, err = run_cli(capsys, "train", "--data", tiny_images, "--out", run, *TINY)
    assert code == 2 and "--resume" in err and "--force" in err


def _assert_clean_error(code, out, err, *words):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word in err, (word, err)


def test_missing_data_directory(tmp_path, capsys):
    code, out, err = run_cli(capsys, "train", "--data", "mnist", "--data-dir", tmp_path / "nowhere",
                             "--out", tmp_path / "run", *TINY)
    _assert_clean_error(code, out, err, "nowhere")
    assert not (tmp_path / "run").exists()


def test_corrupt_image(tmp_path, tiny_images, capsys):
    import shutil

    data = tmp_path / "images"
    shutil.copytree(tiny_images, data)
    (data / "discs" / "005.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, out, err = run_cli(capsys, "train", "--data", data, "--out", tmp_path / "run", *TINY)
    _assert_clean_error(code, out, err, "005.png")
    assert not (tmp_path / "run").exists()


def test_image_size_not_divisible(tmp_path, tiny_images, capsys):
    code, out, err = run_cli(capsys, "train", "--data", tiny_images, "--image-size", 18,
                             "--out", tmp_path / "run", *TINY)
    _assert_clean_error(code, out, err, "divisible by 4", "--image-size")
    assert not (tmp_path / "run").exists()


def test_corrupt_checkpoint_and_missing_run(tmp_path, tiny_images, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--data", tiny_images, "--out", run, "--max-steps", 1, *TINY)[0] == 0
    (run / "model.safetensors").write_bytes(b"\x00" * 100)
    code, out, err = run_cli(capsys, "evaluate", run, "--json", tmp_path / "e.json")
    _assert_clean_error(code, out, err, "model.safetensors")
    assert not (tmp_path / "e.json").exists()
    code, out, err = run_cli(capsys, "evaluate", tmp_path / "missing")
    _assert_clean_error(code, out, err, "does not exist")


def test_bad_code_files(tmp_path, tiny_images, capsys):
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--data", tiny_images, "--out", run, "--max-steps", 1, *TINY)[0] == 0
    np.save(tmp_path / "big.npy", np.full((2, 4, 4), 99, np.int16))
    code, out, err = run_cli(capsys, "decode", run, tmp_path / "big.npy", "-o", tmp_path / "d")
    _assert_clean_error(code, out, err, "K=16")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    code, out, err = run_cli(capsys, "decode", run, tmp_path / "obj.npy", "-o", tmp_path / "d")
    _assert_clean_error(code, out, err, "obj.npy")


def test_codes_commands_refuse_a_vae_and_resume_follows_moved_data(tmp_path, tiny_images, capsys):
    import shutil

    vae = tmp_path / "vae"
    code, _, err = run_cli(capsys, "train", "--data", tiny_images, "--model", "vae", "--latent-dim", 4, "--out", vae,
                           "--max-steps", 1, "--hidden", 16, "--res-hidden", 8, "--batch-size", 8, "--no-progress")
    assert code == 0, err
    code, out, err = run_cli(capsys, "encode", vae, "-o", tmp_path / "c.npz")
    _assert_clean_error(code, out, err, "without a codebook", "VQ-VAE")
    # the data moved: --data-dir on resume says where they are now, and is recorded
    moved = tmp_path / "moved-images"
    shutil.copytree(tiny_images, moved)
    run = tmp_path / "run"
    assert run_cli(capsys, "train", "--data", moved, "--out", run, "--max-steps", 1, *TINY)[0] == 0
    config = json.loads((run / "config.json").read_text())
    config["data"]["data_dir"], config["data"]["spec"] = None, str(moved)
    (run / "config.json").write_text(json.dumps(config))
    code, _, err = run_cli(capsys, "train", "--out", run, "--resume", "--max-steps", 2, "--data-dir", tmp_path,
                           "--no-progress")
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["data"]["data_dir"] == str(tmp_path.resolve())
