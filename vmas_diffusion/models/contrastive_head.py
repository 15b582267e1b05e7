"""The contrastive head: projections of pooled video and music embeddings into one joint space.

It holds the parameters of the video-music contrastive objective (two linear projections and the
learnable log inverse temperature); the objective itself is parameter-free
(:class:`vmas_diffusion.losses.InfoNCELoss`). A pipeline saves the head as its optional
``contrastive_head`` component and uses it for retrieval embeddings (``embed_video`` /
``embed_music``).
"""

import math
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from ..errors import InputError

#: CLIP's clamp on the logit scale (temperature >= 0.01), which keeps training stable.
MAX_LOGIT_SCALE = 100.0


class ContrastiveHead(ModelMixin, ConfigMixin):
    """Linear video ``Dv -> E`` and music ``Dm -> E`` projections and the logit scale.

    Args:
        video_dim: ``Dv``, width of the pooled video embedding.
        music_dim: ``Dm``, width of the music embedding (generator hidden size, or 512 for CLAP).
        embed_dim: ``E``, width of the joint space.
        init_temperature: initial softmax temperature (logit scale ``1 / init_temperature``).
        learn_temperature: when False the temperature stays fixed at ``init_temperature``.
    """

    @register_to_config
    def __init__(
        self,
        video_dim: int,
        music_dim: int,
        embed_dim: int = 128,
        init_temperature: float = 0.07,
        learn_temperature: bool = True,
    ):
        super().__init__()
        for name, value in (("video_dim", video_dim), ("music_dim", music_dim), ("embed_dim", embed_dim)):
            if int(value) <= 0:
                raise InputError(f"ContrastiveHead: {name} must be a positive int, got {value!r}")
        if not 1.0 / MAX_LOGIT_SCALE <= init_temperature:
            raise InputError(
                f"ContrastiveHead: init_temperature must be >= {1.0 / MAX_LOGIT_SCALE} (the logit scale is "
                f"clamped at {MAX_LOGIT_SCALE}), got {init_temperature!r}"
            )
        self.video_proj = nn.Linear(video_dim, embed_dim)
        self.music_proj = nn.Linear(music_dim, embed_dim)
        self.log_logit_scale = nn.Parameter(
            torch.tensor(math.log(1.0 / init_temperature)), requires_grad=learn_temperature
        )

    def _check(self, x: torch.Tensor, width: int, name: str) -> None:
        if x.dim() != 2 or x.shape[1] != width:
            raise InputError(f"ContrastiveHead: {name} must be [B, {width}], got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise InputError(f"ContrastiveHead: {name} is an empty batch")

    def embed_video(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Dv]`` pooled video embedding -> ``[B, E]`` L2-normalised joint embedding."""
        self._check(x, self.config.video_dim, "video_embedding")
        return F.normalize(self.video_proj(x.to(self.video_proj.weight.dtype)), dim=-1)

    def embed_music(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, Dm]`` music embedding -> ``[B, E]`` L2-normalised joint embedding."""
        self._check(x, self.config.music_dim, "music_embedding")
        return F.normalize(self.music_proj(x.to(self.music_proj.weight.dtype)), dim=-1)

    def logit_scale(self) -> torch.Tensor:
        """Scalar ``exp(log_logit_scale)`` clamped at ``MAX_LOGIT_SCALE`` (keeps gradient)."""
        return self.log_logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def forward(self, video_embedding: torch.Tensor, music_embedding: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pairs ``[B, Dv]``, ``[B, Dm]`` -> ``(video [B, E], music [B, E], logit scale)``, what
        :class:`~vmas_diffusion.losses.InfoNCELoss` takes."""
        if video_embedding.shape[0] != music_embedding.shape[0]:
            raise InputError(
                f"ContrastiveHead: video_embedding has {video_embedding.shape[0]} rows but music_embedding "
                f"has {music_embedding.shape[0]}; they must be pairs"
            )
        return self.embed_video(video_embedding), self.embed_music(music_embedding), self.logit_scale()
