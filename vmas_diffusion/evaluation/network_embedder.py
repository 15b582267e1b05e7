"""What the embedders over a torch network (VGGish, PANNs Cnn14) share: strict loading that names
the expected network and the differing keys, and inference in batches (files are read by
:func:`vmas_diffusion.weights.read_weights`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from ..weights import state_dict_mismatch
from .embedders import AudioEmbedder


class NetworkEmbedder(AudioEmbedder):
    """An :class:`AudioEmbedder` over ``model``, run in eval mode on ``device``, ``batch_size`` inputs at a time."""

    def __init__(self, model: nn.Module, device: str = "cpu", batch_size: int = 16):
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def _with_weights(cls, model: nn.Module, state: dict, path: Path, expected: str, device: str):
        """The embedder over ``model`` with ``state`` loaded strictly; a mismatch says ``path`` is not ``expected``."""
        problem = state_dict_mismatch(model.state_dict(), state)
        if problem:
            raise CheckpointError(f"{path} is not {expected}: {problem}")
        model.load_state_dict(state, strict=True)
        embedder = cls(model, device=device)
        embedder.checkpoint = Path(path)
        return embedder

    @torch.no_grad()
    def _forward_batched(self, inputs: torch.Tensor) -> np.ndarray:
        """``[N, ...]`` network inputs -> ``[N, D]`` float32 embeddings."""
        out = [
            self.model(inputs[i : i + self.batch_size].to(self.device)).float().cpu()
            for i in range(0, inputs.shape[0], self.batch_size)
        ]
        return torch.cat(out).numpy()
