"""Latent diffusion transformer (DiT) over continuous codec latents ``[B, D, T]``.

The LDM backend: a transformer denoiser over normalised codec latents (one token per
latent frame, at the codec's frame rate), conditioned on

* the timestep, through adaLN-Zero modulation of every block (DiT),
* the video condition (``"video"``, ``[B, Tv, Dv]`` at the video encoder's rate) and the
  beat condition (``"beat"``, ``[B, Tb, 1]``), each fused as the recipe says:
  ``"cross"`` (cross-attention tokens), ``"sum"`` (resampled to the latent frame rate
  with :meth:`Condition.resample` and added per frame), ``"prepend"`` (prefix tokens
  of the self-attention sequence) or ``"adaln"`` (resampled likewise, embedded with a little
  temporal context and added to the timestep embedding of each frame, so it modulates every
  block frame by frame: a pathway the denoiser cannot ignore as easily as one summed input).
  With ``pace_seconds > 0`` a local pace (:func:`~vmas_diffusion.conditions.pace_condition`: the
  ``"pace"`` condition when given, which ``pace_source="music"`` training fills with the target
  music's own; else the video's, read off the beat and mapped by ``pace_map``) enters each frame the
  beat's way ("sum" or "adaln"): whether the music should be calm or busy there.

Time-aligned condition tokens carry the same sinusoidal position as the latent frame
at the same instant, so cross-attention can line video events up with music frames.

Training (:meth:`LatentDiT.forward_train`) draws timesteps and noise from a diffusers
``DDPMScheduler`` built from the config (``"v_prediction"`` or ``"epsilon"``), or from a
``FlowMatchEulerDiscreteScheduler`` for ``"flow"`` (rectified flow, target
``noise - x0``), and drops all conditions together for a ``cond_dropout`` share of the
batch so classifier-free guidance has a learned unconditional branch.
:meth:`LatentDiT.make_scheduler` builds inference schedulers (DDPM, DDIM, DPM-Solver++,
Euler) consistent with that training schedule, so samplers swap without retraining.

Generation longer than ``max_duration`` runs in windows that overlap by
``window_overlap`` seconds; the overlap is in-painted RePaint-style: before every
denoising step, the window's leading frames are replaced by the already generated
latents noised to the current step's level, and set to them exactly at the end.
"""

from dataclasses import replace
import inspect
import math
from typing import Callable, Dict, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.training_utils import EMAModel
from diffusers.utils.torch_utils import randn_tensor
from torch import nn
from tqdm.auto import tqdm

from ...conditions import (
    BEAT,
    PACE,
    PACE_FEATURES,
    PACE_SOURCES,
    VIDEO,
    Condition,
    check_pace_map,
    check_quantile_map,
    pace_condition,
    pace_window_seconds,
)
from ...errors import ConfigError, InputError
from ...guidance import FluxGuidance, Guidance, check_beat_guidance, plan_flux_guidance, plan_guidance
from ...modules.condition_fusion import FusedConditions, check_conditions, frame_values, window_tokens
from ...modules.transformer import Attention, FeedForward, sinusoidal_embedding
from .base import GeneratorTrainOutput, MusicGenerator, StepEnd, draw_items, draw_items_normal, frame_weights, pool_frames

PREDICTION_TYPES = ("v_prediction", "epsilon", "flow")
FUSE_MODES = ("cross", "sum", "prepend", "adaln")
#: the modes that read a condition per latent frame (it needs a frame rate)
FRAME_MODES = ("sum", "adaln")
ALIGN_FEATURES = ("clean", "denoiser")
SCHEDULER_NAMES = ("ddpm", "ddim", "dpmsolver++", "euler")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
# flux guidance's sampling options (config defaults, each overridable per call) and their values when unset
FLUX_OPTIONS = {"flux_guidance_scale": 0.0, "flux_guidance_smoothing": 0.0, "flux_guidance_reach": 0.0,
                "flux_guidance_contrast": 1.0}

GeneratorArg = Optional[Union[torch.Generator, List[torch.Generator]]]


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x [B, T, H]`` scaled and shifted by ``shift, scale [B, 1, H]`` (per item) or
    ``[B, T, H]`` (per frame)."""
    return x * (1 + scale) + shift


class TimestepEmbedding(nn.Module):
    """``timestep [B]`` (float, ``0 .. num_train_timesteps``) -> ``[B, H]``: sinusoid, then a 2-layer MLP."""

    def __init__(self, hidden_size: int, frequency_dim: int = 256):
        super().__init__()
        self.frequency_dim = frequency_dim
        self.linear_1 = nn.Linear(frequency_dim, hidden_size)
        self.linear_2 = nn.Linear(hidden_size, hidden_size)

    def forward(self, timestep: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal_embedding(timestep, self.frequency_dim).to(self.linear_1.weight.dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


class FrameModulation(nn.Module):
    """An ``"adaln"`` condition's embedding: values ``[B, T, D]`` at the latent frame rate ->
    ``[B, T, H]``, added to the timestep embedding of each frame.

    A convolution over ``kernel`` frames lets each frame see the condition just before and after
    it (an onset's attack starts before the visual beat's peak); the output layer starts at zero,
    so adding this pathway to a trained model leaves its output unchanged until it learns.
    """

    def __init__(self, dim: int, hidden_size: int, kernel: int = 9):
        super().__init__()
        self.conv = nn.Conv1d(dim, hidden_size, kernel, padding=kernel // 2)
        self.out = nn.Linear(hidden_size, hidden_size)

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        hidden = F.silu(self.conv(values.transpose(1, 2)).transpose(1, 2))
        return self.out(hidden)


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block, ``x [B, T, H]`` -> ``[B, T, H]``.

    Self-attention and feed-forward are modulated (shift, scale, gate) by the conditioning
    embedding ``c``: ``[B, 1, H]`` (the timestep) or ``[B, T, H]`` (the timestep plus each
    frame's "adaln" conditions); the gates start at zero so every block starts as the identity.
    Cross-attention (when the model has cross conditions) sits between them, ungated, as in
    PixArt-alpha.
    """

    def __init__(self, hidden_size: int, num_heads: int, ffn_dim: int, cross_attention: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.self_attn = Attention(hidden_size, num_heads)
        self.norm_cross = nn.LayerNorm(hidden_size) if cross_attention else None
        self.cross_attn = Attention(hidden_size, num_heads) if cross_attention else None
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(hidden_size, ffn_dim)
        self.ada_ln = nn.Linear(hidden_size, 6 * hidden_size)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        context: Optional[torch.Tensor] = None,
        context_mask: Optional[torch.Tensor] = None,
        context_kv: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    ) -> torch.Tensor:
        """``context_kv``: ``cross_attn.project_kv(context)`` computed earlier (the context of a window is
        the same at every denoising step)."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada_ln(F.silu(c)).chunk(6, dim=-1)
        x = x + gate1 * self.self_attn(modulate(self.norm1(x), shift1, scale1), key_padding_mask=mask)
        if self.cross_attn is not None and context is not None:
            x = x + self.cross_attn(self.norm_cross(x), context=context, key_padding_mask=context_mask, kv=context_kv)
        return x + gate2 * self.ff(modulate(self.norm2(x), shift2, scale2))


class LatentDiT(ModelMixin, ConfigMixin, MusicGenerator):
    """Diffusion transformer generating normalised codec latents ``[B, latent_dim, T]``.

    Args:
        latent_dim: channels ``D`` of the codec latents.
        hidden_size, num_layers, num_heads, ffn_mult: transformer width, depth, heads and
            feed-forward width ``ffn_mult * hidden_size``.
        video_dim, beat_dim: channels of the ``"video"`` and ``"beat"`` conditions.
        frame_rate: latent frames per second (the codec's frame rate).
        max_duration: seconds generated in one window (the training clip length).
        window_overlap: seconds each window shares with the previous one (in-painted).
        prediction_type: ``"v_prediction"``, ``"epsilon"`` or ``"flow"`` (velocity ``noise - x0``).
        num_train_timesteps, beta_schedule, beta_start, beta_end: the DDPM training schedule
            (``beta_*`` unused by ``"flow"``).
        flow_shift: timestep shift of the flow schedule (1.0 = none; > 1 spends more steps at high noise).
        cond_dropout: share of training items whose conditions are all dropped (CFG).
        beat_dropout: share of training items (of those that keep their conditions) whose beat
            alone is dropped: trains the branch without the beat that beat guidance contrasts with.
        beat_guidance_scale: the sampling default of the beat's own guidance (None: plain CFG), and
        beat_guidance_reach: seconds around the visual beats where it applies in full (None: everywhere;
            :mod:`vmas_diffusion.guidance`).
        flux_guidance_scale: the sampling default of the flux guidance (0: off; it needs a codec with
            ``spectral_flux``, the mel codec), which pulls the music's spectral flux towards the
            ``flux_map``'s at the video's pace.
        flux_map: ``[xs, ys]``, the flux of training music (dB per frame, ``codec.spectral_flux``) under
            windows of video of that pace (visual beats per second); ``train_vmas_tiny.py restage`` fits it
            (:func:`~vmas_diffusion.training.pace_map.fit_flux_map_on_shards`, :mod:`vmas_diffusion.guidance`).
        flux_guidance_smoothing: the sampling default of how flux guidance steps (seconds; 0: along the flux
            gradient; > 0: towards the latents smoothed over time by a Gaussian of this standard deviation,
            which takes flux away without adding attacks of its own).
        flux_guidance_reach: the sampling default of where flux guidance holds off (seconds; 0: nowhere): each
            latent frame takes the step times one minus the strongest visual beat within this reach, so the
            hits the model puts on cuts and motion accents stay while the music between them is calmed.
        flux_guidance_contrast, flux_guidance_pivot: the map's log flux is stretched by ``contrast`` (the
            sampling default; 1: the map as fitted) around ``pivot`` dB per frame, so music under calm videos
            is asked to be calmer than under busy ones by more than training music is.
        video_fuse, beat_fuse: how each condition enters: ``"cross"``, ``"sum"``, ``"prepend"`` or
            ``"adaln"`` (per-frame modulation of every block).
        align_features: where :meth:`forward_train` takes ``music_embedding`` and
            ``onset_logits`` from: ``"clean"`` (an extra pass over the clean latents with
            conditions dropped, so the alignment losses see the music alone and cannot be
            met by copying the video condition) or ``"denoiser"`` (the denoising pass's own
            hidden states: free, but noisy and conditioned).
    """

    backend = "ldm"
    music_key = "latents"
    default_inference_steps = 25
    callback_tensor_inputs = ("latents",)

    @register_to_config
    def __init__(
        self,
        latent_dim: int = 128,
        hidden_size: int = 512,
        num_layers: int = 8,
        num_heads: int = 8,
        ffn_mult: float = 4.0,
        video_dim: int = 512,
        beat_dim: int = 1,
        frame_rate: float = 50.0,
        max_duration: float = 10.0,
        window_overlap: float = 2.0,
        prediction_type: str = "v_prediction",
        num_train_timesteps: int = 1000,
        beta_schedule: str = "squaredcos_cap_v2",
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        flow_shift: float = 1.0,
        cond_dropout: float = 0.2,
        beat_dropout: float = 0.0,
        video_fuse: str = "cross",
        beat_fuse: str = "sum",
        align_features: str = "clean",
        beat_guidance_scale: Optional[float] = None,
        beat_guidance_reach: Optional[float] = None,
        pace_seconds: float = 0.0,
        pace_source: str = "video",
        pace_map: Optional[list] = None,
        flux_guidance_scale: float = 0.0,
        flux_map: Optional[list] = None,
        flux_guidance_smoothing: float = 0.0,
        flux_guidance_reach: float = 0.0,
        flux_guidance_contrast: float = 1.0,
        flux_guidance_pivot: float = 2.0,
    ):
        super().__init__()
        self._check_config()
        self.fuse = {VIDEO: video_fuse, BEAT: beat_fuse}
        self.condition_dims = {VIDEO: video_dim, BEAT: beat_dim}
        has_cross = "cross" in self.fuse.values()

        self.proj_in = nn.Linear(latent_dim, hidden_size)
        self.time_embed = TimestepEmbedding(hidden_size)
        self.cond_proj = nn.ModuleDict({
            name: FrameModulation(dim, hidden_size) if self.fuse[name] == "adaln" else nn.Linear(dim, hidden_size)
            for name, dim in self.condition_dims.items()
        })
        # tells condition tokens apart when several share the context or the prefix
        self.cond_type = nn.ParameterDict(
            {name: nn.Parameter(torch.zeros(hidden_size)) for name in self.condition_dims}
        )
        ffn_dim = int(round(ffn_mult * hidden_size))
        self.blocks = nn.ModuleList(DiTBlock(hidden_size, num_heads, ffn_dim, has_cross) for _ in range(num_layers))
        self.norm_out = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.ada_ln_out = nn.Linear(hidden_size, 2 * hidden_size)
        self.proj_out = nn.Linear(hidden_size, latent_dim)
        self.beat_head = nn.Sequential(
            nn.LayerNorm(hidden_size),
            nn.Linear(hidden_size, hidden_size // 2),
            nn.GELU(),
            nn.Linear(hidden_size // 2, 1),
        )
        # no bias, zero at init: a model trained without the pace computes the same output when it is added
        self.pace_proj = nn.Linear(PACE_FEATURES, hidden_size, bias=False) if pace_seconds > 0 else None
        self._init_weights()
        if self.pace_proj is not None:
            nn.init.zeros_(self.pace_proj.weight)
        self._noise_scheduler = None

    # ------------------------------------------------------------------ setup
    def _check_config(self) -> None:
        cfg = self.config
        where = "LatentDiT config"
        for name in (
            "latent_dim",
            "hidden_size",
            "num_layers",
            "num_heads",
            "video_dim",
            "beat_dim",
            "num_train_timesteps",
        ):
            if int(getattr(cfg, name)) < 1:
                raise ConfigError(f"{where}: {name} must be >= 1, got {getattr(cfg, name)}")
        if cfg.hidden_size % cfg.num_heads:
            raise ConfigError(f"{where}: hidden_size {cfg.hidden_size} is not divisible by num_heads {cfg.num_heads}")
        if cfg.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"{where}: prediction_type {cfg.prediction_type!r}; valid: {', '.join(PREDICTION_TYPES)}")
        if cfg.beta_schedule not in BETA_SCHEDULES:
            raise ConfigError(f"{where}: beta_schedule {cfg.beta_schedule!r}; valid: {', '.join(BETA_SCHEDULES)}")
        for name in ("video_fuse", "beat_fuse"):
            if getattr(cfg, name) not in FUSE_MODES:
                raise ConfigError(f"{where}: {name} {getattr(cfg, name)!r}; valid: {', '.join(FUSE_MODES)}")
        if cfg.pace_seconds < 0 or (cfg.pace_seconds > 0 and (cfg.beat_fuse not in FRAME_MODES or cfg.beat_dim != 1)):
            raise ConfigError(f"{where}: pace_seconds must be >= 0, and > 0 reads the pace off a beat strength "
                              f"fused per frame (beat_dim=1, beat_fuse in {FRAME_MODES}); got pace_seconds="
                              f"{cfg.pace_seconds}, beat_dim={cfg.beat_dim}, beat_fuse={cfg.beat_fuse!r}")
        if cfg.pace_source not in PACE_SOURCES:
            raise ConfigError(f"{where}: pace_source {cfg.pace_source!r}; valid: {', '.join(PACE_SOURCES)}")
        if (problem := check_pace_map(cfg.pace_map, f"{where}: pace_map")) is not None:
            raise ConfigError(problem)
        if cfg.align_features not in ALIGN_FEATURES:
            raise ConfigError(f"{where}: align_features {cfg.align_features!r}; valid: {', '.join(ALIGN_FEATURES)}")
        for name in ("cond_dropout", "beat_dropout"):
            if not 0.0 <= getattr(cfg, name) < 1.0:
                raise ConfigError(f"{where}: {name} must be in [0, 1), got {getattr(cfg, name)}")
        for name in ("beat_guidance_scale", "beat_guidance_reach", *FLUX_OPTIONS):
            if (problem := check_beat_guidance(cfg.get(name), f"{where}: {name}")) is not None:
                raise ConfigError(problem)
        pivot = cfg.flux_guidance_pivot
        if isinstance(pivot, bool) or not isinstance(pivot, (int, float)) or not math.isfinite(pivot) or pivot <= 0:
            raise ConfigError(f"{where}: flux_guidance_pivot must be > 0 (dB per frame), got {pivot!r}")
        if cfg.get("flux_map") is not None and not check_quantile_map(cfg.flux_map):
            raise ConfigError(f"{where}: flux_map must be [xs, ys] of finite numbers, xs increasing "
                              f"(fit_flux_map_on_shards' output), got {cfg.flux_map!r}")
        if cfg.get("flux_guidance_scale") and (cfg.get("flux_map") is None or cfg.beat_dim != 1):
            raise ConfigError(f"{where}: flux_guidance_scale > 0 reads the video's pace off a beat strength "
                              f"(beat_dim=1) through a flux_map; got beat_dim={cfg.beat_dim}, flux_map={cfg.get('flux_map')!r}")
        if not cfg.frame_rate > 0 or not cfg.flow_shift > 0 or cfg.ffn_mult <= 0:
            raise ConfigError(f"{where}: frame_rate, flow_shift and ffn_mult must be > 0")
        if round(cfg.max_duration * cfg.frame_rate) < 1:
            raise ConfigError(
                f"{where}: max_duration {cfg.max_duration} s holds no latent frame at {cfg.frame_rate} Hz"
            )
        if not 0 <= cfg.window_overlap < cfg.max_duration:
            raise ConfigError(
                f"{where}: window_overlap must be in [0, max_duration={cfg.max_duration}), got {cfg.window_overlap}"
            )

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.time_embed.linear_1.weight, std=0.02)
        nn.init.normal_(self.time_embed.linear_2.weight, std=0.02)
        for param in self.cond_type.values():
            nn.init.normal_(param, std=0.02)
        # adaLN-Zero: gates and the output projection start at zero, and so does the ungated cross-attention's
        # output (as in PixArt-alpha): every block starts as the identity, so a trained model can grow deeper
        for block in self.blocks:
            nn.init.zeros_(block.ada_ln.weight)
            nn.init.zeros_(block.ada_ln.bias)
            if block.cross_attn is not None:
                nn.init.zeros_(block.cross_attn.out_proj.weight)
        frame_outs = [proj.out for proj in self.cond_proj.values() if isinstance(proj, FrameModulation)]
        for layer in (self.ada_ln_out, self.proj_out, *frame_outs):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def window_frames(self) -> int:
        """Latent frames per generation window (``max_duration`` seconds)."""
        return max(1, int(round(self.config.max_duration * self.config.frame_rate)))

    @property
    def overlap_frames(self) -> int:
        """Latent frames shared by consecutive windows (``window_overlap`` seconds)."""
        return min(int(round(self.config.window_overlap * self.config.frame_rate)), self.window_frames - 1)

    # ------------------------------------------------------------------ schedulers
    @property
    def noise_scheduler(self):
        """The training noise scheduler built from the config (not a module, never saved)."""
        if self._noise_scheduler is None:
            cfg = self.config
            if cfg.prediction_type == "flow":
                self._noise_scheduler = FlowMatchEulerDiscreteScheduler(
                    num_train_timesteps=cfg.num_train_timesteps, shift=cfg.flow_shift
                )
            else:
                self._noise_scheduler = DDPMScheduler(**self._beta_kwargs())
        return self._noise_scheduler

    def _beta_kwargs(self) -> dict:
        cfg = self.config
        return dict(
            num_train_timesteps=cfg.num_train_timesteps,
            beta_schedule=cfg.beta_schedule,
            beta_start=cfg.beta_start,
            beta_end=cfg.beta_end,
            prediction_type=cfg.prediction_type,
        )

    # ------------------------------------------------------------------ the codec
    @classmethod
    def codec_config(cls, codec) -> dict:
        if not codec.is_continuous:
            raise ConfigError(f"the LDM backend needs a continuous codec; {type(codec).__name__} has no latents")
        shared = super().codec_config(codec)
        shared.update(latent_dim=int(codec.latent_dim))
        return shared

    def encode_music(self, codec, wav: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, C, S]`` -> normalised latents ``[B, D, T]``."""
        return codec.encode(wav)

    def decode_music(self, codec, target: torch.Tensor) -> torch.Tensor:
        """Normalised latents ``[B, D, T]`` -> waveform ``[B, C, S]``."""
        return codec.decode(target)

    def make_scheduler(self, name: Optional[str] = None):
        """An inference scheduler matching the training schedule and ``prediction_type``.

        ``name``: ``"ddpm"``, ``"ddim"``, ``"dpmsolver++"`` (DPM-Solver++ 2M) or ``"euler"``
        (``EulerDiscreteScheduler``; ``FlowMatchEulerDiscreteScheduler`` for a flow model).
        A flow model offers ``"euler"`` and ``"dpmsolver++"`` (flow sigmas). None: ``"dpmsolver++"``.
        """
        name = name or "dpmsolver++"
        cfg = self.config
        if cfg.prediction_type == "flow":
            if name == "euler":
                return FlowMatchEulerDiscreteScheduler(
                    num_train_timesteps=cfg.num_train_timesteps, shift=cfg.flow_shift
                )
            if name == "dpmsolver++":
                return DPMSolverMultistepScheduler(
                    num_train_timesteps=cfg.num_train_timesteps,
                    prediction_type="flow_prediction",
                    use_flow_sigmas=True,
                    flow_shift=cfg.flow_shift,
                    algorithm_type="dpmsolver++",
                    solver_order=2,
                )
            raise InputError(f"scheduler {name!r} does not support prediction_type 'flow'; valid: euler, dpmsolver++")
        if name == "ddpm":
            return DDPMScheduler(**self._beta_kwargs(), clip_sample=False, timestep_spacing="trailing")
        if name == "ddim":
            # trailing spacing starts at the last training step (pure noise) even with few steps
            return DDIMScheduler(
                **self._beta_kwargs(), clip_sample=False, set_alpha_to_one=True, timestep_spacing="trailing"
            )
        if name == "dpmsolver++":
            return DPMSolverMultistepScheduler(**self._beta_kwargs(), algorithm_type="dpmsolver++", solver_order=2)
        if name == "euler":
            return EulerDiscreteScheduler(**self._beta_kwargs(), timestep_spacing="trailing")
        raise InputError(f"unknown scheduler {name!r}; valid: {', '.join(SCHEDULER_NAMES)}")

    def _check_scheduler(self, scheduler) -> None:
        """Raise InputError unless ``scheduler`` samples with this model's parametrisation."""
        cfg = self.config
        sched_cfg = getattr(scheduler, "config", None)
        if sched_cfg is None or not hasattr(scheduler, "step") or not hasattr(scheduler, "set_timesteps"):
            raise InputError(f"scheduler must be a diffusers scheduler, got {type(scheduler).__name__}")
        if type(scheduler).__name__.startswith("FlowMatch"):  # flow-matching schedulers have no prediction_type
            found = "flow"
        else:
            found = {"flow_prediction": "flow"}.get(sched_cfg.get("prediction_type"), sched_cfg.get("prediction_type"))
        if found != cfg.prediction_type:
            raise InputError(
                f"scheduler {type(scheduler).__name__} predicts {found!r}; this model was trained for "
                f"{cfg.prediction_type!r} (use generator.make_scheduler(...))"
            )
        if sched_cfg.get("num_train_timesteps") != cfg.num_train_timesteps:
            raise InputError(
                f"scheduler has num_train_timesteps={sched_cfg.get('num_train_timesteps')}; "
                f"the model was trained with {cfg.num_train_timesteps}"
            )

    # ------------------------------------------------------------------ conditions
    def check_conditions(self, conditions: Dict[str, Condition], batch_size: Optional[int] = None) -> int:
        """Validate ``conditions`` (:func:`~vmas_diffusion.modules.condition_fusion.check_conditions`) and
        return the batch size (``batch_size`` or 1 when there are none). A missing name counts as dropped."""
        if conditions is None:  # None is for "no conditions" elsewhere; here the caller must say {}
            raise InputError("LatentDiT: conditions must be a dict[str, Condition], got NoneType")
        per_frame = [name for name, mode in self.fuse.items() if mode in FRAME_MODES]
        widths = {**self.condition_dims, **({PACE: PACE_FEATURES} if self.pace_proj is not None else {})}
        found = check_conditions(conditions, widths, batch_size, "LatentDiT", time_aligned=per_frame + [PACE])
        return 1 if found is None else found

    def fuse_conditions(
        self, conditions: Dict[str, Condition], num_frames: int, start_frame: int = 0
    ) -> FusedConditions:
        """Project ``conditions`` for latent frames ``start_frame .. start_frame + num_frames``.

        "sum" and "adaln" conditions are resampled to the latent frame rate and sliced to the window
        (``frame_add``, ``frame_modulation``); time-aligned "cross"/"prepend" tokens are kept when they fall inside the
        window and get the sinusoidal position of their instant in window frames, plus a learned
        type embedding per condition.
        """
        ref = self.proj_in.weight
        tokens = {"cross": [], "prepend": []}
        per_frame = {mode: None for mode in FRAME_MODES}
        for name in self.condition_dims:  # fixed order, whatever the dict's
            if name not in conditions:
                continue
            cond = conditions[name].to(ref.device, ref.dtype)
            proj, mode = self.cond_proj[name], self.fuse[name]
            if mode in FRAME_MODES:
                frames = torch.arange(start_frame, start_frame + num_frames, device=ref.device)
                values, valid = frame_values(cond, frames, self.config.frame_rate)
                emb = proj(values) * valid[..., None].to(ref.dtype)  # no condition = no contribution
                if name == BEAT and self.pace_proj is not None:
                    pace = pace_condition(conditions, self.config.pace_seconds, self.config.pace_map).to(ref.device, ref.dtype)
                    pace, _ = frame_values(pace, frames, self.config.frame_rate)
                    emb = emb + self.pace_proj(pace)
                per_frame[mode] = emb if per_frame[mode] is None else per_frame[mode] + emb
                continue
            found = window_tokens(cond, proj, start_frame, num_frames, self.config.frame_rate)
            if found is not None:
                tokens[mode].append((found[0] + self.cond_type[name], found[1]))
        fused = FusedConditions.from_tokens(tokens, frame_add=per_frame["sum"])
        fused.frame_modulation = per_frame["adaln"]
        return fused

    @staticmethod
    def null_conditions(conditions: Dict[str, Condition]) -> Dict[str, Condition]:
        """The dropped form of every condition (what CFG's unconditional branch sees)."""
        return {name: cond.null() for name, cond in conditions.items()}

    # ------------------------------------------------------------------ the network
    def _check_sample(self, sample: torch.Tensor, name: str = "sample") -> None:
        if not isinstance(sample, torch.Tensor) or sample.dim() != 3 or sample.shape[1] != self.config.latent_dim:
            shape = tuple(sample.shape) if isinstance(sample, torch.Tensor) else type(sample).__name__
            raise InputError(f"{name} must be a tensor [B, D={self.config.latent_dim}, T], got {shape}")
        if sample.shape[-1] == 0:
            raise InputError(f"{name} has no frames (T = 0)")
        if not sample.is_floating_point():
            raise InputError(f"{name} must be float, got {sample.dtype}")

    @staticmethod
    def _batch_timesteps(timestep, batch: int, device) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.dim() != 1 or t.shape[0] != batch:
            raise InputError(f"timestep must be a scalar or a tensor [B={batch}], got shape {tuple(t.shape)}")
        return t.float()

    def _denoise(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        prepared: FusedConditions,
        frame_mask: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``sample [B, D, T]``, ``timestep [B]`` -> (model output ``[B, D, T]``, hidden states ``[B, T, H]``)."""
        b, _, t = sample.shape
        dtype = self.proj_in.weight.dtype
        x = self.proj_in(sample.transpose(1, 2).to(dtype))
        x = x + sinusoidal_embedding(torch.arange(t, device=x.device), x.shape[-1]).to(dtype)
        if prepared.frame_add is not None:
            x = x + prepared.frame_add
        c = self.time_embed(timestep)[:, None]  # [B, 1, H]
        c_frames = c if prepared.frame_modulation is None else c + prepared.frame_modulation  # [B, 1 or T, H]
        c_blocks = c_frames
        mask = frame_mask
        num_prefix = 0
        if prepared.prefix is not None:
            num_prefix = prepared.prefix.shape[1]
            x = torch.cat([prepared.prefix, x], dim=1)
            frames_valid = frame_mask if frame_mask is not None else torch.ones(b, t, dtype=torch.bool, device=x.device)
            mask = torch.cat([prepared.prefix_mask, frames_valid], dim=1)
            if prepared.frame_modulation is not None:  # prefix tokens get the timestep alone
                c_blocks = torch.cat([c.expand(-1, num_prefix, -1), c_frames], dim=1)
        cross_kv = prepared.cross_kv or [None] * len(self.blocks)
        for block, kv in zip(self.blocks, cross_kv):
            x = block(x, c_blocks, mask, prepared.cross, prepared.cross_mask, kv)
        hidden = x[:, num_prefix:]
        shift, scale = self.ada_ln_out(F.silu(c_frames)).chunk(2, dim=-1)
        out = self.proj_out(modulate(self.norm_out(hidden), shift, scale))
        return out.transpose(1, 2), hidden

    def forward(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float],
        conditions: Dict[str, Condition],
        frame_mask: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """The denoiser: ``sample [B, D, T]`` at ``timestep`` (``[B]`` or scalar) -> ``[B, D, T]``.

        The output is the ``prediction_type`` target: noise (epsilon), velocity
        ``alpha * noise - sigma * x0`` (v_prediction) or ``noise - x0`` (flow).
        ``frame_mask [B, T]`` (True = valid) hides padding frames from attention.
        """
        self._check_sample(sample)
        batch = self.check_conditions(conditions, sample.shape[0])
        if frame_mask is not None and tuple(frame_mask.shape) != (batch, sample.shape[-1]):
            raise InputError(f"frame_mask must be [B, T] = {(batch, sample.shape[-1])}, got {tuple(frame_mask.shape)}")
        prepared = self.fuse_conditions(conditions, sample.shape[-1])
        timestep = self._batch_timesteps(timestep, batch, sample.device)
        return self._denoise(sample, timestep, prepared, None if frame_mask is None else frame_mask.bool())[0]

    # ------------------------------------------------------------------ training
    def forward_train(self, batch: dict) -> GeneratorTrainOutput:
        """Diffusion loss on ``batch["latents"] [B, D, T]`` under ``batch["conditions"]``.

        Optional ``batch["mask"] [B, T]`` (True = real music frame) and
        ``batch["generator"]`` (a ``torch.Generator`` for timesteps, noise and condition
        dropout). Returns ``losses={"diffusion": masked MSE}`` (``loss_counts``: the valid frames),
        ``music_embedding [B, H]`` (masked mean of hidden states) and ``onset_logits [B, T]`` (beat head).
        """
        if not isinstance(batch, dict) or "latents" not in batch or "conditions" not in batch:
            keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise InputError(f"LatentDiT training batch needs 'latents' and 'conditions', got {keys}")
        latents = batch["latents"]
        self._check_sample(latents, "batch['latents']")
        conditions = batch["conditions"]
        b, _, t = latents.shape
        self.check_conditions(conditions, b)
        mask = batch.get("mask")
        if mask is not None:
            if tuple(mask.shape) != (b, t):
                raise InputError(f"batch['mask'] must be [B, T] = {(b, t)}, got {tuple(mask.shape)}")
            mask = mask.to(latents.device).bool()
        gen = batch.get("generator")
        device = latents.device
        latents = latents.to(self.proj_in.weight.dtype)

        def draw(fn, size, **kwargs):  # one generator, or one per item (see draw_items)
            return draw_items(fn, size, gen, device, **kwargs)

        cfg = self.config
        sched = self.noise_scheduler
        # one draw per item first, the noise (its size follows the batch's padding) last: so every
        # item's draws come out the same in any batch
        index = draw(torch.randint, (b,), low=0, high=cfg.num_train_timesteps)
        cond_in = conditions
        if self.training and cfg.cond_dropout > 0 and conditions:
            drop = draw(torch.rand, (b,)) < cfg.cond_dropout
            cond_in = {name: cond.drop_items(drop) for name, cond in conditions.items()}
        if self.training and cfg.beat_dropout > 0 and BEAT in cond_in:
            drop_beat = draw(torch.rand, (b,)) < cfg.beat_dropout
            cond_in = {**cond_in, BEAT: cond_in[BEAT].drop_items(drop_beat)}
        noise = draw_items_normal(latents.shape, gen, device).to(latents.dtype)
        if cfg.prediction_type == "flow":
            sigma = sched.sigmas[index.cpu()].to(device=device, dtype=latents.dtype)
            timesteps = sched.timesteps[index.cpu()].to(device)
            s = sigma[:, None, None]
            noisy = (1 - s) * latents + s * noise
            target = noise - latents
        else:
            timesteps = index
            noisy = sched.add_noise(latents, noise, timesteps)
            target = noise if cfg.prediction_type == "epsilon" else sched.get_velocity(latents, noise, timesteps)

        prepared = self.fuse_conditions(cond_in, t)
        output, hidden = self._denoise(noisy, timesteps.float(), prepared, mask)

        err = (output.float() - target.float()).pow(2).mean(dim=1)  # [B, T]
        weight = frame_weights(batch, b, t, device)
        if weight is not None:
            err = err * weight
        loss = _masked_mean(err, mask)

        if cfg.align_features == "clean":
            hidden = self._clean_hidden(latents, self.null_conditions(conditions), mask)
        onset_logits = self.beat_head(hidden).squeeze(-1)
        return GeneratorTrainOutput(
            losses={"diffusion": loss},
            music_embedding=pool_frames(hidden, mask),
            onset_logits=onset_logits,
            loss_counts={"diffusion": torch.tensor(float(b * t), device=device) if mask is None else mask.sum()},
        )

    def _clean_hidden(self, latents: torch.Tensor, conditions: Dict[str, Condition], mask=None) -> torch.Tensor:
        """Hidden states ``[B, T, H]`` of clean ``latents`` (timestep 0) under ``conditions``."""
        zero = torch.zeros(latents.shape[0], device=latents.device)
        return self._denoise(latents, zero, self.fuse_conditions(conditions, latents.shape[-1]), mask)[1]

    def embed_music(self, target: torch.Tensor) -> torch.Tensor:
        """Latents ``[B, D, T]`` -> ``[B, H]``: the clean latents' hidden states with no condition, pooled."""
        self._check_sample(target, "latents")
        return pool_frames(self._clean_hidden(target.to(self.proj_in.weight.dtype), {}))

    def create_ema(self, decay: float = 0.9999, **ema_kwargs) -> EMAModel:
        """An exponential moving average of this model's weights (diffusers ``EMAModel``).

        Update it after each optimiser step with ``ema.step(model.parameters())``.
        ``ema.save_pretrained(dir)`` writes a normal model folder (the EMA weights, with the
        EMA state in config.json) that ``LatentDiT.from_pretrained(dir)`` loads for
        inference and ``EMAModel.from_pretrained(dir, model_cls=LatentDiT)`` resumes;
        ``ema.copy_to(model.parameters())`` puts the EMA weights into a live model.
        """
        return EMAModel(self.parameters(), decay=decay, model_cls=type(self), model_config=self.config, **ema_kwargs)

    # ------------------------------------------------------------------ sampling
    def _guided(
        self,
        sample: torch.Tensor,
        timestep: torch.Tensor,
        prepared: FusedConditions,
        guidance: Optional[Guidance],
        gate: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """One guided model call: with ``guidance`` the prepared conditions hold its branches
        (:meth:`Guidance.conditions`), which run as one batched forward and are combined (with the
        window's beat-scale ``gate``, :meth:`_window_gate`)."""
        b = sample.shape[0]
        branches = guidance.branches if guidance is not None else 1
        t = timestep.reshape(-1)[:1].float().expand(b * branches).to(sample.device)
        out = self._denoise(torch.cat([sample] * branches), t, prepared)[0]
        return out if guidance is None else guidance.combine(out, gate)

    def _window_gate(self, guidance: Optional[Guidance], start_frame: int, num_frames: int) -> Optional[torch.Tensor]:
        """The gate of a gated beat scale over a window's latent frames, ``[B, 1, T]`` (None when not gated):
        the same at every denoising step, so read once a window."""
        gate = None if guidance is None else guidance.gate(torch.arange(start_frame, start_frame + num_frames), self.config.frame_rate)
        return None if gate is None else gate[:, None, :]

    def guided_output(
        self,
        sample: torch.Tensor,
        timestep: Union[torch.Tensor, float],
        conditions: Dict[str, Condition],
        guidance_scale: float = 3.0,
        beat_guidance_scale: Optional[float] = None,
    ) -> torch.Tensor:
        """The classifier-free-guided model output for ``sample [B, D, T]`` -> ``[B, D, T]``:
        ``uncond + guidance_scale * (cond - uncond)``, both branches in one batched forward
        (the conditional branch alone when ``guidance_scale == 1`` or there are no conditions), with
        the beat's own guidance as :meth:`generate` applies it (default the config's).
        ``timestep`` is one scalar timestep; in a hand-written loop use :meth:`model_timestep`."""
        self._check_sample(sample)
        self.check_conditions(conditions, sample.shape[0])
        guidance, cond_in = self._guidance_plan(conditions, guidance_scale, beat_guidance_scale)
        prepared = self.fuse_conditions(cond_in, sample.shape[-1])
        return self._guided(sample, torch.as_tensor(timestep, device=sample.device), prepared, guidance,
                            self._window_gate(guidance, 0, sample.shape[-1]))

    def _guidance_plan(self, conditions: Dict[str, Condition], guidance_scale: float, beat_guidance_scale):
        """``(guidance or None, the conditions to fuse)``: the beat guidance is the argument, else the config's."""
        guidance = plan_guidance(conditions, guidance_scale, beat_guidance_scale, self.config)
        return guidance, conditions if guidance is None else guidance.conditions(conditions)

    def _flux_plan(self, conditions: Dict[str, Condition], num_frames: int, given: Dict[str, Optional[float]],
                   spectral_flux: Optional[Callable]) -> Optional[FluxGuidance]:
        """The call's flux guidance (None when off) from its ``given`` options (:data:`FLUX_OPTIONS`, None: the
        config's); InputError for a bad option, or guidance it cannot apply."""
        options = {}
        for name, default in FLUX_OPTIONS.items():
            value = self.config.get(name) if given.get(name) is None else given[name]
            options[name] = default if value is None else value
        for name, value in options.items():
            if (problem := check_beat_guidance(value, name)) is not None:
                raise InputError(problem)
        scale, smoothing, reach, contrast = options.values()
        if scale and (spectral_flux is None or self.config.get("flux_map") is None):
            raise InputError("flux guidance steers the music's spectral flux towards the flux_map's: it needs a "
                             "generator with a flux_map and a codec with spectral_flux (the mel codec; "
                             "generate_audio passes it); set flux_guidance_scale=0 to sample without it")
        return plan_flux_guidance(conditions, num_frames, self.config.frame_rate, scale, self.config.get("flux_map"),
                                  spectral_flux, pace_window_seconds(self.config), smoothing, reach,
                                  contrast, self.config.flux_guidance_pivot)

    def plan_windows(self, num_frames: int) -> List[Tuple[int, int, int]]:
        """``[(start, length, known), ...]`` windows covering ``num_frames`` latent frames.

        Each window but the first has ``length == window_frames`` and starts ``overlap_frames``
        before the previous one ends (earlier for the last, so it stays full length);
        its first ``known`` frames are already generated and get in-painted.
        """
        size, overlap = self.window_frames, self.overlap_frames
        if num_frames <= size:
            return [(0, num_frames, 0)]
        windows, end = [(0, size, 0)], size
        while end < num_frames:
            start = min(end - overlap, num_frames - size)
            windows.append((start, size, end - start))
            end = start + size
        return windows

    def model_timestep(self, scheduler, step_index: int) -> torch.Tensor:
        """The timestep the model is given at loop step ``step_index``: ``scheduler.timesteps[i]``,
        except for flow models, which get ``sigma * num_train_timesteps`` from the solver's own sigma
        (DPM-Solver truncates its flow timesteps to ints; the model should see the exact noise level)."""
        if self.config.prediction_type == "flow":
            return scheduler.sigmas[step_index] * self.config.num_train_timesteps
        return scheduler.timesteps[step_index]

    @staticmethod
    def _noise_to(scheduler, known: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """``known`` clean latents noised to ``timestep``'s level in the scheduler's sample space."""
        t = timestep.reshape(1).expand(known.shape[0])
        if hasattr(scheduler, "add_noise"):
            return scheduler.add_noise(known, noise, t)
        return scheduler.scale_noise(known, t, noise)  # flow-matching schedulers

    def _sample_window(
        self,
        prepared: FusedConditions,
        shape: Tuple[int, int, int],
        scheduler,
        num_inference_steps: int,
        guidance: Optional[Guidance],
        generator: GeneratorArg,
        known: Optional[torch.Tensor],
        step_end: StepEnd,
        noise: Optional[torch.Tensor] = None,
        start_frame: int = 0,
        flux: Optional[FluxGuidance] = None,
    ) -> torch.Tensor:
        """Run the denoising loop for one window ``shape = (B, D, T)``; the first
        ``known.shape[-1]`` frames are in-painted from ``known``. ``noise``: the window's initial
        noise (drawn from ``generator`` when None), then also the in-painting noise of ``known``;
        ``flux``: the call's flux guidance."""
        device, dtype = self.proj_in.weight.device, self.proj_in.weight.dtype
        if prepared.cross is not None and self.blocks[0].cross_attn is not None:
            # the context is the same at every step: project its keys and values once per window
            kv = [block.cross_attn.project_kv(prepared.cross) for block in self.blocks]
            prepared = replace(prepared, cross_kv=kv)
        gate = self._window_gate(guidance, start_frame, shape[-1])
        flux_target = None if flux is None else flux.window_target(start_frame, shape[-1]).to(device)
        scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = {}
        if "generator" in inspect.signature(scheduler.step).parameters:
            step_kwargs["generator"] = generator
        given = noise is not None
        sample = noise.to(device, dtype) if given else randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        sample = sample * getattr(scheduler, "init_noise_sigma", 1.0)  # flow schedulers start at unit noise
        k = 0 if known is None else known.shape[-1]
        for i, t in enumerate(scheduler.timesteps):
            if k:  # given latents fix the in-painting noise too, so the output depends on them alone
                if given:
                    fresh = noise[..., :k].to(device, dtype)
                else:
                    fresh = randn_tensor(known.shape, generator=generator, device=device, dtype=dtype)
                sample = torch.cat([self._noise_to(scheduler, known, fresh, t), sample[..., k:]], dim=-1)
            model_input = scheduler.scale_model_input(sample, t) if hasattr(scheduler, "scale_model_input") else sample
            timestep = self.model_timestep(scheduler, i)
            output = self._guided(model_input, timestep, prepared, guidance, gate)
            if flux is not None:
                output = self._steer_flux(output, model_input, timestep, flux, flux_target, start_frame)
            sample = scheduler.step(output, t, sample, **step_kwargs).prev_sample
            sample = step_end(t, {"latents": sample})["latents"]
        if k:
            sample = torch.cat([known, sample[..., k:]], dim=-1)
        return sample

    def _steer_flux(self, output: torch.Tensor, sample: torch.Tensor, timestep, flux: FluxGuidance,
                    log_target: torch.Tensor, start_frame: int = 0) -> torch.Tensor:
        """The model output that predicts the clean latents moved by ``flux.clean_shift``, at the same
        noisy ``sample``: so any solver takes the step as if the model had predicted them."""
        t = float(torch.as_tensor(timestep).reshape(-1)[0])
        if self.config.prediction_type == "flow":  # sample = (1 - s) x0 + s noise, output = noise - x0
            sigma = max(t / self.config.num_train_timesteps, 1e-4)
            return output - flux.clean_shift(sample - sigma * output, log_target, start_frame) / sigma
        ac = self.noise_scheduler.alphas_cumprod[int(round(t))].to(sample)
        alpha, sigma = ac.sqrt(), (1 - ac).sqrt().clamp_min(1e-4)
        if self.config.prediction_type == "v_prediction":  # output = alpha noise - sigma x0
            return output - flux.clean_shift(alpha * sample - sigma * output, log_target, start_frame) / sigma
        return output - alpha * flux.clean_shift((sample - sigma * output) / alpha, log_target, start_frame) / sigma  # epsilon

    def codec_sampling_kwargs(self, codec) -> dict:
        """The codec's ``spectral_flux``, which flux guidance steers (when the codec has one)."""
        flux = getattr(codec, "spectral_flux", None)
        return {} if flux is None else {"spectral_flux": flux}

    @torch.no_grad()
    def generate(
        self,
        conditions: Dict[str, Condition],
        num_frames: int,
        scheduler=None,
        num_inference_steps: Optional[int] = None,
        guidance_scale: float = 3.0,
        generator: GeneratorArg = None,
        progress_bar: Optional[Callable] = None,
        batch_size: Optional[int] = None,
        latents: Optional[torch.Tensor] = None,
        callback: Optional[Callable] = None,
        beat_guidance_scale: Optional[float] = None,
        flux_guidance_scale: Optional[float] = None,
        flux_guidance_smoothing: Optional[float] = None,
        flux_guidance_reach: Optional[float] = None,
        flux_guidance_contrast: Optional[float] = None,
        spectral_flux: Optional[Callable] = None,
    ) -> torch.Tensor:
        """Sample normalised latents ``[B, latent_dim, num_frames]``.

        Args:
            conditions: ``{"video": ..., "beat": ...}`` (missing names are dropped); ``B`` comes
                from them (or, when there are none, ``batch_size``, a generator list's length, or 1).
            num_frames: latent frames (duration x ``frame_rate``); past ``max_duration``
                generation runs in windows whose overlap is in-painted.
            scheduler: a diffusers scheduler matching the model (default
                ``make_scheduler("dpmsolver++")``); its state is reset per window.
            num_inference_steps: denoising steps per window (default ``default_inference_steps``, 25).
            guidance_scale: classifier-free guidance (1 = conditional branch only).
            generator: a ``torch.Generator`` or a list of ``B`` (one per item, so a batch
                equals the single runs).
            progress_bar: ``callable(total=N) -> tqdm``, e.g. a pipeline's ``progress_bar``.
            beat_guidance_scale: a guidance of its own for the beat condition (default the config's,
                None = off): a third branch without the beat, and the output
                ``null + guidance_scale * (no_beat - null) + beat_guidance_scale * (cond - no_beat)``.
                The beat moves a small model's prediction far less than the video does (its timing
                is a small part of the loss), so one scale for both leaves it unheard. With the config's
                ``beat_guidance_reach`` it is gated by the visual beats (plain CFG between them).
            latents: the initial noise ``[B, latent_dim, num_frames]`` instead of drawing it from
                ``generator`` (one window: the same output as a generator that draws this noise).
                Each window starts from its frames of it, and past the first window the overlap is
                in-painted with its frames of it too, so the output depends on ``latents`` alone
                (with a deterministic scheduler such as the default DPM-Solver++).
            callback: ``callback(step, timestep, {"latents": [B, D, window]}) -> dict | None`` after
                every denoising step (:class:`~vmas_diffusion.models.generators.base.StepEnd`); a
                returned ``"latents"`` replaces the window's current sample.
            flux_guidance_scale: the flux guidance (default the config's; 0 = off): at every step the
                predicted clean latents move by ``scale`` latent standard deviations per unit of error
                between their log spectral flux and the log of ``flux_map`` at the video's pace
                (:class:`~vmas_diffusion.guidance.FluxGuidance`); it needs a beat condition (without one
                it is off) and ``spectral_flux``.
            flux_guidance_smoothing: how the flux guidance steps (default the config's): 0 along the flux
                gradient as above; > 0 (seconds) towards (or, to raise the flux, away from) the predicted clean
                latents smoothed over time by a Gaussian of this standard deviation, by ``scale x error``
                (clamped to ±1) of the difference.
            flux_guidance_reach: seconds around the visual beats where the flux guidance holds off (default the
                config's; 0: nowhere): each frame takes the step times one minus the strongest beat within reach.
            flux_guidance_contrast: the map's log flux stretched by this factor around the config's
                ``flux_guidance_pivot`` (default the config's; 1: the map as fitted).
            spectral_flux: the codec's ``spectral_flux`` (:meth:`generate_audio` passes it).
        """
        if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
            raise InputError(f"num_frames must be a positive int, got {num_frames!r}")
        if num_inference_steps is None:
            num_inference_steps = self.default_inference_steps
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale) or guidance_scale < 0:
            raise InputError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
        if not conditions and batch_size is None and isinstance(generator, (list, tuple)):
            batch_size = len(generator)  # unconditional: one item per generator
        batch = self.check_conditions(conditions, batch_size)
        if isinstance(generator, (list, tuple)):
            if len(generator) != batch:
                raise InputError(f"got {len(generator)} generators for a batch of {batch}")
            generator = list(generator)
        if scheduler is None:
            scheduler = self.make_scheduler()
        else:
            self._check_scheduler(scheduler)

        expected = (batch, self.config.latent_dim, num_frames)
        if latents is not None and (not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected):
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"latents must be [B, latent_dim, frames] = {expected} (frames: the duration x "
                             f"{self.config.frame_rate:g} Hz), got {got}")
        guidance, cond_in = self._guidance_plan(conditions, guidance_scale, beat_guidance_scale)
        flux = self._flux_plan(conditions, num_frames, {
            "flux_guidance_scale": flux_guidance_scale, "flux_guidance_smoothing": flux_guidance_smoothing,
            "flux_guidance_reach": flux_guidance_reach, "flux_guidance_contrast": flux_guidance_contrast}, spectral_flux)
        windows = self.plan_windows(num_frames)
        total = len(windows) * num_inference_steps
        bar = (
            progress_bar(total=total) if progress_bar is not None else tqdm(total=total, desc="LatentDiT", leave=False)
        )
        device, dtype = self.proj_in.weight.device, self.proj_in.weight.dtype
        noise, latents = latents, torch.zeros(batch, self.config.latent_dim, num_frames, device=device, dtype=dtype)
        with bar:
            step_end = StepEnd(bar, callback)
            for start, length, known in windows:
                prepared = self.fuse_conditions(cond_in, length, start)
                known_latents = latents[..., start : start + known] if known else None
                latents[..., start : start + length] = self._sample_window(
                    prepared,
                    (batch, self.config.latent_dim, length),
                    scheduler,
                    num_inference_steps,
                    guidance,
                    generator,
                    known_latents,
                    step_end,
                    None if noise is None else noise[..., start : start + length],
                    start,
                    flux,
                )
        return latents


def _masked_mean(values: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of ``values [B, T]`` over ``mask [B, T]`` (all when None)."""
    if mask is None:
        return values.mean()
    weights = mask.to(values.dtype)
    return (values * weights).sum() / weights.sum().clamp_min(1.0)
