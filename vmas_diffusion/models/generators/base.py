"""The generator interface both backends implement.

A generator models music frames at the codec's frame rate given named conditions
(``dict[str, Condition]``, see :mod:`vmas_diffusion.conditions`).

* ``forward_train(batch) -> GeneratorTrainOutput``: the backend's own generation losses
  (cross-entropy for AR, diffusion loss for LDM) plus what the alignment losses need:
  a pooled music embedding and per-frame onset logits from the beat head.
* ``generate(conditions, num_frames, ...)``: codes ``[B, K, T]`` (AR) or latents
  ``[B, D, T]`` (LDM).

A training batch is a dict:
``"codes"`` ``[B, K, T]`` long (AR) or ``"latents"`` ``[B, D, T]`` (LDM),
``"conditions"`` ``dict[str, Condition]``, optional ``"mask"`` ``[B, T]`` bool (valid music frames).
"""

from dataclasses import dataclass, field
from typing import Dict, Optional

import torch


@dataclass
class GeneratorTrainOutput:
    #: named generation losses (scalars), e.g. ``{"ce": ...}`` or ``{"diffusion": ...}``
    losses: Dict[str, torch.Tensor] = field(default_factory=dict)
    #: ``[B, D]`` pooled hidden states over the real music, for the contrastive loss
    music_embedding: Optional[torch.Tensor] = None
    #: ``[B, T]`` beat-head logits of a music onset per music frame
    onset_logits: Optional[torch.Tensor] = None


class MusicGenerator:
    """Mixin declaring the generator interface; concrete generators are also ``ModelMixin, ConfigMixin``."""

    #: "ar" or "ldm"
    backend: str = ""

    def forward_train(self, batch: dict) -> GeneratorTrainOutput:
        raise NotImplementedError

    def generate(self, conditions: dict, num_frames: int, **kwargs) -> torch.Tensor:
        raise NotImplementedError
