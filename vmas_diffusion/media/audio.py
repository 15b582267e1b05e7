"""Audio reading and writing: soundfile for audio files, PyAV for anything else (a video's track).

Resampling uses soxr (a band-limited resampler), never sample dropping or linear interpolation.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import av
import numpy as np
import soundfile as sf
import soxr

from vmas_diffusion.atomic import atomic_path
from vmas_diffusion.errors import AudioDecodeError, InputError, MediaExportError
from vmas_diffusion.media._common import audio_to_numpy, check_rate, check_window, existing_file, open_with_stream


def _check_sample_rate(sample_rate, name: str = "sample_rate") -> int:
    rate = check_rate(sample_rate, name)
    if rate != int(rate) or rate > 1_000_000:
        raise InputError(f"{name} must be a whole number of Hz up to 1 MHz, got {sample_rate!r}")
    return int(rate)


def resample(audio: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling of float32 ``(C, S)`` audio with soxr (HQ); returns ``(C, S')``."""
    if orig_rate == target_rate:
        return audio
    out = soxr.resample(np.ascontiguousarray(audio.T), orig_rate, target_rate, quality="HQ")
    return np.ascontiguousarray(out.T, dtype=np.float32)


def _read_soundfile(path: Path, t0: float, t1: float | None) -> tuple[np.ndarray, int] | None:
    """``(C, S)`` float32 and its rate, or None when libsndfile does not know the format."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None
    rate = int(info.samplerate)
    first = int(round(t0 * rate))
    last = None if t1 is None else int(round(t1 * rate))
    try:
        data, _ = sf.read(str(path), start=first, stop=last, dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, ValueError) as exc:
        raise AudioDecodeError(f"cannot decode audio file {path}: {exc}") from exc
    return np.ascontiguousarray(data.T), rate


def _read_pyav(path: Path, t0: float, t1: float | None) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of any container into float32 ``(C, S)`` at its own rate."""
    with open_with_stream(path, "audio", AudioDecodeError) as container:
        stream = container.streams.audio[0]
        rate = int(stream.codec_context.sample_rate or 0)
        if rate <= 0:
            raise AudioDecodeError(f"{path}: the audio stream has no sample rate")
        stream_end = None
        if stream.duration and stream.time_base:
            stream_end = float((stream.start_time or 0) * stream.time_base + stream.duration * stream.time_base)
        # Planar float at the native rate and layout; rate conversion is left to soxr.
        to_float = av.AudioResampler(format="fltp", rate=rate)
        chunks, start_time = [], None
        try:
            if t0 > 1.0:
                # land half a second early: lapped codecs (AAC, MP3, Vorbis) need a frame or two
                # of pre-roll before their output is exact; the extra samples are cut below
                container.seek(int((t0 - 0.5) / stream.time_base), stream=stream, backward=True)
            for frame in container.decode(stream):
                if start_time is None:
                    start_time = float(frame.time) if frame.time is not None else 0.0
                if t1 is not None and frame.time is not None and frame.time >= t1:
                    break
                for out in to_float.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in to_float.resample(None):
                chunks.append(out.to_ndarray())
        except (av.error.FFmpegError, ValueError) as exc:
            raise AudioDecodeError(f"cannot decode the audio of {path}: {exc}") from exc
    if not chunks:
        raise AudioDecodeError(f"{path}: the audio stream has no decodable samples")
    audio = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    # Cut exactly to the window, counting from the first decoded sample's time; never past the
    # stream's declared end (the decoder returns the zero padding of the last AAC/MP3 frame).
    start_time = start_time or 0.0
    first = max(0, int(round((t0 - start_time) * rate)))
    last = audio.shape[1] if t1 is None else int(round((t1 - start_time) * rate))
    if stream_end is not None:
        last = min(last, int(round((stream_end - start_time) * rate)))
    return audio[:, first : max(first, last)], rate


def load_audio(
    path,
    sample_rate: int,
    mono: bool = True,
    start: float | None = None,
    end: float | None = None,
) -> np.ndarray:
    """Read an audio file, or the audio track of a video, as float32 ``(C, S)`` at ``sample_rate``.

    Args:
        path: any file libsndfile (wav, flac, ogg, opus) or FFmpeg (mp3, m4a, mp4, mkv, ...) reads.
        sample_rate: output rate in Hz (soxr HQ resampling when it differs).
        mono: average the channels into one (``C == 1``); False keeps them.
        start, end: optional window in seconds.

    Returns:
        float32 ``(C, S)``, always 2-D.

    Raises:
        AudioDecodeError: missing, empty, corrupt file; no audio stream; nothing in the window.
        InputError: bad sample rate or window.
    """
    rate = _check_sample_rate(sample_rate)
    t0, t1 = check_window(start, end)
    p = existing_file(path, AudioDecodeError, "audio")
    read = _read_soundfile(p, t0, t1)
    audio, native_rate = read if read is not None else _read_pyav(p, t0, t1)
    if audio.shape[1] == 0:
        window = f" in [{t0}, {t1}) s" if (start is not None or end is not None) else ""
        raise AudioDecodeError(f"{p}: no audio samples{window}")
    if mono and audio.shape[0] > 1:
        audio = audio.mean(axis=0, keepdims=True)
    return resample(np.ascontiguousarray(audio, dtype=np.float32), native_rate, rate)


def save_audio(path, audio, sample_rate: int, subtype: str = "PCM_16") -> str:
    """Write ``(C, S)`` or ``(S,)`` float audio (numpy or torch, in [-1, 1]) with soundfile.

    The format follows the suffix (``.wav``, ``.flac``, ``.ogg``); samples are clipped to
    [-1, 1] for integer subtypes. Missing parent folders are created. The file appears
    atomically (:mod:`vmas_diffusion.atomic`): after any error nothing is left at ``path``.
    Returns the path as str.
    """
    rate = _check_sample_rate(sample_rate)
    data = audio_to_numpy(audio)
    p = Path(path)
    if subtype.startswith("PCM"):
        data = np.clip(data, -1.0, 1.0)
    try:
        with atomic_path(p) as tmp:
            sf.write(str(tmp), data.T, rate, subtype=subtype)  # the temporary name keeps the suffix: same format
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as exc:
        raise MediaExportError(f"cannot write audio file {p}: {exc}") from exc
    return os.fspath(p)


def num_samples(seconds: float, sample_rate: int) -> int:
    """Samples in ``seconds`` at ``sample_rate``, rounded to the nearest."""
    return int(math.floor(seconds * sample_rate + 0.5))
