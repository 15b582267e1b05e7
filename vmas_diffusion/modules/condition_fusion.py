"""Condition fusion shared by the generators: named conditions -> model inputs for one window.

Conditions (``dict[str, Condition]``, :mod:`vmas_diffusion.conditions`) enter a generator in one of
three ways, set per condition in the recipe (audiocraft's ``ConditionFuser``):

* ``"cross"``: tokens the model cross-attends to;
* ``"prepend"``: tokens placed before the music in the self-attention sequence;
* ``"sum"``: values resampled to the music frame rate and added to each frame's input.

Generation past a model's window runs in windows, so everything is computed for a window of music
frames ``[start_frame, start_frame + num_frames)``: a time-aligned condition keeps only the tokens
of that time span (:func:`window_tokens`), each with the sinusoidal position of its instant in
window frames, the clock of the music positions, so attention can line video events up with music
frames. The generators own their projections (their parameter names stay theirs); this module owns
the check (:func:`check_conditions`), the slicing and the prepared form (:class:`FusedConditions`).
"""

import math
from dataclasses import dataclass
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from ..conditions import Condition
from ..errors import InputError
from .transformer import sinusoidal_embedding

#: how a token condition enters the model
TOKEN_MODES = ("cross", "prepend")


@dataclass
class FusedConditions:
    """Conditions turned into model inputs for one window of ``T`` music frames (or LM steps)."""

    #: ``[B, C, H]`` cross-attention tokens and their validity mask ``[B, C]`` (True = valid), or None
    cross: Optional[torch.Tensor] = None
    cross_mask: Optional[torch.Tensor] = None
    #: ``[B, P, H]`` tokens before the music in the self-attention sequence and mask ``[B, P]``, or None
    prefix: Optional[torch.Tensor] = None
    prefix_mask: Optional[torch.Tensor] = None
    #: ``[B, T, H]`` added to the input of each frame (the "sum" conditions), or None
    frame_add: Optional[torch.Tensor] = None
    #: ``[B, T, H]`` added to each frame's conditioning embedding (a DiT's "adaln" conditions), or None
    frame_modulation: Optional[torch.Tensor] = None
    #: a generator's precomputed form of ``cross_mask`` for its attention layers, or None
    cross_attend: Optional[Tuple[torch.Tensor, torch.Tensor]] = None
    #: a generator's per-layer cross-attention keys and values of ``cross``, computed once for many calls, or None
    cross_kv: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = None

    @property
    def prefix_len(self) -> int:
        return 0 if self.prefix is None else self.prefix.shape[1]

    @classmethod
    def from_tokens(cls, tokens: Mapping[str, List[Tuple[torch.Tensor, torch.Tensor]]], frame_add=None) -> "FusedConditions":
        """``{"cross": [(tokens, mask), ...], "prepend": [...]}`` -> each mode's tokens concatenated in order."""
        out = cls(frame_add=frame_add)
        if tokens.get("cross"):
            out.cross = torch.cat([h for h, _ in tokens["cross"]], dim=1)
            out.cross_mask = torch.cat([m for _, m in tokens["cross"]], dim=1)
        if tokens.get("prepend"):
            out.prefix = torch.cat([h for h, _ in tokens["prepend"]], dim=1)
            out.prefix_mask = torch.cat([m for _, m in tokens["prepend"]], dim=1)
        return out


def check_conditions(
    conditions: Optional[Mapping[str, Condition]],
    widths: Mapping[str, int],
    batch_size: Optional[int] = None,
    who: str = "generator",
    time_aligned: Iterable[str] = (),
) -> Optional[int]:
    """Validate ``conditions`` against a model and return the batch size.

    ``widths``: the names the model takes and each one's channels ``D``; a missing name counts as
    dropped, an unknown one is an error. ``batch_size``: the batch of the other inputs, if any.
    ``time_aligned``: names that must carry a frame rate (the "sum" ones). Returns ``batch_size``
    when there is no condition (possibly None). Raises InputError naming what is wrong.
    """
    if conditions is None:
        conditions = {}
    if not isinstance(conditions, Mapping):
        raise InputError(f"{who}: conditions must be a dict[str, Condition], got {type(conditions).__name__}")
    unknown = sorted(set(conditions) - set(widths))
    if unknown:
        raise InputError(f"{who}: unknown condition(s) {unknown}; valid names: {sorted(widths)}")
    sizes = set() if batch_size is None else {int(batch_size)}
    time_aligned = set(time_aligned)
    for name, cond in conditions.items():
        if not isinstance(cond, Condition):
            raise InputError(f"{who}: condition {name!r} must be a Condition, got {type(cond).__name__}")
        if cond.tensor.shape[-1] != widths[name]:
            raise InputError(f"{who}: condition {name!r} has width {cond.tensor.shape[-1]}; the model expects {widths[name]}")
        if name in time_aligned and cond.frame_rate is None:
            raise InputError(f"{who}: condition {name!r} is fused by 'sum' and needs a frame_rate (it has none)")
        sizes.add(cond.tensor.shape[0])
    if len(sizes) > 1:
        raise InputError(f"{who}: batch sizes disagree across conditions and inputs: {sorted(sizes)}")
    return sizes.pop() if sizes else batch_size


def window_tokens(
    cond: Condition,
    proj: torch.nn.Module,
    start_frame: int,
    num_frames: int,
    frame_rate: float,
    tail: int = 0,
) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """Tokens ``[B, C, H]`` and mask ``[B, C]`` of ``cond`` for music frames ``[start_frame, start_frame + num_frames)``
    at ``frame_rate`` Hz, or None when none of it falls in the window.

    A time-aligned condition keeps its frames from the one straddling the window start to the last
    one starting before the window ends, plus ``tail`` more (a model that plans ahead sees past its
    window's end), each projected and given the sinusoidal position of its instant in window frames.
    A condition without a frame rate is projected whole.
    """
    if cond.frame_rate is None:
        return proj(cond.tensor), cond.mask
    length = cond.tensor.shape[1]
    ratio = frame_rate / cond.frame_rate  # music frames per condition frame
    first = math.floor(start_frame / ratio)
    last = min(math.ceil((start_frame + num_frames) / ratio) + tail, length)  # exclusive
    if first >= last:
        return None
    tensor, mask = cond.tensor[:, first:last], cond.mask[:, first:last]
    pos = torch.arange(first, last, device=tensor.device, dtype=torch.float32) * ratio - start_frame
    hidden = proj(tensor)
    return hidden + sinusoidal_embedding(pos, hidden.shape[-1]).to(hidden.dtype), mask


def frame_values(cond: Condition, frames: torch.Tensor, frame_rate: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """``cond`` resampled to ``frame_rate`` Hz and read at music frames ``frames`` (any shape ``[...]``,
    absolute indices): ``(values [B, ..., D] zero where invalid, valid [B, ...])``, for "sum" fusion."""
    resampled = cond.resample(int(frames.max()) + 1, frame_rate)
    valid = resampled.mask[:, frames]
    return resampled.tensor[:, frames] * valid[..., None].to(resampled.tensor), valid


def token_fuse_modes(modes: Mapping[str, str]) -> Dict[str, List[str]]:
    """``{name: mode}`` -> ``{"cross": [names], "prepend": [names]}`` in the given order."""
    return {mode: [name for name, m in modes.items() if m == mode] for mode in TOKEN_MODES}
