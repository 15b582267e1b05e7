"""Randomness that belongs to a sample, not to the batch or the process it lands in.

``nn.Dropout`` draws one mask for the whole batch from the process RNG, so a sample's mask depends
on which samples share its batch and on which process it runs: training on 2 processes then
cannot follow the 1-process run. :class:`ItemDropout` is ``nn.Dropout`` (same state-dict names:
it has none) whose masks, inside :func:`per_item_dropout` (the training task opens it for every
step), are a hash of ``(the item's seed, which dropout call, the element's index within the
item)``. That is a counter-based draw, so

* a sample gets the same masks on any process and in any batch;
* padding appended to an item's leading axis (time) leaves the masks of its real elements alone
  (the element index of ``[t, h]`` is ``t * H + h`` whatever the padded length);
* it runs on the tensors' device, without a per-item generator loop.

A call is identified by its module (numbered in the order of first use within the context), an
``offset`` the caller gives for chunked calls (the chunk's first frame, so a different number of
chunks shifts nothing) and how many calls that module made at that offset before. Outside the
context, or in eval mode, :class:`ItemDropout` behaves exactly as ``nn.Dropout``.
"""

import contextvars
import math
from contextlib import contextmanager
from typing import Dict, Iterator, Sequence, Tuple

import torch
from torch import nn

from ..errors import InputError

_MASK64 = (1 << 63) - 1
_M32 = 0xFFFFFFFF


def mix_seed(*values: int) -> int:
    """Deterministic 63-bit mix of integers (splitmix64 steps); independent of process and platform."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (int(value) & 0xFFFFFFFFFFFFFFFF)) & 0xFFFFFFFFFFFFFFFF
        state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        state = z ^ (z >> 31)
    return state & _MASK64


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """``x * c mod 2**32`` for int64 ``x`` in ``[0, 2**32)``, in halves so no product overflows int64."""
    return ((x & 0xFFFF) * c + ((((x >> 16) * c) & 0xFFFF) << 16)) & _M32


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (Wellons' "lowbias32") of int64 values in ``[0, 2**32)``."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def item_uniform_bits(seeds: Sequence[int], numel: int, device=None) -> torch.Tensor:
    """``[len(seeds), numel]`` int64 in ``[0, 2**32)``: element ``j`` of row ``i`` hashes ``(seeds[i], j)``.

    Element ``j`` does not depend on ``numel``, so a longer (padded) row keeps the shorter one's values.
    """
    if numel >= 1 << 32:
        raise InputError(f"ItemDropout: {numel} elements per item exceed the 2**32 a mask can index")
    seeds_t = torch.tensor([[s & _M32, (s >> 32) & _M32] for s in seeds], dtype=torch.int64, device=device)
    index = torch.arange(numel, dtype=torch.int64, device=device)[None]
    return _hash32(_hash32(index ^ seeds_t[:, :1]) ^ seeds_t[:, 1:])


class _Calls:
    """The open context: one seed per batch item and the calls made so far."""

    def __init__(self, seeds: Sequence[int]):
        self.seeds = [int(s) for s in seeds]
        self.modules: Dict[int, int] = {}
        self.counts: Dict[Tuple[int, int], int] = {}

    def call_seeds(self, module: nn.Module, offset: int) -> list:
        index = self.modules.setdefault(id(module), len(self.modules))
        count = self.counts[(index, offset)] = self.counts.get((index, offset), 0) + 1
        return [mix_seed(seed, index, offset, count) for seed in self.seeds]


_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("vmas_item_dropout", default=None)


@contextmanager
def per_item_dropout(seeds: Sequence[int]) -> Iterator[None]:
    """Within this block, :class:`ItemDropout` layers draw item ``i``'s masks from ``seeds[i]`` alone."""
    token = _ACTIVE.set(_Calls(seeds))
    try:
        yield
    finally:
        _ACTIVE.reset(token)


class ItemDropout(nn.Dropout):
    """``nn.Dropout`` with per-item, position-stable masks inside :func:`per_item_dropout` (module docstring).

    ``x`` is batch-first; ``offset`` names a chunk of a chunked computation (its first frame).
    """

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        calls = _ACTIVE.get()
        if calls is None or not self.training or self.p == 0:
            return super().forward(x)
        if x.shape[0] != len(calls.seeds):
            raise InputError(f"ItemDropout: {len(calls.seeds)} item seeds for a batch of {x.shape[0]}")
        bits = item_uniform_bits(calls.call_seeds(self, offset), math.prod(x.shape[1:]), x.device)
        keep = (bits >= int(self.p * (1 << 32))).view(x.shape)
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))
