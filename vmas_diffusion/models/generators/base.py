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
``"conditions"`` ``dict[str, Condition]``, optional ``"mask"`` ``[B, T]`` bool (valid music frames),
optional ``"generator"``: a ``torch.Generator`` or one per item for the training draws.
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
        """One training batch; ``batch["generator"]`` is a list with one generator per item (see draw_items)."""
        raise NotImplementedError

    def generate(self, conditions: dict, num_frames: int, **kwargs) -> torch.Tensor:
        raise NotImplementedError


def draw_items(fn, size, generator=None, device=None, **kwargs) -> torch.Tensor:
    """A batch-first random tensor from ``fn`` (``torch.rand``, ``torch.randn``, ``torch.randint``).

    ``generator`` may be one ``torch.Generator`` or a list with one per batch item: then item
    ``i`` is drawn from ``generator[i]`` alone (``None`` items from the global RNG), so a batch sees
    the same randomness as its items run one by one (training on any number of processes then draws
    identically per sample). Draws happen on the generator's device and move to ``device``.
    """
    from ...errors import InputError

    size = tuple(size)
    if isinstance(generator, (list, tuple)):
        if len(generator) != size[0]:
            raise InputError(f"got {len(generator)} generators for a batch of {size[0]}")
        items = [fn(size=(1,) + size[1:], generator=g, device=device if g is None else g.device, **kwargs) for g in generator]
        return torch.cat(items).to(device)
    on = generator.device if generator is not None else device
    return fn(size=size, generator=generator, device=on, **kwargs).to(device)
