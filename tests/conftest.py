"""Shared fixtures: a private data cache, the development data folder, tiny image sets."""

import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Decoded-data caches go to a temporary folder, never the user's home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("VQVAE_CACHE", str(tmp_path_factory.mktemp("vqvae-cache")))
    mp.setenv("VQVAE_DATA", str(tmp_path_factory.mktemp("vqvae-data")))
    yield
    mp.undo()


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test when the folder is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: tests that need ../shared/data skip outside the dev set-up")
    return path


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> Path:
    """An image folder of 48 real-looking 16x16 colour images in two classes."""
    root = tmp_path_factory.mktemp("tiny-images")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16]
    for label, name in enumerate(("discs", "stripes")):
        (root / name).mkdir()
        for i in range(24):
            if label == 0:
                cy, cx, r = rng.uniform(4, 12, 2).tolist() + [rng.uniform(2, 6)]
                mask = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
            else:
                mask = ((xx + i) // 3) % 2 == 0
            colour = rng.integers(60, 255, 3)
            img = np.zeros((16, 16, 3), np.uint8) + rng.integers(0, 40, 3).astype(np.uint8)
            img[mask] = colour
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="session")
def fsdd_mini(tmp_path_factory):
    """Digits 0-1 of speakers george and theo, takes 5-7 (val) and 10-13 (train)."""
    tar_path = shared_data("fsdd", "fsdd-train-recordings.tar.gz")
    root = tmp_path_factory.mktemp("fsdd-mini")
    with tarfile.open(tar_path) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if not name.endswith(".wav"):
                continue
            digit, speaker, take = name[:-4].split("_")
            if digit in "01" and speaker in ("george", "theo") and int(take) in (5, 6, 7, 10, 11, 12, 13):
                (root / name).write_bytes(tar.extractfile(member).read())
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one thread for a test module (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    tiny models run fastest so, and do not spin-wait for a busy second core."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
