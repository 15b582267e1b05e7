"""Temporal video encoder: dense frames in, a time-aligned condition and a clip embedding out.

VMAS conditions music on many densely sampled frames (8-30 fps), so the encoder's cost
must be linear in the video's length and its memory flat in it. Two stages, split so that
frame features can be precomputed and cached:

1. ``encode_frames``: a per-frame backbone (small CNN from scratch, or CLIP / Hiera from
   transformers, see :mod:`vmas_diffusion.models.frame_backbones`) over ``[B, T, H, W, 3]``
   frames, run in chunks of ``frame_chunk_size`` frames -> features ``[B, T, F]``.
2. ``encode_features``: a temporal transformer over ``[B, T, F]`` -> ``[B, T, D]``.

Temporal layer (pre-norm, ``num_layers`` of them):

- Local block attention. Time is cut into blocks of ``window`` frames, aligned at frame 0;
  each frame attends to its own block and the two neighbouring blocks (``3 * window`` keys, so
  at least ``window`` frames of context on each side), with a learned relative position bias
  per head and offset, plus the memory tokens below. Cost ``O(T * window)``.
- Global memory. ``num_memory_tokens`` learned tokens attend to every valid frame (and each
  other) before the frames attend to them: a coarse summary of the whole video that every frame
  sees. Cost ``O(T * num_memory_tokens)``, computed with a streaming (online) softmax over
  chunks, so it needs no ``[T]``-sized buffer.
- Feed-forward on frames and on memory tokens.

Positions: a learned projection of a sinusoidal embedding of absolute time in seconds
(``frame_index / fps``), plus the relative bias inside the window. Nothing has a maximum
length.

Output: ``hidden [B, T, D]`` at ``fps`` (no downsampling: ``T' = T``, frame ``i`` at
``i / fps`` seconds), its mask, and ``pooled [B, D]`` = a linear map of the masked mean of the
valid frames (for the contrastive loss).

Memory: under ``torch.no_grad()`` the temporal layers update one ``[B, T, D]`` buffer in
place, ``inference_chunk_frames`` frames at a time, so beyond the input and the output itself
the working memory is bounded by the chunk size. With gradients enabled the same chunked
computation runs out of place (autograd keeps activations anyway; training clips are short).
Padded frames (mask False) never change the valid outputs.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from torch import nn

from ..conditions import Condition
from ..errors import ConfigError, InputError
from ..modules.item_randomness import ItemDropout
from ..modules.transformer import Attention, FeedForward, sinusoidal_embedding
from .frame_backbones import BACKBONES, TransformersFrameBackbone, build_frame_backbone, resize_frames

# Absolute time enters the sinusoidal embedding in tenths of a second: the fastest component
# then has a period of ~0.63 s (finer than a beat) and the slowest of ~1.7 h.
TIME_UNITS_PER_SECOND = 10.0
BACKBONE_SUBFOLDER = "backbone"


@dataclass
class VideoEncoderOutput:
    """What the video encoder returns.

    Attributes:
        hidden: ``[B, T', D]`` per-frame condition (``T' == T``, one vector per input frame).
        mask: ``[B, T']`` bool, True where the frame is valid.
        pooled: ``[B, D]`` clip embedding (masked mean of valid frames, projected).
        frame_rate: Hz of the ``T'`` axis (the encoder's ``fps``).
    """

    hidden: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor
    frame_rate: float

    def condition(self) -> Condition:
        """The ``"video"`` condition: ``Condition(hidden, mask, frame_rate)``."""
        return Condition(self.hidden, self.mask, self.frame_rate)


class LocalGlobalLayer(nn.Module):
    """One temporal layer: memory tokens read all frames, then frames attend locally + to memory.

    Frames are ``h [B, Tp, D]`` with ``Tp`` a multiple of ``window``; memory is ``[B, M, D]``.
    """

    def __init__(self, dim: int, num_heads: int, window: int, num_memory_tokens: int, ff_dim: int, dropout: float):
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        # bias per head and key-query offset in [-(2W-1), 2W-1]
        self.rel_bias = nn.Parameter(torch.zeros(num_heads, 4 * window - 1))
        self.norm2 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, ff_dim)
        self.has_memory = num_memory_tokens > 0
        if self.has_memory:
            self.mem_norm1 = nn.LayerNorm(dim)
            self.mem_attn = Attention(dim, num_heads)
            self.mem_norm2 = nn.LayerNorm(dim)
            self.mem_ff = FeedForward(dim, ff_dim)
        self.dropout = ItemDropout(dropout)  # per-sample masks in training (see item_randomness)

    def update_memory(self, mem: torch.Tensor, h: torch.Tensor, mask: torch.Tensor, spans: List[Tuple[int, int]]) -> torch.Tensor:
        """``mem [B, M, D]`` attends to itself and the valid frames of ``h [B, Tp, D]``, chunk by chunk.

        ``spans`` are frame ranges covering ``h``; the softmax is accumulated online (running
        max, denominator and weighted sum), which equals one softmax over all keys.
        """
        attn = self.mem_attn
        mn = self.mem_norm1(mem)
        q = attn.split_heads(attn.q_proj(mn)) * attn.head_dim**-0.5  # [B, H, M, hd]
        k, v = attn.project_kv(mn)
        scores = q @ k.transpose(-1, -2)  # [B, H, M, M]; always finite, so the running max is too
        run_max = scores.amax(-1, keepdim=True)
        p = torch.exp(scores - run_max)
        den = p.sum(-1, keepdim=True)
        num = p @ v
        for s, e in spans:
            k, v = attn.project_kv(self.norm1(h[:, s:e]))  # frames normed as for the local attention
            scores = (q @ k.transpose(-1, -2)).masked_fill(~mask[:, None, None, s:e], float("-inf"))
            new_max = torch.maximum(run_max, scores.amax(-1, keepdim=True))
            rescale = torch.exp(run_max - new_max)
            p = torch.exp(scores - new_max)
            den = den * rescale + p.sum(-1, keepdim=True)
            num = num * rescale + p @ v
            run_max = new_max
        out = num / den
        b, heads, m, hd = out.shape
        mem = mem + self.dropout(attn.out_proj(out.transpose(1, 2).reshape(b, m, heads * hd)))
        return mem + self.dropout(self.mem_ff(self.mem_norm2(mem)))

    def update_frames(self, h: torch.Tensor, mask: torch.Tensor, mem: Optional[torch.Tensor], start: int, end: int) -> torch.Tensor:
        """New values of frames ``[start, end)`` (block-aligned) of ``h [B, Tp, D]``: ``[B, end - start, D]``.

        Reads ``h`` on ``[start - W, end + W)`` (the neighbouring blocks) and does not write it.
        """
        w, heads = self.window, self.num_heads
        b, tp, d = h.shape
        hd = d // heads
        lo, hi = max(start - w, 0), min(end + w, tp)
        xn = self.norm1(h[:, lo:hi])
        q = self.attn.q_proj(xn[:, start - lo : end - lo])  # [B, n, D]
        k, v = self.attn.k_proj(xn), self.attn.v_proj(xn)
        # pad the halo to a full block on each side, so every query block has 3 key blocks
        pad_l, pad_r = w - (start - lo), w - (hi - end)
        k = F.pad(k, (0, 0, pad_l, pad_r))
        v = F.pad(v, (0, 0, pad_l, pad_r))
        key_valid = F.pad(mask[:, lo:hi], (pad_l, pad_r), value=False)
        nq = (end - start) // w

        def neighbours(x: torch.Tensor) -> torch.Tensor:  # [B, (nq+2)*W, ...] -> [B, nq, 3W, ...]
            x = x.reshape(b, nq + 2, w, *x.shape[2:])
            return torch.cat([x[:, :-2], x[:, 1:-1], x[:, 2:]], dim=2)

        def heads_first(x: torch.Tensor) -> torch.Tensor:  # [B, nq, L, D] -> [B*nq, H, L, hd]
            return x.reshape(b * nq, x.shape[2], heads, hd).transpose(1, 2)

        q = heads_first(q.reshape(b, nq, w, d))
        k, v = heads_first(neighbours(k)), heads_first(neighbours(v))
        key_valid = neighbours(key_valid).reshape(b * nq, 1, 1, 3 * w)
        offsets = torch.arange(3 * w, device=h.device)[None, :] - torch.arange(w, device=h.device)[:, None] + (w - 1)
        bias = self.rel_bias[:, offsets].to(q.dtype)  # [H, W, 3W]
        if mem is not None:
            mk, mv = self.attn.project_kv(self.norm1(mem))  # [B, H, M, hd]
            m = mk.shape[2]
            expand = lambda x: x[:, None].expand(b, nq, heads, m, hd).reshape(b * nq, heads, m, hd)  # noqa: E731
            k = torch.cat([k, expand(mk)], dim=2)
            v = torch.cat([v, expand(mv)], dim=2)
            key_valid = F.pad(key_valid, (0, m), value=True)
            bias = F.pad(bias, (0, m))
        # a finite floor instead of -inf: a padded query with no valid key stays finite (it is zeroed after)
        attn_bias = bias.masked_fill(~key_valid, torch.finfo(q.dtype).min)
        # explicit softmax rather than SDPA: SDPA may pick another CPU kernel when autograd is on, and
        # the in-place (no grad) and autograd paths should agree bit for bit
        weights = torch.softmax((q @ k.transpose(-1, -2)) * hd**-0.5 + attn_bias, dim=-1)
        out = weights @ v  # [B*nq, H, W, hd]
        out = self.attn.out_proj(out.transpose(1, 2).reshape(b, end - start, d))
        y = h[:, start:end] + self.dropout(out, offset=start)  # offset: masks do not depend on the chunking
        y = y + self.dropout(self.ff(self.norm2(y)), offset=start)
        return y.masked_fill(~mask[:, start:end, None], 0.0)  # not a product: 0 * NaN would stay NaN


class TemporalVideoEncoder(ModelMixin, ConfigMixin):
    """Frame backbone + linear-cost temporal transformer (see the module docstring).

    Args:
        fps: frame rate the encoder expects; the pipeline samples videos at it. Also the output's frame rate.
        frame_size: frames are resized to ``(frame_size, frame_size)`` before the backbone.
        backbone: ``"cnn"`` (default, trained from scratch), ``"clip"`` or ``"hiera"``.
        backbone_path: local folder (or Hub id) of the transformers backbone; None for ``"cnn"``.
        backbone_pretrained: load the backbone's weights from ``backbone_path``; False builds it from
            its config only (used on reload: this encoder's checkpoint holds the backbone weights).
        freeze_backbone: run the backbone without gradients and in eval mode; None = freeze the
            transformers backbones, train the CNN.
        feature_dim: ``F``, the backbone's feature width; CNN default 128; for CLIP/Hiera it is fixed
            by the checkpoint (None, or the same value).
        cnn_channels, cnn_stages: width of the first CNN stage (doubling per stage) and number of stages.
        hidden_dim: ``D``, width of the temporal transformer and of the outputs.
        num_layers, num_heads: temporal transformer depth and heads.
        window: frames per attention block; each frame sees its block and the two neighbouring ones.
        num_memory_tokens: global summary tokens (0 = purely local).
        ff_mult: feed-forward width = ``ff_mult * hidden_dim``.
        dropout: residual dropout.
        frame_chunk_size: frames per backbone call.
        inference_chunk_frames: frames per temporal chunk (rounded down to whole windows, at least one).
    """

    @register_to_config
    def __init__(
        self,
        fps: float = 8.0,
        frame_size: int = 64,
        backbone: str = "cnn",
        backbone_path: Optional[str] = None,
        backbone_pretrained: bool = True,
        freeze_backbone: Optional[bool] = None,
        feature_dim: Optional[int] = None,
        cnn_channels: int = 32,
        cnn_stages: int = 4,
        hidden_dim: int = 256,
        num_layers: int = 4,
        num_heads: int = 4,
        window: int = 16,
        num_memory_tokens: int = 4,
        ff_mult: int = 4,
        dropout: float = 0.0,
        frame_chunk_size: int = 64,
        inference_chunk_frames: int = 256,
    ):
        super().__init__()
        _check_config(
            fps=fps, frame_size=frame_size, backbone=backbone, hidden_dim=hidden_dim, num_layers=num_layers,
            num_heads=num_heads, window=window, num_memory_tokens=num_memory_tokens, ff_mult=ff_mult,
            dropout=dropout, frame_chunk_size=frame_chunk_size, inference_chunk_frames=inference_chunk_frames,
        )  # fmt: skip
        # not `self.backbone`: that name is a config key, and diffusers resolves config keys first
        self.frame_backbone = build_frame_backbone(
            backbone, frame_size, path=backbone_path, pretrained=backbone_pretrained,
            feature_dim=feature_dim, cnn_channels=cnn_channels, cnn_stages=cnn_stages,
        )  # fmt: skip
        self.frame_feature_dim = self.frame_backbone.out_dim  # F of encode_frames' output
        self.backbone_frozen = (backbone != "cnn") if freeze_backbone is None else bool(freeze_backbone)
        if self.backbone_frozen:
            self.frame_backbone.requires_grad_(False)
            self.frame_backbone.eval()

        self.in_norm = nn.LayerNorm(self.frame_feature_dim)
        self.in_proj = nn.Linear(self.frame_feature_dim, hidden_dim)
        self.time_proj = nn.Linear(hidden_dim, hidden_dim)
        self.memory = nn.Parameter(torch.randn(num_memory_tokens, hidden_dim) * 0.02) if num_memory_tokens else None
        self.layers = nn.ModuleList(
            LocalGlobalLayer(hidden_dim, num_heads, window, num_memory_tokens, ff_mult * hidden_dim, dropout)
            for _ in range(num_layers)
        )
        self.out_norm = nn.LayerNorm(hidden_dim)
        self.pool_proj = nn.Linear(hidden_dim, hidden_dim)

    # ------------------------------------------------------------------ backbone
    def train(self, mode: bool = True):
        super().train(mode)
        if self.backbone_frozen:
            self.frame_backbone.eval()  # a frozen backbone keeps eval behaviour (dropout off) while training
        return self

    def encode_frames(self, frames: Union[torch.Tensor, np.ndarray]) -> torch.Tensor:
        """Backbone only: ``frames [B, T, H, W, 3]`` (uint8, or float in ``[0, 1]``) -> ``[B, T, F]``.

        Frames are resized to ``frame_size``, moved to the model's device and run
        ``frame_chunk_size`` at a time, so only one chunk is ever in float form; the result lives
        on the model's device, ``frames`` may stay on the CPU.
        """
        frames = _check_frames(frames)
        b, t, height, width, _ = frames.shape
        flat = frames.reshape(b * t, height, width, 3)
        chunk = self.config.frame_chunk_size
        device = self.in_proj.weight.device
        grad = torch.is_grad_enabled() and not self.backbone_frozen
        with torch.set_grad_enabled(grad):
            pieces = []
            out = None if grad else torch.empty(b * t, self.frame_feature_dim, device=device, dtype=self.in_proj.weight.dtype)
            for s in range(0, b * t, chunk):
                x = flat[s : s + chunk].to(device).permute(0, 3, 1, 2)
                if x.dtype == torch.uint8:
                    x = x.float() / 255.0
                else:
                    x = x.float()
                    if x.min() < -1e-3 or x.max() > 1.0 + 1e-3:
                        raise InputError(
                            f"encode_frames: float frames must hold values in [0, 1], got [{x.min().item():.3g}, "
                            f"{x.max().item():.3g}] (pass uint8 for 0-255 values)"
                        )
                feats = self.frame_backbone(resize_frames(x, self.config.frame_size))
                if grad:
                    pieces.append(feats)
                else:
                    out[s : s + feats.shape[0]] = feats
            out = torch.cat(pieces) if grad else out
        return out.reshape(b, t, self.frame_feature_dim)

    # ------------------------------------------------------------------ temporal
    def encode_features(self, features: torch.Tensor, mask: Optional[torch.Tensor] = None) -> VideoEncoderOutput:
        """Temporal encoder: ``features [B, T, F]`` (+ ``mask [B, T]`` bool) -> :class:`VideoEncoderOutput`.

        ``features`` may sit on the CPU (chunks move to the model's device). Frames with mask False
        do not influence the valid outputs; their ``hidden`` is zero.
        """
        mask = _check_features(features, mask, self.frame_feature_dim)
        b, t, _ = features.shape
        w = self.config.window
        device, dtype = self.in_proj.weight.device, self.in_proj.weight.dtype
        tp = math.ceil(t / w) * w  # padded to whole blocks; the tail is masked
        valid = torch.zeros(b, tp, dtype=torch.bool, device=device)
        valid[:, :t] = mask.to(device)
        spans = list(self._spans(tp))
        in_place = not torch.is_grad_enabled()

        if in_place:
            h = torch.empty(b, tp, self.config.hidden_dim, device=device, dtype=dtype)
            for s, e in spans:
                h[:, s:e] = self._embed(features, valid, s, e)
        else:
            h = torch.cat([self._embed(features, valid, s, e) for s, e in spans], dim=1)
        mem = self.memory[None].expand(b, -1, -1).to(dtype) if self.memory is not None else None

        for layer in self.layers:
            if mem is not None:
                mem = layer.update_memory(mem, h, valid, spans)
            if in_place:
                pending = None  # a chunk's result is written only after the next chunk read its old halo
                for s, e in spans:
                    new = layer.update_frames(h, valid, mem, s, e)
                    if pending is not None:
                        h[:, pending[0] : pending[1]] = pending[2]
                    pending = (s, e, new)
                h[:, pending[0] : pending[1]] = pending[2]
            else:
                h = torch.cat([layer.update_frames(h, valid, mem, s, e) for s, e in spans], dim=1)

        total = torch.zeros(b, self.config.hidden_dim, device=device, dtype=dtype)
        if in_place:
            for s, e in spans:
                h[:, s:e] = self.out_norm(h[:, s:e]).masked_fill(~valid[:, s:e, None], 0.0)
                total += h[:, s:e].sum(1)
        else:
            h = self.out_norm(h).masked_fill(~valid[..., None], 0.0)
            total = h.sum(1)
        pooled = self.pool_proj(total / valid.sum(1, keepdim=True).to(dtype))
        return VideoEncoderOutput(hidden=h[:, :t], mask=valid[:, :t], pooled=pooled, frame_rate=float(self.config.fps))

    def forward(self, frames: Union[torch.Tensor, np.ndarray], mask: Optional[torch.Tensor] = None) -> VideoEncoderOutput:
        """``frames [B, T, H, W, 3]`` (uint8, or float in ``[0, 1]``), ``mask [B, T]`` -> :class:`VideoEncoderOutput`."""
        frames = _check_frames(frames)
        if mask is not None:
            _check_mask(mask, frames.shape[:2])
        return self.encode_features(self.encode_frames(frames), mask)

    def _spans(self, tp: int) -> Iterator[Tuple[int, int]]:
        """Block-aligned frame ranges ``[s, e)`` of ``inference_chunk_frames`` (rounded to windows) covering ``[0, tp)``."""
        w = self.config.window
        step = max(self.config.inference_chunk_frames // w, 1) * w
        for s in range(0, tp, step):
            yield s, min(s + step, tp)

    def _embed(self, features: torch.Tensor, valid: torch.Tensor, s: int, e: int) -> torch.Tensor:
        """Input projection + time embedding of frames ``[s, e)`` -> ``[B, e - s, D]`` (zero where invalid)."""
        dtype = self.in_proj.weight.dtype
        x = features[:, s:e].to(device=valid.device, dtype=dtype)
        x = F.pad(x, (0, 0, 0, (e - s) - x.shape[1]))  # the block padding past T
        bad = ~torch.isfinite(x).all(-1) & valid[:, s:e]  # masked frames may hold anything
        if bad.any():
            item, frame = bad.nonzero()[0].tolist()
            raise InputError(f"encode_features: features hold NaN or inf at batch item {item}, frame {s + frame}")
        x = x.masked_fill(~valid[:, s:e, None], 0.0)
        seconds = torch.arange(s, e, device=valid.device, dtype=torch.float32) / self.config.fps
        time = sinusoidal_embedding(seconds * TIME_UNITS_PER_SECOND, self.config.hidden_dim).to(dtype)
        h = self.in_proj(self.in_norm(x)) + self.time_proj(time)[None]
        return h.masked_fill(~valid[:, s:e, None], 0.0)

    # ------------------------------------------------------------------ save / load
    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs):
        """diffusers' save (config + safetensors, backbone weights included), plus, for a transformers
        backbone, its config under ``backbone/`` so the folder reloads without the original ``backbone_path``."""
        super().save_pretrained(save_directory, is_main_process=is_main_process, **kwargs)
        if is_main_process and isinstance(self.frame_backbone, TransformersFrameBackbone):
            self.frame_backbone.save_config(Path(save_directory) / BACKBONE_SUBFOLDER)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' load; a saved ``backbone/`` folder replaces ``backbone_path`` (weights come from this checkpoint)."""
        folder = Path(pretrained_model_name_or_path) / (kwargs.get("subfolder") or "")
        if (folder / BACKBONE_SUBFOLDER / "config.json").is_file() and "backbone_path" not in kwargs:
            kwargs["backbone_path"] = str(folder / BACKBONE_SUBFOLDER)
            kwargs["backbone_pretrained"] = False
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)


def _check_config(**c) -> None:
    if c["backbone"] not in BACKBONES:
        raise ConfigError(f"TemporalVideoEncoder: unknown backbone {c['backbone']!r}; valid choices: {', '.join(BACKBONES)}")
    if not c["fps"] > 0:
        raise ConfigError(f"TemporalVideoEncoder: fps must be > 0, got {c['fps']}")
    for key in ("frame_size", "hidden_dim", "num_layers", "num_heads", "window", "ff_mult", "frame_chunk_size", "inference_chunk_frames"):
        if int(c[key]) != c[key] or c[key] < 1:
            raise ConfigError(f"TemporalVideoEncoder: {key} must be a positive integer, got {c[key]!r}")
    if c["hidden_dim"] % c["num_heads"]:
        raise ConfigError(f"TemporalVideoEncoder: hidden_dim {c['hidden_dim']} is not divisible by num_heads {c['num_heads']}")
    if c["num_memory_tokens"] < 0:
        raise ConfigError(f"TemporalVideoEncoder: num_memory_tokens must be >= 0, got {c['num_memory_tokens']}")
    if not 0.0 <= c["dropout"] < 1.0:
        raise ConfigError(f"TemporalVideoEncoder: dropout must be in [0, 1), got {c['dropout']}")


def _check_frames(frames) -> torch.Tensor:
    if isinstance(frames, np.ndarray):
        frames = torch.from_numpy(frames)
    if not isinstance(frames, torch.Tensor):
        raise InputError(f"video encoder: frames must be a tensor or array [B, T, H, W, 3], got {type(frames).__name__}")
    if frames.dim() != 5:
        hint = " (add a batch dimension)" if frames.dim() == 4 else ""
        raise InputError(f"video encoder: frames must be [B, T, H, W, 3], got rank {frames.dim()} shape {tuple(frames.shape)}{hint}")
    if frames.shape[-1] != 3:
        raise InputError(f"video encoder: frames must have 3 (RGB) channels last, got shape {tuple(frames.shape)}")
    if frames.shape[0] == 0 or frames.shape[1] == 0 or frames.shape[2] == 0 or frames.shape[3] == 0:
        raise InputError(f"video encoder: frames are empty, shape {tuple(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.is_floating_point():
        raise InputError(f"video encoder: frames must be uint8 or float in [0, 1], got dtype {frames.dtype}")
    return frames


def _check_mask(mask, shape) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise InputError(f"video encoder: mask must be a bool tensor [B, T], got {type(mask).__name__}")
    if tuple(mask.shape) != tuple(shape):
        raise InputError(f"video encoder: mask must be [B, T] = {tuple(shape)}, got {tuple(mask.shape)}")
    mask = mask.bool()
    empty = (~mask.any(1)).nonzero().flatten().tolist()
    if empty:
        raise InputError(f"video encoder: mask rows {empty} have no valid frame")
    return mask


def _check_features(features, mask, feature_dim: int) -> torch.Tensor:
    """Validate ``features [B, T, F]`` and return the mask (all True when None)."""
    if not isinstance(features, torch.Tensor):
        raise InputError(f"encode_features: features must be a tensor [B, T, F], got {type(features).__name__}")
    if features.dim() != 3:
        raise InputError(f"encode_features: features must be [B, T, F], got rank {features.dim()} shape {tuple(features.shape)}")
    if features.shape[-1] != feature_dim:
        raise InputError(f"encode_features: features have F={features.shape[-1]}, the backbone gives F={feature_dim}")
    if features.shape[0] == 0 or features.shape[1] == 0:
        raise InputError(f"encode_features: features are empty, shape {tuple(features.shape)}")
    if not features.is_floating_point():
        raise InputError(f"encode_features: features must be floating point, got dtype {features.dtype}")
    if mask is None:
        return torch.ones(features.shape[:2], dtype=torch.bool, device=features.device)
    return _check_mask(mask, features.shape[:2])
