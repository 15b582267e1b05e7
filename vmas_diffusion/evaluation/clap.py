"""LAION-CLAP audio branch as an evaluation embedder (FAD windows and CLAP similarity scores).

Wraps :class:`vmas_diffusion.models.clap_audio.ClapAudioEncoder`: 48 kHz mono, one 512-d
L2-normalised embedding per 10 s window (shorter clips are repeat-padded into one window, as
laion-clap does). The HTS-AT size of a checkpoint is found by trying the known sizes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, ConfigError
from .embedders import AudioEmbedder


class ClapAudioEmbedder(AudioEmbedder):
    """Per-window CLAP audio embeddings ``[W, 512]`` (``W`` = number of 10 s windows, at least 1)."""

    name = "clap-audio"
    weights_hint = "clap=/path/to/ckpt"

    @classmethod
    def from_spec(cls, path, device: str = "cpu", clap_checkpoint=None) -> "ClapAudioEmbedder":
        """``clap=PATH``, or plain ``clap`` with the evaluation's ``clap_checkpoint``."""
        if not (path or clap_checkpoint):
            raise ConfigError(
                "fad_embedder 'clap' needs a local LAION-CLAP checkpoint: pass clap_checkpoint or 'clap=/path/to/ckpt'"
            )
        return cls.from_checkpoint(Path(path or clap_checkpoint), device=device)

    def __init__(self, encoder, device: str = "cpu"):
        self.encoder = encoder.to(device).eval()
        self.device = device
        self.sample_rate = int(encoder.config.sample_rate)
        self.dim = int(encoder.config.joint_embed_dim)

    @classmethod
    def from_checkpoint(cls, path: Path, device: str = "cpu", htsat_size: str | None = None) -> "ClapAudioEmbedder":
        """Load a local laion-clap checkpoint; ``htsat_size`` None tries "tiny", "base", "large" in turn."""
        from ..models.clap_audio import HTSAT_SIZES, ClapAudioEncoder

        sizes = [htsat_size] if htsat_size else list(HTSAT_SIZES)
        errors = []
        for size in sizes:
            try:
                embedder = cls(ClapAudioEncoder.from_clap_checkpoint(path, htsat_size=size), device=device)
                embedder.checkpoint = Path(path)
                return embedder
            except CheckpointError as exc:
                errors.append(f"{size}: {exc}")
                if not Path(path).is_file():
                    break
        raise CheckpointError(f"CLAP checkpoint {path} fits no HTS-AT size ({'; '.join(errors)})")

    @torch.no_grad()
    def _embed_mono(self, audio: np.ndarray) -> np.ndarray:
        wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None]
        windows = self.encoder.prepare(wav, self.sample_rate)[0]  # [W, clip_samples]
        # each window is exactly one CLAP input, so the encoder embeds it alone
        return torch.cat([self.encoder(w[None], self.sample_rate).float().cpu() for w in windows]).numpy()
