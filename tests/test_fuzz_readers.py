"""Every file reader against hostile and corrupt inputs: only the project's clear errors.

The inputs come from ``hostile_inputs`` (shared with ``benchmarks/fuzz.py``, which runs
thousands of them with time and memory limits); hypothesis draws a few dozen per reader
here. Then one test per classic attack: path traversal in tars, pickles in code files,
sizes that lie, decompression bombs, configs from elsewhere.
"""

import gzip
import io
import json
import random
import shutil
import struct
import tarfile
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hostile_inputs
from hostile_inputs import CLEAN, ESCAPED, MARKER, READERS
from vqvae import checkpoint as ckpt
from vqvae.data.errors import DataError
from vqvae.modalities.image.data.folder import ImageFolderSource
from vqvae.modalities.image.data.idx import read_idx
from vqvae.modalities.speech.wav import read_wav
from vqvae.runs import load_codes

FAST = {"idx": 40, "cifar": 25, "image_folder": 25, "wav": 40, "code_file": 40, "config": 15, "safetensors": 15}


@pytest.mark.parametrize("name", list(READERS))
def test_a_reader_fails_only_with_a_clear_error(name):
    reader = READERS[name]

    @settings(max_examples=FAST[name], deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(st.randoms(use_true_random=False))
    def check(rng):
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "case"
            folder.mkdir()
            path = reader.make(rng, folder)
            try:
                reader.read(path)
            except CLEAN as exc:
                assert str(exc).strip(), f"{type(exc).__name__} without a message"
            assert reader.check is None or reader.check(folder) is None

    check()


# ------------------------------------------------------------------ archives


def _tar(members: dict[str, bytes], links: dict[str, str] = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return buffer.getvalue()


def test_a_tar_member_named_dot_dot_is_never_written_outside(tmp_path):
    png, _ = hostile_inputs.image_bytes(random.Random(0))
    archive = tmp_path / "inside" / "images.tar"
    archive.parent.mkdir()
    archive.write_bytes(_tar({"a/0.png": png, f"../{ESCAPED}.png": png, f"a/../../{ESCAPED}2.png": png,
                              f"/tmp/{ESCAPED}3.png": png}, links={"a/link.png": "/etc/passwd"}))
    source = ImageFolderSource(archive, None)
    images = source.read("train")[0].images
    assert len(images) == 2  # a/0.png, and the absolute name read as tmp/...: never the ".." ones or the link
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["images.tar", "inside"]
    assert not list(Path("/tmp").glob(f"{ESCAPED}*"))


def test_a_tar_header_that_declares_a_huge_member_is_refused_without_reading_it(tmp_path):
    png, _ = hostile_inputs.image_bytes(random.Random(1))
    raw = bytearray(_tar({"0.png": png}))
    raw[124:136] = b"77777777777\0"  # 8 GiB in octal, and the header checksum to match
    checksum = sum(raw[:148]) + 8 * 32 + sum(raw[156:512])
    raw[148:156] = f"{checksum:06o}\0 ".encode()
    (tmp_path / "x.tar").write_bytes(bytes(raw))
    tracemalloc.start()
    with pytest.raises(DataError, match=r"declares 8,589,934,591 bytes|truncated|corrupt"):
        ImageFolderSource(tmp_path / "x.tar", None).read("train")
    assert tracemalloc.get_traced_memory()[1] < 50 * 2**20
    tracemalloc.stop()


# ------------------------------------------------------------------ code files


def test_pickled_objects_in_code_files_are_never_unpickled(tmp_path):
    payload = np.array([hostile_inputs._Payload(tmp_path / MARKER)], dtype=object)
    for name, write in (("codes.npy", lambda p: np.save(p, payload, allow_pickle=True)),
                        ("codes.npz", lambda p: np.savez(p, codes=np.zeros((1, 2), np.int16), labels=payload))):
        write(tmp_path / name)
        with pytest.raises(ValueError, match="holds Python objects .* never loaded"):
            load_codes(tmp_path / name)
    assert not (tmp_path / MARKER).exists()


def test_a_code_file_that_declares_a_huge_array_fails_before_allocating_it(tmp_path):
    header = b"{'descr': '<i8', 'fortran_order': False, 'shape': (1099511627776,), }".ljust(117) + b"\n"
    (tmp_path / "codes.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(64))
    tracemalloc.start()
    with pytest.raises(DataError, match=r"declares shape \(1099511627776,\) .* holds 64 bytes"):
        load_codes(tmp_path / "codes.npy")
    assert tracemalloc.get_traced_memory()[1] < 10 * 2**20
    tracemalloc.stop()


def test_a_deflate_bomb_in_a_code_file_is_refused(tmp_path):
    (tmp_path / "codes.npz").write_bytes(hostile_inputs._bomb())
    with pytest.raises(DataError, match="expands from .* to 200,000,128 bytes.*decompression bomb"):
        load_codes(tmp_path / "codes.npz")


def test_valid_code_files_still_load(tmp_path):
    codes = np.arange(12, dtype=np.int16).reshape(3, 4)
    np.savez_compressed(tmp_path / "c.npz", codes=codes, labels=np.array([0, 1, -1]))
    np.save(tmp_path / "c.npy", np.asfortranarray(codes.astype(">i4")))
    for name in ("c.npz", "c.npy"):
        assert torch.equal(load_codes(tmp_path / name).codes, torch.from_numpy(codes.astype(np.int64)))


# ------------------------------------------------------------------ IDX, images, WAV


def test_a_gzipped_idx_file_is_not_decompressed_past_its_declared_size(tmp_path):
    header = bytes([0, 0, 0x08, 1]) + (10).to_bytes(4, "big")
    (tmp_path / "x.gz").write_bytes(gzip.compress(header + bytes(80 << 20), compresslevel=1))  # 80 MB of zeros
    tracemalloc.start()
    with pytest.raises(DataError, match="expands past 19 bytes"):
        read_idx(tmp_path / "x.gz")
    assert tracemalloc.get_traced_memory()[1] < 20 * 2**20
    tracemalloc.stop()
    (tmp_path / "y").write_bytes(bytes([0, 0, 0x08, 200]) + bytes(800))
    with pytest.raises(DataError, match="declares 200 dimensions"):
        read_idx(tmp_path / "y")


def test_an_image_that_claims_billions_of_pixels_is_refused(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    rng = random.Random(0)
    while True:  # a forged header of 100,000 x 100,000 pixels
        data = hostile_inputs._forged_png(rng)
        if struct.unpack(">I", data[16:20])[0] == 100_000:
            break
    (root / "bomb.png").write_bytes(data)
    with pytest.raises(DataError, match=r"cannot decode image .*bomb\.png: DecompressionBomb"):
        ImageFolderSource(root, None).read("train")


def test_images_are_decoded_only_by_the_decoders_of_their_extensions(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    (root / "a.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")  # EPS runs Ghostscript
    with pytest.raises(DataError, match="it is not a PNG, JPEG.* image"):
        ImageFolderSource(root, None).read("train")


def test_a_wav_file_with_an_absurd_sample_rate_is_refused(tmp_path):
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(100, np.float32), 8000, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    fmt = data.find(b"fmt ")
    data[fmt + 12 : fmt + 16] = (2**31 - 1).to_bytes(4, "little")  # the rate that made resampling need 320 GiB
    (tmp_path / "x.wav").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"x\.wav declares a sample rate of 2,147,483,647 Hz"):
        read_wav(tmp_path / "x.wav", sample_rate=8000)


# ------------------------------------------------------------------ run directories


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return hostile_inputs.template_runs(tmp_path_factory.mktemp("templates"))


def _copy(template, tmp_path, name="tokenizer"):
    run = tmp_path / "run"
    shutil.copytree(template[name], run, ignore=shutil.ignore_patterns("priors", ".previous"))
    return run


@pytest.mark.parametrize("change, words", [
    ({"format_version": 2}, "format_version 2; this vqvae reads version 1: upgrade vqvae"),
    ({"format_version": True}, "format_version True"),
    ({"kind": "vqvae2", "modality": None}, "unknown model kind 'vqvae2'"),
    ({"model": [1, 2]}, "'model' must be dict, got list"),
    ({"train": "fast"}, "'train' must be dict, got str"),
])
def test_config_files_from_elsewhere_are_explained(template, tmp_path, change, words):
    import vqvae

    run = _copy(template, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config.update(change)
    (run / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))
    with pytest.raises(ckpt.CheckpointError, match=words):
        vqvae.load(run)


def test_a_config_that_declares_a_huge_model_fails_before_allocating_it(template, tmp_path):
    from vqvae.modalities import modality_of

    run = _copy(template, tmp_path)
    config = json.loads((run / "config.json").read_text())
    config["model"]["hidden"] = 200_000  # 2.5 TB of weights
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ckpt.CheckpointError, match="shape mismatch"):
        ckpt.load_model(run, modality_of(config).build)
    config["model"]["hidden"] = "wide"
    (run / "config.json").write_text(json.dumps(config))
    with pytest.raises(ckpt.CheckpointError, match="does not describe a model this vqvae can build"):
        ckpt.load_model(run, modality_of(config).build)


def test_a_safetensors_header_that_declares_a_huge_size_is_refused(template, tmp_path):
    import vqvae

    run = _copy(template, tmp_path)
    data = (run / ckpt.MODEL_FILE).read_bytes()
    for declared in (2**63, len(data) * 10):
        (run / ckpt.MODEL_FILE).write_bytes(declared.to_bytes(8, "little") + data[8:])
        with pytest.raises(ckpt.CheckpointError, match="not a readable safetensors file"):
            vqvae.load(run)
    header_size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_size])
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [2**40]
    text = json.dumps(header).encode()
    (run / ckpt.MODEL_FILE).write_bytes(len(text).to_bytes(8, "little") + text + data[8 + header_size :])
    with pytest.raises(ckpt.CheckpointError, match="not a readable safetensors file"):
        vqvae.load(run)
