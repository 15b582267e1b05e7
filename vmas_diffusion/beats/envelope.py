"""Envelopes on a frame grid: resampling between frame rates, and beat times as a dense curve."""

from __future__ import annotations

import math

import numpy as np

from vmas_diffusion.errors import InputError


def resample_envelope(envelope, src_rate: float, dst_rate: float, num_frames: int | None = None) -> np.ndarray:
    """Move a per-frame envelope from ``src_rate`` to ``dst_rate`` frames per second.

    Source frame ``i`` is taken at time ``i / src_rate``; target frame ``k`` covers
    ``[k / dst_rate, (k + 1) / dst_rate)``. Each target frame holds the largest source value
    whose time falls inside it, so a sharp onset is never averaged away on a coarser grid and
    appears exactly once; a target frame with no source time inside it (finer grid) holds the
    value of the source frame in progress (sample and hold). Same rule in both directions.

    Args:
        envelope: ``(T,)`` values.
        num_frames: length of the output; default ``ceil(T * dst_rate / src_rate)``. Frames past
            the source's end repeat its last value.
    Returns:
        float32 ``(num_frames,)``.
    """
    env = np.asarray(envelope, dtype=np.float32).reshape(-1)
    if not (src_rate > 0 and dst_rate > 0):
        raise InputError(f"frame rates must be positive, got src_rate={src_rate}, dst_rate={dst_rate}")
    if num_frames is None:
        num_frames = math.ceil(env.size * dst_rate / src_rate - 1e-9)
    num_frames = int(num_frames)
    if num_frames <= 0 or env.size == 0:
        return np.zeros(max(num_frames, 0), np.float32)
    bins = np.floor(np.arange(env.size) * (dst_rate / src_rate) + 1e-9).astype(np.int64)
    keep = bins < num_frames
    out = np.full(num_frames, np.nan, np.float32)
    if keep.any():
        kept, kept_bins = env[keep], bins[keep]
        starts = np.flatnonzero(np.r_[True, np.diff(kept_bins) > 0])
        out[kept_bins[starts]] = np.maximum.reduceat(kept, starts)
    missing = np.flatnonzero(np.isnan(out))
    if missing.size:
        held = np.floor(missing * (src_rate / dst_rate) + 1e-9).astype(np.int64)
        out[missing] = env[np.minimum(held, env.size - 1)]
    return out


def beats_to_envelope(times, frame_rate: float, num_frames: int, width: float = 0.05) -> np.ndarray:
    """Beat times (seconds) as a dense curve: a Gaussian bump of std ``width`` s, peak 1, per beat.

    Returns float32 ``(num_frames,)`` in [0, 1] (overlapping bumps take the maximum), sampled at
    the start of each frame ``k / frame_rate``. Useful as a beat-condition or beat-target track.
    """
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    grid = np.arange(int(num_frames)) / float(frame_rate)
    out = np.zeros(grid.size, np.float32)
    if times.size == 0 or grid.size == 0:
        return out
    reach = 4.0 * width  # bumps are negligible beyond 4 standard deviations
    for t in times:
        lo, hi = np.searchsorted(grid, [t - reach, t + reach])
        if hi > lo:
            bump = np.exp(-0.5 * ((grid[lo:hi] - t) / width) ** 2).astype(np.float32)
            np.maximum(out[lo:hi], bump, out=out[lo:hi])
    return out
