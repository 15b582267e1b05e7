"""Windows of a clip for retrieval: the video and music of each whole ``window``-second stretch."""

from __future__ import annotations

from typing import Iterator, Tuple

import numpy as np

from ..media import load_audio, load_video


def clip_windows(video: str, audio: str, *, fps: float, size: int, sample_rate: int, window: float,
                 seconds: float) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """``(frames (T, size, size, 3) uint8 at fps, music (1, S) at sample_rate)`` of each window that starts at
    ``0, window, 2 window, ...`` and ends by ``seconds``, both read from the files as a user would cut them."""
    for start in np.arange(0.0, seconds - window + 1e-6, window):
        frames = load_video(video, fps=fps, size=size, start=start, end=start + window).frames
        yield frames, load_audio(audio, sample_rate, start=start, end=start + window)
