"""What the embedders over a torch network (VGGish, PANNs Cnn14) share: reading a local weights
file without unpickling code, strict loading that names the expected network, and inference in
batches."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import CheckpointError
from .embedders import AudioEmbedder


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors, or a torch file with ``weights_only=True`` (no unpickling of code)."""
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise CheckpointError(f"cannot read weights file {path}: {exc}") from exc
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    return state


class NetworkEmbedder(AudioEmbedder):
    """An :class:`AudioEmbedder` over ``model``, run in eval mode on ``device``, ``batch_size`` inputs at a time."""

    def __init__(self, model: nn.Module, device: str = "cpu", batch_size: int = 16):
        self.model = model.to(device).eval()
        self.device = device
        self.batch_size = batch_size

    @classmethod
    def _with_weights(cls, model: nn.Module, state: dict, path: Path, expected: str, device: str):
        """The embedder over ``model`` with ``state`` loaded strictly; a mismatch says ``path`` is not ``expected``."""
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{path} is not {expected}: {exc}") from exc
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
