"""Limits on how much video `generate` reads and how much music it writes.

A number in an argument or in a file's header can ask for hours of work: ``--duration 1e9``,
a 1.6 KB file whose two frames claim to be three hours apart, frames passed with
``fps=1e-6``. The pipeline and the CLI check the seconds asked and the seconds a video
claims against these limits before decoding or generating anything, and stop with an
:class:`~vmas_diffusion.errors.InputError` that names the limit and how to lift it.

Python: ``pipe(..., max_music_seconds=..., max_video_seconds=...)``; ``None`` lifts a limit.
CLI: ``generate --max-music-seconds S --max-video-seconds S``; ``none`` lifts a limit.
"""

from __future__ import annotations

import argparse
import math
import numbers
from typing import Optional

from .errors import InputError

#: default longest music `generate` writes, seconds (30 minutes)
MAX_MUSIC_SECONDS = 1800.0
#: default longest video `generate` reads, seconds (30 minutes)
MAX_VIDEO_SECONDS = 1800.0

_FLAGS = {"max_music_seconds": "--max-music-seconds", "max_video_seconds": "--max-video-seconds"}


def check_limit(value, name: str) -> Optional[float]:
    """A limit argument: a positive number of seconds, or None / inf for no limit."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InputError(f"`{name}` must be a positive number of seconds or None (no limit), got {value!r}")
    if math.isnan(value) or value <= 0:
        raise InputError(f"`{name}` must be a positive number of seconds or None (no limit), got {value!r}")
    return None if math.isinf(value) else float(value)


def parse_limit(text: str) -> Optional[float]:
    """argparse type of the CLI limit flags: seconds, or ``none`` / ``inf`` for no limit."""
    if text.strip().lower() in ("none", "inf", "infinity", "off"):
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise argparse.ArgumentTypeError(f"a limit must be a positive number of seconds or 'none', got {text!r}")
    return check_limit(value, "limit")


def _over(seconds: float, limit: Optional[float], what: str, name: str, advice: str) -> None:
    if limit is not None and not seconds <= limit:  # `not <=` also catches NaN
        raise InputError(
            f"{what} is {seconds:.6g} s, over the {limit:g} s limit: {advice}, or raise the limit "
            f"({name}=SECONDS or None in Python, {_FLAGS[name]} SECONDS or none on the command line)"
        )


def check_music_seconds(seconds: float, limit: Optional[float], waveforms: int = 1) -> None:
    """Raise InputError when ``waveforms`` pieces of ``seconds`` each are more music than ``limit`` allows."""
    what = "the music asked" if waveforms == 1 else f"the music asked ({waveforms} waveforms of {seconds:.6g} s)"
    _over(seconds * waveforms, limit, what, "max_music_seconds", "ask for a shorter `duration` or fewer waveforms")


def check_video_seconds(seconds: float, limit: Optional[float], what: str = "the video") -> None:
    """Raise InputError when a video of ``seconds`` (as its header or frame count claims) is longer than ``limit``."""
    _over(seconds, limit, what, "max_video_seconds", "trim the video")


def video_seconds(info) -> float:
    """How long a probed video claims to be: its header's duration or its frame count at its rate,
    whichever is longer (a header can understate one of them)."""
    return max(float(info.duration), info.num_frames / info.fps)


def check_lengths(videos, fps, duration, max_music_seconds, max_video_seconds, waveforms: int = 1) -> None:
    """Refuse, before anything is decoded, a video longer than ``max_video_seconds`` or more music
    than ``max_music_seconds``: ``waveforms`` pieces of ``duration`` (the longest video's when None).

    ``videos`` are paths (probed: header and first frame only) or ``(T, H, W, 3)`` frame arrays at ``fps``.
    """
    from pathlib import Path

    from .media import probe_video

    max_music_seconds = check_limit(max_music_seconds, "max_music_seconds")
    max_video_seconds = check_limit(max_video_seconds, "max_video_seconds")
    lengths = []
    for item in videos:
        if isinstance(item, (str, Path)):
            seconds = video_seconds(probe_video(item))
            check_video_seconds(seconds, max_video_seconds, f"video {Path(item).name} (by its header)")
        else:
            count = item.shape[0] if item.ndim >= 1 else 0
            seconds = count / float(fps)
            check_video_seconds(seconds, max_video_seconds, f"the video given as frames ({count} at fps={fps:g})")
        lengths.append(seconds)
    check_music_seconds(duration if duration is not None else max(lengths, default=0.0), max_music_seconds, waveforms)
