"""Codebook interleaving patterns: pure index logic between codes ``[B, K, T]`` and LM steps ``[B, K, S]``.

A residual codec gives ``K`` codes per music frame. An autoregressive LM emits one *step*
at a time, and every step carries ``K`` slots (one per codebook, their embeddings summed, one
head each). A pattern decides which code sits in which slot:

* ``delay`` (MusicGen): codebook ``k`` is shifted right by ``delays[k]`` steps (default
  ``[0, 1, ..., K-1]``), so the fine codebooks of a frame are predicted after its coarse one;
  ``S = T + max(delays)``.
* ``parallel``: all codebooks of frame ``t`` at step ``t`` (``S = T``); the delay pattern with
  zero delays.
* ``flatten``: one codebook per step, frame-major (``S = T * K``).

Everything is described by one table, :meth:`CodebookPattern.layout` ``[K, S]``: the music
frame whose code sits in slot ``(k, s)``, or ``-1`` where the slot holds the special token.
:meth:`interleave` and :meth:`deinterleave` are gathers through that table, so the generator
never shifts codes by hand.
"""

from typing import Dict, Optional, Sequence, Type

import torch

from ..errors import ConfigError, InputError


class CodebookPattern:
    """Base class; a subclass defines :meth:`num_steps` and :meth:`layout`."""

    name: str = ""

    def __init__(self, num_codebooks: int):
        if num_codebooks < 1:
            raise ConfigError(f"{type(self).__name__}: num_codebooks must be >= 1, got {num_codebooks}")
        self.num_codebooks = num_codebooks

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_codebooks={self.num_codebooks})"

    # -- the table ------------------------------------------------------------------------------------
    def num_steps(self, num_frames: int) -> int:
        """Number of LM steps ``S`` that hold ``num_frames`` frames."""
        raise NotImplementedError

    def layout(self, num_frames: int, device=None) -> torch.Tensor:
        """``[K, S]`` long: frame index held by slot ``(k, s)``, ``-1`` for a special-token slot."""
        raise NotImplementedError

    def lead_frame(self, num_steps: int, device=None) -> torch.Tensor:
        """``[S]`` long: the newest frame a step predicts (its earliest-delayed codebook's frame).

        Unlike :meth:`layout` it extrapolates past the last frame (the delay pattern's tail
        steps), so per-step conditions stay aligned in every window of a long generation.
        """
        raise NotImplementedError

    # -- derived index maps -----------------------------------------------------------------------------
    def valid_mask(self, num_frames: int, device=None) -> torch.Tensor:
        """``[K, S]`` bool: True where a slot holds a real code."""
        return self.layout(num_frames, device) >= 0

    def step_of(self, num_frames: int, device=None) -> torch.Tensor:
        """``[K, T]`` long: the step holding code ``(k, t)`` (the inverse of :meth:`layout`)."""
        layout = self.layout(num_frames, device)
        k_idx, s_idx = torch.nonzero(layout >= 0, as_tuple=True)
        out = torch.full((self.num_codebooks, num_frames), -1, dtype=torch.long, device=layout.device)
        out[k_idx, layout[k_idx, s_idx]] = s_idx
        return out

    def first_step_of_frame(self, num_frames: int, device=None) -> torch.Tensor:
        """``[T]`` long: the first step at which any code of frame ``t`` is predicted."""
        return self.step_of(num_frames, device).min(dim=0).values

    # -- codes <-> steps ---------------------------------------------------------------------------------
    def _check_codes(self, codes: torch.Tensor, what: str) -> None:
        if codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            raise InputError(
                f"{self.name} pattern: {what} must be [B, K={self.num_codebooks}, T], got shape {tuple(codes.shape)}"
            )

    def interleave(self, codes: torch.Tensor, special: int) -> torch.Tensor:
        """Codes ``[B, K, T]`` -> steps ``[B, K, S]``, special-token slots filled with ``special``."""
        self._check_codes(codes, "codes")
        b, k, t = codes.shape
        layout = self.layout(t, codes.device)
        gathered = codes.gather(2, layout.clamp(min=0).unsqueeze(0).expand(b, k, -1))
        return torch.where(layout >= 0, gathered, torch.full_like(gathered, special))

    def deinterleave(self, steps: torch.Tensor, num_frames: int) -> torch.Tensor:
        """Steps ``[B, K, S]`` -> codes ``[B, K, num_frames]`` (the inverse of :meth:`interleave`)."""
        self._check_codes(steps, "steps")
        expected = self.num_steps(num_frames)
        if steps.shape[2] != expected:
            raise InputError(
                f"{self.name} pattern: {num_frames} frames need {expected} steps, got {steps.shape[2]}"
            )
        index = self.step_of(num_frames, steps.device)
        return steps.gather(2, index.unsqueeze(0).expand(steps.shape[0], -1, -1))


class DelayPattern(CodebookPattern):
    """Codebook ``k`` delayed by ``delays[k]`` steps (MusicGen: ``[0, 1, ..., K-1]``)."""

    name = "delay"

    def __init__(self, num_codebooks: int, delays: Optional[Sequence[int]] = None):
        super().__init__(num_codebooks)
        delays = list(range(num_codebooks)) if delays is None else [int(d) for d in delays]
        if len(delays) != num_codebooks or min(delays) < 0:
            raise ConfigError(f"delay pattern: need {num_codebooks} delays >= 0, got {delays}")
        self.delays = delays

    def __repr__(self) -> str:
        return f"{type(self).__name__}(num_codebooks={self.num_codebooks}, delays={self.delays})"

    def num_steps(self, num_frames: int) -> int:
        return num_frames + max(self.delays)

    def layout(self, num_frames: int, device=None) -> torch.Tensor:
        steps = torch.arange(self.num_steps(num_frames), device=device)
        frames = steps[None, :] - torch.tensor(self.delays, device=device)[:, None]
        return torch.where((frames >= 0) & (frames < num_frames), frames, torch.full_like(frames, -1))

    def lead_frame(self, num_steps: int, device=None) -> torch.Tensor:
        return torch.arange(num_steps, device=device) - min(self.delays)


class ParallelPattern(DelayPattern):
    """All codebooks of frame ``t`` at step ``t`` (ablation: no delay)."""

    name = "parallel"

    def __init__(self, num_codebooks: int):
        super().__init__(num_codebooks, delays=[0] * num_codebooks)


class FlattenPattern(CodebookPattern):
    """One codebook per step, frame-major: step ``t * K + k`` holds code ``(k, t)`` (ablation)."""

    name = "flatten"

    def num_steps(self, num_frames: int) -> int:
        return num_frames * self.num_codebooks

    def layout(self, num_frames: int, device=None) -> torch.Tensor:
        k = self.num_codebooks
        steps = torch.arange(self.num_steps(num_frames), device=device)
        own = (steps % k)[None, :] == torch.arange(k, device=device)[:, None]
        frames = (steps // k)[None, :].expand(k, -1)
        return torch.where(own, frames, torch.full_like(frames, -1))

    def lead_frame(self, num_steps: int, device=None) -> torch.Tensor:
        return torch.arange(num_steps, device=device) // self.num_codebooks


PATTERNS: Dict[str, Type[CodebookPattern]] = {
    "delay": DelayPattern,
    "parallel": ParallelPattern,
    "flatten": FlattenPattern,
}


def build_pattern(name: str, num_codebooks: int) -> CodebookPattern:
    """``"delay"|"parallel"|"flatten"`` -> pattern over ``num_codebooks`` codebooks."""
    if name not in PATTERNS:
        raise ConfigError(f"unknown codebook pattern {name!r}; valid choices: {', '.join(sorted(PATTERNS))}")
    return PATTERNS[name](num_codebooks)


__all__ = ["CodebookPattern", "DelayPattern", "ParallelPattern", "FlattenPattern", "PATTERNS", "build_pattern"]
