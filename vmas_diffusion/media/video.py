"""Video reading: probe with PyAV, decode frames with decord (or PyAV), sample by timestamp.

Frames are picked by presentation time, not by index: the frame shown at time ``t`` is the
last frame whose timestamp is ``<= t``. That is what a viewer sees, and it stays right for
variable-frame-rate files, where "every k-th frame" drifts.

Every file is first opened and its first frame decoded with PyAV (:func:`probe_video`):
decord can hang or crash on some malformed files, while PyAV reports them as errors,
which become :class:`~vmas_diffusion.errors.VideoDecodeError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator

import av
import numpy as np

from vmas_diffusion.errors import InputError, VideoDecodeError
from vmas_diffusion.media._common import MAX_SIDE, check_rate, check_window, error_text, existing_file, open_with_stream

BACKENDS = ("decord", "pyav")
_BLOCK_BYTES = 8 << 20  # decode this much per decord call


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns about a file's first video stream."""

    path: str
    duration: float  # seconds of the video stream
    fps: float  # average frame rate
    width: int
    height: int
    num_frames: int  # from the container's index, else estimated as duration * fps
    has_audio: bool
    codec: str = ""


@dataclass
class VideoClip:
    """Decoded frames and when they are shown.

    Attributes:
        frames: uint8 ``(T, H, W, 3)`` RGB.
        timestamps: float64 ``(T,)`` presentation time of each frame in the source, seconds.
        fps: the sampling rate the frames were taken at (the native average rate when none was asked).
        duration: seconds covered: the whole source, or the asked window (clipped to the source).
        path: the source file, or None.
    """

    frames: np.ndarray
    timestamps: np.ndarray
    fps: float
    duration: float
    path: str | None = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_frames(self) -> int:
        return len(self)

    @property
    def height(self) -> int:
        return int(self.frames.shape[1])

    @property
    def width(self) -> int:
        return int(self.frames.shape[2])


def _tag_seconds(tag) -> float:
    """``"HH:MM:SS.fffffffff"`` -> seconds; 0.0 when absent or malformed."""
    try:
        h, m, sec = str(tag).split(":")
        return int(h) * 3600 + int(m) * 60 + float(sec)
    except (ValueError, TypeError):
        return 0.0


def probe_video(path) -> VideoInfo:
    """Open ``path`` with PyAV, read its first video stream's metadata and decode its first frame.

    Raises:
        VideoDecodeError: missing, empty, corrupt or truncated file; no video stream; zero
            decodable frames; a frame size of zero or above 16384 pixels on a side.
    """
    p = existing_file(path, VideoDecodeError, "video")
    with open_with_stream(p, "video", VideoDecodeError) as container:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        width, height = int(ctx.width or 0), int(ctx.height or 0)
        if not (0 < width <= MAX_SIDE and 0 < height <= MAX_SIDE):
            raise VideoDecodeError(f"{p} has an unusable frame size {width}x{height}")

        # The first frame proves the payload decodes (a truncated or garbled file fails here).
        first = None
        try:
            for first in container.decode(stream):
                break
        except (av.error.FFmpegError, ValueError) as exc:
            raise VideoDecodeError(f"cannot decode the first frame of {p}: {error_text(exc)}") from exc
        if first is None:
            raise VideoDecodeError(f"{p} has a video stream with zero decodable frames")

        duration = 0.0
        if stream.duration and stream.time_base:
            duration = float(stream.duration * stream.time_base)
        elif _tag_seconds(stream.metadata.get("DURATION")):  # Matroska keeps it as a tag
            duration = _tag_seconds(stream.metadata.get("DURATION"))
        elif container.duration:
            duration = container.duration / av.time_base
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        num_frames = int(stream.frames or 0)
        if rate is None or float(rate) <= 0:
            if not (num_frames and duration):
                raise VideoDecodeError(f"{p}: the video stream has no frame rate and no frame count")
            rate = Fraction(num_frames) / Fraction(duration)
        fps = float(rate)
        if not num_frames:
            num_frames = max(1, round(duration * fps))
        if duration <= 0:
            duration = num_frames / fps
        return VideoInfo(
            path=str(p),
            duration=duration,
            fps=fps,
            width=width,
            height=height,
            num_frames=num_frames,
            has_audio=bool(container.streams.audio),
            codec=ctx.name,
        )


def _parse_size(size) -> tuple[int, int] | None:
    """``int`` -> square, ``(height, width)`` -> as is."""
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        hw = (int(size), int(size))
    elif isinstance(size, (tuple, list)) and len(size) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in size
    ):
        hw = (int(size[0]), int(size[1]))
    else:
        raise InputError(f"size must be an int or a (height, width) pair of ints, got {size!r}")
    if not all(0 < v <= MAX_SIDE for v in hw):
        raise InputError(f"size must be between 1 and {MAX_SIDE} pixels, got {size!r}")
    return hw


def _window(info: VideoInfo, start, end) -> tuple[float, float]:
    t0, t1 = check_window(start, end)
    if t0 >= info.duration:
        raise InputError(f"start={t0} s is past the end of {info.path} ({info.duration:.3f} s)")
    return t0, info.duration if t1 is None else min(t1, info.duration)


def target_times(t0: float, t1: float, fps: float) -> np.ndarray:
    """Sampling instants ``t0 + k / fps`` in ``[t0, t1)``, float64 ``(N,)``."""
    n = max(1, math.ceil((t1 - t0) * fps - 1e-6))
    return t0 + np.arange(n, dtype=np.float64) / fps


def select_frames(pts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target time, the index of the frame on screen then.

    Args:
        pts: ``(N,)`` sorted presentation times of all frames, seconds.
        targets: ``(M,)`` times to sample.
    Returns:
        int64 ``(M,)`` indices into ``pts`` (the last frame with ``pts <= t``; the first frame
        for times before it).
    """
    idx = np.searchsorted(pts, targets + 1e-6, side="right") - 1
    return np.clip(idx, 0, len(pts) - 1).astype(np.int64)


def _check_count(count: int, max_frames, path: str) -> None:
    if max_frames is not None and count > int(max_frames):
        raise InputError(
            f"loading {path} would give {count} frames, over max_frames={max_frames}: "
            "pass a lower fps, a time window, or use iter_video_chunks"
        )


def _have_decord() -> bool:
    """decord has no wheel for some platforms (e.g. macOS arm64); PyAV then does the work."""
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


class _DecordReader:
    """Random access by frame index with decord; presentation times of all frames up front."""

    def __init__(self, path: str, size: tuple[int, int] | None):
        import decord

        self._error = decord._ffi.base.DECORDError
        kwargs = {} if size is None else {"height": size[0], "width": size[1]}
        try:
            self.reader = decord.VideoReader(path, ctx=decord.cpu(0), **kwargs)
            num = len(self.reader)
            if num == 0:
                raise VideoDecodeError(f"{path} has a video stream with zero frames")
            # decord reports float32 seconds; round off its noise (1 us is below any time base used)
            pts = np.round(self.reader.get_frame_timestamp(np.arange(num))[:, 0].astype(np.float64), 6)
        except self._error as exc:
            raise VideoDecodeError(f"decord cannot read {path}: {error_text(exc)}") from exc
        # decord lists frames in presentation order; sort anyway so searchsorted is valid.
        self.order = np.argsort(pts, kind="stable")
        self.pts = pts[self.order]
        self.path = path

    def resizes_correctly(self, size: tuple[int, int] | None) -> bool:
        """False where decord's scaler breaks: at some sizes (e.g. 32x48) it returns 4 channels."""
        return size is None or self.reader[int(self.order[0])].shape == (size[0], size[1], 3)

    def frames(self, sorted_idx: np.ndarray) -> np.ndarray:
        """uint8 ``(len(sorted_idx), H, W, 3)`` for indices into the sorted ``pts``.

        Decoded in blocks of about 8 MB straight into the output array: one copy of the frames
        in memory at the peak, and no large short-lived buffers for the allocator to keep.
        """
        unique, inverse = np.unique(sorted_idx, return_inverse=True)
        out = None
        pos, block = 0, 1
        try:
            while pos < unique.size:
                batch = self.reader.get_batch(self.order[unique[pos : pos + block]].tolist()).asnumpy()
                if out is None:
                    out = np.empty((unique.size,) + batch.shape[1:], np.uint8)
                    block = max(1, _BLOCK_BYTES // max(1, batch[0].nbytes))
                out[pos : pos + batch.shape[0]] = batch
                pos += batch.shape[0]
                del batch
        except self._error as exc:
            raise VideoDecodeError(f"decord failed decoding {self.path}: {error_text(exc)}") from exc
        if unique.size == sorted_idx.size:  # no frame repeated: `unique` is `sorted_idx` (both sorted)
            return out
        return out[inverse]


def _open_decord(path: str, size) -> _DecordReader | None:
    """A decord reader, or None where decord refuses a file that PyAV opened (probe_video did):
    animated GIFs ("broken metadata"), AV1 in Matroska, ... PyAV then decodes it, or says why not."""
    try:
        reader = _DecordReader(path, size)
    except VideoDecodeError:
        return None
    return reader if reader.resizes_correctly(size) else None


def _load_decord(info: VideoInfo, fps, t0, t1, size, max_frames) -> VideoClip:
    reader = _open_decord(info.path, size)
    if reader is None:
        return _load_pyav(info, fps, t0, t1, size, max_frames)
    if fps is None:
        idx = np.nonzero((reader.pts >= t0 - 1e-6) & (reader.pts < t1 - 1e-6))[0]
        if idx.size == 0:  # a window shorter than one frame: the frame on screen at t0
            idx = select_frames(reader.pts, np.array([t0]))
    else:
        idx = select_frames(reader.pts, target_times(t0, t1, fps))
    _check_count(idx.size, max_frames, info.path)
    try:
        frames = reader.frames(idx)
    except VideoDecodeError:  # decord stopped mid-file: PyAV decodes what is there or names the damage
        return _load_pyav(info, fps, t0, t1, size, max_frames)
    return VideoClip(frames, reader.pts[idx], fps or info.fps, t1 - t0, info.path)


def _pyav_frames(path: str, t0: float, t1: float, targets: np.ndarray | None, size) -> Iterator[tuple]:
    """Decode sequentially from the keyframe before ``t0``; yield the frames on screen at ``targets``.

    Yields ``(image uint8 (H, W, 3), frame time, target time)``; with ``targets=None`` every
    frame with ``t0 <= pts < t1`` is yielded (its target time is its own time). Only the
    frames that are yielded are converted to RGB.
    """

    def convert(frame):
        if size is None:
            return frame.to_ndarray(format="rgb24")
        return frame.to_ndarray(format="rgb24", height=size[0], width=size[1], interpolation="AREA")

    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            if t0 > 0:
                container.seek(int(t0 / stream.time_base), stream=stream, backward=True)
            k = 0  # next target to fill
            prev = None  # (frame, time) of the last frame seen
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                t = float(frame.time)
                if targets is None:
                    if t >= t1 - 1e-6:
                        return
                    if t >= t0 - 1e-6:
                        yield convert(frame), t, t
                    continue
                # the previous frame is on screen for every target before this frame's time;
                # before the first frame (a stream that starts late) the first frame stands in
                shown = prev if prev is not None else (frame, t)
                image = None
                while k < len(targets) and targets[k] + 1e-6 < t:
                    image = convert(shown[0]) if image is None else image
                    yield image, shown[1], targets[k]
                    k += 1
                prev = (frame, t)
                if k >= len(targets):
                    return
            if targets is not None and prev is not None and k < len(targets):
                if prev[1] + 0.5 + 2.0 / float(stream.average_rate or 25) < targets[-1]:
                    raise VideoDecodeError(
                        f"{path} is truncated: its frames end at {prev[1]:.3f} s, "
                        f"frames up to {targets[-1]:.3f} s were asked"
                    )
                image = convert(prev[0])
                for target in targets[k:]:
                    yield image, prev[1], target
    except (av.error.FFmpegError, ValueError) as exc:
        raise VideoDecodeError(f"PyAV failed decoding {path}: {error_text(exc)}") from exc


def _load_pyav(info: VideoInfo, fps, t0, t1, size, max_frames) -> VideoClip:
    targets = None if fps is None else target_times(t0, t1, fps)
    expected = round((t1 - t0) * info.fps) if targets is None else len(targets)
    _check_count(expected, max_frames, info.path)
    frames, times = [], []
    for image, t, _ in _pyav_frames(info.path, t0, t1, targets, size):
        frames.append(image)
        times.append(t)
    if not frames:
        raise VideoDecodeError(f"{info.path}: no frame decoded in [{t0:.3f}, {t1:.3f}) s")
    if times[-1] + 0.5 + 3.0 / info.fps < t1:
        raise VideoDecodeError(f"{info.path} is truncated: its frames end at {times[-1]:.3f} s, not {t1:.3f} s")
    _check_count(len(frames), max_frames, info.path)
    return VideoClip(np.stack(frames), np.asarray(times, np.float64), fps or info.fps, t1 - t0, info.path)


def load_video(
    path,
    fps: float | None = None,
    start: float | None = None,
    end: float | None = None,
    size: int | tuple[int, int] | None = None,
    max_frames: int | None = None,
    *,
    backend: str = "decord",
) -> VideoClip:
    """Decode a video's frames, sampled at ``fps`` by presentation time.

    Args:
        path: a video file.
        fps: sampling rate in frames per second; None keeps every native frame.
        start, end: optional window in seconds (``end`` is clipped to the video's duration).
        size: resize to ``(size, size)`` for an int, ``(height, width)`` for a pair; None keeps it.
        max_frames: raise :class:`InputError` instead of decoding more frames than this.
        backend: ``"decord"`` (default, fast random access; PyAV when decord is not installed or
            refuses the file, e.g. an animated GIF or AV1) or ``"pyav"`` (sequential decode).

    Returns:
        A :class:`VideoClip` with ``frames`` uint8 ``(T, H, W, 3)`` and the real ``timestamps``.

    Raises:
        VideoDecodeError: the file cannot be decoded (see :func:`probe_video`).
        InputError: bad fps, window, size or backend, or more than ``max_frames`` frames.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    fps = check_rate(fps, "fps", allow_none=True)
    hw = _parse_size(size)
    if max_frames is not None and int(max_frames) < 1:
        raise InputError(f"max_frames must be >= 1, got {max_frames!r}")
    info = probe_video(path)
    t0, t1 = _window(info, start, end)
    load = _load_decord if backend == "decord" and _have_decord() else _load_pyav
    return load(info, fps, t0, t1, hw, max_frames)


def iter_video_chunks(
    path,
    fps: float | None,
    chunk_seconds: float = 10.0,
    size: int | tuple[int, int] | None = None,
    start: float | None = None,
    end: float | None = None,
    *,
    backend: str = "pyav",
) -> Iterator[VideoClip]:
    """Yield a long video as consecutive :class:`VideoClip` chunks of ``chunk_seconds`` each.

    Only one chunk's frames are in memory at a time. The sampling grid is the same as
    :func:`load_video` with the same arguments (``t0 + k / fps``), so concatenating the
    chunks gives the same frames; each chunk's ``timestamps`` are times in the source and its
    ``duration`` is the chunk's window (the last one may be shorter).

    The default backend is PyAV: one sequential decoding pass, which is what a stream needs,
    and its memory stays flat with length; ``backend="decord"`` is also available.
    """
    if backend not in BACKENDS:
        raise InputError(f"backend must be one of {BACKENDS}, got {backend!r}")
    fps = check_rate(fps, "fps", allow_none=True)
    chunk_seconds = check_rate(chunk_seconds, "chunk_seconds")
    hw = _parse_size(size)
    info = probe_video(path)
    t0, t1 = _window(info, start, end)
    rate = fps or info.fps
    n_chunks = max(1, math.ceil((t1 - t0) / chunk_seconds - 1e-9))
    bounds = [(t0 + c * chunk_seconds, min(t1, t0 + (c + 1) * chunk_seconds)) for c in range(n_chunks)]

    reader = _open_decord(info.path, hw) if backend == "decord" and _have_decord() else None
    if reader is not None:
        if fps is None:
            all_idx = np.nonzero((reader.pts >= t0 - 1e-6) & (reader.pts < t1 - 1e-6))[0]
            all_times = reader.pts[all_idx]
        else:
            all_times = target_times(t0, t1, fps)
            all_idx = select_frames(reader.pts, all_times)
        for c0, c1 in bounds:
            lo, hi = np.searchsorted(all_times, [c0 - 1e-6, c1 - 1e-6])
            if hi > lo:
                idx = all_idx[lo:hi]
                yield VideoClip(reader.frames(idx), reader.pts[idx], rate, c1 - c0, info.path)
        return

    targets = None if fps is None else target_times(t0, t1, fps)
    frames, times, c = [], [], 0
    for image, t, target in _pyav_frames(info.path, t0, t1, targets, hw):
        while target >= bounds[c][1] - 1e-6:  # this frame belongs to a later chunk
            if frames:
                yield VideoClip(np.stack(frames), np.asarray(times), rate, bounds[c][1] - bounds[c][0], info.path)
            frames, times, c = [], [], c + 1
        frames.append(image)
        times.append(t)
    if frames:
        yield VideoClip(np.stack(frames), np.asarray(times), rate, bounds[c][1] - bounds[c][0], info.path)
