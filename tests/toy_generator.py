"""A third generator backend, small enough to read in one go: what docs/architecture.md's
"adding a backend" walks through, and what tests/test_toy_backend.py registers and runs.

``ToyFrameGenerator`` predicts each codec latent frame from the conditions at that instant (video
and beat resampled to the music frame rate, through the shared condition fusion) with one MLP, and
samples by adding seeded noise. Nothing outside this file knows it exists.
"""

from typing import Dict, Optional

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from vmas_diffusion.conditions import BEAT, VIDEO, Condition
from vmas_diffusion.errors import ConfigError, InputError
from vmas_diffusion.models.generators.base import GeneratorTrainOutput, MusicGenerator, draw_items, frame_weights, pool_frames
from vmas_diffusion.modules.condition_fusion import check_conditions, frame_values


class ToyFrameGenerator(ModelMixin, ConfigMixin, MusicGenerator):
    """Latents ``[B, latent_dim, T]`` = MLP(conditions at frame t) + ``temperature`` x noise."""

    backend = "toy"
    music_key = "latents"  # it models the codec's continuous latents

    @register_to_config
    def __init__(self, latent_dim: int = 16, video_dim: int = 16, beat_dim: int = 1, frame_rate: float = 50.0,
                 hidden_size: int = 32, temperature: float = 0.5):
        super().__init__()
        self.widths = {VIDEO: video_dim, BEAT: beat_dim}
        self.cond_proj = nn.Linear(video_dim + beat_dim, hidden_size)
        self.music_proj = nn.Linear(latent_dim, hidden_size)  # reads music, for the alignment features
        self.out = nn.Linear(hidden_size, latent_dim)
        self.beat_head = nn.Linear(hidden_size, 1)

    @classmethod
    def codec_config(cls, codec) -> dict:
        if not codec.is_continuous:
            raise ConfigError(f"the toy backend needs a continuous codec; {type(codec).__name__} has no latents")
        return {**super().codec_config(codec), "latent_dim": int(codec.latent_dim)}

    def encode_music(self, codec, wav: torch.Tensor) -> torch.Tensor:
        return codec.encode(wav)

    def decode_music(self, codec, target: torch.Tensor) -> torch.Tensor:
        return codec.decode(target)

    def _frame_inputs(self, conditions: Dict[str, Condition], batch: int, num_frames: int) -> torch.Tensor:
        """``[B, T, video_dim + beat_dim]``: every condition read at each music frame (zeros when absent)."""
        frames = torch.arange(num_frames, device=self.device)
        parts = []
        for name, width in self.widths.items():
            if name in conditions:
                parts.append(frame_values(conditions[name].to(self.device, self.dtype), frames, self.config.frame_rate)[0])
            else:
                parts.append(torch.zeros(batch, num_frames, width, device=self.device, dtype=self.dtype))
        return torch.cat(parts, dim=-1)

    def _predict(self, conditions, batch: int, num_frames: int) -> torch.Tensor:
        return self.out(torch.tanh(self.cond_proj(self._frame_inputs(conditions, batch, num_frames)))).transpose(1, 2)

    def forward_train(self, batch: dict) -> GeneratorTrainOutput:
        if self.music_key not in batch:
            raise InputError(f"ToyFrameGenerator: the training batch has no {self.music_key!r}")
        latents = batch[self.music_key].to(self.dtype)
        b, _, t = latents.shape
        conditions = batch.get("conditions") or {}
        check_conditions(conditions, self.widths, b, "ToyFrameGenerator", time_aligned=self.widths)
        mask = batch.get("mask")
        err = (self._predict(conditions, b, t) - latents).pow(2).mean(1)  # [B, T]
        weight = frame_weights(batch, b, t, latents.device)
        if weight is not None:
            err = err * weight
        loss = err.mean() if mask is None else (err * mask).sum() / mask.sum().clamp(min=1)
        hidden = torch.tanh(self.music_proj(latents.transpose(1, 2)))  # [B, T, H]
        return GeneratorTrainOutput(
            losses={"mse": loss}, music_embedding=pool_frames(hidden, mask), onset_logits=self.beat_head(hidden)[..., 0]
        )

    @torch.no_grad()
    def generate(self, conditions: Dict[str, Condition], num_frames: int, guidance_scale: float = 1.0,
                 generator=None, progress_bar=None, temperature: Optional[float] = None) -> torch.Tensor:
        if not isinstance(num_frames, int) or num_frames < 1:
            raise InputError(f"ToyFrameGenerator.generate: num_frames must be a positive int, got {num_frames!r}")
        batch = check_conditions(conditions, self.widths, None, "ToyFrameGenerator", time_aligned=self.widths)
        if batch is None:
            batch = len(generator) if isinstance(generator, (list, tuple)) else 1
        mean = self._predict(conditions, batch, num_frames)
        if conditions and guidance_scale != 1.0:  # classifier-free guidance against the no-condition prediction
            mean = self._predict({}, batch, num_frames) + guidance_scale * (mean - self._predict({}, batch, num_frames))
        noise = draw_items(torch.randn, mean.shape, generator, self.device)
        scale = self.config.temperature if temperature is None else temperature
        return mean + scale * noise.to(mean.dtype)

    def embed_music(self, target: torch.Tensor) -> torch.Tensor:
        return pool_frames(torch.tanh(self.music_proj(target.to(self.dtype).transpose(1, 2))))
