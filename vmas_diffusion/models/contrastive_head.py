"""The contrastive head: projections of pooled video and music embeddings into one joint space.

It holds the parameters of the video-music contrastive objective (two linear projections and the
learnable log inverse temperature); the objective itself is parameter-free
(:class:`vmas_diffusion.losses.InfoNCELoss`). A pipeline saves the head as its optional
``contrastive_head`` component and uses it for retrieval embeddings (``embed_video`` /
``embed_music``).

An optional **rhythm part** (``rhythm_frames > 0``) makes the joint space hear *when* things
happen, not only what: the video's beat envelope and the music's onset envelope, each max-pooled
onto ``rhythm_frames`` bins over the clip, the video's filtered by a learned kernel of
``2 * rhythm_reach + 1`` taps (it learns the lag between a visual event and the onset it goes with,
and how sharp a match must be), centred and L2-normalised. The joint embedding is::

    normalize([sqrt(1 - s) * global, sqrt(s) * rhythm]),   s = rhythm_share

so the similarity of two embeddings is ``(1 - s)`` times the global cosine plus ``s`` times the
correlation of the two envelopes: music whose onsets land on the video's beats ranks high (compare
clips of the same length; the bins then have the same width). At ``s = 1`` a clip with a flat
envelope (no visual event, silence) embeds as all zeros: it says nothing, so it ranks everything alike.
"""

import math
from typing import Optional, Tuple

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
        rhythm_frames: bins of the rhythm part (module docstring); 0 leaves it out.
        rhythm_reach: the rhythm kernel reaches this many bins before and after (starts as the identity).
        rhythm_share: ``s``, the rhythm part's share of the similarity, in [0, 1].
    """

    @register_to_config
    def __init__(
        self,
        video_dim: int,
        music_dim: int,
        embed_dim: int = 128,
        init_temperature: float = 0.07,
        learn_temperature: bool = True,
        rhythm_frames: int = 0,
        rhythm_reach: int = 3,
        rhythm_share: float = 0.0,
    ):
        super().__init__()
        for name, value in (("video_dim", video_dim), ("music_dim", music_dim), ("embed_dim", embed_dim)):
            if int(value) <= 0:
                raise InputError(f"ContrastiveHead: {name} must be a positive int, got {value!r}")
        for name, value in (("rhythm_frames", rhythm_frames), ("rhythm_reach", rhythm_reach)):
            if int(value) != value or value < 0:
                raise InputError(f"ContrastiveHead: {name} must be an int >= 0, got {value!r}")
        if not 0.0 <= rhythm_share <= 1.0:
            raise InputError(f"ContrastiveHead: rhythm_share must be in [0, 1], got {rhythm_share!r}")
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
        if rhythm_frames:
            identity = torch.zeros(2 * rhythm_reach + 1)
            identity[rhythm_reach] = 1.0
            self.rhythm_kernel = nn.Parameter(identity)

    @property
    def output_dim(self) -> int:
        """Width of the joint embedding: ``embed_dim`` plus the rhythm part's bins."""
        return self.config.embed_dim + self.config.rhythm_frames

    def rhythm(self, envelope: torch.Tensor, video: bool) -> torch.Tensor:
        """``[B, T]`` envelope over the clip (any rate) -> ``[B, rhythm_frames]`` centred, L2-normalised
        (all zeros for a flat envelope); the video's goes through the learned kernel."""
        if envelope.dim() != 2 or envelope.shape[1] == 0:
            raise InputError(f"ContrastiveHead: a rhythm envelope must be [B, T] with T > 0, got shape {tuple(envelope.shape)}")
        kernel = self.rhythm_kernel
        x = F.adaptive_max_pool1d(envelope.to(kernel)[:, None], self.config.rhythm_frames)
        if video:
            x = F.conv1d(x, kernel.view(1, 1, -1), padding=self.config.rhythm_reach)
        x = x[:, 0] - x[:, 0].mean(-1, keepdim=True)
        return F.normalize(x, dim=-1)

    def _joint(self, global_part: torch.Tensor, envelope: Optional[torch.Tensor], video: bool, name: str) -> torch.Tensor:
        global_part = F.normalize(global_part, dim=-1)
        if not self.config.rhythm_frames:
            return global_part
        if envelope is None:
            raise InputError(f"ContrastiveHead: this head has a rhythm part, so it needs the {name}")
        if envelope.shape[0] != global_part.shape[0]:
            raise InputError(f"ContrastiveHead: {global_part.shape[0]} items but {envelope.shape[0]} {name}s")
        share = float(self.config.rhythm_share)
        rhythm = self.rhythm(envelope, video).to(global_part.dtype)
        return F.normalize(torch.cat([math.sqrt(1.0 - share) * global_part, math.sqrt(share) * rhythm], -1), dim=-1)

    def _check(self, x: torch.Tensor, width: int, name: str) -> None:
        if x.dim() != 2 or x.shape[1] != width:
            raise InputError(f"ContrastiveHead: {name} must be [B, {width}], got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise InputError(f"ContrastiveHead: {name} is an empty batch")

    def embed_video(self, x: torch.Tensor, beat_envelope: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, Dv]`` pooled video embedding (and, with a rhythm part, the ``[B, T]`` visual beat
        envelope over the clip) -> ``[B, output_dim]`` L2-normalised joint embedding."""
        self._check(x, self.config.video_dim, "video_embedding")
        return self._joint(self.video_proj(x.to(self.video_proj.weight.dtype)), beat_envelope, True, "beat envelope")

    def embed_music(self, x: torch.Tensor, onset_envelope: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, Dm]`` music embedding (and, with a rhythm part, the ``[B, T]`` onset envelope of the
        music) -> ``[B, output_dim]`` L2-normalised joint embedding."""
        self._check(x, self.config.music_dim, "music_embedding")
        return self._joint(self.music_proj(x.to(self.music_proj.weight.dtype)), onset_envelope, False, "onset envelope")

    def logit_scale(self) -> torch.Tensor:
        """Scalar ``exp(log_logit_scale)`` clamped at ``MAX_LOGIT_SCALE`` (keeps gradient)."""
        return self.log_logit_scale.clamp(max=math.log(MAX_LOGIT_SCALE)).exp()

    def forward(
        self, video_embedding: torch.Tensor, music_embedding: torch.Tensor,
        beat_envelope: Optional[torch.Tensor] = None, onset_envelope: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pairs ``[B, Dv]``, ``[B, Dm]`` (and their envelopes, with a rhythm part) -> ``(video [B, E'],
        music [B, E'], logit scale)``, what :class:`~vmas_diffusion.losses.InfoNCELoss` takes."""
        if video_embedding.shape[0] != music_embedding.shape[0]:
            raise InputError(
                f"ContrastiveHead: video_embedding has {video_embedding.shape[0]} rows but music_embedding "
                f"has {music_embedding.shape[0]}; they must be pairs"
            )
        return (self.embed_video(video_embedding, beat_envelope), self.embed_music(music_embedding, onset_envelope),
                self.logit_scale())
