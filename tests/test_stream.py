"""Data larger than memory: WebDataset shards streamed across ranks and workers, and the
memory-mapped decoded-data cache."""

import json

import numpy as np
import pytest
import torch

from vqvae.cli import main
from vqvae.data.errors import DataError
from vqvae.modalities.image.data import ImageData, load_images
from vqvae.modalities.image.stream import ShardStream, expand_shards, is_shard_pattern, write_shards
from vqvae.train import BatchOrder

TINY = ["--hidden", "16", "--res-hidden", "8", "--codebook-size", "16", "--code-dim", "4",
        "--batch-size", "4", "--val-every", "4", "--log-every", "2", "--no-progress"]


def run_cli(capsys, *args) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def numbered(n: int) -> ImageData:
    """``n`` 8x8 grey images whose first two pixels spell their index."""
    images = np.zeros((n, 1, 8, 8), np.uint8)
    images[:, 0, 0, 0], images[:, 0, 0, 1] = np.arange(n) % 256, np.arange(n) // 256
    return ImageData(torch.from_numpy(images), None, (), "numbered", "train")


def ids(images: torch.Tensor) -> list[int]:
    return (images[:, 0, 0, 0].long() + 256 * images[:, 0, 0, 1].long()).tolist()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """48 numbered images in 8 shards of 6."""
    out = tmp_path_factory.mktemp("shards")
    write_shards(numbered(48), out, "train", 6)
    return tuple(expand_shards(str(out / "train-{000000..000007}.tar")))


def test_each_sample_once_per_epoch_across_ranks_and_workers(shards):
    seen = []
    for rank in range(2):
        stream = ShardStream(shards, batch_size=3, seed=7, rank=rank, world=2, workers=2)
        # 12 samples per worker per epoch, 4 batches each; the loader alternates workers.
        batches = stream.loader()
        seen += [i for _ in range(8) for i in ids(next(batches)[0])]
    assert sorted(seen) == list(range(48))


def test_seeded_shuffle_is_reproducible_and_resume_skips_exactly(shards):
    def first(seed, skip=0, n=6):
        batches = ShardStream(shards, batch_size=4, seed=seed, workers=2).loader(skip=skip)
        return [ids(next(batches)[0]) for _ in range(n)]

    run = first(3, n=10)
    assert run == first(3, n=10)
    assert run != first(4, n=10)
    assert sorted(i for batch in run[:6] for i in batch) != list(range(24))  # shuffled
    assert first(3, skip=5, n=5) == run[5:]  # batch 5 onwards, as a resumed run sees them


def test_stream_errors(tmp_path, shards):
    with pytest.raises(DataError, match="no shards matched"):
        expand_shards(str(tmp_path / "train-{000000..000003}.tar"))
    with pytest.raises(DataError, match="cannot feed 4 process"):
        ShardStream(shards[:3], batch_size=2, seed=0, world=4)
    bad = tmp_path / "train-000000.tar"
    bad.write_bytes(b"not a tar file at all" * 100)
    with pytest.raises(DataError, match="train-000000.tar is corrupt"):
        next(ShardStream((str(bad),), batch_size=2, seed=0).batches(0))
    assert is_shard_pattern("d/train-{000000..000099}.tar") and not is_shard_pattern("d/images.tar")


def test_a_corrupt_shard_read_by_a_worker_reaches_the_trainer_with_its_message(tmp_path):
    from vqvae.modalities.image.stream import _Failure

    good = write_shards(numbered(6), tmp_path, "train", 6)[0]
    bad = tmp_path / "train-000001.tar"
    bad.write_bytes(b"\0garbage" * 700)
    batches = ShardStream((str(good), str(bad)), batch_size=2, seed=0, workers=2).loader()
    failures = [b for b in (next(batches) for _ in range(2)) if isinstance(b, _Failure)]
    assert len(failures) == 1 and "train-000001.tar is corrupt" in failures[0].message


def test_shard_then_train_end_to_end_and_resume_exactly(tmp_path, tiny_images, capsys):
    code, out, err = run_cli(capsys, "shard", tiny_images, "-o", tmp_path / "sh", "--shard-size", 10)
    assert code == 0, err
    info = json.loads((tmp_path / "sh" / "dataset.json").read_text())
    assert info["counts"] == {"train": 43, "val": 5} and info["classes"] == ["discs", "stripes"]
    pattern = str(tmp_path / "sh" / "train-{000000..000004}.tar")
    assert pattern in out
    whole, part = tmp_path / "whole", tmp_path / "part"
    code, out, err = run_cli(capsys, "train", "--data", pattern, "--out", whole, "--max-steps", 4, *TINY,
                             "--workers", 2)
    assert code == 0 and "finished at step 4" in out, err
    assert json.loads((whole / "config.json").read_text())["data"]["workers"] == 2
    assert run_cli(capsys, "train", "--data", pattern, "--out", part, "--max-steps", 2, *TINY, "--workers", 2)[0] == 0
    code, out, err = run_cli(capsys, "train", "--out", part, "--resume", "--max-steps", 4, "--no-progress")
    assert code == 0, err
    from safetensors.torch import load_file

    a, b = load_file(whole / "model.safetensors"), load_file(part / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the resumed stream saw the same batches
    code, _, err = run_cli(capsys, "train", "--out", part, "--resume", "--workers", 1, "--no-progress")
    assert code == 2 and "workers=1 (run has 2)" in err


def test_train_errors_on_bad_shards(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", "--data", str(tmp_path / "train-{000000..000001}.tar"),
                           "--out", tmp_path / "run", *TINY)
    assert code == 2 and "no shards matched" in err
    write_shards(numbered(12), tmp_path, "train", 6)
    write_shards(numbered(4), tmp_path, "val", 6)
    (tmp_path / "train-000001.tar").write_bytes(b"\0garbage" * 700)
    code, _, err = run_cli(capsys, "train", "--data", str(tmp_path / "train-{000000..000001}.tar"),
                           "--out", tmp_path / "run", *TINY)
    assert code == 2 and "train-000001.tar is corrupt" in err and "Traceback" not in err


def test_memory_mapped_cache_gives_the_in_memory_batches(tiny_images, monkeypatch, tmp_path):
    from vqvae.data.source import IMAGE_CACHE

    monkeypatch.setenv("VQVAE_CACHE", str(tmp_path / "cache"))
    decoded = load_images(tiny_images, "train")  # decoded now, in memory, and cached
    entry = next((tmp_path / "cache" / "images").glob("*.npz"))
    assert entry.with_name(entry.stem + ".train_images.npy").is_file()
    mapped = load_images(tiny_images, "train")  # from the cache
    key = {"source": "image-folder", "image_size": None}
    hit = IMAGE_CACHE.peek(entry.name.rsplit("-", 1)[0], {**key, **_fingerprint(tiny_images)})
    assert isinstance(hit.splits["train"].images, np.memmap)
    order = BatchOrder(len(decoded), 8, seed=0)
    for step in range(8):
        idx = order.indices(step)
        assert mapped.images[idx].dtype == torch.uint8
        assert torch.equal(mapped.images[idx], decoded.images[idx])
    assert torch.equal(mapped.labels, decoded.labels)


def _fingerprint(path):
    from vqvae.data.files import open_tree
    from vqvae.modalities.image.data.folder import IMAGE_EXTENSIONS

    return open_tree(path, "image").fingerprint(IMAGE_EXTENSIONS)


def test_a_stale_cache_version_is_ignored(tiny_images, monkeypatch, tmp_path):
    from vqvae.data.cache import ArrayCache

    monkeypatch.setenv("VQVAE_CACHE", str(tmp_path / "cache"))
    old = ArrayCache("images", 1, lambda d: {"x": d}, lambda a: a["x"])
    new = ArrayCache("images", 2, lambda d: {"x": d}, lambda a: a["x"], mapped=lambda name: name == "x")
    old.put("e", {"k": 1}, np.arange(4, dtype=np.uint8))
    assert new.peek("e", {"k": 1}) is None  # another version: another file, never misread
    new.put("e", {"k": 1}, np.arange(4, dtype=np.uint8))
    assert isinstance(new.peek("e", {"k": 1}), np.memmap)
    new.path("e", {"k": 1}).with_name(new.path("e", {"k": 1}).stem + ".x.npy").write_bytes(b"\x93NUMPY")
    assert new.peek("e", {"k": 1}) is None  # a truncated array: decode afresh
