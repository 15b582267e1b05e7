"""Transformer primitives shared by the generators and the video encoder.

Parameter names follow MusicGen's decoder (``q_proj``/``k_proj``/``v_proj``/``out_proj``,
``fc1``/``fc2``) so that a warm start maps weights by name.
"""

import contextlib
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head attention over ``x [B, T, D]``; cross-attention when ``context [B, S, Dc]`` is given.

    ``key_padding_mask [B, S]`` is True where a key is valid. A query whose keys are all
    masked out returns zeros (not NaN), which is what a dropped condition needs.
    """

    def __init__(self, dim: int, num_heads: int, context_dim: Optional[int] = None, bias: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        context_dim = context_dim or dim
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(context_dim, dim, bias=bias)
        self.v_proj = nn.Linear(context_dim, dim, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def project_kv(self, context: torch.Tensor):
        """``context [B, S, Dc]`` -> keys and values ``[B, H, S, hd]`` (cacheable for cross-attention)."""
        return self.split_heads(self.k_proj(context)), self.split_heads(self.v_proj(context))

    def attend(self, q, k, v, attn_mask=None, is_causal=False) -> torch.Tensor:
        """Heads in, ``[B, T, D]`` out. ``attn_mask`` is bool (True = attend), broadcastable to ``[B, H, T, S]``."""
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        b, h, t, hd = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, t, h * hd))

    def forward(
        self,
        x: torch.Tensor,
        context: Optional[torch.Tensor] = None,
        key_padding_mask: Optional[torch.Tensor] = None,
        attn_mask: Optional[torch.Tensor] = None,
        is_causal: bool = False,
        kv: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """``kv``: :meth:`project_kv` of ``context`` computed earlier (a context reused across calls)."""
        q = self.split_heads(self.q_proj(x))
        k, v = kv if kv is not None else self.project_kv(x if context is None else context)
        mask = attn_mask
        if key_padding_mask is not None:
            kpm = key_padding_mask[:, None, None, :].bool()
            mask = kpm if mask is None else (mask & kpm)
        if mask is not None:
            if is_causal:
                t, s = q.shape[-2], k.shape[-2]
                mask = mask & torch.ones(t, s, dtype=torch.bool, device=x.device).tril(s - t)
                is_causal = False
            return self.attend_masked(q, k, v, mask)
        return self.attend(q, k, v, is_causal=is_causal)

    def attend_masked(self, q, k, v, mask: Optional[torch.Tensor]) -> torch.Tensor:
        """:meth:`attend` with a bool ``mask`` (True = attend, broadcastable to ``[B, H, T, S]``).

        A query row with no valid key returns zeros instead of NaN.
        """
        if mask is None:
            return self.attend(q, k, v)
        # rows with no valid key would give NaN; let them attend to everything, then zero them
        empty = ~mask.any(-1, keepdim=True)
        out = self.attend(q, k, v, attn_mask=mask | empty)
        row_empty = empty.all(dim=1).squeeze(-1)  # [B, T] or [B, 1]
        return out.masked_fill(row_empty[..., None], 0.0)

    def forward_cached(
        self, x: torch.Tensor, cache: "KVCache", key_padding_mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Causal self-attention of ``x [B, T, D]`` (the next ``T`` positions) over the cache plus ``x``.

        Appends this call's keys and values to ``cache``. ``key_padding_mask [B, S_max]`` (True = valid),
        if given, covers every position the cache can hold; only its first ``cache.length`` columns are read.
        """
        q = self.split_heads(self.q_proj(x))
        k, v = cache.append(*self.project_kv(x))
        t, s = q.shape[-2], k.shape[-2]
        mask = None
        if t > 1:  # the new positions see the past and each other causally
            mask = torch.ones(t, s, dtype=torch.bool, device=x.device).tril(s - t)
        if key_padding_mask is not None:
            kpm = key_padding_mask[:, None, None, :s]
            mask = kpm if mask is None else (mask & kpm)
        return self.attend_masked(q, k, v, mask)


class KVCache:
    """Preallocated self-attention keys and values ``[B, H, capacity, head_dim]`` for incremental decoding.

    Writing in place into a fixed buffer avoids the re-allocation a growing ``torch.cat`` cache pays
    at every step. Keys and values are the two halves of one buffer, so a decoding step writes both
    with one copy (:meth:`append_step`).
    """

    def __init__(self, batch: int, num_heads: int, head_dim: int, capacity: int, device=None, dtype=None):
        self.buffer = torch.empty((2, batch, num_heads, capacity, head_dim), device=device, dtype=dtype)
        self.keys, self.values = self.buffer.unbind(0)
        self.capacity = capacity
        self.length = 0

    def _advance(self, steps: int) -> int:
        end = self.length + steps
        if end > self.capacity:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.capacity}")
        return end

    def append(self, k: torch.Tensor, v: torch.Tensor):
        """Write ``k, v [B, H, T, hd]`` after the cached positions; return all keys and values so far."""
        end = self._advance(k.shape[2])
        self.keys[:, :, self.length : end] = k
        self.values[:, :, self.length : end] = v
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def append_step(self, kv: torch.Tensor):
        """:meth:`append` of one position given as ``kv [B, 2 * H * hd]``: keys then values, heads-major
        (the output of a fused key/value projection)."""
        end = self._advance(1)
        _, b, h, _, hd = self.buffer.shape
        self.buffer[:, :, :, self.length].copy_(kv.view(b, 2, h, hd).transpose(0, 1))
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


class FeedForward(nn.Module):
    """``fc2(gelu(fc1(x)))``."""

    def __init__(self, dim: int, hidden_dim: int, bias: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """``positions [...]`` (int or float) -> ``[..., dim]``, cos half first, as MusicGen's positional embedding."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=positions.device, dtype=torch.float32) / max(half - 1, 1))
    args = positions.float()[..., None] * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def step_linear(x: torch.Tensor, weight: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``residual + x @ weight.t()`` (no bias) for the few rows ``x [R, in]`` of a decoding step; ``[R, out]``.

    A column-major ``weight`` (:func:`column_major_linears`) is read as ``x @ weight.t()``. A
    row-major float32 one on the CPU with two or three rows (classifier-free guidance of one
    item) is computed as ``(weight @ x.t()).t()``: MKL's sgemm runs that form as a
    matrix-vector-like product that streams the weight once, while ``x @ weight.t()`` costs almost
    twice as much (MusicGen-small size, all GEMMs of one step: 82 against 143-157 ms at two rows;
    in a second measurement 32 against 57 ms at two rows, 43 against 77 at three, even at four and
    slower from eight). Equal to ``F.linear`` to float rounding.
    """
    cpu32 = weight.dtype == torch.float32 and weight.device.type == "cpu"
    if 2 <= x.shape[0] <= 3 and cpu32 and weight.is_contiguous():
        out = torch.mm(weight, x.t()) if residual is None else torch.addmm(residual.t(), weight, x.t())
        return out.t().contiguous()
    return torch.mm(x, weight.t()) if residual is None else torch.addmm(residual, x, weight.t())


#: column_major_linears skips modules whose linear weights hold more bytes than this (see there)
COLUMN_MAJOR_MAX_BYTES = 64 * 2**20


@contextlib.contextmanager
def column_major_linears(module: nn.Module, max_bytes: int = COLUMN_MAJOR_MAX_BYTES):
    """Within the block, the float32 ``nn.Linear`` weights of ``module`` on the CPU are stored column-major.

    Same values, shape and names: ``weight`` becomes the transposed view of a contiguous
    ``[in, out]`` copy, which CPU BLAS reads faster for the 1-2 rows of a decoding step (hidden
    256, 4 layers: generation 1.5x faster with CFG; a 2048 x 4 vocabulary head 1.3-1.8x). The
    copy is made once per block, so it wraps a whole generation, and the usual layout (what
    training and ``state_dict`` see) comes back on exit. Skipped when the weights exceed
    ``max_bytes``: at MusicGen-small size (1.4 GB) copying costs more than it saves, and for
    bfloat16 the layout is slower. Results equal ``F.linear``'s to float rounding.
    """
    linears = [m for m in module.modules() if isinstance(m, nn.Linear) and m.weight.device.type == "cpu"]
    linears = [m for m in linears if m.weight.dtype == torch.float32 and m.weight.is_contiguous()]
    if sum(m.weight.numel() * 4 for m in linears) > max_bytes:
        linears = []
    swapped = []
    for layer in linears:
        swapped.append((layer, layer.weight.data))
        layer.weight.data = layer.weight.data.t().contiguous().t()
    try:
        yield
    finally:
        for layer, original in swapped:
            layer.weight.data = original
