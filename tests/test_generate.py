"""Stage 2 end to end: a prior over a tokenizer's codes, sampling, and sample quality."""

import json

import numpy as np
import pytest
import torch

import vqvae
from vqvae.cli import main
from vqvae.priors import TransformerPrior

TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "4",
        "--batch-size", "8", "--val-every", "4", "--log-every", "2", "--no-progress"]


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory, tiny_images):
    run = tmp_path_factory.mktemp("gen") / "run"
    assert main(["train", "--data", str(tiny_images), "--out", str(run), "--max-steps", "4", *TINY]) == 0
    return run


def cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_train_prior_sample_and_resume(tokenizer_run, tmp_path, capsys):
    code, out, err = cli(capsys, "train-prior", tokenizer_run, "--arch", "transformer", "--width", 32,
                         "--depth", 1, "--max-steps", 3, "--batch-size", 8, "--val-every", 2,
                         "--no-progress", "--force")
    assert code == 0, err
    assert "bits per code" in out
    folder = tokenizer_run / "priors" / "transformer"
    prior = vqvae.load(folder)
    assert isinstance(prior, TransformerPrior)
    assert prior.config.latent_shape == (4, 4) and prior.config.num_classes == 2
    assert list((tokenizer_run / "codes").glob("train-*.npz"))  # the code dataset is cached

    code, out, err = cli(capsys, "train-prior", tokenizer_run, "--arch", "transformer", "--resume",
                         "--max-steps", 5, "--no-progress")
    assert code == 0, err
    assert "finished at step 5" in out
    code, _, err = cli(capsys, "train-prior", tokenizer_run, "--arch", "transformer", "--resume",
                       "--width", 64, "--no-progress")
    assert code == 2 and "drop --width" in err

    code, out, err = cli(capsys, "sample", tokenizer_run, "-n", 6, "--label", 1, "--top-k", 5,
                         "--seed", 3, "-o", tmp_path / "s")
    assert code == 0, err
    codes = np.load(tmp_path / "s" / "codes.npy", allow_pickle=False)
    images = np.load(tmp_path / "s" / "images.npy", allow_pickle=False)
    assert codes.shape == (6, 4, 4) and images.shape == (6, 3, 16, 16) and images.dtype == np.uint8
    assert (tmp_path / "s" / "grid.png").exists() and (tmp_path / "s" / "000005.png").exists()
    again = tmp_path / "again"
    assert cli(capsys, "sample", tokenizer_run, "-n", 6, "--label", 1, "--top-k", 5, "--seed", 3,
               "-o", again)[0] == 0
    assert np.array_equal(codes, np.load(again / "codes.npy"))  # same seed, same samples
    guided = tmp_path / "guided"
    code, _, err = cli(capsys, "sample", tokenizer_run, "-n", 6, "--label", 1, "--top-k", 5, "--seed", 3,
                       "--guidance", 3, "-o", guided)
    assert code == 0, err
    assert np.load(guided / "codes.npy").shape == (6, 4, 4)
    code, _, err = cli(capsys, "sample", tokenizer_run, "-n", 2, "--guidance", -1, "-o", tmp_path / "bad")
    assert code == 2 and "guidance must be >= 0" in err and not (tmp_path / "bad").exists()


def test_several_priors_need_a_name(tokenizer_run, capsys):
    for arch in ("pixelcnn", "transformer"):
        code, _, err = cli(capsys, "train-prior", tokenizer_run, "--arch", arch, "--width", 16,
                           "--depth", 1, "--max-steps", 1, "--no-progress", "--force")
        assert code == 0, err
    code, _, err = cli(capsys, "sample", tokenizer_run, "-n", 2)
    assert code == 2 and "pixelcnn, transformer" in err and "--prior" in err
    code, _, err = cli(capsys, "sample", tokenizer_run, "-n", 2, "--prior", "nope")
    assert code == 2 and "nope" in err
    code, _, err = cli(capsys, "sample", tokenizer_run, "-n", 2, "--prior", "pixelcnn", "--label", 7)
    assert code == 2 and "7" in err


def test_evaluate_samples_report(tokenizer_run, tmp_path, capsys, monkeypatch):
    from vqvae.modalities.image.evaluation import evaluate_samples

    main(["train-prior", str(tokenizer_run), "--arch", "transformer", "--width", "16", "--depth", "1",
          "--max-steps", "2", "--no-progress", "--force", "--name", "only"])
    report = evaluate_samples(vqvae.load, tokenizer_run, prior="only", per_class=4, real=8, classifier_steps=20)
    assert report["samples"] == 8 and report["guidance"] == 2.0  # a labelled prior with label dropout
    json.dumps(report)  # serialisable
    # the report is what the cached judge says of the same samples, recomputed here
    from vqvae.generate import sample_codes
    from vqvae.modalities.image.evaluation import decode_codes, run_data
    from vqvae.modalities.image.judge import frechet_distance, load_classifier, predict
    from vqvae.modalities.image.outputs import to_uint8

    judge = load_classifier(tokenizer_run / "classifier")
    requested = torch.arange(2).repeat_interleave(4)
    codes, _ = sample_codes(tokenizer_run, 8, prior="only", label=requested, seed=0)
    images = torch.from_numpy(to_uint8(decode_codes(vqvae.load(tokenizer_run), codes)))
    predicted, features = predict(judge, images)
    assert report["label_accuracy"] == float((predicted == requested).float().mean())
    held_out = run_data(tokenizer_run)
    real_predicted, real_features = predict(judge, held_out.images[:8])
    assert report["frechet_distance"] == pytest.approx(frechet_distance(features, real_features))
    assert report["classifier_accuracy_real"] == float((real_predicted == held_out.labels[:8]).float().mean())
    # the command gives the same report, from the cached judge
    import vqvae.modalities.image.evaluation as evaluation

    monkeypatch.setattr(evaluation, "CLASSIFIER_STEPS", 20)
    code, out, err = cli(capsys, "evaluate-samples", tokenizer_run, "--prior", "only", "--per-class", 4, "--real", 8,
                         "--json", tmp_path / "quality.json")
    assert code == 0, err
    assert json.loads((tmp_path / "quality.json").read_text()) == json.loads(json.dumps(report))
    assert "label_accuracy" in out
    assert (tokenizer_run / "classifier" / "model.safetensors").exists()


def test_prior_needs_a_trained_tokenizer(tmp_path, capsys):
    code, _, err = cli(capsys, "train-prior", tmp_path / "missing", "--arch", "transformer")
    assert code == 2 and "does not exist" in err
