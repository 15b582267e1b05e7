"""Mux generated music into a video with PyAV.

The source video stream is copied packet for packet (no quality loss, no decode); only when
the output container refuses the codec is it re-encoded with H.264. The music is encoded
as AAC and trimmed or zero-padded to the video stream's duration, so both streams end together.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from vmas_diffusion.atomic import atomic_path
from vmas_diffusion.errors import InputError, MediaExportError
from vmas_diffusion.media._common import audio_to_numpy, check_rate
from vmas_diffusion.media.audio import _check_sample_rate, num_samples, resample
from vmas_diffusion.media.video import probe_video

# Rates the AAC bitstream can signal; other rates are resampled to 48 kHz first.
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
AAC_FRAME = 1024  # samples per AAC frame


class _CopyRefused(Exception):
    """The output container cannot hold the source codec as is."""


def _prepare_audio(audio, sample_rate: int, num: int) -> tuple[np.ndarray, int]:
    """float32 ``(C, num)`` in [-1, 1] at an AAC rate: clipped, resampled, trimmed or zero-padded."""
    data = audio_to_numpy(audio)
    if data.shape[0] not in (1, 2):
        raise InputError(f"audio must be mono or stereo for AAC, got {data.shape[0]} channels")
    rate = sample_rate
    if rate not in AAC_RATES:
        data, rate = resample(data, rate, 48000), 48000
        num = int(round(num * 48000 / sample_rate))
    data = np.clip(data, -1.0, 1.0)
    if data.shape[1] >= num:
        data = data[:, :num]
    else:
        data = np.pad(data, ((0, 0), (0, num - data.shape[1])))
    return np.ascontiguousarray(data, dtype=np.float32), rate


def _aac_packets(stream, audio: np.ndarray, rate: int, first_pts: int) -> Iterator[av.Packet]:
    """Encode ``(C, S)`` float32 lazily, one AAC frame at a time (memory stays flat)."""
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    for i in range(0, audio.shape[1], AAC_FRAME):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio[:, i : i + AAC_FRAME]), format="fltp", layout=layout
        )
        frame.sample_rate = rate
        frame.time_base = Fraction(1, rate)
        frame.pts = first_pts + i
        yield from stream.encode(frame)
    yield from stream.encode(None)


def _packet_time(packet) -> float:
    ts = packet.dts if packet.dts is not None else packet.pts
    return float(ts * packet.time_base) if ts is not None else 0.0


def _mux_interleaved(out, video_packets: Iterator, audio_packets: Iterator) -> None:
    """Mux both packet streams in decode-time order."""
    pending = next(audio_packets, None)
    for vp in video_packets:
        t = _packet_time(vp)
        while pending is not None and _packet_time(pending) <= t:
            out.mux(pending)
            pending = next(audio_packets, None)
        out.mux(vp)
    while pending is not None:
        out.mux(pending)
        pending = next(audio_packets, None)


def _add_audio_stream(out, rate: int, channels: int):
    stream = out.add_stream("aac", rate=rate, layout="mono" if channels == 1 else "stereo")
    stream.bit_rate = 96_000 * channels
    return stream


def _copy_video(src_path: str, tmp: str, audio: np.ndarray, rate: int) -> None:
    """Stream-copy the first video stream and add the AAC music."""
    with av.open(src_path) as src:
        vin = src.streams.video[0]
        start = float(vin.start_time * vin.time_base) if vin.start_time is not None else 0.0
        with av.open(tmp, mode="w") as out:
            try:
                vout = out.add_stream_from_template(vin)
                aout = _add_audio_stream(out, rate, audio.shape[0])
                out.start_encoding()
            except (av.error.FFmpegError, ValueError) as exc:
                raise _CopyRefused(str(exc)) from exc

            def video_packets():
                for packet in src.demux(vin):
                    if packet.dts is None:  # demuxer's end-of-stream marker
                        continue
                    packet.stream = vout
                    yield packet

            _mux_interleaved(out, video_packets(), _aac_packets(aout, audio, rate, round(start * rate)))


def _even(v: int) -> int:
    return max(2, v - v % 2)


def _encode_frames(frames: Iterator[np.ndarray], fps: Fraction, height: int, width: int, tmp: str,
                   audio: np.ndarray, rate: int) -> None:
    """Encode RGB uint8 ``(H, W, 3)`` frames with H.264 (yuv420p, even sizes) plus the AAC music."""
    with av.open(tmp, mode="w") as out:
        vout = out.add_stream("libx264" if "libx264" in av.codecs_available else "mpeg4", rate=fps)
        vout.width, vout.height, vout.pix_fmt = _even(width), _even(height), "yuv420p"
        vout.options = {"crf": "18", "preset": "veryfast"}
        aout = _add_audio_stream(out, rate, audio.shape[0])

        def video_packets():
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(image[: vout.height, : vout.width], format="rgb24")
                frame.pts = i
                frame.time_base = 1 / fps
                yield from vout.encode(frame)
            yield from vout.encode(None)

        _mux_interleaved(out, video_packets(), _aac_packets(aout, audio, rate, 0))


def _decoded_frames(path: str) -> Iterator[np.ndarray]:
    with av.open(path) as src:
        for frame in src.decode(src.streams.video[0]):
            yield frame.to_ndarray(format="rgb24")


def export_to_video_with_audio(
    video,
    audio,
    sample_rate: int,
    out_path,
    *,
    fps: float | None = None,
) -> str:
    """Write ``out_path``: the video's picture with ``audio`` as its only sound track (AAC).

    Args:
        video: path of the source video (its stream is copied; its own audio is dropped), or
            uint8 frames ``(T, H, W, 3)`` (numpy or torch) together with ``fps`` (encoded as H.264).
        audio: float waveform ``(C, S)`` or ``(S,)`` in [-1, 1], numpy or torch; mono or stereo.
        sample_rate: rate of ``audio`` in Hz.
        out_path: the file to write (``.mp4``, ``.mov``, ``.mkv``); parent folders are created.
        fps: frame rate of array input; ignored for a path.

    The music is trimmed or zero-padded to the video's duration. The file appears atomically
    (:mod:`vmas_diffusion.atomic`): it is written next to ``out_path``, synced and renamed when complete.

    Returns:
        ``out_path`` as str.

    Raises:
        VideoDecodeError: the source video cannot be read.
        InputError: bad audio, frames, fps or sample rate.
        MediaExportError: the output cannot be written.
    """
    rate_in = _check_sample_rate(sample_rate)
    out = Path(out_path)
    if not out.suffix:
        raise InputError(f"out_path {out} needs a container suffix such as .mp4")

    if isinstance(video, (str, os.PathLike)):
        info = probe_video(video)
        length = info.duration
        frames = None
    else:
        rate = check_rate(fps, "fps")
        frames = video.detach().cpu().numpy() if hasattr(video, "detach") else np.asarray(video)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
            raise InputError(f"video frames must be uint8 (T, H, W, 3) with T > 0, got {frames.dtype} {frames.shape}")
        length = frames.shape[0] / rate
    music, aac_rate = _prepare_audio(audio, rate_in, num_samples(length, rate_in))

    try:
        with atomic_path(out) as tmp:
            if frames is None:
                try:
                    _copy_video(info.path, str(tmp), music, aac_rate)
                except _CopyRefused:
                    tmp.unlink(missing_ok=True)
                    vfps = Fraction(info.fps).limit_denominator(100_000)
                    _encode_frames(_decoded_frames(info.path), vfps, info.height, info.width, str(tmp), music, aac_rate)
            else:
                vfps = Fraction(float(fps)).limit_denominator(100_000)
                _encode_frames(iter(frames), vfps, frames.shape[1], frames.shape[2], str(tmp), music, aac_rate)
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise MediaExportError(f"cannot write {out}: {reason}") from exc
    return os.fspath(out)
