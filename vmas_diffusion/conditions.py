"""Named conditions: how the video reaches the generators.

A condition is a tensor ``[B, T, D]`` with a validity mask ``[B, T]`` (True where
valid) and the frame rate of its time axis, so a generator can resample it onto the
music frame rate. Conditions travel as a ``dict[str, Condition]``; the names used
across the project are ``"video"`` (temporal video encoder output) and ``"beat"``
(per-frame visual beat strength, ``D == 1``). A generator may also take a local pace per frame
(:func:`local_pace`: how many beats per second, how strong on average), ``"pace"``: in training the
target music's own, read off its onset envelope, so that it is a control the music follows; at
inference the video's, read off the beat condition and put on the music's scale by a quantile map
(:func:`map_pace`, :func:`fit_pace_map`), unless the caller gives one.
"""

from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F

from .errors import InputError

VIDEO = "video"
BEAT = "beat"
PACE = "pace"

#: where a generator's pace comes from in training: the video's (read off the beat) or the target music's
PACE_SOURCES = ("video", "music")
#: channels of :func:`local_pace`: beats per second, mean strength
PACE_FEATURES = 2
#: a local maximum of the strength at least this high counts as a beat (the ``peak_height`` of
#: :func:`vmas_diffusion.beats.visual_beats`)
PACE_PEAK_HEIGHT = 0.3
#: the window of the pace measures when a generator has none of its own (``pace_seconds``); its
#: ``pace_map`` and ``flux_map`` are fitted over the same window (``train_vmas_tiny.py restage``)
DEFAULT_PACE_SECONDS = 4.0


def pace_window_seconds(config) -> float:
    """The window of a generator's pace measures: its config's ``pace_seconds``, else :data:`DEFAULT_PACE_SECONDS`."""
    return float(config.get("pace_seconds") or DEFAULT_PACE_SECONDS)


@dataclass
class Condition:
    tensor: torch.Tensor  # [B, T, D]
    mask: torch.Tensor  # [B, T] bool, True = valid
    frame_rate: Optional[float] = None  # Hz of the T axis; None = not time-aligned

    def __post_init__(self):
        if self.tensor.dim() != 3:
            raise InputError(f"condition tensor must be [B, T, D], got shape {tuple(self.tensor.shape)}")
        if self.mask.shape != self.tensor.shape[:2]:
            raise InputError(
                f"condition mask must be [B, T] = {tuple(self.tensor.shape[:2])}, got {tuple(self.mask.shape)}"
            )
        self.mask = self.mask.bool()

    def to(self, device=None, dtype=None) -> "Condition":
        """Move to ``device``; ``dtype`` applies to the tensor only (the mask stays bool)."""
        return replace(self, tensor=self.tensor.to(device=device, dtype=dtype), mask=self.mask.to(device=device))

    def repeat_interleave(self, repeats: int) -> "Condition":
        """Repeat each batch item ``repeats`` times (``num_waveforms_per_video``)."""
        return replace(
            self,
            tensor=self.tensor.repeat_interleave(repeats, dim=0),
            mask=self.mask.repeat_interleave(repeats, dim=0),
        )

    def null(self) -> "Condition":
        """The dropped ("unconditional") form used by classifier-free guidance: zeros, all masked out."""
        return replace(self, tensor=torch.zeros_like(self.tensor), mask=torch.zeros_like(self.mask))

    def drop_items(self, drop: torch.Tensor) -> "Condition":
        """The items where ``drop [B]`` is True replaced by the null condition (classifier-free guidance dropout)."""
        keep = (~drop).to(self.tensor.device)
        return replace(self, tensor=self.tensor * keep[:, None, None].to(self.tensor.dtype), mask=self.mask & keep[:, None])

    def with_null(self) -> "Condition":
        """``[B, ...]`` -> ``[2B, ...]``: the condition, then its null form (the batch of one guided call)."""
        null = self.null()
        return replace(self, tensor=torch.cat([self.tensor, null.tensor]), mask=torch.cat([self.mask, null.mask]))

    def resample(self, num_frames: int, frame_rate: float) -> "Condition":
        """Linearly resample the time axis to ``num_frames`` frames at ``frame_rate`` Hz.

        Frame ``i`` of the result sits at time ``i / frame_rate``; values outside the
        source's valid span (past its end, or between a valid and an invalid frame) are zero and
        masked out. Requires a time-aligned condition.
        """
        if self.frame_rate is None:
            raise InputError("cannot resample a condition without a frame_rate")
        b, t, d = self.tensor.shape
        times = torch.arange(num_frames, device=self.tensor.device, dtype=torch.float32) / frame_rate
        pos = times * self.frame_rate  # fractional source index
        lo = pos.floor().long().clamp(0, max(t - 1, 0))
        hi = (lo + 1).clamp(max=max(t - 1, 0))
        w = (pos - lo.float()).clamp(0, 1).to(self.tensor.dtype)[None, :, None]
        out = self.tensor[:, lo] * (1 - w) + self.tensor[:, hi] * w
        inside = (pos <= (t - 1) + 1e-6)[None, :]
        # a frame between a valid and an invalid source frame is invalid, as past the end of an unpadded
        # source: so an item's result does not depend on the padding its batch adds
        mask = self.mask[:, lo] & (self.mask[:, hi] | (w[..., 0] == 0)) & inside
        out = out * mask[..., None].to(out.dtype)
        return Condition(out, mask, frame_rate)


def local_pace(envelope: Condition, window_seconds: float) -> Condition:
    """The local pace ``[B, T, 2]`` of a strength envelope ``[B, T, 1]`` (same frames and mask): a beat
    condition (the video's pace) or a music onset envelope (the music's).

    At each frame, over the valid frames of the ``window_seconds`` centred on it: the beats per
    second (local maxima of the strength of at least :data:`PACE_PEAK_HEIGHT`) and the mean
    strength. A per-frame beat says *where* a hit goes; whether a stretch is calm or busy (how many
    notes the music should play) is this wider view, which a beat seen a few frames ahead does not
    give. Only valid frames count, so an item's pace does not depend on its batch's padding; a null
    envelope gives a null pace.
    """
    if envelope.frame_rate is None:
        raise InputError("local_pace needs a time-aligned envelope (it has no frame_rate)")
    if envelope.tensor.shape[-1] != 1:
        raise InputError(f"local_pace needs an envelope of width 1, got {envelope.tensor.shape[-1]}")
    valid = envelope.mask.to(envelope.tensor.dtype)
    strength = envelope.tensor[..., 0] * valid  # [B, T]
    before = F.pad(strength, (1, 0))[:, :-1]
    after = F.pad(strength, (0, 1))[:, 1:]
    peaks = (strength >= PACE_PEAK_HEIGHT) & (strength > before) & (strength >= after)
    width = 2 * int(round(window_seconds * envelope.frame_rate / 2)) + 1  # odd, so the window is centred
    ones = strength.new_ones(1, 1, width)
    sums = F.conv1d(torch.stack([peaks.to(strength.dtype), strength, valid], 1).flatten(0, 1)[:, None], ones,
                    padding=width // 2).view(strength.shape[0], 3, -1)
    frames = sums[:, 2].clamp(min=1.0)
    pace = torch.stack([sums[:, 0] * envelope.frame_rate / frames, sums[:, 1] / frames], -1) * valid[..., None]
    return Condition(pace, envelope.mask, envelope.frame_rate)


def fit_quantile_map(source, target, num_quantiles: int = 21) -> list:
    """A monotone map from one scale onto another, ``[xs, ys]`` for :func:`interpolate_map`: the
    ``num_quantiles`` quantiles of ``source [N]`` paired with those of ``target [N]``. Quantiles, not a
    regression: a regression shrinks the spread towards the mean by the correlation, and a calm video
    should get music as calm as calm music is. Ties in ``xs`` (e.g. many frames without a beat) keep
    the mean of their ``ys``."""
    source, target = (torch.as_tensor(x, dtype=torch.float64) for x in (source, target))
    if source.dim() != 1 or source.shape != target.shape or len(source) < 2:
        raise InputError(f"a quantile map needs two [N >= 2] arrays of the same shape, "
                         f"got {tuple(source.shape)} and {tuple(target.shape)}")
    if num_quantiles < 2:
        raise InputError(f"a quantile map needs num_quantiles >= 2, got {num_quantiles}")
    levels = torch.linspace(0, 1, num_quantiles, dtype=torch.float64)
    xs, ys = torch.quantile(source, levels), torch.quantile(target, levels)
    unique, which = torch.unique_consecutive(xs, return_inverse=True)
    means = torch.zeros_like(unique).index_add_(0, which, ys) / torch.bincount(which).to(ys)
    return [[round(float(v), 6) for v in unique], [round(float(v), 6) for v in means]]


def check_quantile_map(pair) -> bool:
    """Whether ``pair`` is a :func:`fit_quantile_map` table: ``[xs, ys]`` of finite numbers, xs increasing."""
    try:
        xs, ys = pair
        return len(xs) == len(ys) >= 1 and all(a < b for a, b in zip(xs, xs[1:])) and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < float("inf") for v in [*xs, *ys])
    except (TypeError, ValueError):
        return False


def interpolate_map(x: torch.Tensor, pair) -> torch.Tensor:
    """``x`` through the piecewise-linear ``pair = [xs, ys]`` (flat beyond the ends, as ``np.interp``)."""
    xs, ys = x.new_tensor(pair[0]), x.new_tensor(pair[1])
    v = x.clamp(xs[0], xs[-1])
    if len(xs) == 1:  # a constant map
        return ys[0].expand_as(v)
    hi = torch.searchsorted(xs, v.contiguous()).clamp(1, len(xs) - 1)
    lo = hi - 1
    w = (v - xs[lo]) / (xs[hi] - xs[lo])
    return ys[lo] + w * (ys[hi] - ys[lo])


def fit_pace_map(source, target, num_quantiles: int = 21) -> list:
    """A monotone map from one pace's scale onto another's: per feature, :func:`fit_quantile_map` of
    ``source [N, PACE_FEATURES]`` (e.g. the videos' pace at training frames) onto ``target [N,
    PACE_FEATURES]`` (the music's pace at the same frames), as ``[[xs, ys], ...]`` for :func:`map_pace`."""
    source, target = (torch.as_tensor(x, dtype=torch.float64) for x in (source, target))
    if source.dim() != 2 or source.shape != target.shape or source.shape[1] != PACE_FEATURES or len(source) < 2:
        raise InputError(f"fit_pace_map needs two [N >= 2, {PACE_FEATURES}] arrays of the same shape, "
                         f"got {tuple(source.shape)} and {tuple(target.shape)}")
    return [fit_quantile_map(source[:, f], target[:, f], num_quantiles) for f in range(PACE_FEATURES)]


def check_pace_map(table, who: str) -> Optional[str]:
    """What is wrong with a :func:`fit_pace_map` table (None: nothing; None is also a valid table)."""
    if table is None:
        return None
    try:
        ok = len(table) == PACE_FEATURES and all(check_quantile_map(pair) for pair in table)
    except TypeError:
        ok = False
    return None if ok else (f"{who} must be {PACE_FEATURES} pairs [xs, ys] of finite numbers, xs increasing "
                            f"(fit_pace_map's output), got {table!r}")


def map_pace(pace: Condition, table) -> Condition:
    """Each feature of ``pace`` through its ``[xs, ys]`` of ``table`` (:func:`interpolate_map`); masked
    frames stay zero. ``table`` None: the pace as it is."""
    if table is None:
        return pace
    out = torch.stack([interpolate_map(pace.tensor[..., f], pair) for f, pair in enumerate(table)], -1)
    return Condition(out * pace.mask[..., None].to(out.dtype), pace.mask, pace.frame_rate)


def pace_condition(conditions: dict, window_seconds: float, table) -> Optional[Condition]:
    """The pace a generator adds per frame next to the beat: the caller's ``"pace"`` when given (in
    training the target music's own), else the beat's :func:`local_pace` through :func:`map_pace`.
    A dropped beat drops its pace (None without a beat; null for items whose beat is null)."""
    if BEAT not in conditions:
        return None
    if PACE in conditions:
        return conditions[PACE].drop_items(~conditions[BEAT].mask.any(1))
    return map_pace(local_pace(conditions[BEAT], window_seconds), table)
