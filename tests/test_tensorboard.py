"""``TensorBoardObserver``: a fake run's records and media read back from the event files
with TensorBoard's own reader, and the observer inside the real training loop."""

import math

import numpy as np
import pytest
import torch

pytest.importorskip("tensorboard", reason="the tensorboard package is a dependency of vqvae: pip install -e .")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from vqvae.tensorboard import TensorBoardObserver  # noqa: E402

RECORDS = [
    {"step": 2, "loss": 0.5, "perplexity": 3.25, "codes_used": 7, "images_per_s": 120.0},
    {"step": 4, "loss": 0.25, "perplexity": 4.5, "codes_used": 9, "images_per_s": 118.5},
    {"step": 4, "split": "val", "loss": 0.375, "psnr": 17.0, "reconstruction_loss": None, "model": "vqvae",
     "finished": True, "nan": math.nan},
]


def read_events(folder) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "audio": 0})
    events.Reload()
    return events


def scalars(events: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_records_become_exact_scalars(tmp_path):
    observer = TensorBoardObserver(tmp_path, "tokenizer")
    for record in RECORDS:
        observer.record(record)
    observer.close()
    events = read_events(tmp_path / "tensorboard" / "tokenizer")
    assert sorted(events.Tags()["scalars"]) == sorted([
        "train/loss", "train/perplexity", "train/codes_used", "train/images_per_s", "val/loss", "val/psnr"])
    # the values chosen are exact in float32, the type of a TensorBoard scalar
    assert scalars(events, "train/loss") == [(2, 0.5), (4, 0.25)]
    assert scalars(events, "train/perplexity") == [(2, 3.25), (4, 4.5)]
    assert scalars(events, "train/codes_used") == [(2, 7.0), (4, 9.0)]
    assert scalars(events, "val/loss") == [(4, 0.375)]
    assert scalars(events, "val/psnr") == [(4, 17.0)]


def test_media_become_images_and_audio(tmp_path):
    observer = TensorBoardObserver(tmp_path, "tokenizer")
    grid = torch.rand(6, 3, 8, 8)  # (N, C, H, W) in [0, 1]
    grey = torch.rand(4, 1, 8, 8)
    wave = torch.sin(torch.arange(800) / 5.0) * 0.5  # (T,)
    observer.media(10, {"reconstructions": ("images", grid), "grey": ("images", grey),
                        "held_out/original": ("audio", (wave, 8000))})
    observer.media(20, {"reconstructions": ("images", grid)})
    observer.close()
    events = read_events(tmp_path / "tensorboard" / "tokenizer")
    assert sorted(events.Tags()["images"]) == ["grey", "reconstructions"]
    images = events.Images("reconstructions")
    assert [e.step for e in images] == [10, 20]
    assert images[0].encoded_image_string.startswith(b"\x89PNG")
    assert images[0].width > 8 and images[0].height >= 8  # the six images tiled into one grid
    (audio,) = events.Audio("held_out/original")
    assert audio.step == 10 and audio.sample_rate == 8000 and audio.length_frames == 800
    assert audio.content_type == "audio/wav" and audio.encoded_audio_string[:4] == b"RIFF"
    pcm = np.frombuffer(audio.encoded_audio_string[44:], dtype="<i2")
    assert np.abs(pcm / 32767 - wave.numpy()).max() < 1e-3


def test_bad_media_are_refused(tmp_path):
    observer = TensorBoardObserver(tmp_path)
    with pytest.raises(ValueError, match="video"):
        observer.media(1, {"clip": ("video", torch.zeros(1))})
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        observer.media(1, {"grid": ("images", torch.zeros(3, 8, 8))})
    observer.close()


def test_nothing_written_until_something_is_logged(tmp_path):
    """The writer starts with the first record, so processes that never log make no files."""
    observer = TensorBoardObserver(tmp_path)
    observer.close()
    assert not (tmp_path / "tensorboard").exists()


def test_a_resumed_run_hides_the_steps_it_redoes(tmp_path):
    first = TensorBoardObserver(tmp_path)
    for step in (2, 4, 6):
        first.record({"step": step, "loss": float(step)})
    first.close()
    resumed = TensorBoardObserver(tmp_path, start_step=4)  # the checkpoint was at step 4
    resumed.record({"step": 6, "loss": 0.5})
    resumed.close()
    events = read_events(tmp_path / "tensorboard" / "tokenizer")
    assert scalars(events, "train/loss") == [(2, 2.0), (4, 4.0), (6, 0.5)]


def test_the_observer_in_the_training_loop(tiny_images, tmp_path):
    """Every record of metrics.jsonl is a scalar, and each validation's reconstruction grid an image."""
    import json

    from vqvae.modalities import modality_of
    from vqvae.runs import read_config
    from vqvae.train import TrainConfig, new_state, run_loop
    from vqvae.workflow import start_run

    run = start_run(tmp_path / "run", str(tiny_images), {"hidden": 16, "res_hidden": 8, "codebook_size": 16,
                                                          "code_dim": 4},
                    TrainConfig(batch_size=8, max_steps=4, log_every=1, val_every=2))
    config = read_config(run)
    modality = modality_of(config)
    state = new_state(run, modality.build(config), TrainConfig(**config["train"]), resume=False)
    run_loop(state, modality.task(state, config), None, False, observers=[TensorBoardObserver(run)])
    events = read_events(run / "tensorboard" / "tokenizer")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        split = record.get("split", "train")
        for key, value in record.items():
            if key not in ("step", "split") and isinstance(value, int | float) and not isinstance(value, bool):
                assert (record["step"], pytest.approx(value, rel=1e-6)) in scalars(events, f"{split}/{key}"), key
    grids = events.Images("reconstructions")
    assert [e.step for e in grids] == [2, 4]
    # one picture: the 5 held-out images over their 5 reconstructions, 16 x 16 pixels framed by 1
    assert (grids[0].width, grids[0].height) == (5 * 18, 2 * 18)
    from vqvae.modalities.image.outputs import to_uint8

    task = modality.task(state, config)
    with torch.no_grad():
        (kind, grid), = task.media(4).values()
    assert kind == "images" and grid.shape == (1, 3, 36, 90)
    first = task.val_data.images[:1]
    assert np.array_equal(to_uint8(grid[0, :, 1:17, 1:17])[None], first.numpy())
    with torch.no_grad():
        again = state.eval_model.eval().reconstruct(first.float() / 255).clamp(0, 1)
    assert torch.allclose(grid[0, :, 19:35, 1:17], again[0], atol=1e-5)  # the row below: reconstructions


def test_the_speech_task_shows_a_clip_and_its_reconstruction(fsdd_mini, tmp_path):
    from vqvae.modalities import modality_of
    from vqvae.runs import read_config
    from vqvae.train import TrainConfig, new_state, run_loop
    from vqvae.workflow import start_run

    run = start_run(tmp_path / "speech", "fsdd", {"hidden": 16, "res_hidden": 8, "codebook_size": 16, "code_dim": 8,
                                                  "decoder_width": 32, "speaker_dim": 8},
                    TrainConfig(batch_size=4, max_steps=1, log_every=1, val_every=1, val_images=4),
                    data_dir=str(fsdd_mini), options={"segment": 512})
    config = read_config(run)
    modality = modality_of(config)
    state = new_state(run, modality.build(config), TrainConfig(**config["train"]), resume=False)
    task = modality.task(state, config)
    run_loop(state, task, None, False, observers=[TensorBoardObserver(run)])
    events = read_events(run / "tensorboard" / "tokenizer")
    assert sorted(events.Tags()["audio"]) == ["held_out/original", "held_out/reconstruction"]
    original, = events.Audio("held_out/original")
    rebuilt, = events.Audio("held_out/reconstruction")
    assert original.sample_rate == rebuilt.sample_rate == 8000
    assert original.length_frames == rebuilt.length_frames == task.val_data.waveforms[0].numel()
