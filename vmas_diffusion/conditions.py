"""Named conditions: how the video reaches the generators.

A condition is a tensor ``[B, T, D]`` with a validity mask ``[B, T]`` (True where
valid) and the frame rate of its time axis, so a generator can resample it onto the
music frame rate. Conditions travel as a ``dict[str, Condition]``; the names used
across the project are ``"video"`` (temporal video encoder output) and ``"beat"``
(per-frame visual beat strength, ``D == 1``). A generator may also read the video's local pace off
the beat condition (:func:`visual_pace`): how many visual beats per second, how strong on average.
"""

from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F

from .errors import InputError

VIDEO = "video"
BEAT = "beat"

#: channels of :func:`visual_pace`: visual beats per second, mean beat strength
PACE_FEATURES = 2
#: a local maximum of the beat strength at least this high counts as a visual beat (the ``peak_height``
#: of :func:`vmas_diffusion.beats.visual_beats`)
PACE_PEAK_HEIGHT = 0.3


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


def visual_pace(beat: Condition, window_seconds: float) -> Condition:
    """The video's local pace ``[B, T, 2]``, read off a beat condition ``[B, T, 1]`` (same frames and mask).

    At each frame, over the valid frames of the ``window_seconds`` centred on it: the visual beats
    per second (local maxima of the beat strength of at least :data:`PACE_PEAK_HEIGHT`) and the mean
    beat strength. A per-frame beat says *where* a hit goes; whether a stretch of video is calm or
    busy (how many notes the music should play) is this wider view, which a beat seen a few frames
    ahead does not give. Only valid frames count, so an item's pace does not depend on its batch's
    padding; a null beat condition gives a null pace.
    """
    if beat.frame_rate is None:
        raise InputError("visual_pace needs a time-aligned beat condition (it has no frame_rate)")
    if beat.tensor.shape[-1] != 1:
        raise InputError(f"visual_pace needs a beat condition of width 1, got {beat.tensor.shape[-1]}")
    valid = beat.mask.to(beat.tensor.dtype)
    strength = beat.tensor[..., 0] * valid  # [B, T]
    before = F.pad(strength, (1, 0))[:, :-1]
    after = F.pad(strength, (0, 1))[:, 1:]
    peaks = (strength >= PACE_PEAK_HEIGHT) & (strength > before) & (strength >= after)
    width = 2 * int(round(window_seconds * beat.frame_rate / 2)) + 1  # odd, so the window is centred
    ones = strength.new_ones(1, 1, width)
    sums = F.conv1d(torch.stack([peaks.to(strength.dtype), strength, valid], 1).flatten(0, 1)[:, None], ones,
                    padding=width // 2).view(strength.shape[0], 3, -1)
    frames = sums[:, 2].clamp(min=1.0)
    pace = torch.stack([sums[:, 0] * beat.frame_rate / frames, sums[:, 1] / frames], -1) * valid[..., None]
    return Condition(pace, beat.mask, beat.frame_rate)
