"""Beat sync: warp music's time so its beats land on a video's visual beats.

1. **Match** (:func:`match_beats_monotone`): music beats to visual beats, one-to-one and in order,
   by dynamic programming over the candidate pairs within ``max_shift`` seconds of each other.
   The chosen pairs, with ``(0, 0)`` and ``(D, D)`` added (the music keeps its length ``D``), are
   the knots of a piecewise-linear time map; every segment's stretch factor (output seconds per
   music second) must lie within ``1 ± max_stretch``. The DP keeps the most pairs, then the least
   stretch (sum of ``|factor - 1|`` times the segment's length). A visual beat that would need more
   stretch stays unmatched: the music is never dragged past the limit.
2. **Warp** (:func:`warp_audio`): each segment is time-stretched on its own with librosa's phase
   vocoder (``librosa.effects.time_stretch``, rate ``1 / factor``; a segment whose factor is 1
   is copied) from a source span widened by ``context`` seconds on both sides, so the vocoder's
   edge frames fall outside the part that is kept; neighbouring segments are joined by a short
   raised-cosine crossfade that ends on the knot, so the beat at the knot comes whole from the
   segment that starts there. Both segments' maps pass through the knot, so their sound there is
   in step.
3. **Check and report** (:class:`BeatSync`): the warped audio's beats are tracked again (not
   predicted from the map) and scored (BHS, window form) against the visual beats. A beat tracker
   looks for one steady pulse, and on a warped piece it now and then settles on another phase
   (3 of 20 clips on the held-out set, docs/beat_sync.md); when the warped music then hits fewer
   visual beats than the music as generated, the music is returned unwarped and ``reason`` says so.
   The report holds the pairs, the knots, per-segment factors, max / mean ``|factor - 1|`` and
   BHS before and after.

:func:`sync_to_beats` does the three steps.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np

from vmas_diffusion.beats.metrics import beat_scores
from vmas_diffusion.errors import InputError
from vmas_diffusion.media._common import audio_to_numpy

if TYPE_CHECKING:  # the music side imports librosa: only when beats are synced
    from vmas_diffusion.beats.music import MusicBeats

DEFAULT_MAX_STRETCH = 0.15  # ±15 %: a tempo change listeners accept without hearing a drag
CROSSFADE_SECONDS = 0.02
CONTEXT_SECONDS = 0.1
STFT_SECONDS = 0.032  # vocoder window: short enough that the beat's attack is not smeared far
UNIT_FACTOR = 1e-3  # a segment within this of factor 1 is copied, not vocoded


@dataclass
class BeatSync:
    """What beat sync did to one waveform.

    Attributes:
        applied: whether the audio was warped (False: it is returned as it was, see ``reason``).
        reason: why it was not applied, or "" when it was.
        pairs: float64 ``(K, 2)``: matched (music beat time in the original music, visual beat time), seconds.
        knots: float64 ``(K + 2, 2)``: the time map, (original time, output time), from ``(0, 0)`` to ``(D, D)``.
        factors: float64 ``(K + 1,)``: each segment's stretch, output seconds per original second (> 1 slower).
        max_stretch: the limit on ``|factor - 1|`` the match was made under.
        music_before, music_after: the music's beat times before and after the warp (tracked on the audio).
        visual: the visual beat times synced to.
        bhs_before, bhs_after: BHS (window form, ``tolerance`` s) of those music beats against ``visual``
            (``bhs_after`` is the returned audio's: ``bhs_before`` when the warp was not kept).
        When a warp was tried and not kept, ``pairs``, ``knots`` and ``factors`` say what was tried;
        the stretch properties are 0 (nothing was stretched).
        tolerance: the BHS window, seconds.
        durations: float64 ``(K + 1,)``: each segment's length in the original music, seconds.
    """

    applied: bool
    reason: str
    pairs: np.ndarray
    knots: np.ndarray
    factors: np.ndarray
    max_stretch: float
    visual: np.ndarray
    music_before: np.ndarray
    music_after: np.ndarray
    bhs_before: float
    bhs_after: float
    tolerance: float = 0.1
    durations: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def max_abs_stretch(self) -> float:
        """Largest ``|factor - 1|`` over the segments (0 when nothing was warped)."""
        return float(np.max(np.abs(self.factors - 1.0))) if self.applied and self.factors.size else 0.0

    @property
    def mean_abs_stretch(self) -> float:
        """``|factor - 1|`` averaged over the music's time (each segment weighted by its original length)."""
        if not self.applied or not self.factors.size or not self.durations.sum() > 0:
            return 0.0
        return float(np.sum(np.abs(self.factors - 1.0) * self.durations) / self.durations.sum())

    @property
    def matched_share(self) -> float:
        """Share of the visual beats that got a music beat (0 when nothing was warped)."""
        return len(self.pairs) / len(self.visual) if self.applied and len(self.visual) else 0.0

    def summary(self) -> dict:
        """Plain numbers (JSON-ready)."""
        return {
            "applied": bool(self.applied),
            "reason": self.reason,
            "pairs": int(len(self.pairs)) if self.applied else 0,
            "visual_beats": int(len(self.visual)),
            "matched_share": self.matched_share,
            "max_abs_stretch": self.max_abs_stretch,
            "mean_abs_stretch": self.mean_abs_stretch,
            "max_stretch": float(self.max_stretch),
            "bhs_before": float(self.bhs_before),
            "bhs_after": float(self.bhs_after),
        }


def check_max_stretch(max_stretch) -> float:
    if isinstance(max_stretch, bool) or not isinstance(max_stretch, (int, float)) or not (0 < max_stretch < 1):
        raise InputError(f"`max_stretch` must be a number in (0, 1) (0.15 = ±15 %), got {max_stretch!r}")
    return float(max_stretch)


def _times(values, name: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.isfinite(array).all():
        raise InputError(f"{name} contains NaN or infinite times")
    return np.sort(array)


def match_beats_monotone(music, visual, duration: float, max_stretch: float = DEFAULT_MAX_STRETCH,
                         max_shift: Optional[float] = None) -> np.ndarray:
    """Pairs ``(i, j)`` (int ``(K, 2)``, both increasing): music beat ``i`` goes to visual beat ``j``.

    Only beats inside ``(0, duration)`` take part; a pair is a candidate when the two are at most
    ``max_shift`` apart (default: half the music's median beat period, at least 0.1 s, so a visual
    beat takes a music beat of its own beat, not a neighbour's). Consecutive knots, counting
    ``(0, 0)`` and ``(duration, duration)``, must have a slope within ``1 ± max_stretch``. Among
    the chains that satisfy that, the DP returns one with the most pairs and, of those, the least
    stretch (``sum |slope - 1| * segment length``).
    """
    max_stretch = check_max_stretch(max_stretch)
    m, v = _times(music, "music beats"), _times(visual, "visual beats")
    inside_m = np.flatnonzero((m > 0) & (m < duration))
    inside_v = np.flatnonzero((v > 0) & (v < duration))
    if not inside_m.size or not inside_v.size:
        return np.zeros((0, 2), np.int64)
    if max_shift is None:
        period = float(np.median(np.diff(m))) if m.size > 1 else 0.5
        max_shift = max(0.1, 0.5 * period)
    # candidate pairs in (i, j) order: a predecessor always comes before in this order
    ii, jj = np.meshgrid(inside_m, inside_v, indexing="ij")
    keep = np.abs(m[ii] - v[jj]) <= max_shift
    ci, cj = ii[keep], jj[keep]
    if not ci.size:
        return np.zeros((0, 2), np.int64)
    src, dst = m[ci], v[cj]
    lo, hi = 1.0 - max_stretch, 1.0 + max_stretch
    big = 1.0 + max_stretch * duration  # cost < big always, so the count dominates

    def feasible(s0, t0, s1, t1):
        ds, dt = s1 - s0, t1 - t0
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = dt / ds
        ok = (ds > 0) & (dt > 0) & (slope >= lo - 1e-9) & (slope <= hi + 1e-9)
        return ok, np.where(ok, np.abs(slope - 1.0) * np.where(ds > 0, ds, 0.0), np.inf)

    n = ci.size
    value = np.full(n, -np.inf)  # count * big - cost of the best chain from (0, 0) ending at pair p
    parent = np.full(n, -1)
    ok0, cost0 = feasible(0.0, 0.0, src, dst)
    value[ok0] = big - cost0[ok0]
    for p in range(n):
        prev = np.flatnonzero((ci[:p] < ci[p]) & (cj[:p] < cj[p]) & np.isfinite(value[:p]))
        if not prev.size:
            continue
        ok, cost = feasible(src[prev], dst[prev], src[p], dst[p])
        if not ok.any():
            continue
        cand = value[prev] + big - cost
        cand[~ok] = -np.inf
        k = int(np.argmax(cand))
        if cand[k] > value[p]:
            value[p], parent[p] = cand[k], prev[k]
    ok_end, cost_end = feasible(src, dst, duration, duration)
    total = np.where(ok_end & np.isfinite(value), value - cost_end, -np.inf)
    if not np.isfinite(total).any():
        return np.zeros((0, 2), np.int64)
    chain, p = [], int(np.argmax(total))
    while p >= 0:
        chain.append((ci[p], cj[p]))
        p = parent[p]
    return np.asarray(chain[::-1], np.int64).reshape(-1, 2)


def _crossfade_weights(length: int, starts: np.ndarray, fade: int) -> np.ndarray:
    """``(len(starts), length)`` weights summing to 1 at every sample: segment k owns
    ``[starts[k], starts[k+1])``, and the handover to segment k+1 is a raised-cosine ramp over the
    ``fade`` samples that end at ``starts[k+1]``."""
    t = np.arange(length, dtype=np.float64)
    edges = [np.ones(length)]  # edges[k]: 1 where segment k (or a later one) has taken over
    for s in starts[1:]:
        ramp = np.clip((t - (s - fade)) / max(fade, 1), 0.0, 1.0)
        edges.append(0.5 - 0.5 * np.cos(np.pi * ramp))
    edges.append(np.zeros(length))
    edges = np.stack(edges)
    return edges[:-1] - edges[1:]


def warp_audio(audio, sample_rate: int, knots) -> np.ndarray:
    """``audio`` ``(C, S)`` or ``(S,)`` warped by the time map ``knots`` ``(N, 2)`` of (original s,
    output s), from ``(0, 0)`` to ``(D, D)`` with ``D = S / sample_rate``; the same shape comes back."""
    import librosa

    data = audio_to_numpy(audio)  # (C, S) float32
    knots = np.asarray(knots, dtype=np.float64)
    if knots.ndim != 2 or knots.shape[1] != 2 or knots.shape[0] < 2:
        raise InputError(f"knots must be (N >= 2, 2), got shape {knots.shape}")
    if np.any(np.diff(knots, axis=0) <= 0):
        raise InputError("knots must increase in both original and output time")
    length = data.shape[-1]
    sr = float(sample_rate)
    n_fft = 2 ** max(6, round(math.log2(STFT_SECONDS * sr)))
    context = max(CONTEXT_SECONDS, 2 * n_fft / sr)
    fade = max(1, int(round(CROSSFADE_SECONDS * sr)))
    out_starts = np.round(knots[:-1, 1] * sr).astype(np.int64)
    weights = _crossfade_weights(length, out_starts, fade)
    out = np.zeros_like(data, dtype=np.float64)
    for k in range(knots.shape[0] - 1):
        (s0, t0), (s1, t1) = knots[k], knots[k + 1]
        factor = (t1 - t0) / (s1 - s0)
        a = max(0, int(math.floor((s0 - context) * sr)))
        b = min(length, int(math.ceil((s1 + context) * sr)))
        piece = data[:, a:b]
        if abs(factor - 1.0) > UNIT_FACTOR:
            with warnings.catch_warnings():  # a piece shorter than the window is padded: fine
                warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
                piece = librosa.effects.time_stretch(piece, rate=1.0 / factor, n_fft=n_fft, hop_length=n_fft // 4)
        # output sample j of the piece plays original sample a + j / factor, heard at t0 + (that - s0) * factor
        offset = int(round(t0 * sr - (s0 * sr - a) * factor))
        lo, hi = max(0, offset), min(length, offset + piece.shape[-1])
        if hi > lo:
            out[:, lo:hi] += weights[k, lo:hi] * piece[:, lo - offset : hi - offset]
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def _no_sync(reason, visual, music, max_stretch, bhs, tolerance) -> BeatSync:
    return BeatSync(False, reason, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), max_stretch, visual, music, music,
                    bhs, bhs, tolerance)


def sync_to_beats(audio, sample_rate: int, visual_times, max_stretch: float = DEFAULT_MAX_STRETCH,
                  tolerance: float = 0.1, music: Optional[MusicBeats] = None) -> tuple[np.ndarray, BeatSync]:
    """``(warped audio, report)``: ``audio`` ``(C, S)`` or ``(S,)`` with its beats moved onto ``visual_times``.

    The output has the input's shape (length kept). With no visual beat, no music beat, no pair
    within the stretch limit, or a warp whose beats (tracked again) hit fewer visual beats than the
    original's, the audio comes back unchanged and ``report.reason`` says why.
    ``music``: the beats of ``audio`` when the caller has tracked them already.
    """
    max_stretch = check_max_stretch(max_stretch)
    data = audio_to_numpy(audio)
    duration = data.shape[-1] / float(sample_rate)
    visual = _times(visual_times, "visual beats")
    visual = visual[(visual >= 0) & (visual <= duration)]
    from vmas_diffusion.beats.music import music_beats

    music = music if music is not None else music_beats(data, sample_rate)
    before = np.asarray(music.times, np.float64)

    def bhs(times):
        return float(beat_scores(times, visual, duration, tolerance)["bhs_window"]) if duration > 0 else 0.0

    if not visual.size:
        return data, _no_sync("the video has no visual beats", visual, before, max_stretch, 0.0, tolerance)
    if not before.size:
        return data, _no_sync("the music has no beats to move", visual, before, max_stretch, 0.0, tolerance)
    index = match_beats_monotone(before, visual, duration, max_stretch)
    if not index.size:
        return data, _no_sync(f"no music beat can reach a visual beat within ±{max_stretch:.0%} stretch", visual, before,
                              max_stretch, bhs(before), tolerance)
    pairs = np.stack([before[index[:, 0]], visual[index[:, 1]]], axis=1)
    knots = np.concatenate([[[0.0, 0.0]], pairs, [[duration, duration]]])
    durations = np.diff(knots[:, 0])
    factors = np.diff(knots[:, 1]) / durations
    warped = warp_audio(data, sample_rate, knots)
    after = np.asarray(music_beats(warped, sample_rate).times, np.float64)
    if bhs(after) < bhs(before):  # the tracker took another pulse in the warped music: keep the original
        reason = (f"the warped music's beats, tracked again, hit fewer visual beats (BHS {bhs(after):.2f} < "
                  f"{bhs(before):.2f}): kept as generated")
        return data, BeatSync(False, reason, pairs, knots, factors, max_stretch, visual, before, before, bhs(before),
                              bhs(before), tolerance, durations)
    report = BeatSync(True, "", pairs, knots, factors, max_stretch, visual, before, after, bhs(before), bhs(after),
                      tolerance, durations)
    return warped, report
