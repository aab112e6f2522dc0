"""Code shards: ``vqvae encode --shards`` streams the data and writes code shards and a manifest,
alone or under torchrun (two gloo processes give the codes of one, in the same order), and
decode, evaluate and prior training read what it writes."""

import json
import os
import subprocess
import sys

import pytest
import torch

from vqvae.cli import main
from vqvae.code_shards import (
    CodeShardError,
    CodeShardWriter,
    concat_codes,
    is_code_shards,
    load_code_shards,
    part,
    read_manifest,
    take,
)
from vqvae.retrieval.items import tokenizer_hash
from vqvae.runs import CodeFile, load_codes

TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "4", "--batch-size", "8",
        "--log-every", "1", "--val-every", "100", "--precision", "fp32", "--no-progress"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def shard_run(tmp_path_factory, tiny_images):
    """A tokenizer trained 2 steps on shards of the tiny images (43 train, 5 val in 5 + 1 shards)."""
    root = tmp_path_factory.mktemp("code-shards")
    assert main(["shard", str(tiny_images), "-o", str(root / "sh"), "--shard-size", "10"]) == 0
    pattern = str(root / "sh" / "train-{000000..000004}.tar")
    assert main(["train", "--data", pattern, "--out", str(root / "run"), "--max-steps", "2", "--workers", "0",
                 *TINY]) == 0
    return root, root / "run"


def test_parts_cover_the_items_in_order():
    for n in (0, 1, 5, 43):
        for world in (1, 2, 3, 8):
            shares = [part(n, r, world) for r in range(world)]
            assert [i for share in shares for i in share] == list(range(n))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1
    with pytest.raises(ValueError, match="rank 2 is not in"):
        part(10, 2, 2)


def test_writer_cuts_shards_and_rows_of_different_lengths_join(tmp_path):
    codes = torch.arange(10 * 3).reshape(10, 3) % 7
    file = CodeFile(codes, torch.arange(10), torch.tensor([3, 1, 2, 3, 3, 1, 1, 2, 3, 3]), {"speakers": None})
    writer = CodeShardWriter(tmp_path, codebook_size=7, rank=1, shard_size=4)
    for start in (0, 3, 5):  # pieces of 3, 2 and 5 items; the later pieces padded narrower
        piece = take(file, start, {0: 3, 3: 5, 5: 10}[start])
        width = int(piece.lengths.max())
        writer.add(CodeFile(piece.codes[:, :width], piece.labels, piece.lengths, piece.extras))
    written = writer.close()
    assert [(w["file"], w["items"]) for w in written] == [("codes-00001-000000.npz", 4), ("codes-00001-000001.npz", 4),
                                                          ("codes-00001-000002.npz", 2)]
    joined = concat_codes([load_codes(tmp_path / w["file"]) for w in written])
    assert torch.equal(joined.lengths, file.lengths) and torch.equal(joined.labels, file.labels)
    assert [r.tolist() for r in joined.rows()] == [r.tolist() for r in file.rows()]
    with pytest.raises(ValueError, match="positive number of items"):
        CodeShardWriter(tmp_path, 7, shard_size=0)
    with pytest.raises(CodeShardError, match="different grids"):
        concat_codes([CodeFile(torch.zeros(2, 4, 4, dtype=torch.long)), CodeFile(torch.zeros(2, 2, 2, dtype=torch.long))])


def test_encode_shards_alone_and_under_torchrun_give_the_codes_of_one_file(shard_run, capsys):
    root, run = shard_run
    code, out, err = run_cli(capsys, "encode", run, "-o", root / "all.npz", "--precision", "fp32")
    assert code == 0 and "43 items" in out, err
    whole = load_codes(root / "all.npz")
    code, out, err = run_cli(capsys, "encode", run, "-o", root / "one", "--shards", "--shard-size", 7,
                             "--batch-size", 5, "--precision", "fp32")
    assert code == 0 and "wrote 43 items in 7 code shards by 1 process" in out, err
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VQVAE_DIST_BACKEND": "gloo"}
    job = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m",
                          "vqvae", "encode", str(run), "-o", str(root / "two"), "--shards", "--shard-size", "7",
                          "--precision", "fp32"], env=env, capture_output=True, text=True, timeout=240)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert job.stdout.count("by 2 process(es)") == 1  # one process speaks
    manifest = read_manifest(root / "two")
    assert manifest["world_size"] == 2 and manifest["items"] == 43
    assert manifest["tokenizer"]["sha256"] == tokenizer_hash(run) and manifest["data"]["split"] == "train"
    # 5 data shards: process 0 reads 2 (20 items), process 1 reads 3 (23 items)
    assert [(s["rank"], s["items"]) for s in manifest["shards"]] == [(0, 7), (0, 7), (0, 6), (1, 7), (1, 7), (1, 7),
                                                                     (1, 2)]
    for folder in ("one", "two"):
        codes = load_code_shards(root / folder, run)
        assert codes.codes.shape == whole.codes.shape and torch.equal(codes.labels, whole.labels), folder
        assert torch.equal(codes.codes, whole.codes), f"{folder}: {int((codes.codes != whole.codes).sum())} codes differ"

    code, out, err = run_cli(capsys, "decode", run, root / "two", "-o", root / "decoded")
    assert code == 0 and "wrote 43 images" in out, err


def test_encode_shards_errors(shard_run, capsys, tmp_path):
    root, run = shard_run
    folder = tmp_path / "codes"
    assert run_cli(capsys, "encode", run, "-o", folder, "--shards", "--split", "val")[0] == 0
    code, _, err = run_cli(capsys, "encode", run, "-o", folder, "--shards", "--split", "val")
    assert code == 2 and "already holds code shards" in err and "--force" in err
    code, out, err = run_cli(capsys, "encode", run, "-o", folder, "--shards", "--split", "val", "--force")
    assert code == 0 and "5 items" in out, err
    code, _, err = run_cli(capsys, "encode", run, "-o", tmp_path / "c.npz", "--shards")
    assert code == 2 and "names a folder" in err
    code, _, err = run_cli(capsys, "encode", run, "-o", tmp_path / "c.npz", "--shard-size", 4)
    assert code == 2 and "add --shards" in err
    code, _, err = run_cli(capsys, "encode", run, "-o", folder)
    assert code == 2 and "is a folder" in err
    assert is_code_shards(folder) and not is_code_shards(tmp_path)

    text = (folder / "manifest.json").read_text()
    manifest = json.loads(text)
    manifest["tokenizer"]["sha256"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capsys, "decode", run, folder, "-o", tmp_path / "out")
    assert code == 2 and "another or a retrained tokenizer" in err
    (folder / "manifest.json").unlink()  # as if killed before the end
    with pytest.raises(CodeShardError, match="did not finish"):
        read_manifest(folder)
    (folder / "manifest.json").write_text(text)
    (folder / manifest["shards"][0]["file"]).unlink()
    with pytest.raises(CodeShardError, match="is missing"):
        load_code_shards(folder)


def test_evaluate_reconstruct_and_in_memory_parts_on_a_shard_run(shard_run, tiny_images, capsys):
    from vqvae.modalities.image.modality import ImageModality

    root, run = shard_run
    code, out, err = run_cli(capsys, "evaluate", run, "--json", root / "eval.json")
    assert code == 0, err
    metrics = json.loads((root / "eval.json").read_text())
    assert metrics["split"] == "val" and metrics["images"] == 5 and metrics["data"].startswith("shards ")
    code, out, err = run_cli(capsys, "reconstruct", run, "-n", 4, "-o", root / "recon.png")
    assert code == 0 and (root / "recon.png").is_file(), err
    # another source, held on disk: three processes' parts make what one process encodes
    modality = ImageModality()
    args = dict(data=str(tiny_images), data_dir=None, split="train", device="cpu", options={"precision": "fp32"})
    whole = concat_codes(list(modality.encode_part(run, **args, rank=0, world=1)))
    parts = [p for rank in range(3) for p in modality.encode_part(run, **args, rank=rank, world=3, batch_size=4)]
    assert max(len(p.codes) for p in parts) == 4
    joined = concat_codes(parts)
    assert torch.equal(joined.codes, whole.codes) and torch.equal(joined.labels, whole.labels)


def test_a_prior_trains_on_code_shards(shard_run, capsys):
    root, run = shard_run
    for split in ("train", "val"):
        assert run_cli(capsys, "encode", run, "--split", split, "-o", root / "codes" / split, "--shards",
                       "--precision", "fp32")[0] == 0
    prior = ["--arch", "transformer", "--width", 16, "--depth", 1, "--heads", 1, "--batch-size", 8,
             "--max-steps", 2, "--no-progress"]
    code, out, err = run_cli(capsys, "train-prior", run, *prior, "--data", root / "codes")
    assert code == 0 and "finished at step 2" in out, err
    assert not (run / "codes").exists()  # read from the shards, nothing encoded again
    code, _, err = run_cli(capsys, "train-prior", run, *prior, "--data", root / "codes" / "train", "--force")
    assert code == 2 and "needs the val split too" in err


def test_the_default_encode_part_cuts_what_encode_gives():
    from vqvae.modalities.base import Modality

    rows = CodeFile(torch.arange(7 * 5).reshape(7, 5) % 9, torch.arange(7), torch.tensor([5, 2, 3, 5, 1, 4, 2]),
                    {"speakers": torch.arange(7) % 2})

    class Rows(Modality):
        def encode(self, run, **kwargs):
            return rows

    args = dict(data=None, data_dir=None, split=None, device="cpu", options={})
    parts = [p for rank in range(2) for p in Rows().encode_part("run", **args, rank=rank, world=2, batch_size=2)]
    assert [len(p.codes) for p in parts] == [2, 1, 2, 2]  # 3 items for process 0, 4 for process 1
    joined = concat_codes(parts)
    assert [r.tolist() for r in joined.rows()] == [r.tolist() for r in rows.rows()]
    assert torch.equal(joined.extras["speakers"], rows.extras["speakers"]) and torch.equal(joined.labels, rows.labels)
