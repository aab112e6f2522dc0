"""Hostile and corrupt inputs for every file reader of the project, drawn from a ``random.Random``.

Shared by ``tests/test_fuzz_readers.py`` (hypothesis draws the Random, few examples) and
``benchmarks/fuzz.py`` (thousands of seeded cases, each in a worker process with time and
memory limits). ``READERS[name]`` is a :class:`Reader`: ``make(rng, folder)`` writes one
case into an empty folder and returns the path to read, ``read(path)`` runs the project's
reader on it, ``check(folder)`` (optional) returns what went wrong beyond the exception.
A reader may fail only with a ValueError or OSError subclass (:data:`CLEAN`) whose message
is not empty; anything else, a hang or a memory blow-up is a defect.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import shutil
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import torch
from PIL import Image

CLEAN = (ValueError, OSError)
ESCAPED = "escaped-by-traversal"  # the name a path-traversal member would be written under
MARKER = "unpickled-marker"  # the file a pickle payload creates if it is ever unpickled

_INTS = [0, 1, 2, 3, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000,
         0xFFFFFFFF, 2**40, 2**63 - 1, 2**64 - 1]


@dataclass(frozen=True)
class Reader:
    make: Callable[[random.Random, Path], Path]
    read: Callable[[Path], object]
    check: Callable[[Path], str | None] | None = None


# --------------------------------------------------------------------- byte mutations


def mutate(rng: random.Random, data: bytes, header: int = 64) -> bytes:
    """One to three corruptions, half of them aimed at the first ``header`` bytes (where
    formats keep their sizes): truncation, flipped bits, inserted, deleted or repeated bytes,
    an extreme integer written over a field, garbage, or nothing at all."""
    out = bytearray(data)

    def pos() -> int:
        span = len(out) if rng.random() < 0.5 else min(len(out), header)
        return rng.randint(0, span)

    for _ in range(rng.randint(1, 3)):
        op = rng.randrange(9)
        if op == 0:
            del out[pos():]
        elif op == 1 and out:
            for _ in range(rng.randint(1, 8)):
                i = min(pos(), len(out) - 1)
                out[i] ^= 1 << rng.randrange(8)
        elif op == 2:
            i = pos()
            out[i:i] = rng.randbytes(rng.randint(1, 16))
        elif op == 3:
            i = pos()
            del out[i : i + rng.randint(1, 64)]
        elif op == 4:
            width, order = rng.choice((1, 2, 4, 8)), rng.choice(("little", "big"))
            value = rng.choice(_INTS) % (1 << (8 * width))
            i = pos()
            out[i : i + width] = value.to_bytes(width, order)
        elif op == 5 and out:
            i = pos()
            out[i:i] = out[i : i + rng.randint(1, 256)] * rng.randint(1, 4)
        elif op == 6:
            out = bytearray(rng.randbytes(rng.randint(0, 256)))
        elif op == 7:
            out = bytearray()
    return bytes(out)


def _np_rng(rng: random.Random) -> np.random.Generator:
    return np.random.default_rng(rng.getrandbits(32))


# --------------------------------------------------------------------------- IDX

_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def make_idx(rng: random.Random, folder: Path) -> Path:
    code = rng.choice(list(_IDX_TYPES))
    shape = [rng.randint(0, 6) for _ in range(rng.randint(1, 3))]
    array = _np_rng(rng).integers(0, 120, size=shape).astype(_IDX_TYPES[code])
    header = bytes([0, 0, code, len(shape)]) + b"".join(d.to_bytes(4, "big") for d in shape)
    raw = header + array.tobytes()
    roll = rng.random()
    if roll < 0.2:  # a forged header: huge, zero or many dimensions over little data
        dims = [rng.choice(_INTS) % 2**32 for _ in range(rng.choice((1, 3, 64, 255)))]
        raw = bytes([0, 0, rng.choice((code, 0, 0x0A, 0xFF)), len(dims) % 256])
        raw += b"".join(d.to_bytes(4, "big") for d in dims) + rng.randbytes(rng.randint(0, 64))
    elif roll < 0.85:
        raw = mutate(rng, raw, header=len(header))
    name = "images-idx3-ubyte"
    if rng.random() < 0.4:
        raw, name = gzip.compress(raw, compresslevel=1), name + ".gz"
        if rng.random() < 0.3:
            raw = mutate(rng, raw, header=16)
    (folder / name).write_bytes(raw)
    return folder / name


def read_idx_file(path: Path) -> object:
    from vqvae.modalities.image.data.idx import read_idx

    return read_idx(path)


# --------------------------------------------------------------------------- tar archives


def forge_tar(rng: random.Random, members: list[tuple[str, bytes]], hostile: bool) -> bytes:
    """A tar of ``members``; ``hostile`` adds path-traversal names, links out of the archive,
    devices, and sizes that lie, and may compress or corrupt the result."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=rng.choice((tarfile.GNU_FORMAT, tarfile.PAX_FORMAT))) as tar:
        entries = list(members)
        if hostile:
            entries += [(rng.choice((f"../{ESCAPED}.png", f"a/../../{ESCAPED}.png", f"/tmp/{ESCAPED}.png",
                                     f"./../{ESCAPED}.wav", f"{'x/' * 200}{ESCAPED}.png")), b"x" * 8)]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if hostile:
            for kind in rng.sample((tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE,
                                    tarfile.DIRTYPE), rng.randint(1, 3)):
                info = tarfile.TarInfo(rng.choice(("link.png", "c/dev.png", "fifo.wav", "d.png")))
                info.type, info.linkname = kind, rng.choice(("/etc/passwd", "../../etc/shadow", "link.png"))
                tar.addfile(info)
    raw = bytearray(buffer.getvalue())
    if hostile and rng.random() < 0.5:  # a size field that lies (octal, or GNU base-256)
        starts = [i for i in range(0, len(raw) - 512, 512) if raw[i + 257 : i + 262] == b"ustar"]
        if starts:
            at = rng.choice(starts) + 124
            raw[at : at + 12] = rng.choice((b"77777777777\0", b"\x80" + (2**62).to_bytes(11, "big"),
                                            b"00000000000\0", b"\xff" * 12))
    data = bytes(raw)
    if rng.random() < 0.4:
        data = gzip.compress(data, compresslevel=1)
    if rng.random() < 0.3:
        data = mutate(rng, data, header=512)
    return data


def _no_escape(folder: Path) -> str | None:
    for where in (folder.parent, folder.parent.parent, Path("/tmp")):
        if list(where.glob(f"{ESCAPED}*")):
            return f"a path-traversal member was written to {where}"
    return None


# --------------------------------------------------------------------------- CIFAR-10

_RECORD = 1 + 3 * 32 * 32


def make_cifar(rng: random.Random, folder: Path) -> Path:
    n = rng.randint(0, 3)
    records = bytearray(rng.randbytes(n * _RECORD))
    for i in range(n):
        records[i * _RECORD] = rng.randrange(10) if rng.random() < 0.8 else rng.randrange(256)
    batch = bytes(records) if rng.random() < 0.2 else mutate(rng, bytes(records), header=_RECORD)
    meta = "\n".join(rng.choice(("cat", "dog", "", "é", "x" * 300)) for _ in range(rng.randint(0, 12))).encode()
    if rng.random() < 0.5:
        (folder / "test_batch.bin").write_bytes(batch)
        if rng.random() < 0.5:
            (folder / "batches.meta.txt").write_bytes(meta)
        return folder
    members = [("cifar-10-batches-bin/test_batch.bin", batch), ("cifar-10-batches-bin/batches.meta.txt", meta)]
    (folder / "cifar-10-binary.tar.gz").write_bytes(forge_tar(rng, members, hostile=rng.random() < 0.5))
    return folder / "cifar-10-binary.tar.gz"


def read_cifar(path: Path) -> object:
    from vqvae.modalities.image.data.cifar import Cifar10BinarySource

    source = Cifar10BinarySource(path)
    return [source.read(split) for split in source.splits() if split == "test"]


# --------------------------------------------------------------------------- images

_MODES = {"PNG": ("1", "L", "P", "RGB", "RGBA", "LA", "I;16"), "JPEG": ("L", "RGB", "CMYK"),
          "BMP": ("1", "L", "P", "RGB"), "GIF": ("L", "P"), "TIFF": ("1", "L", "RGB", "RGBA", "I", "F", "CMYK"),
          "WEBP": ("RGB", "RGBA")}
_EXT = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "GIF": ".gif", "TIFF": ".tif", "WEBP": ".webp"}


def image_bytes(rng: random.Random) -> tuple[bytes, str]:
    """A small valid image of a random format and mode, and its extension."""
    fmt = rng.choice(list(_MODES))
    mode = rng.choice(_MODES[fmt])
    size = (rng.randint(1, 12), rng.randint(1, 12))
    pixels = _np_rng(rng).integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB").convert(mode if mode not in ("I;16", "I", "F") else "L")
    if mode in ("I;16", "I", "F"):
        image = image.convert(mode)
    buffer = io.BytesIO()
    try:
        image.save(buffer, format=fmt)
    except (OSError, ValueError, KeyError):  # a mode this Pillow cannot write in that format
        buffer, fmt = io.BytesIO(), "PNG"
        image.convert("RGB").save(buffer, format=fmt)
    return buffer.getvalue(), _EXT[fmt]


def _forged_png(rng: random.Random) -> bytes:
    """A PNG whose header claims a huge or zero size, its CRC right or wrong."""
    width, height = rng.choice(((100_000, 100_000), (9_000, 9_000), (0, 5), (2**31 - 1, 1), (1, 2**31 - 1)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, rng.choice((0, 2, 6)), 0, 0, 0)
    crc = zlib.crc32(b"IHDR" + ihdr) if rng.random() < 0.8 else 0
    idat = zlib.compress(b"\0" * rng.randint(0, 100))
    return (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", crc)
            + struct.pack(">I", len(idat)) + b"IDAT" + idat + struct.pack(">I", zlib.crc32(b"IDAT" + idat))
            + b"\0\0\0\0IEND\xaeB`\x82")


def _image_members(rng: random.Random) -> list[tuple[str, bytes]]:
    layout = rng.choice(("flat", "classes", "splits"))
    members = []
    for i in range(rng.randint(1, 4)):
        data, ext = image_bytes(rng)
        roll = rng.random()
        if roll < 0.08:
            data, ext = _forged_png(rng), ".png"
        elif roll < 0.35:
            data = mutate(rng, data, header=32)
        ext = ext if rng.random() < 0.9 else rng.choice(list(_EXT.values()))
        prefix = {"flat": "", "classes": f"c{i % 2}/", "splits": f"{rng.choice(('train', 'val'))}/c{i % 2}/"}[layout]
        members.append((f"{prefix}{i}{ext}", data))
    return members


def make_image_folder(rng: random.Random, folder: Path) -> Path:
    if rng.random() < 0.5:
        root = folder / "images"
        for name, data in _image_members(rng):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_bytes(data)
        if rng.random() < 0.2:
            (root / "empty.png").write_bytes(b"")
        return root
    path = folder / rng.choice(("images.tar", "images.tar.gz", "images.tgz"))
    path.write_bytes(forge_tar(rng, _image_members(rng), hostile=rng.random() < 0.6))
    return path


def read_image_folder(path: Path) -> object:
    from vqvae.modalities.image.data.folder import ImageFolderSource

    source = ImageFolderSource(path, image_size=8 if "tgz" in path.name or path.name == "images" else None)
    return [source.read(split) for split in source.splits()]


# --------------------------------------------------------------------------- WAV

_SUBTYPES = ("PCM_16", "PCM_24", "PCM_32", "PCM_U8", "FLOAT", "DOUBLE", "ULAW", "ALAW", "IMA_ADPCM",
             "MS_ADPCM", "GSM610")


def make_wav(rng: random.Random, folder: Path) -> Path:
    subtype = rng.choice(_SUBTYPES)
    channels = 1 if rng.random() < 0.8 or subtype == "GSM610" else 2
    frames = rng.randint(0, 400)
    samples = _np_rng(rng).uniform(-1.2, 1.2, size=(frames, channels)).astype(np.float32)
    buffer = io.BytesIO()
    try:
        soundfile.write(buffer, samples, rng.choice((8000, 16000, 44100)),
                        format=rng.choice(("WAV", "WAVEX", "RF64")), subtype=subtype)
    except (RuntimeError, ValueError, TypeError):  # a combination libsndfile cannot write
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, 8000, format="WAV", subtype="PCM_16")
    data = bytearray(buffer.getvalue())
    roll = rng.random()
    if roll < 0.3:  # a field of the fmt or data chunk set to an extreme value
        chunk = data.find(rng.choice((b"fmt ", b"data", b"ds64", b"RIFF", b"RF64")))
        if chunk >= 0:
            at = chunk + rng.choice((4, 10, 12, 16, 22, 24, 28))
            width = rng.choice((2, 4, 8))
            data[at : at + width] = (rng.choice(_INTS) % (1 << (8 * width))).to_bytes(width, "little")
    elif roll < 0.85:
        data = bytearray(mutate(rng, bytes(data), header=80))
    name = rng.choice(("clip.wav", "member.wav"))  # member: decoded from memory, as archive members are
    (folder / name).write_bytes(bytes(data))
    return folder / name


def read_wav_file(path: Path) -> object:
    from vqvae.modalities.speech.wav import decode_wav, read_wav

    if path.name.startswith("member"):
        return decode_wav(io.BytesIO(path.read_bytes()), f"member {path.name}")
    return read_wav(path, sample_rate=8000)


# --------------------------------------------------------------------------- code files


class _Payload:
    """Unpickling this creates the marker file: proof that a pickle was loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _forged_npy(rng: random.Random) -> bytes:
    descr = rng.choice(("'<i2'", "'<i8'", "'|O'", "'<V0'", "'|u1'", "'<U0'", "[('a', '<i4')]", "'>f8'", "'<i99'"))
    shape = rng.choice(("(1099511627776,)", "(-1,)", "(3, 2**40)", "()", "(0,)", "(2, 3)", "(1e9,)", "'x'",
                        "(" * 300 + ")" * 300))
    header = f"{{'descr': {descr}, 'fortran_order': {rng.choice(('False', 'True', '1'))}, 'shape': {shape}, }}"
    header = header.ljust(rng.choice((len(header) + 1, 63, 127))) + "\n"
    return (b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode()
            + rng.randbytes(rng.randint(0, 64)))


_BOMB: list[bytes] = []


def _bomb() -> bytes:
    """An .npz whose one member, 200 MB of zeros, deflates to about 200 kB (made once)."""
    if not _BOMB:
        header = b"{'descr': '<i2', 'fortran_order': False, 'shape': (100000000,), }"
        header = header.ljust(117) + b"\n"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
            archive.writestr("codes.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
                             + bytes(200_000_000))
        _BOMB.append(buffer.getvalue())
    return _BOMB[0]


def make_codes(rng: random.Random, folder: Path) -> Path:
    n = rng.randint(0, 4)
    gen = _np_rng(rng)
    dtype = rng.choice((np.int16, np.int32, np.int64, np.uint8, np.uint64, np.int8, np.float32, np.bool_))
    codes = gen.integers(-2, 40, size=(n, *[rng.randint(0, 3) for _ in range(rng.randint(0, 2))])).astype(dtype)
    arrays = {"codes": codes, "labels": gen.integers(-1, 9, size=rng.choice((n, n + 1))).astype(np.int64)}
    if rng.random() < 0.3:
        arrays["lengths"] = gen.integers(-1, 5, size=n)
    roll = rng.random()
    if roll < 0.15:
        arrays[rng.choice(("codes", "labels", "speakers"))] = np.array([_Payload(folder / MARKER)] * max(n, 1), dtype=object)
    members = {f"{k}.npy": _npy(v) for k, v in arrays.items()}
    if 0.15 <= roll < 0.35:
        members[f"{rng.choice(('codes', 'labels'))}.npy"] = _forged_npy(rng)
    if rng.random() < 0.2:  # a bare .npy
        data, name = members.get("codes.npy", _forged_npy(rng)), "codes.npy"
        data = data if rng.random() < 0.4 else mutate(rng, data, header=128)
    else:
        name, buffer = "codes.npz", io.BytesIO()
        compression = rng.choice((zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED))
        with zipfile.ZipFile(buffer, "w", compression) as archive:
            for member, payload in members.items():
                archive.writestr(member, payload)
        data = buffer.getvalue() if rng.random() < 0.4 else mutate(rng, buffer.getvalue(), header=64)
        if rng.random() < 0.03:
            data = _bomb()
    (folder / name).write_bytes(data)
    return folder / name


def read_code_file(path: Path) -> object:
    from vqvae.runs import load_codes

    return load_codes(path)


def _not_unpickled(folder: Path) -> str | None:
    return "a pickled object was unpickled" if (folder / MARKER).exists() else None


# --------------------------------------------------------------------------- run directories


def template_runs(folder: Path) -> dict[str, Path]:
    """A tiny tokenizer run and a prior over it, each with a one-step checkpoint (made once)."""
    from vqvae.checkpoint_pair import save_checkpoint
    from vqvae.modalities import modality_of
    from vqvae.priors.training import build_prior, start_prior_run
    from vqvae.train import TrainConfig
    from vqvae.workflow import start_run

    runs = {"tokenizer": folder / "tokenizer", "prior": folder / "tokenizer" / "priors" / "transformer"}
    if (runs["prior"] / "model.safetensors").exists():
        return runs
    images = folder / "images"
    gen = np.random.default_rng(0)
    for label in ("a", "b"):
        (images / label).mkdir(parents=True, exist_ok=True)
        for i in range(4):
            Image.fromarray(gen.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(images / label / f"{i}.png")
    train = TrainConfig(batch_size=4, max_steps=2, device="cpu", precision="fp32")
    start_run(runs["tokenizer"], str(images), {"hidden": 8, "res_hidden": 4, "codebook_size": 8, "code_dim": 4},
              train, force=True)
    _one_step(runs["tokenizer"], modality_of(json.loads((runs["tokenizer"] / "config.json").read_text())).build,
              save_checkpoint)
    start_prior_run(runs["tokenizer"], "transformer", (2, 2), model_settings={"width": 8, "depth": 1, "heads": 2},
                    train=train, force=True)
    _one_step(runs["prior"], build_prior, save_checkpoint)
    return runs


def _one_step(run: Path, build: Callable, save: Callable) -> None:
    model = build(json.loads((run / "config.json").read_text()))
    optimizer = torch.optim.Adam(model.parameters())
    sum(p.float().square().sum() for p in model.parameters()).backward()
    optimizer.step()
    save(run, model, optimizer, {"step": 1, "elapsed": 0.0})


_TEMPLATES: list[Path] = []


def _copy_template(rng: random.Random, folder: Path) -> Path:
    if not _TEMPLATES:  # once per process
        _TEMPLATES.append(Path(tempfile.mkdtemp(prefix="vqvae-fuzz-templates-")))
    runs = template_runs(_TEMPLATES[0])
    source = runs[rng.choice(("tokenizer", "tokenizer", "prior"))]
    run = folder / "run"
    shutil.copytree(source, run, ignore=shutil.ignore_patterns("priors", "codes", ".previous"))
    return run


def _random_value(rng: random.Random) -> object:
    return rng.choice((None, True, 0, -1, 1, 3, 2**70, 10**6, 1.5, -0.0, float("nan"), float("inf"), "", "x",
                       "vqvae", "prior", [], [1, 2], {}, {"a": 1}))


def _mutate_json(rng: random.Random, value: object, depth: int = 0) -> object:
    if isinstance(value, dict) and value and depth < 3 and rng.random() < 0.8:
        value = dict(value)
        nested = [k for k in value if isinstance(value[k], dict)]  # the model and train settings
        key = rng.choice(nested if nested and rng.random() < 0.6 else list(value))
        roll = rng.random()
        if roll < 0.25:
            del value[key]
        elif roll < 0.5:
            value[key] = _random_value(rng)
        elif roll < 0.6:
            value[key + "_unknown"] = value.pop(key)
        else:
            value[key] = _mutate_json(rng, value[key], depth + 1)
        return value
    return _random_value(rng)


def make_config(rng: random.Random, folder: Path) -> Path:
    run = _copy_template(rng, folder)
    config = json.loads((run / "config.json").read_text())
    roll = rng.random()
    if roll < 0.15:
        config["kind"] = rng.choice(("vqvae2", "prior", "vae", "", None, 7))
    elif roll < 0.3:
        config["format_version"] = rng.choice((0, 2, 99, "1", 1.0, True, None, -1))
    for _ in range(rng.randint(0, 3)):
        config = _mutate_json(rng, config)
    text = json.dumps(config, allow_nan=True)
    if rng.random() < 0.1:
        text = rng.choice(("[" * 100_000, '{"a": ' * 50_000, "1" * 5000, "null", "[]", '"x"'))
    elif rng.random() < 0.15:
        text = mutate(rng, text.encode(), header=len(text)).decode("latin-1")
    (run / "config.json").write_text(text, encoding="latin-1")
    return run


def read_run(path: Path) -> object:
    import vqvae
    from vqvae.train import read_train_config

    model = vqvae.load(path)
    read_train_config(path, None)
    return model


# --------------------------------------------------------------------------- safetensors


def _forge_safetensors(rng: random.Random, data: bytes) -> bytes:
    size = int.from_bytes(data[:8], "little")
    header, body = json.loads(data[8 : 8 + size]), data[8 + size :]
    names = [k for k in header if k != "__metadata__"]
    for _ in range(rng.randint(1, 3)):
        roll = rng.random()
        name = rng.choice(names) if names else "x"
        entry = header.get(name) if isinstance(header.get(name), dict) else {}
        if roll < 0.2:
            entry["dtype"] = rng.choice(("F16", "BF16", "F64", "I8", "U8", "BOOL", "I64", "F8_E4M3", "XX", "", 3))
        elif roll < 0.4:
            entry["shape"] = rng.choice(([2**40], [-1], [], [0], [3, 2**31], [1] * 100, ["a"], None))
        elif roll < 0.55:
            entry["data_offsets"] = rng.choice(([0, 2**62], [10, 5], [0, 0], [-1, 4], [0], None))
        elif roll < 0.7:
            meta = header.setdefault("__metadata__", {})
            key = rng.choice(("step", "checkpoint", "info", "param_groups", "scalars", "format"))
            meta[key] = rng.choice(("abc", "-5", "1e9", "{}", "[]", "{bad", '{"step": "x"}', '{"0": 5}', "[{}]", 5))
        elif roll < 0.8:
            header.pop(name, None)
        elif roll < 0.9:
            header = rng.choice(([], "x", {"__metadata__": []}, {"a": 1}))
            break
        header[name] = entry
    text = json.dumps(header).encode()
    declared = len(text) if rng.random() < 0.8 else rng.choice(_INTS) % 2**64
    return declared.to_bytes(8, "little") + text + body


def make_safetensors(rng: random.Random, folder: Path) -> Path:
    run = _copy_template(rng, folder)
    for name in rng.sample(("model.safetensors", "train_state.safetensors"), rng.randint(1, 2)):
        data = (run / name).read_bytes()
        data = _forge_safetensors(rng, data) if rng.random() < 0.5 else mutate(rng, data, header=16)
        (run / name).write_bytes(data)
    return run


def read_checkpoint(path: Path) -> object:
    import vqvae
    from vqvae.checkpoint_pair import load_checkpoint
    from vqvae.modalities import modality_of
    from vqvae.priors.training import build_prior

    config = json.loads((path / "config.json").read_text())
    model = build_prior(config) if config["kind"] == "prior" else modality_of(config).build(config)
    info = load_checkpoint(path, model, torch.optim.Adam(model.parameters()))
    vqvae.load(path)
    return info


READERS: dict[str, Reader] = {
    "idx": Reader(make_idx, read_idx_file),
    "cifar": Reader(make_cifar, read_cifar, _no_escape),
    "image_folder": Reader(make_image_folder, read_image_folder, _no_escape),
    "wav": Reader(make_wav, read_wav_file),
    "code_file": Reader(make_codes, read_code_file, _not_unpickled),
    "config": Reader(make_config, read_run),
    "safetensors": Reader(make_safetensors, read_checkpoint),
}
