"""Autoregressive token LM over codec codes (MusicGen-style decoder, the ``"ar"`` backend).

The model reads codec codes ``[B, K, T]`` through a codebook pattern
(:mod:`vmas_diffusion.modules.codebook_patterns`, delay by default): every LM step carries
``K`` slots whose embeddings are summed, and ``K`` heads predict the next step. Slot
``(k, s)`` of the *input* at position ``s`` is step ``s - 1`` (position 0 holds the special
token ``cardinality``, MusicGen's pad/BOS id), so logits at position ``s`` predict step ``s``.

Conditions (``dict[str, Condition]``) enter as the recipe says:

* ``"video"`` ``[B, Tv, video_dim]``: ``video_fuse="cross"`` (cross-attention in every layer),
  ``"prepend"`` (projected tokens before the music, under causal self-attention) or ``"none"``.
  Time-aligned tokens get a sinusoidal embedding of their time in music frames relative to the
  window start, the same clock as the music positions, so attention can line them up.
* ``"beat"`` ``[B, Tv, 1]``: ``beat_fuse="sum"`` resamples it to the music frame rate and adds
  a projection to each step's input, or ``"none"``. The step sees the frame it predicts and the
  ``beat_lookahead`` frames after it: a drum hit is planned before its attack frame, and a single
  value cannot tell the rising edge of a visual beat from a weak accent. With ``pace_seconds > 0``
  the step also gets a projection of the local pace around its frame over that many seconds
  (:func:`~vmas_diffusion.conditions.pace_condition`): whether the music should be calm or busy
  there, so how many notes to play. It is the ``"pace"`` condition when given (``[B, T, 2]``; with
  ``pace_source="music"`` training gives the target music's own, so the model learns it as a
  control), else the video's, read off the beat and put on the music's scale by ``pace_map``.
* ``"text"`` ``[B, Tt, text_dim]`` (optional, ``text_dim > 0``): ``text_fuse="cross"|"prepend"``.

A missing condition is treated as dropped (zeros, masked out); an unknown name is an error.

Training (:meth:`ARTokenLM.forward_train`): cross-entropy per codebook over valid slots,
averaged over codebooks; during training every condition of an item is dropped together with
probability ``cond_dropout`` (MusicGen: 0.3) for classifier-free guidance, and of the others the
beat alone with probability ``beat_dropout`` (the branch beat guidance contrasts with). With
``context_noise > 0`` each teacher-forced input code is replaced by a random one with that
probability (the targets stay), meant to make a model that reads from its own past how busy the music
is lean on the conditions instead (tried on vmas-tiny: it did not; docs/alignment_results.md). With
``align_features="clean"`` (default) the alignment features (``music_embedding``,
``onset_logits``) come from a second pass with every condition dropped, so the alignment losses
shape what the model hears in the music rather than rewarding a copy of the video condition.

Generation (:meth:`ARTokenLM.generate`): static KV cache, CFG as one batched forward of
``[cond; uncond]``, or ``[cond; no beat; uncond]`` with a beat guidance scale (guided before the
linear heads, :mod:`vmas_diffusion.guidance`), one-position steps through
:meth:`ARDecoderLayer.decode_step` (fused q/k/v, few ops a step), per-item random streams (so a
batch equals its items run alone), and windowed continuation past ``max_duration``: after each
window the last ``max_duration - extend_stride`` seconds become the prompt of the next window, as
MusicGen's ``extend_stride``, so a long video gets one continuous piece.
"""

import json
import math
import numbers
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ...conditions import (
    BEAT, PACE, PACE_FEATURES, PACE_SOURCES, VIDEO, Condition, check_pace_map, pace_condition, pace_window_seconds,
)
from ...errors import CheckpointError, ConfigError, InputError
from ...guidance import Guidance, PaceTemperature, check_beat_guidance, check_temperature_map, plan_guidance, plan_pace_temperature
from ...modules.codebook_patterns import PATTERNS, build_pattern
from ...modules.condition_fusion import FusedConditions, check_conditions, frame_values, window_tokens
from ...modules.item_randomness import ItemDropout
from ...modules.transformer import (
    Attention,
    FeedForward,
    KVCache,
    column_major_linears,
    sinusoidal_embedding,
    step_linear,
)
from ...weights import read_safetensors_folder
from .base import GeneratorTrainOutput, MusicGenerator, StepEnd, draw_items, frame_weights, pool_frames

TEXT = "text"
TOKEN_FUSES = ("cross", "prepend", "none")
BEAT_FUSES = ("sum", "none")
#: where forward_train reads music_embedding / onset_logits: a pass with conditions dropped, or the LM pass
ALIGN_FEATURES = ("clean", "lm")

GeneratorArg = Union[None, torch.Generator, Sequence[torch.Generator]]


@dataclass
class ARTrainOutput(GeneratorTrainOutput):
    #: ``[K]`` detached cross-entropy of each codebook (already averaged into ``losses["ce"]``)
    ce_per_codebook: Optional[torch.Tensor] = None


def sample_from_logits(
    logits: torch.Tensor, uniform: torch.Tensor, top_k: int = 250, top_p: float = 0.0,
    temperature: Union[float, torch.Tensor] = 1.0,
) -> torch.Tensor:
    """Draw one id per row of ``logits [N, V]`` by inverse CDF with ``uniform [N]`` in [0, 1).

    ``top_p > 0`` keeps the smallest set of ids whose probability reaches ``top_p`` (and then
    ignores ``top_k``, as audiocraft); otherwise ``top_k > 0`` keeps the ``top_k`` most likely;
    ``temperature == 0`` is greedy; a tensor ``[N]`` (each > 0) gives each row its own. The caller owns
    the randomness: one uniform per row makes the draw a pure function of ``(logits, uniform)``.
    """
    if isinstance(temperature, torch.Tensor):
        logits = logits.float() / temperature.to(logits.device, torch.float32)[:, None]
    elif temperature == 0:
        return logits.argmax(-1)
    else:
        logits = logits.float()
        if temperature != 1:  # x / 1 == x: skip an op a step
            logits = logits / temperature
    if top_p > 0:
        values, ids = logits.sort(dim=-1, descending=True)
        probs = values.softmax(-1)
        # keep an id while the mass before it is still short of top_p (the first id always stays)
        probs = probs * ((probs.cumsum(-1) - probs) < top_p)
    elif 0 < top_k < logits.shape[-1]:
        values, ids = logits.topk(top_k, dim=-1)
        probs = values.softmax(-1)
    else:
        ids, probs = None, logits.softmax(-1)
    cdf = probs.cumsum(-1)
    target = (uniform.to(cdf) * cdf[:, -1]).unsqueeze(-1)
    choice = torch.searchsorted(cdf, target, right=True).clamp(max=cdf.shape[-1] - 1)
    return choice.squeeze(-1) if ids is None else ids.gather(-1, choice).squeeze(-1)


def cross_attention_mask(mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Context mask ``[B, C]`` (True = valid) -> ``(attend [B, 1, 1, C], keep [B, 1, 1])``.

    An item with no valid context token (a dropped condition) attends to everything and is then
    zeroed by ``keep``, which avoids softmax NaNs; computed once per forward, not per layer and step.
    """
    attend = mask[:, None, None, :]
    empty = ~mask.any(-1)
    return attend | empty[:, None, None, None], (~empty).float()[:, None, None]


class ARDecoderLayer(nn.Module):
    """Pre-norm decoder layer: causal self-attention, optional cross-attention, feed-forward.

    Names follow MusicGen's decoder layer so a warm start maps weights by name (its text
    cross-attention ``encoder_attn`` is replaced by ``cross_attn`` to the video).
    """

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, cross: bool, dropout: float):
        super().__init__()
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.self_attn = Attention(dim, num_heads)
        if cross:
            self.cross_attn_layer_norm = nn.LayerNorm(dim)
            self.cross_attn = Attention(dim, num_heads)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, ffn_dim)
        self.dropout = ItemDropout(dropout)  # per-sample masks in training (see item_randomness)

    def forward(
        self,
        x: torch.Tensor,
        cross_kv: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        cross_mask: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
        self_key_mask: Optional[torch.Tensor] = None,
        cache: Optional[KVCache] = None,
    ) -> torch.Tensor:
        """``x [B, L, H]`` -> ``[B, L, H]``.

        ``cross_kv``: keys/values ``[B, heads, C, hd]`` of the context; ``cross_mask``: None (all
        valid) or ``(attend [B, 1, 1, C] bool, keep [B, 1, 1] float)`` from :func:`cross_attention_mask`;
        ``self_key_mask [B, L_keys]`` (True = valid) for prepended tokens; ``cache``: decode
        incrementally after the cached positions.
        """
        h = self.self_attn_layer_norm(x)
        if cache is None:
            h = self.self_attn(h, key_padding_mask=self_key_mask, is_causal=True)
        else:
            h = self.self_attn.forward_cached(h, cache, key_padding_mask=self_key_mask)
        x = x + self.dropout(h)
        if cross_kv is not None:
            attn = self.cross_attn
            q = attn.split_heads(attn.q_proj(self.cross_attn_layer_norm(x)))
            if cross_mask is None:
                h = attn.attend(q, *cross_kv)
            else:
                h = attn.attend(q, *cross_kv, attn_mask=cross_mask[0]) * cross_mask[1]
            x = x + self.dropout(h)
        return x + self.dropout(self.ffn(self.final_layer_norm(x)))

    def step_weights(self) -> Optional[tuple]:
        """What :meth:`decode_step` reads, taken once per ``generate`` call (None when it cannot run:
        training mode, whose dropout it skips, or linear layers without a plain weight, as int8 ones).

        Linear weights come as they are (``[out, in]``, column-major under
        :func:`column_major_linears`), norms as ``(shape, weight, bias, eps)``. Self-attention's
        q/k/v become one ``[3H, H]`` matrix (one GEMM a step instead of three) when they are
        column-major, i.e. small enough that per-call overhead matters; a large model keeps them
        apart rather than copy them.
        """
        cross = getattr(self, "cross_attn", None)
        linears = [self.self_attn.q_proj, self.self_attn.k_proj, self.self_attn.v_proj, self.self_attn.out_proj]
        linears += [self.ffn.fc1, self.ffn.fc2] + ([cross.q_proj, cross.out_proj] if cross is not None else [])
        if self.training or not all(type(m) is nn.Linear and m.bias is None for m in linears):
            return None
        qkv = [m.weight for m in linears[:3]]
        if all(w.t().is_contiguous() for w in qkv):
            qkv = [torch.cat([w.t() for w in qkv], 1).t()]  # still column-major
        norms = [self.self_attn_layer_norm, getattr(self, "cross_attn_layer_norm", None), self.final_layer_norm]
        norms = [None if n is None else (n.normalized_shape, n.weight, n.bias, n.eps) for n in norms]
        cross_w = (cross.q_proj.weight, cross.out_proj.weight) if cross is not None else None
        return (*norms, qkv, self.self_attn.out_proj.weight, cross_w, self.ffn.fc1.weight, self.ffn.fc2.weight)

    def decode_step(
        self,
        x: torch.Tensor,
        weights: tuple,
        cross_kv: Optional[Tuple[torch.Tensor, torch.Tensor]],
        cross_mask: Optional[Tuple[torch.Tensor, torch.Tensor]],
        self_key_mask: Optional[torch.Tensor],
        cache: KVCache,
    ) -> torch.Tensor:
        """One decoding position ``x [R, H]`` -> ``[R, H]``: :meth:`forward` with ``cache`` in eval mode,
        in fewer and larger ops (at a small size a step costs its op count): 2-D rows throughout,
        fused q/k/v, one cache write, residual adds folded into the GEMMs (:func:`step_linear`).
        ``weights`` from :meth:`step_weights`; the rest as in :meth:`forward`, except that ``cross_kv``
        and ``cross_mask`` may cover only the first rows (:meth:`ARTokenLM._step_cross`): the rest then
        have no context. Equal to :meth:`forward` to float rounding.
        """
        norm1, norm2, norm3, qkv, out_w, cross_w, fc1, fc2 = weights
        rows, dim = x.shape
        heads, hd = self.self_attn.num_heads, self.self_attn.head_dim
        h = F.layer_norm(x, *norm1)
        if len(qkv) == 1:
            q, kv = step_linear(h, qkv[0]).split([dim, 2 * dim], 1)
            keys, values = cache.append_step(kv)
        else:
            q = step_linear(h, qkv[0])
            keys, values = cache.append(*(step_linear(h, w).view(rows, heads, 1, hd) for w in qkv[1:]))
        # the position's own key is always valid, so no query row is left without keys
        mask = None if self_key_mask is None else self_key_mask[:, None, None, : keys.shape[2]]
        out = F.scaled_dot_product_attention(q.reshape(rows, heads, 1, hd), keys, values, attn_mask=mask)
        x = step_linear(out.reshape(rows, dim), out_w, x)
        if cross_kv is not None:
            live = cross_kv[0].shape[0]  # the leading rows with a context; the others' cross-attention adds 0
            xc = x[:live]
            q = step_linear(F.layer_norm(xc, *norm2), cross_w[0]).view(live, heads, 1, hd)
            if cross_mask is None:
                out = F.scaled_dot_product_attention(q, *cross_kv).reshape(live, dim)
            else:  # keep is 0 or 1, so scaling before the projection is exact
                out = F.scaled_dot_product_attention(q, *cross_kv, attn_mask=cross_mask[0]).reshape(live, dim)
                out = out * cross_mask[1].view(live, 1)
            xc = step_linear(out, cross_w[1], xc)
            x = xc if live == rows else torch.cat([xc, x[live:]])
        return step_linear(F.gelu(step_linear(F.layer_norm(x, *norm3), fc1)), fc2, x)


class ARTokenLM(ModelMixin, ConfigMixin, MusicGenerator):
    """Decoder-only transformer over interleaved codec codes, conditioned on video (and beats, text).

    Shapes: codes ``[B, K, T]`` with ``K = num_codebooks`` and ids in ``[0, cardinality)``;
    hidden states ``[B, S, hidden_size]`` over ``S = pattern.num_steps(T)`` steps.
    """

    backend = "ar"
    music_key = "codes"
    callback_tensor_inputs = ("tokens",)

    @register_to_config
    def __init__(
        self,
        num_codebooks: int = 4,
        cardinality: int = 2048,
        hidden_size: int = 1024,
        num_layers: int = 24,
        num_heads: int = 16,
        ffn_dim: int = 4096,
        video_dim: int = 768,
        beat_dim: int = 1,
        beat_lookahead: int = 0,
        pace_seconds: float = 0.0,
        pace_source: str = "video",
        pace_map: Optional[list] = None,
        text_dim: int = 0,
        frame_rate: float = 50.0,
        max_duration: float = 10.0,
        extend_stride: float = 6.0,
        pattern: str = "delay",
        video_fuse: str = "cross",
        beat_fuse: str = "sum",
        text_fuse: str = "none",
        cond_dropout: float = 0.3,
        beat_dropout: float = 0.0,
        context_noise: float = 0.0,
        dropout: float = 0.1,
        align_features: str = "clean",
        top_k: int = 250,
        temperature: float = 1.0,
        temperature_map: Optional[list] = None,
        beat_guidance_scale: Optional[float] = None,
        beat_guidance_reach: Optional[float] = None,
    ):
        super().__init__()
        self._check_config()
        self.codebook_pattern = build_pattern(pattern, num_codebooks)
        self.special_id = cardinality  # pad / start token, as MusicGen's id 2048
        self.head_dim = hidden_size // num_heads

        self.embed_tokens = nn.ModuleList(nn.Embedding(cardinality + 1, hidden_size) for _ in range(num_codebooks))
        has_cross = video_fuse == "cross" or text_fuse == "cross"
        self.layers = nn.ModuleList(
            ARDecoderLayer(hidden_size, num_heads, ffn_dim, has_cross, dropout) for _ in range(num_layers)
        )
        self.layer_norm = nn.LayerNorm(hidden_size)
        self.lm_heads = nn.ModuleList(nn.Linear(hidden_size, cardinality, bias=False) for _ in range(num_codebooks))
        #: onset logit per music frame, read by the beat-alignment loss
        self.beat_head = nn.Linear(hidden_size, 1)
        self.video_proj = nn.Linear(video_dim, hidden_size) if video_fuse != "none" else None
        # no bias: a dropped (zero) beat condition must add exactly nothing
        beat_width = beat_dim * (beat_lookahead + 1)
        self.beat_proj = nn.Linear(beat_width, hidden_size, bias=False) if beat_fuse == "sum" else None
        self.text_proj = nn.Linear(text_dim, hidden_size) if text_fuse != "none" else None
        # no bias, zero at init: a model trained without the pace computes the same logits when it is added
        self.pace_proj = nn.Linear(PACE_FEATURES, hidden_size, bias=False) if pace_seconds > 0 else None
        self.apply(self._init_weights)
        if self.pace_proj is not None:
            nn.init.zeros_(self.pace_proj.weight)

    # ------------------------------------------------------------------------------------------- the codec
    @classmethod
    def codec_config(cls, codec) -> dict:
        if not codec.is_discrete:
            raise ConfigError(f"the AR backend needs a discrete codec; {type(codec).__name__} has no tokens")
        shared = super().codec_config(codec)
        shared.update(num_codebooks=int(codec.num_codebooks), cardinality=int(codec.cardinality))
        return shared

    def encode_music(self, codec, wav: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, C, S]`` -> codes ``[B, K, T]``."""
        return codec.tokenize(wav)

    def decode_music(self, codec, target: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, K, T]`` -> waveform ``[B, C, S]``."""
        return codec.decode_tokens(target)

    # ------------------------------------------------------------------------------------------------ setup
    def _check_config(self) -> None:
        c = self.config
        problems = []
        sizes = ("num_codebooks", "cardinality", "hidden_size", "num_layers", "num_heads", "ffn_dim", "video_dim", "beat_dim")
        for name in sizes:
            if getattr(c, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(c, name)})")
        if c.hidden_size % max(c.num_heads, 1):
            problems.append(f"hidden_size {c.hidden_size} is not divisible by num_heads {c.num_heads}")
        if c.pattern not in PATTERNS:
            problems.append(f"pattern must be one of {sorted(PATTERNS)} (got {c.pattern!r})")
        if c.video_fuse not in TOKEN_FUSES:
            problems.append(f"video_fuse must be one of {TOKEN_FUSES} (got {c.video_fuse!r})")
        if c.text_fuse not in TOKEN_FUSES:
            problems.append(f"text_fuse must be one of {TOKEN_FUSES} (got {c.text_fuse!r})")
        if c.text_fuse != "none" and c.text_dim < 1:
            problems.append(f"text_fuse={c.text_fuse!r} needs text_dim >= 1 (got {c.text_dim})")
        if c.pace_seconds < 0:
            problems.append(f"pace_seconds must be >= 0 (got {c.pace_seconds})")
        if c.pace_seconds > 0 and c.beat_fuse != "sum":
            problems.append(f"pace_seconds > 0 reads the pace off the beat condition, which needs beat_fuse='sum' (got {c.beat_fuse!r})")
        if c.pace_seconds > 0 and c.beat_dim != 1:
            problems.append(f"pace_seconds > 0 reads the pace off a beat strength, which needs beat_dim=1 (got {c.beat_dim})")
        if c.pace_source not in PACE_SOURCES:
            problems.append(f"pace_source must be one of {PACE_SOURCES} (got {c.pace_source!r})")
        if (problem := check_pace_map(c.pace_map, "pace_map")) is not None:
            problems.append(problem)
        if c.beat_lookahead < 0:
            problems.append(f"beat_lookahead must be >= 0 frames (got {c.beat_lookahead})")
        if c.beat_fuse not in BEAT_FUSES:
            problems.append(f"beat_fuse must be one of {BEAT_FUSES} (got {c.beat_fuse!r})")
        for name in ("cond_dropout", "beat_dropout", "context_noise"):
            if not 0.0 <= c[name] < 1.0:
                problems.append(f"{name} must be in [0, 1) (got {c[name]})")
        if not 0.0 <= c.dropout < 1.0:
            problems.append(f"dropout must be in [0, 1) (got {c.dropout})")
        if c.align_features not in ALIGN_FEATURES:
            problems.append(f"align_features must be one of {ALIGN_FEATURES} (got {c.align_features!r})")
        if c.frame_rate <= 0:
            problems.append(f"frame_rate must be > 0 (got {c.frame_rate})")
        if isinstance(c.top_k, bool) or not isinstance(c.top_k, int) or c.top_k < 0:
            problems.append(f"top_k must be a whole number >= 0, 0 = all codes (got {c.top_k!r})")
        if isinstance(c.temperature, bool) or not isinstance(c.temperature, (int, float)) or not 0 <= c.temperature < math.inf:
            problems.append(f"temperature must be a finite number >= 0, 0 = greedy (got {c.temperature!r})")
        if (problem := check_temperature_map(c.get("temperature_map"))) is not None:
            problems.append(problem)
        for name in ("beat_guidance_scale", "beat_guidance_reach"):
            if (problem := check_beat_guidance(c.get(name), name)) is not None:
                problems.append(problem)
        window = round(c.max_duration * c.frame_rate)
        stride = round(c.extend_stride * c.frame_rate)
        if window < 2 or not 1 <= stride < window:
            problems.append(
                f"need max_duration * frame_rate >= 2 frames and 0 < extend_stride < max_duration "
                f"(got max_duration={c.max_duration}, extend_stride={c.extend_stride}, frame_rate={c.frame_rate})"
            )
        if problems:
            raise ConfigError("ARTokenLM config: " + "; ".join(problems))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    @property
    def window_frames(self) -> int:
        """Frames generated per window (the training window, ``max_duration * frame_rate``)."""
        return round(self.config.max_duration * self.config.frame_rate)

    @property
    def stride_frames(self) -> int:
        """Frames a continuation window advances by (``extend_stride * frame_rate``)."""
        return round(self.config.extend_stride * self.config.frame_rate)

    # ------------------------------------------------------------------------------------------ conditions
    def _conditions(self, conditions: Optional[Dict[str, Condition]], batch_size: Optional[int]):
        """Checked conditions on the model's device and dtype, and the batch size (None without either)."""
        c = self.config
        widths = {VIDEO: c.video_dim, BEAT: c.beat_dim, TEXT: c.text_dim, **({PACE: PACE_FEATURES} if c.pace_seconds > 0 else {})}
        batch_size = check_conditions(conditions, widths, batch_size, "ARTokenLM")
        return {name: cond.to(self.device, self.dtype) for name, cond in (conditions or {}).items()}, batch_size

    def fuse_conditions(
        self, conditions: Dict[str, Condition], num_steps: int, start_frame: int, batch_size: int
    ) -> FusedConditions:
        """Turn conditions into cross context, prefix tokens and per-step additions (``frame_add [B, S, H]``)
        for one window of ``num_steps`` LM steps starting at music frame ``start_frame``.

        The window spans the frames its steps predict (:meth:`CodebookPattern.lead_frame`), so
        training and generation slice conditions the same way; token conditions keep one frame past
        the window (the last steps' codebooks trail their frame by the pattern's delay).
        """
        c = self.config
        lead = self.codebook_pattern.lead_frame(num_steps, self.device)  # [S] frames within the window
        num_frames = int(lead.max()) + 1
        tokens = {"cross": [], "prepend": []}
        for name, fuse, proj in ((VIDEO, c.video_fuse, self.video_proj), (TEXT, c.text_fuse, self.text_proj)):
            if fuse == "none" or name not in conditions:
                continue  # a missing condition is a dropped one: contributes nothing
            found = window_tokens(conditions[name], proj, start_frame, num_frames, c.frame_rate, tail=1)
            if found is not None:
                tokens[fuse].append(found)
        step_add = None
        if c.beat_fuse == "sum" and BEAT in conditions:
            taps = lead[:, None] + start_frame + torch.arange(c.beat_lookahead + 1, device=self.device)  # [S, L+1]
            values, _ = frame_values(conditions[BEAT], taps, c.frame_rate)  # [B, S, L+1, D]
            step_add = self.beat_proj(values.flatten(2))
            if self.pace_proj is not None:
                pace, _ = frame_values(pace_condition(conditions, c.pace_seconds, c.pace_map), lead + start_frame, c.frame_rate)
                step_add = step_add + self.pace_proj(pace)  # [B, S, H]
        fused = FusedConditions.from_tokens(tokens, frame_add=step_add)
        # all-valid masks are dropped: attention then needs no mask at all
        if fused.cross is not None:
            fused.cross_mask = None if bool(fused.cross_mask.all()) else fused.cross_mask
        elif c.video_fuse == "cross" or c.text_fuse == "cross":
            # no context at all: one masked token, so every item takes the same (zero) path
            fused.cross = torch.zeros(batch_size, 1, c.hidden_size, device=self.device, dtype=self.dtype)
            fused.cross_mask = torch.zeros(batch_size, 1, dtype=torch.bool, device=self.device)
        if fused.cross_mask is not None:
            attend, keep = cross_attention_mask(fused.cross_mask)
            fused.cross_attend = (attend, keep.to(self.dtype))
        if fused.prefix is not None and bool(fused.prefix_mask.all()):
            fused.prefix_mask = None
        return fused

    # ------------------------------------------------------------------------------------------ the network
    def _embed(
        self,
        inputs: torch.Tensor,
        positions: torch.Tensor,
        fused: FusedConditions,
        table: Optional[torch.Tensor] = None,
        pos_table: Optional[torch.Tensor] = None,
    ):
        """Step inputs ``[B, K, L]`` at ``positions [L]`` -> ``[B, L, H]`` (token sum + position + step condition).

        Generation passes precomputed ``table`` (all codebooks' embeddings stacked) and ``pos_table``.
        """
        if table is None:
            x = sum(emb(inputs[:, k]) for k, emb in enumerate(self.embed_tokens))
        else:  # generation: all codebooks in one lookup into the concatenated tables
            offsets = torch.arange(inputs.shape[1], device=inputs.device)[None, :, None] * (self.special_id + 1)
            x = F.embedding(inputs + offsets, table).sum(1)
        if pos_table is None:
            pos_table = sinusoidal_embedding(positions, self.config.hidden_size).to(x.dtype)
        else:
            pos_table = pos_table[positions]
        x = x + pos_table
        if fused.frame_add is not None:
            x = x + fused.frame_add[:, positions]
        return x

    def _cross_kv(self, fused: FusedConditions):
        if fused.cross is None:
            return [None] * len(self.layers)
        return [layer.cross_attn.project_kv(fused.cross) for layer in self.layers]

    def _decode(
        self,
        x: torch.Tensor,
        fused: FusedConditions,
        cross_kv: List,
        self_key_mask: Optional[torch.Tensor] = None,
        caches: Optional[List[KVCache]] = None,
    ) -> torch.Tensor:
        """Run the layers over ``x [B, L, H]`` -> final-normed hidden states ``[B, L, H]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x, cross_kv[i], fused.cross_attend, self_key_mask, None if caches is None else caches[i])
        return self.layer_norm(x)

    def _hidden(self, inputs: torch.Tensor, fused: FusedConditions) -> torch.Tensor:
        """Teacher-forced pass: step inputs ``[B, K, S]`` -> hidden states ``[B, S, H]``."""
        b, _, s = inputs.shape
        x = self._embed(inputs, torch.arange(s, device=inputs.device), fused)
        key_mask = None
        if fused.prefix is not None:
            x = torch.cat([fused.prefix, x], 1)
            if fused.prefix_mask is not None:
                key_mask = torch.cat([fused.prefix_mask, fused.prefix_mask.new_ones(b, s)], 1)
        hidden = self._decode(x, fused, self._cross_kv(fused), key_mask)
        return hidden[:, fused.prefix_len :]

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[B, L, H]`` -> ``[B, K, L, cardinality]``."""
        return torch.stack([head(hidden) for head in self.lm_heads], dim=1)

    def forward(
        self, input_codes: torch.Tensor, conditions: Optional[Dict[str, Condition]] = None, start_frame: int = 0
    ) -> torch.Tensor:
        """Teacher-forced logits: step inputs ``[B, K, S]`` (ids in ``[0, cardinality]``, position 0 the
        special token) -> ``[B, K, S, cardinality]``, logits at position ``s`` predicting step ``s``.

        ``conditions`` as in :meth:`generate` (None = all dropped); no condition dropout here.
        """
        b, k, s = self._check_codes(input_codes, "input_codes", allow_special=True)
        conds, _ = self._conditions(conditions, b)
        fused = self.fuse_conditions(conds, s, start_frame, b)
        return self._logits(self._hidden(input_codes, fused))

    def _check_codes(self, codes: torch.Tensor, what: str, allow_special: bool = False):
        c = self.config
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or codes.shape[1] != c.num_codebooks:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise InputError(f"ARTokenLM: {what} must be a LongTensor [B, K={c.num_codebooks}, T], got {shape}")
        if codes.dtype != torch.long:
            raise InputError(f"ARTokenLM: {what} must be int64 (torch.long), got {codes.dtype}")
        high = c.cardinality + (1 if allow_special else 0)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= high):
            raise InputError(
                f"ARTokenLM: {what} ids must lie in [0, {high}), got [{int(codes.min())}, {int(codes.max())}]"
            )
        return codes.shape

    # -------------------------------------------------------------------------------------------- training
    def forward_train(self, batch: dict) -> ARTrainOutput:
        """Losses and alignment features for one batch.

        ``batch``: ``"codes"`` ``[B, K, T]`` long; ``"conditions"`` ``dict[str, Condition]``; optional
        ``"mask"`` ``[B, T]`` bool (True = real music frame); optional ``"generator"`` (one, or one per
        item) for the condition-dropout draws. Returns ``losses={"ce": mean over codebooks
        of the per-codebook CE}`` (``loss_counts``: the valid frames), ``music_embedding [B, H]`` (masked mean over frames of the hidden
        states), ``onset_logits [B, T]`` (beat head at the step that predicts each frame's first code,
        i.e. the pattern's delay undone) and ``ce_per_codebook [K]``.
        """
        if "codes" not in batch:
            raise InputError("ARTokenLM.forward_train: batch has no 'codes' [B, K, T]")
        codes = batch["codes"]
        b, k, t = self._check_codes(codes, "batch['codes']")
        mask = batch.get("mask")
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.bool, device=codes.device)
        elif tuple(mask.shape) != (b, t):
            raise InputError(
                f"ARTokenLM.forward_train: batch['mask'] must be [B, T] = {(b, t)}, got {tuple(mask.shape)}"
            )
        mask = mask.bool()
        conds, _ = self._conditions(batch.get("conditions"), b)
        if self.training and self.config.cond_dropout > 0:
            drop = draw_items(torch.rand, (b,), batch.get("generator"), codes.device) < self.config.cond_dropout
            conds = {name: cond.drop_items(drop) for name, cond in conds.items()}
        if self.training and self.config.beat_dropout > 0 and BEAT in conds:  # trains beat guidance's middle branch
            drop_beat = draw_items(torch.rand, (b,), batch.get("generator"), codes.device) < self.config.beat_dropout
            conds = {**conds, BEAT: conds[BEAT].drop_items(drop_beat)}

        pattern = self.codebook_pattern
        # padded frames read as the special token, as past the end of an unpadded item: with a delay
        # pattern the last frames' later codebooks see earlier codebooks' next frames as input
        steps, inputs = self._teacher_forcing(codes.masked_fill(~mask[:, None, :], self.special_id))
        s = steps.shape[2]
        lm_inputs = self._noisy_context(inputs, batch.get("generator")) if self.training else inputs
        hidden = self._hidden(lm_inputs, self.fuse_conditions(conds, s, 0, b))  # [B, S, H]
        logits = self._logits(hidden)  # [B, K, S, V]

        layout = pattern.layout(t, codes.device)  # [K, S]
        valid = (layout >= 0)[None] & mask[:, layout.clamp(min=0)]  # [B, K, S]
        targets = steps.masked_fill(~valid, -100)
        ce = F.cross_entropy(logits.flatten(0, 2).float(), targets.flatten(), ignore_index=-100, reduction="none")
        ce = ce.view(b, k, s)
        weight = frame_weights(batch, b, t, codes.device)
        if weight is not None:
            ce = ce * weight[:, layout.clamp(min=0)]  # each step's code belongs to one frame
        per_codebook = ce.sum((0, 2)) / valid.sum((0, 2)).clamp(min=1)

        if self.config.align_features == "clean":
            # the alignment features read the music alone (conditions dropped): otherwise the
            # contrastive and visual-beat terms could be met by copying the video or beat condition
            hidden = self._hidden(inputs, self.fuse_conditions({}, s, 0, b))
        frame_hidden = hidden[:, pattern.first_step_of_frame(t, codes.device)]  # [B, T, H]
        return ARTrainOutput(
            losses={"ce": per_codebook.mean()},
            # each frame is one target per codebook, so every codebook's mean is over the valid frames
            loss_counts={"ce": valid.sum().detach() / k},
            music_embedding=pool_frames(frame_hidden, mask),
            onset_logits=self.beat_head(frame_hidden).squeeze(-1),
            ce_per_codebook=per_codebook.detach(),
        )

    def _noisy_context(self, inputs: torch.Tensor, generator: GeneratorArg) -> torch.Tensor:
        """Step inputs ``[B, K, S]`` with each code replaced by a uniformly random one with probability
        ``context_noise`` (special tokens kept). One uniform per slot gives both the choice and the
        code (below p, u / p is uniform again); drawn time-first, so an item's draws do not depend on
        how far the batch is padded."""
        p = self.config.context_noise
        if p <= 0:
            return inputs
        b, k, s = inputs.shape
        u = draw_items(torch.rand, (b, s, k), generator, inputs.device).transpose(1, 2)
        random_codes = (u / p * self.config.cardinality).long().clamp(max=self.config.cardinality - 1)
        return torch.where((u < p) & (inputs != self.special_id), random_codes, inputs)

    def _teacher_forcing(self, codes: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Codes ``[B, K, T]`` -> (step targets ``[B, K, S]``, step inputs ``[B, K, S]``: the targets one step
        late, the special token first)."""
        steps = self.codebook_pattern.interleave(codes, self.special_id)
        return steps, torch.cat([torch.full_like(steps[..., :1], self.special_id), steps[..., :-1]], dim=2)

    def embed_music(self, target: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, K, T]`` -> ``[B, H]``: the teacher-forced pass with no condition, pooled over frames
        (forward_train's ``music_embedding`` of an unmasked batch)."""
        b, _, t = self._check_codes(target, "codes")
        steps, inputs = self._teacher_forcing(target)
        hidden = self._hidden(inputs, self.fuse_conditions({}, steps.shape[2], 0, b))
        frame_hidden = hidden[:, self.codebook_pattern.first_step_of_frame(t, target.device)]
        return pool_frames(frame_hidden)

    # ------------------------------------------------------------------------------------------ generation
    def plan_windows(self, num_frames: int) -> List[Tuple[int, int, int]]:
        """``(start_frame, num_frames, prompt_frames)`` of each generation window.

        One window up to ``window_frames``; past it, each window starts ``stride_frames`` after
        the previous one and keeps the previous window's last ``window_frames - stride_frames``
        frames as its prompt.
        """
        window, stride = self.window_frames, self.stride_frames
        plan, start, prompt = [], 0, 0
        while True:
            length = min(window, num_frames - start)
            plan.append((start, length, prompt))
            if start + length >= num_frames:
                return plan
            start, prompt = start + stride, window - stride

    @staticmethod
    def _item_generators(generator: GeneratorArg, batch_size: int) -> List[Optional[torch.Generator]]:
        """One random stream per batch item.

        A list gives item ``i`` the generator ``generator[i]``, so a batch equals its items run
        alone with the same generators. A single generator ``g`` is item 0's stream (a run with
        ``g`` equals a one-item list ``[g]``); item ``i >= 1`` gets a generator seeded by the
        ``i``-th draw from a *copy* of ``g``, so item 0's stream stays exactly that of a single run.
        """
        if generator is None:
            return [None] * batch_size
        if isinstance(generator, torch.Generator):
            copy = torch.Generator(generator.device)
            copy.set_state(generator.get_state())
            draws = [torch.randint(0, 2**62, (1,), generator=copy, device=generator.device) for _ in range(1, batch_size)]
            seeds = [int(d) for d in draws]
            return [generator] + [torch.Generator(generator.device).manual_seed(seed) for seed in seeds]
        generators = list(generator)
        if len(generators) != batch_size or not all(isinstance(g, torch.Generator) for g in generators):
            raise InputError(
                f"ARTokenLM.generate: generator list must hold one torch.Generator per batch item ({batch_size}), "
                f"got {len(generators)} item(s)"
            )
        return generators

    @torch.no_grad()
    def generate(
        self,
        conditions: Dict[str, Condition],
        num_frames: int,
        guidance_scale: float = 3.0,
        top_k: Optional[int] = None,
        top_p: float = 0.0,
        temperature: Optional[float] = None,
        generator: GeneratorArg = None,
        progress_bar: Optional[Callable] = None,
        callback: Optional[Callable] = None,
        beat_guidance_scale: Optional[float] = None,
    ) -> torch.Tensor:
        """Sample codes ``[B, K, num_frames]`` (ids in ``[0, cardinality)``).

        ``top_k`` / ``temperature``: None takes the model's own (``config.top_k`` / ``config.temperature``,
        what it was chosen with, as a transformers generation config). With a ``config.temperature_map``
        and a beat condition, ``temperature=None`` samples each step at the map's temperature for the
        video's local pace there (:class:`~vmas_diffusion.guidance.PaceTemperature`; ``config.temperature``
        where there is no video); a number samples every step at it.
        ``conditions``: ``dict[str, Condition]``; a missing one counts as dropped, and ``B`` comes
        from them (or from a generator list; 1 when both are absent). ``guidance_scale``: CFG
        weight, ``logits = uncond + scale * (cond - uncond)``; 1 turns CFG off. ``beat_guidance_scale``
        (default the config's, None = off): a guidance of the beat's own, through a third branch without
        the beat, gated by the visual beats when the config has a ``beat_guidance_reach``
        (:mod:`vmas_diffusion.guidance`). ``generator``: a
        ``torch.Generator`` or one per item (see :meth:`_item_generators`). ``progress_bar``: a
        factory like ``DiffusionPipeline.progress_bar`` (``total=`` -> tqdm); tqdm when None.
        Music longer than ``max_duration`` is generated in windows (:meth:`plan_windows`).
        ``callback``: ``callback(step, timestep, {"tokens": [B, K, S]}) -> dict | None`` after every
        token step (:class:`~vmas_diffusion.models.generators.base.StepEnd`); ``timestep`` is the
        step's position ``s`` in its window and ``"tokens"`` the window's interleaved steps
        (pattern layout, the special id where nothing is sampled yet). A returned ``"tokens"``
        replaces them: what it puts at ``s`` is the next step's input, and later positions not yet
        sampled are sampled over (earlier ones are already read into the cache).
        """
        try:
            num_frames = operator.index(num_frames)
        except TypeError:
            num_frames = None
        if num_frames is None or num_frames < 1:
            raise InputError(f"ARTokenLM.generate: num_frames must be a positive int, got {num_frames!r}")
        top_k = self.config.top_k if top_k is None else top_k
        by_pace = temperature is None
        temperature = self.config.temperature if temperature is None else temperature
        values = (guidance_scale, top_k, top_p, temperature)
        if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values) or not (
            guidance_scale >= 0 and top_k >= 0 and 0 <= top_p <= 1 and temperature >= 0 and top_k == int(top_k)
        ):  # written so that NaN fails too
            raise InputError(
                "ARTokenLM.generate: need finite numbers guidance_scale >= 0, whole top_k >= 0, 0 <= top_p <= 1, temperature >= 0 "
                f"(got {guidance_scale}, {top_k}, {top_p}, {temperature})"
            )
        conds, batch_size = self._conditions(conditions, None)
        if batch_size is None:  # unconditional: one item per generator in a list, else one
            batch_size = 1 if generator is None or isinstance(generator, torch.Generator) else len(list(generator))
        generators = self._item_generators(generator, batch_size)
        sampling = dict(top_k=top_k, top_p=top_p, temperature=temperature)
        if by_pace and (pace_temperature := plan_pace_temperature(
                conds, self.config.get("temperature_map"), temperature, pace_window_seconds(self.config))) is not None:
            sampling["temperature"] = pace_temperature
        guidance = plan_guidance(conds, guidance_scale, beat_guidance_scale, self.config)
        if guidance is not None:  # one batched forward of its branches
            conds = guidance.conditions(conds)

        plan = self.plan_windows(num_frames)
        total = sum(self._sampling_steps(length, prompt) for _, length, prompt in plan)
        if progress_bar is None:
            progress_bar = _default_progress_bar

        # generation-time fused weights: one embedding lookup and one head matmul per step
        table = torch.cat([e.weight for e in self.embed_tokens])  # [K * (V + 1), H]
        heads = torch.cat([h.weight for h in self.lm_heads])  # [K * V, H]
        if heads.device.type == "cpu" and heads.dtype == torch.float32:  # column-major: see column_major_linears
            heads = heads.t().contiguous().t()
        out = torch.empty(batch_size, self.config.num_codebooks, num_frames, dtype=torch.long, device=self.device)
        with progress_bar(total=total) as bar, column_major_linears(self.layers):
            layer_weights = [layer.step_weights() for layer in self.layers]  # inside: the column-major copies
            if any(w is None for w in layer_weights):
                layer_weights = None
            step_end = StepEnd(bar, callback)
            for start, length, prompt_len in plan:
                prompt = out[:, :, start : start + prompt_len] if prompt_len else None
                out[:, :, start : start + length] = self._generate_window(
                    conds, batch_size, length, start, prompt, guidance,
                    sampling, generators, table, heads, layer_weights, step_end,
                )  # fmt: skip
        return out

    @staticmethod
    def _step_cross(cross_kv: List, cross_attend: Optional[Tuple[torch.Tensor, torch.Tensor]]):
        """Cross-attention keys/values and mask for :meth:`ARDecoderLayer.decode_step`: only the leading
        rows that have a context. Rows whose whole context is masked (the null branch of guidance, after
        the conditional one) get exactly zero from cross-attention, so the steps skip them."""
        if cross_attend is None or cross_kv[0] is None:
            return cross_kv, cross_attend
        attend, keep = cross_attend
        live = int(keep.sum())
        if not bool(keep[:live].bool().all()):  # a masked row among the leading ones: keep every row
            return cross_kv, cross_attend
        if live == 0:
            return [None] * len(cross_kv), None
        mask = None if bool(attend[:live].all()) else (attend[:live], keep[:live])
        return [(k[:live], v[:live]) for k, v in cross_kv], mask

    def _sampling_steps(self, num_frames: int, prompt_len: int) -> int:
        to_sample = (self.codebook_pattern.layout(num_frames) >= prompt_len).any(0)
        return int(to_sample.sum())

    def _generate_window(
        self,
        conds: Dict[str, Condition],
        batch_size: int,
        num_frames: int,
        start_frame: int,
        prompt: Optional[torch.Tensor],
        guidance: Optional[Guidance],
        sampling: dict,
        generators: List[Optional[torch.Generator]],
        table: torch.Tensor,
        heads: torch.Tensor,
        layer_weights: Optional[List[tuple]],
        step_end: StepEnd,
    ) -> torch.Tensor:
        """Codes ``[B, K, num_frames]`` of one window whose first ``prompt.shape[2]`` frames are ``prompt``.

        ``layer_weights``: :meth:`ARDecoderLayer.step_weights` of every layer, for the one-position
        steps after the prefill (:meth:`ARDecoderLayer.decode_step`), or None for the layers' forward.
        """
        b, k, device = batch_size, self.config.num_codebooks, self.device
        pattern = self.codebook_pattern
        layout = pattern.layout(num_frames, device)  # [K, S]
        s_total = layout.shape[1]
        prompt_len = 0 if prompt is None else prompt.shape[2]
        steps = torch.full((b, k, s_total), self.special_id, dtype=torch.long, device=device)
        if prompt_len:
            known = (layout >= 0) & (layout < prompt_len)
            from_prompt = prompt.gather(2, layout.clamp(0, prompt_len - 1)[None].expand(b, -1, -1))
            steps = torch.where(known, from_prompt, steps)
        to_sample = layout >= prompt_len  # [K, S]
        first = int(to_sample.any(0).nonzero()[0])
        # every item draws its own uniforms, the same amount whatever the batch: batch == singles
        uniforms = draw_items(torch.rand, (b, s_total, k), generators, device)  # [B, S, K]

        branches = guidance.branches if guidance is not None else 1
        rows = branches * b
        lead = pattern.lead_frame(s_total, device) + start_frame  # [S] the absolute frame each step predicts
        gate = None if guidance is None else guidance.gate(lead, self.config.frame_rate)
        fused = self.fuse_conditions(conds, s_total, start_frame, rows)
        cross_kv = self._cross_kv(fused)
        p = fused.prefix_len
        key_mask = None
        if fused.prefix_mask is not None:
            key_mask = torch.cat([fused.prefix_mask, fused.prefix_mask.new_ones(rows, s_total)], 1)
        caches = [
            KVCache(rows, self.config.num_heads, self.head_dim, p + s_total, device=device, dtype=table.dtype)
            for _ in self.layers
        ]

        positions = torch.arange(s_total + 1, device=device)
        pos_table = sinusoidal_embedding(positions, self.config.hidden_size).to(table.dtype)

        def embed(inputs: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
            """Inputs ``[B, K, L]`` -> ``[rows, L, H]`` (every guidance branch reads the same tokens)."""
            if branches > 1:
                inputs = torch.cat([inputs] * branches)
            return self._embed(inputs, positions, fused, table, pos_table)

        def step_logits(inputs: torch.Tensor, positions: torch.Tensor, with_prefix: bool) -> torch.Tensor:
            """Inputs ``[B, K, L]`` -> guided logits ``[B, K, V]`` of the last position."""
            x = embed(inputs, positions)
            if with_prefix and p:
                x = torch.cat([fused.prefix, x], 1)
            return guided_logits(self._decode(x, fused, cross_kv, key_mask, caches)[:, -1], int(positions[-1]))

        def guided_logits(h: torch.Tensor, step: int) -> torch.Tensor:
            """Final hidden states ``[rows, H]`` -> guided logits ``[B, K, V]`` of ``step`` (the input's position).

            The heads are linear and bias-free, so guiding the hidden states before them equals guiding
            the logits (to float rounding) and sends one row per item through them instead of two or three.
            """
            if guidance is not None:
                h = guidance.combine(h, None if gate is None else gate[:, step, None])
            return F.linear(h, heads).view(b, k, -1)

        step_cross_kv, step_cross_mask = self._step_cross(cross_kv, fused.cross_attend)
        final_norm = (self.layer_norm.normalized_shape, self.layer_norm.weight, self.layer_norm.bias, self.layer_norm.eps)

        def next_logits(tokens: torch.Tensor, position: int) -> torch.Tensor:
            """Step ``tokens [B, K]`` read at ``position`` -> guided logits ``[B, K, V]``, one position a layer call."""
            if layer_weights is None:
                return step_logits(tokens[..., None], positions[position : position + 1], with_prefix=False)
            x = embed(tokens[..., None], positions[position : position + 1])[:, 0]  # [rows, H]
            for layer, weights, kv, cache in zip(self.layers, layer_weights, step_cross_kv, caches):
                x = layer.decode_step(x, weights, kv, step_cross_mask, key_mask, cache)
            return guided_logits(F.layer_norm(x, *final_norm), position)

        # prefill: the prefix, the start token and every known step before the first one to sample
        inputs = torch.cat([torch.full_like(steps[..., :1], self.special_id), steps[..., :first]], 2)
        logits = step_logits(inputs, positions[: first + 1], with_prefix=True)
        uniforms = uniforms.transpose(0, 1).flatten(1)  # [S, B * K]: one row a step
        temperatures = sampling["temperature"]
        if isinstance(temperatures, PaceTemperature):  # [S, B * K]: every codebook of a step at its lead frame's
            temperatures = temperatures.at(lead, self.config.frame_rate).t().repeat_interleave(k, dim=1)
        every_slot = to_sample.all(0).tolist()  # steps where every codebook is sampled (all but the pattern's edges)
        for s in range(first, s_total):
            temperature = temperatures[s] if isinstance(temperatures, torch.Tensor) else temperatures
            sampled = sample_from_logits(logits.flatten(0, 1), uniforms[s], **{**sampling, "temperature": temperature}).view(b, k)
            steps[:, :, s] = sampled if every_slot[s] else torch.where(to_sample[:, s], sampled, steps[:, :, s])
            returned = step_end(s, {"tokens": steps})["tokens"]
            if returned is not steps:  # the callback replaced them
                self._check_codes(returned, "the step callback's tokens", allow_special=True)
                steps = returned
            if s + 1 < s_total:
                logits = next_logits(steps[:, :, s], s + 1)
        return pattern.deinterleave(steps, num_frames)

    # ------------------------------------------------------------------------------------------ warm start
    #: parameter-name prefixes this model has and MusicGen's decoder does not: newly initialised
    NEW_PARAMETERS = ("cross_attn", "cross_attn_layer_norm", "video_proj", "beat_proj", "pace_proj", "text_proj", "beat_head")

    @classmethod
    def from_musicgen(cls, path: Union[str, Path], video_dim: int, **overrides) -> "ARTokenLM":
        """Warm start from a local transformers MusicGen folder (safetensors weights + config.json).

        Accepts a ``MusicgenForCausalLM`` folder or a full ``MusicgenForConditionalGeneration`` one
        (its decoder is used). Token embeddings, self-attention, feed-forward, norms and LM heads
        are copied; MusicGen's text cross-attention is not. The video cross-attention and the
        condition projections are new; their output projections start at zero, so the warm-started
        model computes exactly the MusicGen decoder's logits until training moves them.
        ``overrides`` set any other config kwarg (``frame_rate`` defaults to MusicGen's 50 Hz).
        """
        folder = Path(path)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"from_musicgen: {folder} has no config.json (expected a saved MusicgenForCausalLM)")
        config = json.loads(config_file.read_text())
        prefix = ""
        if config.get("model_type") == "musicgen":
            config, prefix = config.get("decoder") or {}, "decoder."
        if config.get("model_type") != "musicgen_decoder":
            raise CheckpointError(
                f"from_musicgen: {config_file} is not a MusicGen config (model_type {config.get('model_type')!r})"
            )
        unsupported = []
        if config.get("audio_channels", 1) != 1:
            unsupported.append("stereo (audio_channels=2)")
        if config.get("scale_embedding", False):
            unsupported.append("scale_embedding=True")
        if config.get("activation_function", "gelu") != "gelu":
            unsupported.append(f"activation_function={config['activation_function']!r}")
        if config.get("pad_token_id", config["vocab_size"]) != config["vocab_size"]:
            unsupported.append("a pad/start id other than vocab_size")
        if unsupported:
            raise CheckpointError(
                f"from_musicgen: {folder} uses {', '.join(unsupported)}, which ARTokenLM does not model"
            )
        kwargs = dict(
            num_codebooks=config["num_codebooks"],
            cardinality=config["vocab_size"],
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            ffn_dim=config["ffn_dim"],
            dropout=config.get("dropout", 0.1),
            video_dim=video_dim,
            frame_rate=50.0,
        )
        kwargs.update(overrides)
        model = cls(**kwargs)

        source = read_safetensors_folder(folder, what="from_musicgen")
        state, loaded = model.state_dict(), set()
        for key, value in source.items():
            if not key.startswith(prefix):
                continue  # text encoder, audio codec, enc_to_dec_proj of a full MusicGen
            name = _musicgen_to_ours(key[len(prefix) :])
            if name is None:
                continue
            if name not in state or state[name].shape != value.shape:
                have = tuple(state[name].shape) if name in state else "no such parameter"
                raise CheckpointError(
                    f"from_musicgen: {key} {tuple(value.shape)} does not fit {name} ({have}); check overrides"
                )
            state[name] = value.to(state[name].dtype)
            loaded.add(name)
        missing = sorted(n for n in state if n not in loaded and not _is_new(n))
        if missing:
            raise CheckpointError(f"from_musicgen: {folder} lacks {len(missing)} decoder weight(s), e.g. {missing[:5]}")
        model.load_state_dict(state)
        # new branches start silent so the warm-started LM is exactly MusicGen's
        for layer in model.layers:
            if hasattr(layer, "cross_attn"):
                nn.init.zeros_(layer.cross_attn.out_proj.weight)
        if model.beat_proj is not None:
            nn.init.zeros_(model.beat_proj.weight)
        return model

    #: weight formats of :meth:`fast_copy`
    FAST_WEIGHTS = ("bf16", "int8")

    def fast_copy(self, weights: str) -> "ARTokenLM":
        """An eval-mode copy that decodes faster on CPU from weights stored in fewer bytes (lossy, opt-in).

        One decoding step at batch 1 reads every weight once, so a large model is bound by memory
        bandwidth, not FLOPs: fewer bytes per weight is the lever. ``"bf16"``: the whole model in
        bfloat16 (half the bytes). ``"int8"``: the decoder layers' linear layers dynamically
        quantized to int8 per output channel (``torch.ao`` dynamic quantization, fbgemm kernels: a
        quarter of the bytes); embeddings, norms and LM heads stay fp32. Logits move by a few
        percent of their spread (``benchmarks/bench_ar_generate.py`` prints the agreement with
        fp32); the fp32 model stays the reference. CPU only; for inference, not training.
        """
        import copy

        if weights not in self.FAST_WEIGHTS:
            raise ConfigError(f"fast_copy: weights must be one of {self.FAST_WEIGHTS}, got {weights!r}")
        if self.device.type != "cpu":
            raise ConfigError(f"fast_copy: the {weights} decoding path is for CPU; the model is on {self.device}")
        fast = copy.deepcopy(self).eval()
        if weights == "bf16":  # nn.Module.to: ModelMixin.to warns about modules kept in fp32 (it has none)
            return nn.Module.to(fast, torch.bfloat16)
        import warnings

        from torch.ao.quantization import quantize_dynamic

        with warnings.catch_warnings():  # torch.ao's eager API warns that it moves to torchao; it still works
            warnings.simplefilter("ignore")
            quantize_dynamic(fast.layers, {nn.Linear}, dtype=torch.qint8, inplace=True)
        return fast

    def with_beat_lookahead(self, lookahead: int) -> "ARTokenLM":
        """A copy that sees ``lookahead`` frames of the beat condition ahead (``beat_lookahead``) and
        computes the same logits: the taps it gains start at zero weight, so a trained model keeps
        what it learnt and fine-tuning teaches it to use them."""
        c = self.config
        if c.beat_fuse != "sum":
            raise ConfigError(f"with_beat_lookahead: beat_fuse={c.beat_fuse!r} has no beat projection to widen")
        if lookahead < c.beat_lookahead:
            raise ConfigError(f"with_beat_lookahead: {lookahead} frames is fewer than the {c.beat_lookahead} it has")
        config = {k: v for k, v in c.items() if not k.startswith("_")}
        model = type(self)(**{**config, "beat_lookahead": lookahead}).to(device=self.device, dtype=self.dtype)
        state = self.state_dict()
        old = state["beat_proj.weight"]  # [H, (L + 1) * D]: tap-major, so the old taps are the first columns
        state["beat_proj.weight"] = torch.cat([old, old.new_zeros(old.shape[0], (lookahead - c.beat_lookahead) * c.beat_dim)], 1)
        model.load_state_dict(state)
        return model.train(self.training)


def _default_progress_bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="ARTokenLM.generate", leave=False, disable=None)


def _is_new(name: str) -> bool:
    """True for parameters with no MusicGen counterpart (see ``ARTokenLM.NEW_PARAMETERS``)."""
    parts = name.split(".")
    return any(part in ARTokenLM.NEW_PARAMETERS for part in parts)


def _musicgen_to_ours(key: str) -> Optional[str]:
    """A ``MusicgenForCausalLM`` parameter name -> ours, or None for weights we do not take."""
    if key.startswith("lm_heads."):
        return key
    if not key.startswith("model.decoder."):
        return None
    key = key[len("model.decoder.") :]
    if ".encoder_attn" in key or key.startswith("embed_positions"):
        return None  # text cross-attention (replaced by video); positions are computed, not stored
    return key.replace(".fc1.", ".ffn.fc1.").replace(".fc2.", ".ffn.fc2.")


__all__ = ["ARTokenLM", "ARDecoderLayer", "ARTrainOutput", "sample_from_logits", "TEXT"]
