"""Named conditions: how the video reaches the generators.

A condition is a tensor ``[B, T, D]`` with a validity mask ``[B, T]`` (True where
valid) and the frame rate of its time axis, so a generator can resample it onto the
music frame rate. Conditions travel as a ``dict[str, Condition]``; the names used
across the project are ``"video"`` (temporal video encoder output) and ``"beat"``
(per-frame visual beat strength, ``D == 1``).
"""

from dataclasses import dataclass, replace
from typing import Optional

import torch

from .errors import InputError

VIDEO = "video"
BEAT = "beat"


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
