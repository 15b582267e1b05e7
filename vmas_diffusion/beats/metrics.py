"""Beat Coverage Score (BCS) and Beat Hit Score (BHS), in both published forms.

The literature uses the same two names for two different computations; both are returned,
under different keys, so a table always says which one it reports.

**Tolerance-window form** (``*_window``; the definitions in the D2M-GAN paper, Zhu et al.
2022, "Quantized GAN for Complex Music Generation from Dance Videos")::

    BCS = B_g / B_r        generated beats / reference beats (may exceed 1)
    BHS = B_a / B_r        aligned beats / reference beats

A generated beat is *aligned* with a reference beat when they are at most ``tolerance``
seconds apart; matching is one-to-one (a maximum matching), so one generated beat cannot
hit two reference beats. ``f1_window`` is the usual F-measure of that matching,
``2 B_a / (B_g + B_r)`` (the harmonic mean of precision ``B_a / B_g`` and recall ``B_a / B_r``;
not of BCS and BHS, since BCS is not bounded by 1).

**1-second-bin form** (``*_bins``; as computed by LORIS, Yu et al. 2023, ``beats_scores.py``):
the span ``[0, duration)`` is cut into ``ceil(duration)`` one-second bins and each beat set
becomes the set of bins that hold at least one beat (G for generated, R for reference)::

    BCS = |G & R| / |G|    share of generated bins that hold a reference beat
    BHS = |G & R| / |R|    share of reference bins that hold a generated beat
    F1  = 2 BCS BHS / (BCS + BHS)

(The D2M-GAN / CDCD evaluation scripts bin the same way but report ``|G| / |R|`` as BCS;
that ratio is ``bcs_window``'s idea on bins and is not returned.)

Every ratio is 0.0 when its denominator is 0. Beats outside ``[0, duration]`` are ignored.
"""

from __future__ import annotations

import math

import numpy as np

from vmas_diffusion.errors import InputError

SCORE_KEYS = ("bcs_window", "bhs_window", "f1_window", "bcs_bins", "bhs_bins", "f1_bins")


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def _f1(a: float, b: float) -> float:
    return 2.0 * a * b / (a + b) if (a + b) > 0 else 0.0


def _beats(times, name: str, duration: float) -> np.ndarray:
    if hasattr(times, "detach"):
        times = times.detach().cpu().numpy()
    array = np.asarray(times, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite times")
    return np.sort(array[(array >= 0.0) & (array <= duration)])


def match_beats(generated: np.ndarray, reference: np.ndarray, tolerance: float) -> int:
    """Size of a largest one-to-one matching of sorted generated and reference beats whose
    times differ by at most ``tolerance`` seconds.

    A sweep in time order (match the earliest possible pair, skip a beat that no later beat
    can reach) is optimal for points on a line, so no general bipartite matching is needed.
    """
    i = j = hits = 0
    tol = tolerance + 1e-9
    while i < generated.size and j < reference.size:
        if reference[j] < generated[i] - tol:
            j += 1  # no generated beat from i on can reach this reference beat
        elif reference[j] > generated[i] + tol:
            i += 1  # this generated beat reaches no reference beat
        else:
            hits += 1
            i += 1
            j += 1
    return hits


def beat_bins(times: np.ndarray, duration: float, bin_seconds: float = 1.0) -> np.ndarray:
    """bool ``(ceil(duration / bin_seconds),)``: which bins hold at least one beat."""
    n = max(1, math.ceil(duration / bin_seconds - 1e-9))
    bins = np.zeros(n, bool)
    bins[np.minimum((times // bin_seconds).astype(np.int64), n - 1)] = True
    return bins


def beat_scores(generated_beats, reference_beats, duration: float, tolerance: float = 0.1) -> dict:
    """BCS, BHS and F1 of ``generated_beats`` against ``reference_beats`` (seconds), both forms.

    Args:
        generated_beats: beat times of the generated music (or any beat set under test), seconds.
        reference_beats: beat times of the reference (the video's visual beats, or the original music).
        duration: seconds both cover; sets the number of 1-second bins.
        tolerance: largest gap, seconds, at which two beats count as aligned (window form).

    Returns:
        dict with exactly the keys ``bcs_window``, ``bhs_window``, ``f1_window``, ``bcs_bins``,
        ``bhs_bins``, ``f1_bins`` (floats; see the module docstring for the definitions).
    """
    duration = float(duration)
    if not math.isfinite(duration) or duration <= 0:
        raise InputError(f"duration must be a positive number of seconds, got {duration!r}")
    if not math.isfinite(tolerance) or tolerance < 0:
        raise InputError(f"tolerance must be >= 0 seconds, got {tolerance!r}")
    gen = _beats(generated_beats, "generated_beats", duration)
    ref = _beats(reference_beats, "reference_beats", duration)

    hits = match_beats(gen, ref, tolerance)
    g_bins, r_bins = beat_bins(gen, duration), beat_bins(ref, duration)
    both = int((g_bins & r_bins).sum())
    bcs_bins = _ratio(both, g_bins.sum())
    bhs_bins = _ratio(both, r_bins.sum())
    return {
        "bcs_window": _ratio(gen.size, ref.size),
        "bhs_window": _ratio(hits, ref.size),
        "f1_window": _ratio(2 * hits, gen.size + ref.size),
        "bcs_bins": bcs_bins,
        "bhs_bins": bhs_bins,
        "f1_bins": _f1(bcs_bins, bhs_bins),
    }
