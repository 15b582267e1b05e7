"""Video-beat alignment loss on the generator's beat head, and the envelopes it needs.

The generators' beat head predicts one music-onset logit per music frame
(``GeneratorTrainOutput.onset_logits``, ``[B, T]``). Two terms train it; each is multiplied by its
weight here, and a weight of 0 means the term is neither computed nor returned.

Notation: ``x`` the logits, ``p = sigmoid(x)``, ``o`` the onset target of the real music
(:func:`vmas_diffusion.beats.onset_envelope`, in ``[0, 1]``), ``v`` the visual beat envelope (resampled with
:func:`resample_envelope`), ``m`` the valid-frame mask, ``a`` the per-item "pair is aligned" flag.

``beat_onset`` (supervision by the real music)::

    onset_weight * sum_{b,t} m[b,t] * BCE(x[b,t], o[b,t]) / sum_{b,t} m[b,t]

with ``BCE(x, y) = -(y log sigmoid(x) + (1 - y) log(1 - sigmoid(x)))``, soft targets allowed.

``beat_visual`` (pull toward the visual beats, aligned items only)::

    k[d]     = 1 - |d| / (tolerance_frames + 1),  d = -tol..tol       # triangular tolerance kernel
    v~[b]    = (m[b] * v[b]) conv k                                   # tolerance-smoothed visual envelope
    c[b]     = <m[b] * p[b], v~[b]> / (||m[b] * p[b]|| * ||v~[b]|| + eps)   # soft cross-correlation in [0, 1]
    beat_visual = visual_weight * sum_b a[b] * (1 - c[b]) / sum_b a[b]

``<p, v~>`` is the cross-correlation of ``p`` and ``v`` summed over lags ``|d| <= tol`` with weights
``k[d]``: an onset ``d`` frames from a visual beat earns ``k[d]``, nothing beyond the tolerance. The
cosine normalisation makes the term depend on the *shape* of the onset envelope (where its mass
sits), not its level, which ``beat_onset`` sets from the real music. For an onset train that is the
visual beat train shifted by ``s`` frames (beats further than ``2 tol`` apart), ``c`` falls as
``k[s]``: the term is smallest at ``s = 0`` and grows strictly until ``s = tol + 1``. Items without a
visual beat or without valid frames contribute ``1 - 0``; items with ``a = False`` (shuffled or
misaligned pairs) are left out. When no item is aligned the term is an exact zero that still
touches the graph (so DDP sees every parameter used).
"""

from typing import Dict, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import InputError


def tolerance_kernel(tolerance_frames: int) -> torch.Tensor:
    """``[2 * tol + 1]`` triangular weights ``1 - |d| / (tol + 1)`` (1 at the centre)."""
    offsets = torch.arange(-tolerance_frames, tolerance_frames + 1, dtype=torch.float32)
    return 1.0 - offsets.abs() / (tolerance_frames + 1)


def smooth_envelope(envelope: torch.Tensor, tolerance_frames: int) -> torch.Tensor:
    """``[B, T]`` envelope convolved with :func:`tolerance_kernel` (same length, zero padded)."""
    if tolerance_frames == 0:
        return envelope
    kernel = tolerance_kernel(tolerance_frames).to(envelope)
    out = F.conv1d(envelope.unsqueeze(1), kernel.view(1, 1, -1), padding=tolerance_frames)
    return out.squeeze(1)


class BeatAlignmentLoss(nn.Module):
    """Beat-head loss: onset supervision from the real music + soft alignment to the visual beats.

    See the module docstring for the exact formulas. Stateless (no parameters).

    Args:
        onset_weight: weight of ``beat_onset``; 0 switches the term off.
        visual_weight: weight of ``beat_visual``; 0 switches the term off.
        tolerance_frames: half-width (in music frames) of the triangular tolerance kernel;
            at 50 Hz, 2 frames = +-40 ms.
        eps: guards the cosine normalisation of ``beat_visual``.
    """

    def __init__(
        self,
        onset_weight: float = 1.0,
        visual_weight: float = 0.5,
        tolerance_frames: int = 2,
        eps: float = 1e-6,
    ):
        super().__init__()
        for name, value in (("onset_weight", onset_weight), ("visual_weight", visual_weight)):
            if not value >= 0:
                raise InputError(f"BeatAlignmentLoss: {name} must be >= 0, got {value!r}")
        if int(tolerance_frames) != tolerance_frames or tolerance_frames < 0:
            raise InputError(f"BeatAlignmentLoss: tolerance_frames must be an int >= 0, got {tolerance_frames!r}")
        self.onset_weight = float(onset_weight)
        self.visual_weight = float(visual_weight)
        self.tolerance_frames = int(tolerance_frames)
        self.eps = float(eps)

    def forward(
        self,
        onset_logits: torch.Tensor,
        onset_target: torch.Tensor,
        visual_envelope: torch.Tensor,
        aligned: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """Weighted loss terms.

        Args:
            onset_logits: ``[B, T]`` beat-head logits.
            onset_target: ``[B, T]`` onset envelope of the real music in ``[0, 1]``.
            visual_envelope: ``[B, T]`` visual beat envelope at the music frame rate (>= 0).
            aligned: ``[B]`` bool, True where video and music of the pair are in sync.
            mask: ``[B, T]`` bool valid music frames; None = all valid.

        Returns:
            ``{"beat_onset": scalar, "beat_visual": scalar}``, each already multiplied by its
            weight; a term whose weight is 0 is absent.
        """
        if onset_logits.dim() != 2:
            raise InputError(f"BeatAlignmentLoss: onset_logits must be [B, T], got shape {tuple(onset_logits.shape)}")
        shape = tuple(onset_logits.shape)
        for name, tensor in (("onset_target", onset_target), ("visual_envelope", visual_envelope), ("mask", mask)):
            if tensor is not None and tuple(tensor.shape) != shape:
                raise InputError(f"BeatAlignmentLoss: {name} must be {list(shape)} like onset_logits, got {tuple(tensor.shape)}")
        if tuple(aligned.shape) != shape[:1]:
            raise InputError(f"BeatAlignmentLoss: aligned must be [{shape[0]}] bool, got shape {tuple(aligned.shape)}")
        logits = onset_logits.float()
        valid = torch.ones(shape, dtype=torch.bool, device=logits.device) if mask is None else mask.to(logits.device).bool()
        valid_f = valid.float()
        terms: Dict[str, torch.Tensor] = {}

        if self.onset_weight > 0:
            target = onset_target.to(logits)
            if target.min() < 0 or target.max() > 1:
                raise InputError("BeatAlignmentLoss: onset_target must lie in [0, 1] (normalise the onset envelope)")
            bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            terms["beat_onset"] = self.onset_weight * (bce * valid_f).sum() / valid_f.sum().clamp(min=1.0)

        if self.visual_weight > 0:
            chosen = aligned.to(logits.device).bool()
            if not chosen.any():
                # Exact zero that keeps the graph connected (DDP expects every parameter used).
                terms["beat_visual"] = logits.sum() * 0.0
            else:
                prob = torch.sigmoid(logits[chosen]) * valid_f[chosen]
                visual = visual_envelope.to(logits)[chosen].clamp(min=0) * valid_f[chosen]
                smoothed = smooth_envelope(visual, self.tolerance_frames) * valid_f[chosen]
                corr = (prob * smoothed).sum(dim=1) / (prob.norm(dim=1) * smoothed.norm(dim=1) + self.eps)
                terms["beat_visual"] = self.visual_weight * (1.0 - corr).mean()
        return terms

    def counts(self, aligned: torch.Tensor, mask: torch.Tensor) -> Dict[str, torch.Tensor]:
        """How many elements each term of :meth:`forward` averages (detached): ``beat_onset`` the valid
        frames of ``mask [B, T]``, ``beat_visual`` the aligned items. Training on several processes
        weighs each process's terms by them (see :mod:`vmas_diffusion.training.task`)."""
        out = {}
        if self.onset_weight > 0:
            out["beat_onset"] = mask.bool().sum().float()
        if self.visual_weight > 0:
            out["beat_visual"] = aligned.bool().sum().float()
        return out


def resample_envelope(
    envelope: torch.Tensor, src_rate: float, dst_rate: float, num_frames: Optional[int] = None
) -> torch.Tensor:
    """Resample a peaky envelope ``[..., T_src]`` at ``src_rate`` Hz to ``[..., T_dst]`` at ``dst_rate`` Hz.

    Destination frame ``j`` covers ``[j / dst_rate, (j + 1) / dst_rate)``. Downsampling takes the
    max of the source frames inside it, so a one-frame peak is never lost between samples;
    destination frames that contain no source frame (upsampling) are linearly interpolated.
    ``num_frames`` defaults to ``ceil(T_src * dst_rate / src_rate)``; longer outputs are zero-padded.
    """
    if src_rate <= 0 or dst_rate <= 0:
        raise InputError(f"resample_envelope: rates must be > 0, got src_rate={src_rate!r}, dst_rate={dst_rate!r}")
    if envelope.dim() == 0:
        raise InputError("resample_envelope: envelope must be [..., T]")
    env = envelope.float()
    t_src = env.shape[-1]
    if num_frames is None:
        num_frames = int(np.ceil(t_src * dst_rate / src_rate - 1e-9))
    lead = env.shape[:-1]
    flat = env.reshape(-1, t_src)
    out = flat.new_zeros(flat.shape[0], num_frames)
    if t_src == 0 or num_frames == 0:
        return out.reshape(*lead, num_frames)
    src_times = torch.arange(t_src, dtype=torch.float64) / src_rate
    bins = torch.floor(src_times * dst_rate + 1e-9).long()
    inside = bins < num_frames
    hit = torch.zeros(num_frames, dtype=torch.bool)
    hit[bins[inside]] = True
    index = bins[inside].to(flat.device).expand(flat.shape[0], -1)
    out = out.scatter_reduce(1, index, flat[:, inside.to(flat.device)], reduce="amax", include_self=False)
    empty = ~hit
    if empty.any():
        dst_times = torch.arange(num_frames, dtype=torch.float64) / dst_rate
        position = (dst_times * src_rate).clamp(max=t_src - 1)
        left = position.floor().long().clamp(max=t_src - 1)
        right = (left + 1).clamp(max=t_src - 1)
        frac = (position - left).float().to(flat.device)
        interp = flat[:, left] * (1 - frac) + flat[:, right] * frac
        beyond = dst_times > (t_src - 1) / src_rate + 1.0 / dst_rate  # past the source: zero padding
        use = (empty & ~beyond).to(flat.device)
        out[:, use] = interp[:, use]
    return out.reshape(*lead, num_frames)
