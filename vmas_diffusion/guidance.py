"""Classifier-free guidance, with an optional guidance of the beat's own, as every backend applies it.

Plain CFG runs each item twice in one batch, ``[cond, null]``, and combines the two outputs (LDM:
the denoiser's prediction; AR: the final hidden states, which the linear heads turn into logits)
as ``null + g * (cond - null)``. A beat guidance scale ``g_beat`` adds a third branch that drops
the beat alone, ``[cond, no_beat, null]``, combined as
``null + g * (no_beat - null) + g_beat * (cond - no_beat)``: the video's look and the beat's
timing each get their own scale (``g_beat == g`` is plain CFG). A model that learnt the beat as a
small part of its input follows it only with a beat scale of its own (docs/alignment_results.md).

The beat scale can be *gated* by the visual beats (``reach``, seconds): at each music frame it is
``g + (g_beat - g) * gate``, the gate being the strongest visual beat within ``reach`` of the frame
(the envelope is in [0, 1]). Near a cut or a motion accent the beat gets its full scale; between
them guidance is plain CFG, which leaves the music's held notes alone.

**Flux guidance** (latent diffusion over log-mel latents, :class:`FluxGuidance`) steers how much
the music moves rather than what the model predicts: at every denoising step the predicted clean
latents are nudged down (or up) the gradient of their spectral flux (the mean rise of the mel bands
from frame to frame, in dB), towards the flux that training music has under videos of this pace (a
quantile map of the video's beats per second, ``flux_map``). A small denoiser leaves frame-to-frame
jitter in its spectra, which counts as onsets and breaks held notes; the pull is strongest where the
video is calm. With ``smoothing`` (a Gaussian over time, in latent frames) the step is not along the
gradient but towards the latents' own smoothed version (away from it, sharpening what attacks there
are, when the music should move more): a fixed-size gradient step zigzags the spectra, which adds
rises of its own when the pull is strong, whereas smoothing can only take rises away. With a ``reach``
each frame takes the step times one minus the strongest visual beat within it (:func:`beat_nearby`), so
the hits on cuts and motion accents stay while the music between them is calmed; a ``contrast`` above 1
stretches the map's log flux around a ``pivot``, asking calm footage for calmer music than the map does.

**Pace temperature** (the AR, :class:`PaceTemperature`) does the same job for token sampling: each
step's temperature comes from a map of the video's beats per second around its frame
(``temperature_map``), cool and regular under calm footage, hotter under busy footage.
"""

import math
from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional

import torch
import torch.nn.functional as F

from .conditions import BEAT, Condition, check_quantile_map, interpolate_map, local_pace
from .modules.condition_fusion import frame_values


def check_beat_guidance(value, name: str) -> Optional[str]:
    """The problem with a beat guidance scale or its reach, or None when ``value`` is None or a finite number >= 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        return f"{name} must be a finite number >= 0 or None, got {value!r}"
    return None


@dataclass(frozen=True)
class Guidance:
    """How one sampling call is guided: ``scale`` on the conditions, ``beat_scale`` on the beat (None: plain CFG),
    gated by ``beat`` (the call's beat condition, ``[B, T, 1]``) within ``reach`` seconds (None: everywhere)."""

    scale: float
    beat_scale: Optional[float] = None
    beat: Optional[Condition] = None
    reach: Optional[float] = None

    @property
    def branches(self) -> int:
        """Rows per item in a guided batch: 2 (``[cond, null]``) or 3 (``[cond, no_beat, null]``)."""
        return 2 if self.beat_scale is None else 3

    def conditions(self, conditions: Dict[str, Condition]) -> Dict[str, Condition]:
        """The conditions of one guided batch: ``[B, ...]`` -> ``[branches * B, ...]``, branch by branch."""
        if self.beat_scale is None:
            return {name: cond.with_null() for name, cond in conditions.items()}
        out = {}
        for name, cond in conditions.items():
            null = cond.null()
            middle = null if name == BEAT else cond
            out[name] = replace(cond, tensor=torch.cat([cond.tensor, middle.tensor, null.tensor]),
                                mask=torch.cat([cond.mask, middle.mask, null.mask]))
        return out

    def gate(self, frames: torch.Tensor, frame_rate: float) -> Optional[torch.Tensor]:
        """``[B, N]`` in [0, 1] at music frames ``frames [N]`` (absolute indices at ``frame_rate``): the
        strongest visual beat within ``reach``; None when the beat scale is not gated."""
        if self.beat_scale is None or self.reach is None:
            return None
        return beat_nearby(self.beat, frames, frame_rate, self.reach)

    def combine(self, out: torch.Tensor, gate: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The guided output ``[B, ...]`` of a batch's outputs ``[branches * B, ...]``; ``gate`` (from
        :meth:`gate`, shaped to broadcast over ``[B, ...]``) sets the beat scale frame by frame."""
        if self.beat_scale is None:
            cond, null = out.chunk(2)
            return null + self.scale * (cond - null)
        cond, no_beat, null = out.chunk(3)
        beat_scale = self.beat_scale if gate is None else self.scale + (self.beat_scale - self.scale) * gate.to(out)
        return null + self.scale * (no_beat - null) + beat_scale * (cond - no_beat)


def beat_nearby(beat: Condition, frames: torch.Tensor, frame_rate: float, reach: float) -> torch.Tensor:
    """``[B, N]`` in [0, 1]: the strongest visual beat of ``beat`` within ``reach`` seconds of each music frame
    ``frames [N]`` (absolute indices at ``frame_rate``)."""
    r = round(reach * frame_rate)
    frames = frames.to(beat.tensor.device)
    taps = (frames[:, None] + torch.arange(-r, r + 1, device=frames.device)).clamp(min=0)  # [N, 2r + 1]
    values, _ = frame_values(beat, taps, frame_rate)  # [B, N, 2r + 1, D]
    return values.amax(dim=(2, 3)).clamp(0.0, 1.0)


def plan_guidance(
    conditions: Optional[Dict[str, Condition]], scale: float, beat_scale: Optional[float], config
) -> Optional[Guidance]:
    """The guidance of a sampling call, or None when it runs the conditional branch alone (no conditions,
    or ``scale == 1`` without beat guidance). ``beat_scale`` None takes the model's (``config``'s
    ``beat_guidance_scale``, gated by its ``beat_guidance_reach``); it applies only when the conditions
    hold a beat. Raises InputError for a bad ``beat_scale``."""
    from .errors import InputError

    if beat_scale is None:
        beat_scale = config.get("beat_guidance_scale")
    if (problem := check_beat_guidance(beat_scale, "beat_guidance_scale")) is not None:
        raise InputError(problem)
    if beat_scale is not None:
        beat_scale = float(beat_scale) if BEAT in (conditions or {}) else None
    if not conditions or (scale == 1.0 and beat_scale is None):
        return None
    reach = config.get("beat_guidance_reach") if beat_scale is not None else None
    return Guidance(float(scale), beat_scale, conditions[BEAT] if reach is not None else None, reach)


@dataclass(frozen=True)
class FluxGuidance:
    """Flux guidance of one sampling call: ``scale`` (per unit of log flux error, the shift of the predicted
    clean latents in latent standard deviations, or with ``smoothing`` the share of their difference from
    their smoothed self), the codec's ``spectral_flux`` (normalised latents
    ``[B, D, T]`` -> dB ``[B, T - 1]``, differentiable), the video's ``pace [B, T]`` at each latent frame
    (beats per second, NaN where there is no video) and ``flux_map`` (``[xs, ys]``: the flux of training
    music under windows of that pace, :func:`~vmas_diffusion.conditions.fit_quantile_map`),
    ``smoothing`` (0: the gradient step; > 0: the standard deviation, in latent frames, of the Gaussian
    over time that the smoothing step pulls towards), ``contrast`` (the map's log flux stretched by this
    factor around ``pivot`` dB per frame: > 1 asks calmer music of calm videos) and ``keep`` (``[B, T]``,
    the share of the step each latent frame takes; None: all of it)."""

    scale: float
    spectral_flux: Callable[[torch.Tensor], torch.Tensor]
    pace: torch.Tensor
    flux_map: list
    smoothing: float = 0.0
    contrast: float = 1.0
    pivot: float = 2.0
    keep: Optional[torch.Tensor] = None

    def window_target(self, start: int, length: int) -> torch.Tensor:
        """``[B]``: the log of the flux the music should have in the latent frames ``[start, start + length)``:
        the map at the window's mean pace, as it was fitted on training windows, stretched by ``contrast``
        (NaN: no target)."""
        pace = self.pace[:, start : start + length].nanmean(dim=1)
        target = interpolate_map(pace.nan_to_num(0.0), self.flux_map).clamp_min(1e-6).log()
        pivot = math.log(self.pivot)
        return (pivot + self.contrast * (target - pivot)).masked_fill(pace.isnan(), float("nan"))

    def clean_shift(self, clean: torch.Tensor, log_target: torch.Tensor, start: int = 0) -> torch.Tensor:
        """The step ``[B, D, T]`` to add to the predicted clean latents ``clean`` of the window from latent frame
        ``start`` whose target is ``log_target [B]`` (zero for items without one), from the error between
        their log flux and it, clamped to ±1 (a factor of e), times ``keep`` frame by frame. Without
        ``smoothing``: ``-scale * error`` along the unit-RMS direction in which the log flux rises fastest,
        so one step moves the latents by at most ``scale`` standard deviations (RMS). With it:
        ``-clamp(scale * error, -1, 1)`` times the latents' difference from their smoothed self, so a pull
        of 1 replaces them by the smoothed version (a push sharpens them)."""
        x = clean.detach().float()
        if self.smoothing:
            pull = (self.scale * self._error(self._log_flux(x), log_target)).clamp(-1.0, 1.0)
            shift = -pull[:, None, None] * (x - smooth_over_time(x, self.smoothing))
        else:
            with torch.enable_grad():
                x.requires_grad_(True)
                log_flux = self._log_flux(x)
                (grad,) = torch.autograd.grad(log_flux.sum(), x)
            unit = grad / grad.pow(2).mean(dim=(1, 2), keepdim=True).sqrt().clamp_min(1e-12)
            shift = -self.scale * self._error(log_flux.detach(), log_target)[:, None, None] * unit
        if self.keep is not None:
            shift = shift * self.keep[:, None, start : start + x.shape[-1]].to(shift)
        return shift.to(clean.dtype)

    def _log_flux(self, x: torch.Tensor) -> torch.Tensor:
        """``[B]``: the log of the mean spectral flux of latents ``x [B, D, T]``."""
        return self.spectral_flux(x).mean(dim=-1).clamp_min(1e-6).log()

    @staticmethod
    def _error(log_flux: torch.Tensor, log_target: torch.Tensor) -> torch.Tensor:
        """``[B]``: log flux minus log target, clamped to ±1; 0 for items without a target (NaN)."""
        return (log_flux - log_target.to(log_flux)).nan_to_num(0.0).clamp(-1.0, 1.0)


def smooth_over_time(x: torch.Tensor, std: float) -> torch.Tensor:
    """``x [B, D, T]`` convolved over time with a normalised Gaussian of ``std`` frames (edges replicated):
    a positive kernel summing to one, so no band's total variation, hence its rises, can grow."""
    radius = max(1, int(math.ceil(3.0 * std)))
    kernel = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) / std) ** 2)
    batch, dim, frames = x.shape
    rows = F.pad(x.reshape(batch * dim, 1, frames), (radius, radius), mode="replicate")
    return F.conv1d(rows, (kernel / kernel.sum()).view(1, 1, -1)).reshape(batch, dim, frames)


def plan_flux_guidance(conditions: Optional[Dict[str, Condition]], num_frames: int, frame_rate: float,
                       scale: float, flux_map, spectral_flux, window_seconds: float, smoothing_seconds: float = 0.0,
                       reach: float = 0.0, contrast: float = 1.0, pivot: float = 2.0) -> Optional[FluxGuidance]:
    """The flux guidance of a sampling call of ``num_frames`` latent frames at ``frame_rate``, or None when
    ``scale`` is 0 or there is no beat condition (nothing says how busy the video is). The pace at each
    frame is the video's visual beats per second around it (:func:`~vmas_diffusion.conditions.local_pace`
    of the beat over ``window_seconds``); ``smoothing_seconds`` > 0 takes the smoothing step; with a
    ``reach`` > 0 (seconds) each frame takes the step times one minus the strongest visual beat within it
    (:func:`beat_nearby`), so the hits on the video's beats stay as the model made them."""
    if not scale or BEAT not in (conditions or {}):
        return None
    beat = conditions[BEAT]
    frames = torch.arange(num_frames, device=beat.tensor.device)
    beats = beats_per_second(local_pace(beat, window_seconds), frames, frame_rate)
    keep = None if not reach else 1.0 - beat_nearby(beat, frames, frame_rate, reach)
    return FluxGuidance(float(scale), spectral_flux, beats, flux_map, float(smoothing_seconds) * frame_rate,
                        float(contrast), float(pivot), keep)


def beats_per_second(pace: Condition, frames: torch.Tensor, frame_rate: float) -> torch.Tensor:
    """``[B, N]``: the visual beats per second of a :func:`~vmas_diffusion.conditions.local_pace` at music
    frames ``frames [N]`` (absolute indices at ``frame_rate``), NaN where there is no video: what both
    pace controls read."""
    values, valid = frame_values(pace, frames, frame_rate)
    return values[..., 0].float().masked_fill(~valid, float("nan"))


def check_temperature_map(value, name: str = "temperature_map") -> Optional[str]:
    """The problem with a pace temperature map, or None when ``value`` is None or ``[paces, temperatures]``
    (beats per second increasing, temperatures finite and > 0)."""
    if value is None:
        return None
    if not check_quantile_map(value) or not all(t > 0 for t in value[1]):
        return f"{name} must be [[beats/s, increasing], [temperatures > 0]] of equal length, or None (got {value!r})"
    return None


@dataclass(frozen=True)
class PaceTemperature:
    """The AR's sampling temperature by the video's local pace: ``temperature_map`` (``[beats/s,
    temperatures]``, piecewise linear) read at the video's visual beats per second around each frame
    (``pace``: :func:`~vmas_diffusion.conditions.local_pace` of the beat), ``fallback`` where there is no
    video. A calm video gets the cooler, more regular draws that hold notes; a busy one the hotter draws
    that play more of them, so the music's density follows the footage in one draw."""

    pace: Condition
    temperature_map: list
    fallback: float

    def at(self, frames: torch.Tensor, frame_rate: float) -> torch.Tensor:
        """``[B, N]``: the temperature at music frames ``frames [N]`` (absolute indices at ``frame_rate``)."""
        beats = beats_per_second(self.pace, frames, frame_rate)
        return interpolate_map(beats.nan_to_num(0.0), self.temperature_map).masked_fill(beats.isnan(), self.fallback)


def plan_pace_temperature(conditions: Optional[Dict[str, Condition]], temperature_map, fallback: float,
                          window_seconds: float) -> Optional[PaceTemperature]:
    """The pace temperature of a sampling call, or None without a map or a beat condition (then the
    constant ``fallback`` applies)."""
    if temperature_map is None or BEAT not in (conditions or {}):
        return None
    return PaceTemperature(local_pace(conditions[BEAT], window_seconds), temperature_map, float(fallback))
