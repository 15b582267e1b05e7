"""Checks shared by the media readers and writers."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import av
import numpy as np

from vmas_diffusion.errors import InputError, MediaError

# Frames larger than 16K on a side are not real video; they only exhaust memory.
MAX_SIDE = 16384


def existing_file(path, error: type[MediaError], what: str) -> Path:
    """Return ``path`` as a Path if it names a readable, non-empty file; raise ``error`` otherwise."""
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{what} path must be a str or os.PathLike, got {type(path).__name__}")
    p = Path(path)
    if not p.exists():
        raise error(f"{what} file {p} does not exist")
    if not p.is_file():
        raise error(f"{what} path {p} is not a regular file")
    if p.stat().st_size == 0:
        raise error(f"{what} file {p} is empty (0 bytes)")
    return p


def check_window(start, end, name: str = "") -> tuple[float, float | None]:
    """Validate an optional ``[start, end)`` time window in seconds; returns ``(start or 0, end)``."""
    t0 = 0.0 if start is None else float(start)
    if not math.isfinite(t0) or t0 < 0:
        raise InputError(f"{name}start must be a finite number >= 0 seconds, got {start!r}")
    if end is None:
        return t0, None
    t1 = float(end)
    if not math.isfinite(t1) or t1 <= t0:
        raise InputError(f"{name}end must be a finite number > start ({t0}), got {end!r}")
    return t0, t1


def check_rate(value, name: str, allow_none: bool = False) -> float | None:
    """A strictly positive, finite rate (fps or Hz)."""
    if value is None and allow_none:
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a positive number, got {value!r}") from None
    if not math.isfinite(rate) or rate <= 0:
        raise InputError(f"{name} must be a positive number, got {value!r}")
    return rate


def audio_to_numpy(audio, name: str = "audio") -> np.ndarray:
    """A waveform ``(C, S)`` or ``(S,)`` numpy array or torch tensor as float32 ``(C, S)``."""
    if hasattr(audio, "detach"):  # torch.Tensor, without importing torch here
        audio = audio.detach().to("cpu").float().numpy()
    array = np.asarray(audio)
    if array.dtype.kind == "i":  # PCM integers: scale to [-1, 1)
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    elif array.dtype.kind != "f":
        raise InputError(f"{name} must be a float (or signed PCM integer) array, got dtype {array.dtype}")
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2:
        raise InputError(f"{name} must have shape (channels, samples) or (samples,), got {array.shape}")
    if array.shape[1] == 0:
        raise InputError(f"{name} has no samples (shape {array.shape})")
    if array.shape[0] > 64:
        raise InputError(
            f"{name} has shape {array.shape}: {array.shape[0]} channels; expected (channels, samples)"
        )
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite samples")
    return array


def error_text(exc: BaseException) -> str:
    """One short line: FFmpeg's reason without the repeated path, decord's without its source location."""
    text = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    text = text.splitlines()[0]
    if "Error: " in text:  # decord: "[time] .../video_reader.cc:486: Error: av_read_frame failed ..."
        text = text.split("Error: ", 1)[1]
    # decord's other messages: "[18:09:02] /github/workspace/src/video/video_reader.cc:270: [/path] reason"
    text = re.sub(r"^\[[\d:]+\]\s+\S+:\d+:\s*(\[[^\]]*\]\s*)?", "", text)
    return text[:300]


def open_with_stream(path, kind: str, error: type[MediaError]):
    """``av.open(path)`` that has a ``kind`` ("video" / "audio") stream, else ``error`` naming the file.

    The caller closes the container (use it as a context manager).
    """
    try:
        container = av.open(str(path), mode="r")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise error(f"cannot open {path} for {kind}: {error_text(exc)}") from exc
    if not getattr(container.streams, kind):
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        container.close()
        raise error(f"{path} has no {kind} stream (streams found: {kinds})")
    return container
