"""Visual beats: where the picture changes sharply (cuts, motion accents, content changes).

The analysis runs on frames shrunk to about 64 pixels on the short side (strided sampling),
so ten seconds at 8 fps take milliseconds. Three change signals are measured between
consecutive frames:

- **cuts**: a shot change is a change score (colour-histogram distance + mean absolute
  grey-level difference, both in [0, 1]) that is high in absolute terms *and* stands out
  against both neighbouring frame pairs (a spike; fast motion is high but not a spike);
- **motion accents**: the grey frame difference is measured per cell of a 4x4 grid (a
  motion-energy map); the accent is the mean absolute change of that map from one frame pair
  to the next (a start, a stop, a hit), the visual analogue of spectral flux;
- **content change** (optional): cosine distance between consecutive frame embeddings (CLIP or
  the video encoder's backbone), passed in by the caller.

The envelope (per-frame visual beat strength in [0, 1]) is the weighted mean of the normalised
motion and embedding signals, raised to ``cut_weight`` at cuts. Beats are its peaks (at least
``min_interval`` apart) plus every cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import find_peaks

from vmas_diffusion.beats.envelope import resample_envelope
from vmas_diffusion.errors import InputError

_GREY = np.array([0.299, 0.587, 0.114], np.float32) / 255.0
_GRID = 4  # motion-energy map is GRID x GRID cells


@dataclass
class VisualBeats:
    """Visual beats of a frame sequence.

    Attributes:
        times: float64 ``(N,)`` beat times in seconds (sorted; cuts included).
        envelope: float32 ``(T,)`` per-frame visual beat strength in [0, 1], one value per input frame.
        fps: frame rate of ``envelope``.
        cuts: float64 ``(K,)`` times of hard cuts, seconds: midway between the last frame of a
            shot and the first frame of the next (as every beat time: the change happened in between).
    """

    times: np.ndarray
    envelope: np.ndarray
    fps: float
    cuts: np.ndarray

    def envelope_at(self, frame_rate: float, num_frames: int | None = None) -> np.ndarray:
        """The envelope on another frame grid (e.g. a codec's 50 Hz), float32 ``(num_frames,)``."""
        return resample_envelope(self.envelope, self.fps, frame_rate, num_frames)


def _as_frames(frames) -> np.ndarray:
    if hasattr(frames, "detach"):
        frames = frames.detach().cpu().numpy()
    array = np.asarray(frames)
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise InputError(f"frames must be uint8 (T, H, W, 3), got {array.dtype} {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0 or array.shape[2] == 0:
        raise InputError(f"frames must be non-empty, got shape {array.shape}")
    return array


def _shrink(frames: np.ndarray, analysis_size: int) -> np.ndarray:
    """Strided subsampling to about ``analysis_size`` pixels on the short side, uint8 ``(T, h, w, 3)``."""
    step = max(1, min(frames.shape[1], frames.shape[2]) // analysis_size)
    return np.ascontiguousarray(frames[:, ::step, ::step])


def _normalise(x: np.ndarray, floor: float) -> np.ndarray:
    """Scale to [0, 1] by the 98th percentile, but never by less than ``floor`` (noise stays small)."""
    scale = max(float(np.percentile(x, 98)) if x.size else 0.0, floor)
    return np.clip(x / scale, 0.0, 1.0).astype(np.float32)


def frame_changes(frames: np.ndarray, analysis_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame change signals of uint8 ``(T, H, W, 3)`` frames.

    Returns:
        change: float32 ``(T,)`` histogram distance + mean grey difference to the previous
            frame (0 for the first frame), in [0, 2].
        motion: float32 ``(T, GRID * GRID)`` mean absolute grey difference per grid cell.
    """
    small = _shrink(frames, analysis_size)
    t, h, w, _ = small.shape
    # 64-bin colour histogram (2 bits per channel); half the L1 distance is in [0, 1]
    q = small >> 6
    codes = ((q[..., 0].astype(np.int32) << 4) | (q[..., 1].astype(np.int32) << 2) | q[..., 2]).reshape(t, -1)
    codes += (np.arange(t, dtype=np.int32) * 64)[:, None]  # one bincount for all frames
    hist = np.bincount(codes.ravel(), minlength=64 * t).reshape(t, 64).astype(np.float32) / codes.shape[1]
    grey = small.astype(np.float32) @ _GREY  # (T, h, w) in [0, 1]
    diff = np.abs(np.diff(grey, axis=0))  # (T-1, h, w)
    change = np.zeros(t, np.float32)
    motion = np.zeros((t, _GRID * _GRID), np.float32)
    if t > 1:
        change[1:] = 0.5 * np.abs(np.diff(hist, axis=0)).sum(1) + diff.mean((1, 2))
        gh, gw = max(h // _GRID, 1), max(w // _GRID, 1)
        cells = diff[:, : gh * _GRID, : gw * _GRID].reshape(t - 1, _GRID, gh, _GRID, gw)
        motion[1:] = cells.mean((2, 4)).reshape(t - 1, -1) if h >= _GRID and w >= _GRID else diff.mean((1, 2))[:, None]
    return change, motion


def detect_cuts(change: np.ndarray, threshold: float = 0.25, contrast: float = 1.5) -> np.ndarray:
    """Indices of frames that start a new shot.

    A cut at frame ``t`` needs ``change[t] >= threshold`` and ``change[t] >= contrast`` times
    the larger change of the neighbouring frame pairs (``t - 1`` and ``t + 1``).
    """
    if change.size < 2:
        return np.zeros(0, np.int64)
    before = np.r_[0.0, change[:-1]]
    after = np.r_[change[1:], 0.0]
    neighbours = np.maximum(before, after)
    is_cut = (change >= threshold) & (change >= contrast * neighbours + 1e-6)
    is_cut[0] = False
    return np.flatnonzero(is_cut)


def visual_beats(
    frames,
    fps: float,
    frame_embeddings: np.ndarray | None = None,
    *,
    timestamps: np.ndarray | None = None,
    analysis_size: int = 64,
    motion_weight: float = 1.0,
    embedding_weight: float = 1.0,
    cut_weight: float = 1.0,
    cut_threshold: float = 0.25,
    cut_contrast: float = 1.5,
    min_interval: float = 0.25,
    peak_height: float = 0.3,
    peak_prominence: float = 0.15,
    motion_floor: float = 0.01,
) -> VisualBeats:
    """Visual beats and the per-frame visual beat strength of a frame sequence.

    Args:
        frames: uint8 ``(T, H, W, 3)`` (numpy or torch), sampled at ``fps``.
        fps: frame rate of ``frames``.
        frame_embeddings: optional ``(T, D)`` per-frame embeddings; their change adds to the envelope.
        timestamps: optional ``(T,)`` real frame times in seconds (e.g. ``VideoClip.timestamps``);
            default ``arange(T) / fps``.
        analysis_size: short side, in pixels, the frames are shrunk to before analysis.
        motion_weight, embedding_weight: weights of the motion-accent and embedding-change signals.
        cut_weight: envelope value at a cut (clipped to [0, 1]).
        cut_threshold, cut_contrast: see :func:`detect_cuts`.
        min_interval: smallest gap between two beats, seconds.
        peak_height, peak_prominence: a motion peak must reach this envelope value and prominence.
        motion_floor: grey-level change per frame (0-1 scale) below which motion counts as noise.

    Returns:
        :class:`VisualBeats`.
    """
    array = _as_frames(frames)
    if not fps or fps <= 0:
        raise InputError(f"fps must be positive, got {fps!r}")
    t = array.shape[0]
    if timestamps is None:
        times_of = np.arange(t, dtype=np.float64) / fps
    else:
        times_of = np.asarray(timestamps, dtype=np.float64).reshape(-1)
        if times_of.size != t:
            raise InputError(f"timestamps has {times_of.size} entries for {t} frames")

    change, motion = frame_changes(array, analysis_size)
    cuts = detect_cuts(change, cut_threshold, cut_contrast)

    # Motion accents: change of the motion-energy map; a cut is not motion.
    accent = np.zeros(t, np.float32)
    if t > 2:
        accent[2:] = np.abs(np.diff(motion[1:], axis=0)).mean(1)
    for c in cuts:
        accent[c : c + 2] = 0.0  # the pair across the cut and the one after it
    signals, weights = [_normalise(accent, motion_floor)], [motion_weight]

    if frame_embeddings is not None:
        emb = np.asarray(frame_embeddings, dtype=np.float32)
        if emb.ndim != 2 or emb.shape[0] != t:
            raise InputError(f"frame_embeddings must be ({t}, D), got {emb.shape}")
        unit = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-8)
        distance = np.zeros(t, np.float32)
        distance[1:] = 1.0 - (unit[1:] * unit[:-1]).sum(1)
        signals.append(_normalise(distance, 1e-3))
        weights.append(embedding_weight)

    total = float(sum(weights))
    envelope = sum(w * s for w, s in zip(weights, signals)) / total if total > 0 else np.zeros(t, np.float32)
    envelope = np.asarray(envelope, np.float32)
    envelope[cuts] = np.maximum(envelope[cuts], min(max(cut_weight, 0.0), 1.0))
    envelope = np.clip(envelope, 0.0, 1.0)

    distance_frames = max(1, int(round(min_interval * fps)))
    peaks, _ = find_peaks(envelope, height=peak_height, prominence=peak_prominence, distance=distance_frames)
    # Cuts are always beats; a motion peak closer than min_interval to a cut is dropped.
    if cuts.size and peaks.size:
        near = np.abs(peaks[:, None] - cuts[None, :]).min(1) < distance_frames
        peaks = peaks[~near]
    beat_idx = np.union1d(peaks, cuts).astype(np.int64)
    # A change seen at frame t happened between frames t - 1 and t: report the midpoint. Taking
    # frame t's own time made every beat late by up to one frame (0.1 s at 10 fps, as much as the
    # usual beat-matching tolerance); the midpoint halves the worst case and removes the bias.
    event_times = times_of.copy()
    event_times[1:] = 0.5 * (times_of[:-1] + times_of[1:])
    return VisualBeats(
        times=event_times[beat_idx],
        envelope=envelope,
        fps=float(fps),
        cuts=event_times[cuts],
    )
