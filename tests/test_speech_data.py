"""Tests of vqvae.modalities.speech's data: WAV input/output, audio folders and archives, fsdd, crops."""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import vqvae.modalities.speech.fsdd as fsdd_module
import vqvae.modalities.speech.source as source_module
from conftest import shared_data
from vqvae.data.errors import DataError
from vqvae.modalities.speech.data import (
    DEFAULT_SAMPLE_RATE,
    AudioData,
    audio_datasets,
    available_audio_splits,
    is_audio,
    load_audio,
    read_wav,
    write_wav,
)

FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")
PCM16_STEP = 1 / 32768


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Downloads land in tmp_path; the decode cache stays the session's (see conftest)."""
    monkeypatch.setenv("VQVAE_DATA", str(tmp_path / "downloads"))


def _tone(freq: float, rate: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _clip(seed: int, n: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.8, 0.8, n).astype(np.float32)


def _wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    write_wav(path, torch.from_numpy(samples), rate)
    return path


def _speech_folder(root: Path, speakers: tuple[str, ...] | None, per_speaker: int = 20) -> Path:
    """``root/<speaker>/NN.wav`` (or ``root/NN.wav`` without speakers) at 16 kHz."""
    for s, speaker in enumerate(speakers or ("",)):
        for i in range(per_speaker):
            _wav(root / speaker / f"{i:02d}.wav", _clip(100 * s + i, 40 + 2 * i))
    return root


def _tar(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)  # a wrapper folder, as `tar czf x.tgz folder` makes
    return archive


def _fsdd_copy(root: Path, takes: tuple[int, ...], digits: int = 2) -> Path:
    """A miniature FSDD: ``root/recordings/{digit}_{speaker}_{take}.wav`` at 8 kHz."""
    for digit in range(digits):
        for speaker in ("bob", "amy"):
            for take in takes:
                samples = _clip(digit * 1000 + take, 30 + take)
                _wav(root / "recordings" / f"{digit}_{speaker}_{take}.wav", samples, 8000)
    return root


# --- WAV files --------------------------------------------------------------------------


def test_write_then_read_round_trips_within_16_bit_quantisation(tmp_path: Path) -> None:
    samples = _clip(0, 500)
    samples[:2] = (1.0, -1.0)  # full scale both ways
    path = _wav(tmp_path / "new" / "deep" / "x.wav", samples, 11025)  # parents are created
    wave, rate = read_wav(path)
    assert rate == 11025 and wave.dtype == torch.float32 and wave.shape == (500,)
    assert torch.allclose(wave, torch.from_numpy(samples), atol=PCM16_STEP, rtol=0)
    assert sf.info(str(path)).subtype == "PCM_16"
    assert [p.name for p in path.parent.iterdir()] == ["x.wav"]  # no temporary file left


def test_write_accepts_a_channel_row_and_clips(tmp_path: Path) -> None:
    wave = torch.tensor([[2.0, -3.0, 0.25]], dtype=torch.float64)
    write_wav(tmp_path / "x.wav", wave, 8000)
    read, _ = read_wav(tmp_path / "x.wav")
    assert torch.allclose(read, torch.tensor([1.0, -1.0, 0.25]), atol=PCM16_STEP, rtol=0)


@pytest.mark.parametrize(
    ("wave", "rate", "error", "match"),
    [
        (torch.zeros(2, 10), 8000, ValueError, r"mono \(T,\) or \(1, T\).*got shape \(2, 10\)"),
        (torch.zeros(0), 8000, ValueError, "non-empty"),
        (torch.tensor([0.0, float("nan")]), 8000, ValueError, "NaN"),
        (torch.zeros(4, dtype=torch.int16), 8000, TypeError, "float tensor"),
        (torch.zeros(4), 0, ValueError, "positive integer.*got 0"),
    ],
)
def test_write_rejects_bad_input(
    tmp_path: Path, wave: torch.Tensor, rate: int, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        write_wav(tmp_path / "x.wav", wave, rate)
    assert not (tmp_path / "x.wav").exists()


def test_resampling_keeps_the_tone_and_removes_what_the_new_rate_cannot_hold(
    tmp_path: Path,
) -> None:
    # 440 Hz stays; 6 kHz is above the 4 kHz Nyquist limit of 8 kHz and must be filtered
    # out, not folded onto 2 kHz.
    path = _wav(tmp_path / "x.wav", _tone(440, 16000, 1.0, 0.4) + _tone(6000, 16000, 1.0, 0.4))
    wave, rate = read_wav(path, sample_rate=8000)
    assert rate == 8000 and wave.shape == (8000,)
    spectrum = np.abs(np.fft.rfft(wave.numpy()))  # 1 Hz bins: 1 s of audio
    assert int(spectrum.argmax()) == 440
    assert spectrum[2000] < 0.01 * spectrum[440]
    odd, _ = read_wav(_wav(tmp_path / "y.wav", _tone(300, 44100, 0.1), 44100), sample_rate=8000)
    assert odd.shape == (800,)  # 4410 samples * 80 / 441
    same, same_rate = read_wav(path, sample_rate=16000)
    assert same_rate == 16000 and same.shape == (16000,)


def test_read_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"missing\.wav does not exist"):
        read_wav(tmp_path / "missing.wav")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n")
    with pytest.raises(ValueError, match=r"notes\.wav is not a readable WAV file \("):
        read_wav(text)
    sf.write(tmp_path / "stereo.wav", np.zeros((100, 2), np.int16), 8000, subtype="PCM_16")
    with pytest.raises(ValueError, match=r"has 2 channels but mono .*`sox in\.wav -c 1 out\.wav`"):
        read_wav(tmp_path / "stereo.wav")
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.int16), 8000, subtype="PCM_16")
    with pytest.raises(ValueError, match=r"empty\.wav is empty"):
        read_wav(tmp_path / "empty.wav")
    sf.write(tmp_path / "x.flac", np.zeros(100, np.int16), 8000, format="FLAC")
    with pytest.raises(ValueError, match="not a readable WAV file.*FLAC"):
        read_wav(tmp_path / "x.flac")
    with pytest.raises(ValueError, match="is a folder"):
        read_wav(tmp_path)


# --- generic folders and archives -------------------------------------------------------


def test_speaker_folders_are_parsed_resampled_and_carved(tmp_path: Path) -> None:
    root = _speech_folder(tmp_path / "speech", ("bob", "amy"))
    train, val = load_audio(root, "train"), load_audio(root, "val")
    assert train.speaker_names == val.speaker_names == ("amy", "bob")
    assert train.labels is None and train.classes == ()
    assert train.sample_rate == val.sample_rate == DEFAULT_SAMPLE_RATE
    everything = {f"{s}/{i:02d}.wav" for s in ("amy", "bob") for i in range(20)}
    # The carve rule, stated independently: sha1 of the path below the root, mod 10.
    expected_val = {
        n for n in everything if int(hashlib.sha1(n.encode()).hexdigest(), 16) % 10 == 0
    }
    assert set(val.names) == expected_val and len(expected_val) > 0
    assert set(train.names) == everything - expected_val
    assert available_audio_splits(root) == ("train", "val")
    for data in (train, val):
        for name, speaker, wave in zip(
            data.names, data.speakers.tolist(), data.waveforms, strict=True
        ):
            assert data.speaker_names[speaker] == name.split("/")[0]
            assert wave.shape == ((40 + 2 * int(name[-6:-4])) // 2,)  # 16 kHz -> 8 kHz
    assert torch.equal(train.lengths(), torch.tensor([w.numel() for w in train.waveforms]))


def test_flat_folder_has_no_speakers_and_native_rate_is_exact(tmp_path: Path) -> None:
    root = _speech_folder(tmp_path / "flat", None)
    data = load_audio(root, "train", sample_rate=16000)
    assert data.speakers is None and data.speaker_names == ()
    assert data.names == tuple(sorted(data.names)) and "/" not in "".join(data.names)
    first = int(data.names[0][:2])
    assert torch.allclose(
        data.waveforms[0], torch.from_numpy(_clip(first, 40 + 2 * first)), atol=PCM16_STEP, rtol=0
    )


def test_archive_gives_the_same_data_as_the_folder(tmp_path: Path) -> None:
    root = _speech_folder(tmp_path / "speech", ("bob", "amy"))
    archive = _tar(root, tmp_path / "speech.tar.gz")
    for split in ("train", "val"):
        a, b = load_audio(root, split), load_audio(archive, split)
        assert (a.names, a.speaker_names) == (b.names, b.speaker_names)
        assert torch.equal(a.speakers, b.speakers)
        assert all(torch.equal(x, y) for x, y in zip(a.waveforms, b.waveforms, strict=True))
    assert "archive" in load_audio(archive, "train").source


def test_split_folders_are_the_splits(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        for i in range(count):
            _wav(tmp_path / "set" / split / "eve" / f"{i}.wav", _clip(i, 30))
    assert available_audio_splits(tmp_path / "set") == ("train", "val", "test")
    assert [len(load_audio(tmp_path / "set", s)) for s in ("train", "val", "test")] == [3, 2, 1]
    assert load_audio(tmp_path / "set", "test").speaker_names == ("eve",)


def test_second_load_comes_from_the_cache_and_edits_invalidate_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _speech_folder(tmp_path / "speech", None, per_speaker=10)
    first = load_audio(root, "train")

    def _no_decoding(*args: object) -> None:
        raise AssertionError("decoded although the cache holds this split")

    with monkeypatch.context() as patch:
        patch.setattr(source_module, "decode_wav", _no_decoding)
        again = load_audio(root, "train")
    assert again.names == first.names
    assert all(torch.equal(x, y) for x, y in zip(first.waveforms, again.waveforms, strict=True))
    _wav(root / f"{first.names[0]}", _clip(99, 64))  # a changed file is decoded afresh
    assert load_audio(root, "train").waveforms[0].shape == (32,)


def test_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no WAV files found"):
        load_audio(tmp_path / "empty", "train")
    with pytest.raises(DataError, match=r"unknown audio data 'nope'.*fsdd"):
        load_audio("nope", "train")
    root = _speech_folder(tmp_path / "speech", ("bob",), per_speaker=12)
    with pytest.raises(ValueError, match="unknown split 'dev'.*train, val"):
        load_audio(root, "dev")
    with pytest.raises(DataError, match="no 'test' split.*available: train, val"):
        load_audio(root, "test")
    _wav(root / "loose.wav", _clip(0, 30))
    with pytest.raises(DataError, match="both WAV files .* and speaker folders"):
        load_audio(root, "train")
    with pytest.raises(ValueError, match="positive integer"):
        load_audio(root, "train", sample_rate=-1)


def test_is_audio(tmp_path: Path, tiny_images: Path) -> None:
    root = _speech_folder(tmp_path / "speech", ("bob",), per_speaker=2)
    assert is_audio("fsdd") and is_audio("FSDD") and "fsdd" in audio_datasets()
    assert is_audio(root) and is_audio(_tar(root, tmp_path / "speech.tgz"))
    assert not is_audio(tiny_images)
    assert not is_audio("mnist") and not is_audio(tmp_path / "missing")
    (root / "bob" / "cover.png").write_bytes(b"")  # images next to the WAVs: not audio
    assert not is_audio(root)
    (tmp_path / "broken.tar.gz").write_bytes(b"not a tar")
    assert not is_audio(tmp_path / "broken.tar.gz")


# --- crops --------------------------------------------------------------------------------


def _crop_data() -> AudioData:
    waves = (torch.arange(1, 101, dtype=torch.float32) / 100, torch.full((5,), 0.5))
    return AudioData(waves, None, None, (), (), ("long.wav", "short.wav"), 8000, "test", "train")


def test_crops_are_windows_or_zero_padded_clips() -> None:
    data = _crop_data()
    batch = data.crops(torch.tensor([0, 1, 0, 1]), 12, torch.Generator().manual_seed(0))
    assert batch.shape == (4, 1, 12) and batch.dtype == torch.float32
    for row in (0, 2):  # a contiguous window of the long clip
        start = round(float(batch[row, 0, 0]) * 100) - 1
        assert torch.equal(batch[row, 0], data.waveforms[0][start : start + 12])
    for row in (1, 3):  # the whole short clip, zeros around it
        nonzero = batch[row, 0].nonzero().flatten()
        assert nonzero.numel() == 5 and int(nonzero[-1] - nonzero[0]) == 4
        assert torch.all(batch[row, 0, nonzero] == 0.5)


def test_crops_depend_only_on_the_generator_state() -> None:
    data = _crop_data()
    index = torch.tensor([0] * 6 + [1] * 6)
    a = data.crops(index, 8, torch.Generator().manual_seed(3))
    b = data.crops(index, 8, torch.Generator().manual_seed(3))
    c = data.crops(index, 8, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({float(row[0, 0]) for row in a[:6]}) > 1  # window offsets vary within a batch
    assert len({int(row[0].nonzero()[0]) for row in a[6:]}) > 1  # and so do padded positions
    with pytest.raises(ValueError, match="indices must lie in 0..1"):
        data.crops(torch.tensor([2]), 8, torch.Generator())
    with pytest.raises(ValueError, match="positive number of samples"):
        data.crops(torch.tensor([0]), 0, torch.Generator())


def test_audio_data_checks_its_fields() -> None:
    wave = (torch.zeros(3),)
    with pytest.raises(DataError, match=r"labels span 4..4 but there are 2 names"):
        AudioData(wave, torch.tensor([4]), None, ("a", "b"), (), ("x",), 8000, "t", "train")
    with pytest.raises(DataError, match="float32"):
        AudioData(
            (torch.zeros(3, dtype=torch.float64),), None, None, (), (), ("x",), 8000, "t", "val"
        )
    assert "clips=1" in repr(AudioData(wave, None, None, (), (), ("x",), 8000, "t", "test"))


# --- fsdd -----------------------------------------------------------------------------------


def test_fsdd_splits_by_take_and_parses_names(tmp_path: Path) -> None:
    root = _fsdd_copy(tmp_path / "fsdd", takes=(0, 4, 5, 9, 10, 30))
    assert available_audio_splits("fsdd", root) == ("train", "val", "test")
    takes = {"test": {0, 4}, "val": {5, 9}, "train": {10, 30}}
    for split, wanted in takes.items():
        data = load_audio("fsdd", split, data_dir=root)
        assert len(data) == 2 * 2 * len(wanted) and data.speaker_names == ("amy", "bob")
        assert data.classes == tuple("0123456789")
        for name, label, speaker in zip(
            data.names, data.labels.tolist(), data.speakers.tolist(), strict=True
        ):
            digit, who, take = re.fullmatch(r"(\d)_(\w+)_(\d+)\.wav", name).groups()
            assert (int(digit), who, int(take) in wanted) == (
                label,
                data.speaker_names[speaker],
                True,
            )
    flat = load_audio("fsdd", "val", data_dir=root / "recordings")  # the WAVs' own folder
    assert flat.names == load_audio("fsdd", "val", data_dir=root).names


def test_fsdd_reads_an_archive_or_the_folder_holding_it(tmp_path: Path) -> None:
    archive = _tar(_fsdd_copy(tmp_path / "copy", takes=(5, 12)) / "recordings", tmp_path / "a.tgz")
    (tmp_path / "holder").mkdir()
    archive = archive.rename(tmp_path / "holder" / "fsdd.tar.gz")
    assert (
        load_audio("fsdd", "train", data_dir=archive).names
        == load_audio("fsdd", "train", data_dir=tmp_path / "holder").names
    )
    assert available_audio_splits("fsdd", archive) == ("train", "val")


def test_fsdd_rejects_a_misnamed_file_and_missing_data(tmp_path: Path) -> None:
    root = _fsdd_copy(tmp_path / "fsdd", takes=(5,), digits=1)
    _wav(root / "recordings" / "hello.wav", _clip(0, 30), 8000)
    with pytest.raises(
        DataError, match=r"hello\.wav.*expected \{digit\}_\{speaker\}_\{take\}\.wav"
    ):
        load_audio("fsdd", "val", data_dir=root)
    with pytest.raises(DataError, match="does not exist"):
        load_audio("fsdd", "val", data_dir=tmp_path / "missing")
    (tmp_path / "nothing").mkdir()
    with pytest.raises(DataError, match="no FSDD recordings.*--data-dir DIR"):
        load_audio("fsdd", "val", data_dir=tmp_path / "nothing")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Serve tmp_path/www on 127.0.0.1; yields (folder, base URL)."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _unreachable_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"  # nothing listens there once the socket is closed


def test_fsdd_download_is_validated_and_kept(
    tmp_path: Path, http_root: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    www, url = http_root
    # GitHub's archive layout: a wrapper folder, recordings/ and other files beside it.
    repo = _fsdd_copy(tmp_path / "free-spoken-digit-dataset-1.0.10", takes=(5, 10), digits=1)
    (repo / "README.md").write_text("FSDD\n")
    _tar(repo, www / "good.tar.gz")
    (www / "bad.tar.gz").write_bytes(b"<html>rate limited</html>")
    monkeypatch.setattr(fsdd_module, "FSDD_URLS", (_unreachable_url(), url + "bad.tar.gz"))
    with pytest.raises(
        DataError, match=r"could not download .*Offline, pass --data-dir DIR.*VQVAE_DATA"
    ):
        load_audio("fsdd", "val")
    assert [p.name for p in (tmp_path / "downloads" / "fsdd").iterdir()] == []
    monkeypatch.setattr(fsdd_module, "FSDD_URLS", (url + "bad.tar.gz", url + "good.tar.gz"))
    data = load_audio("fsdd", "val")
    assert data.names == ("0_amy_5.wav", "0_bob_5.wav")
    monkeypatch.setattr(fsdd_module, "FSDD_URLS", (_unreachable_url(),))
    assert load_audio("fsdd", "train").names == ("0_amy_10.wav", "0_bob_10.wav")  # kept on disk


def test_fsdd_dev_copy() -> None:
    folder = shared_data("fsdd", "fsdd-train-recordings.tar.gz").parent
    assert available_audio_splits("fsdd", folder) == ("train", "val")
    val = load_audio("fsdd", "val", data_dir=folder)
    assert len(val) == 300 and val.speaker_names == FSDD_SPEAKERS
    assert val.labels.bincount().tolist() == [30] * 10
    assert val.speakers.bincount().tolist() == [50] * 6
    for name, label, speaker in zip(
        val.names, val.labels.tolist(), val.speakers.tolist(), strict=True
    ):
        digit, who, take = name[:-4].split("_")
        assert (int(digit), who) == (label, FSDD_SPEAKERS[speaker]) and 5 <= int(take) <= 9
    assert 0.1 < float(val.lengths().float().mean()) / 8000 < 1.0  # digits last about 0.4 s
    assert max(float(w.abs().max()) for w in val.waveforms) <= 1.0
    with pytest.raises(DataError, match="no 'test' split.*available: train, val"):
        load_audio("fsdd", "test", data_dir=folder)
    train = load_audio("fsdd", "train", data_dir=folder)
    assert len(train) == 2400 and train.speaker_names == FSDD_SPEAKERS
    assert not set(train.names) & set(val.names)
