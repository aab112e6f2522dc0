"""Video data: Moving MNIST generated on the fly, and ViZDoom episodes recorded into shards.

:func:`open_video` opens one split as a :class:`VideoSet` (episodes read lazily);
:func:`random_windows`, :func:`fixed_windows` and :func:`read_window` cut the windows a
model trains and is judged on, ``(C, T, H, W)`` floats in ``[0, 1]`` with the actions of
their frames. :func:`collect_doom` records a collection (``vqvae collect doom``).
"""

from vqvae.modalities.video.data.catalog import is_video_spec, open_video, video_datasets
from vqvae.modalities.video.data.doom import add_collect_arguments, collect_doom, doom_scenarios
from vqvae.modalities.video.data.episodes import (
    VideoSet,
    fixed_windows,
    random_windows,
    read_window,
)

__all__ = [
    "VideoSet",
    "add_collect_arguments",
    "collect_doom",
    "doom_scenarios",
    "fixed_windows",
    "is_video_spec",
    "open_video",
    "random_windows",
    "read_window",
    "video_datasets",
]
