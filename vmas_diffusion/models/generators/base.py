"""The generator interface every backend implements (:class:`MusicGenerator`).

A generator models music frames at the codec's frame rate given named conditions
(``dict[str, Condition]``, see :mod:`vmas_diffusion.conditions`). Everything that differs between
backends sits behind this interface, so the pipeline, training, evaluation, the app and the
scripts never ask which backend they hold (``backend`` is a label for people and file names):

* what the generator models and how it is made from music: :attr:`music_key` names the training
  target in a batch, :meth:`encode_music` / :meth:`decode_music` go through the codec
  (AR: codes ``[B, K, T]``; LDM: normalised latents ``[B, D, T]``), and :meth:`codec_config`
  checks the codec offers that form and says what the generator must agree on with it;
* ``forward_train(batch) -> GeneratorTrainOutput``: the backend's own generation losses
  (cross-entropy for AR, diffusion loss for LDM; each a mean, with the count it averages over in
  ``loss_counts``) plus what the alignment losses need:
  a pooled music embedding and per-frame onset logits from the beat head;
* ``generate(conditions, num_frames, ...)`` with the backend's own sampling defaults, and the one
  generate-and-decode path, :meth:`generate_audio`, that the pipeline, training validation and
  evaluation share; a backend that samples with a diffusers scheduler says so through
  :attr:`default_inference_steps` and builds it with :meth:`make_scheduler`;
* :meth:`embed_music`: the pooled music embedding of a target with every condition dropped
  (retrieval).

A training batch is a dict:
``music_key`` (``"codes"`` ``[B, K, T]`` long for AR, ``"latents"`` ``[B, D, T]`` for LDM),
``"conditions"`` ``dict[str, Condition]``, optional ``"mask"`` ``[B, T]`` bool (valid music frames),
optional ``"generator"``: a ``torch.Generator`` or one per item for the training draws,
optional ``"frame_weight"`` ``[B, T]``: how much each music frame's generation loss counts
(the recipe's ``losses.onset_emphasis``; see :func:`frame_weights`).
"""

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Tuple

import torch


@dataclass
class GeneratorTrainOutput:
    #: named generation losses (scalars), e.g. ``{"ce": ...}`` or ``{"diffusion": ...}``
    losses: Dict[str, torch.Tensor] = field(default_factory=dict)
    #: ``[B, D]`` pooled hidden states over the real music, for the contrastive loss
    music_embedding: Optional[torch.Tensor] = None
    #: ``[B, T]`` beat-head logits of a music onset per music frame
    onset_logits: Optional[torch.Tensor] = None
    #: per loss, how many elements its value averages (e.g. valid frames), a detached scalar: training on
    #: several processes weighs each process's value by it, so the objective is the mean over the global
    #: batch's elements, as on one process. A loss without a count averages the batch's items.
    loss_counts: Dict[str, torch.Tensor] = field(default_factory=dict)


class MusicGenerator:
    """Mixin declaring the generator interface; concrete generators are also ``ModelMixin, ConfigMixin``."""

    #: a read-only label ("ar", "ldm", ...): the registry name, for messages and file names
    backend: str = ""
    #: the batch key of the training target (``"codes"`` or ``"latents"``), as data preparation writes it
    music_key: str = ""
    #: steps of a scheduler-driven sampler when the caller gives none; None: sampling takes no steps
    #: and no scheduler (``num_inference_steps`` is ignored)
    default_inference_steps: Optional[int] = None
    #: the tensors ``generate`` hands its per-step ``callback`` (:class:`StepEnd`), e.g. ``("latents",)``;
    #: empty: the backend has no sampling steps to call back from
    callback_tensor_inputs: Tuple[str, ...] = ()

    @property
    def needs_scheduler(self) -> bool:
        """True when sampling runs a diffusers scheduler the pipeline holds (``scheduler`` component)."""
        return self.default_inference_steps is not None

    # ------------------------------------------------------------------ the codec side
    @classmethod
    def codec_config(cls, codec) -> dict:
        """Config values the generator must share with ``codec`` (``frame_rate`` and the target's
        sizes); raises ConfigError when the codec lacks the form this backend models."""
        return {"frame_rate": float(codec.frame_rate)}

    def encode_music(self, codec, wav: torch.Tensor) -> torch.Tensor:
        """Waveform ``[B, C, S]`` at the codec's rate -> this generator's target (``batch[music_key]``)."""
        raise NotImplementedError

    def decode_music(self, codec, target: torch.Tensor) -> torch.Tensor:
        """This generator's target -> waveform ``[B, C, S]`` (the inverse of :meth:`encode_music`)."""
        raise NotImplementedError

    def make_scheduler(self, name: Optional[str] = None):
        """The inference scheduler sampling needs (None when it needs none); ``name`` picks one by name."""
        return None

    # ------------------------------------------------------------------ training and sampling
    def forward_train(self, batch: dict) -> GeneratorTrainOutput:
        """One training batch; ``batch["generator"]`` is a list with one generator per item (see draw_items)."""
        raise NotImplementedError

    def generate(self, conditions: dict, num_frames: int, **kwargs) -> torch.Tensor:
        """Sample targets ``[B, ..., num_frames]`` (what :meth:`decode_music` reads)."""
        raise NotImplementedError

    def embed_music(self, target: torch.Tensor) -> torch.Tensor:
        """The pooled music embedding ``[B, H]`` of a target read with every condition dropped, so it
        depends on the music alone (what the contrastive head embeds for retrieval)."""
        raise NotImplementedError

    def codec_sampling_kwargs(self, codec) -> dict:
        """What :meth:`generate` takes from ``codec`` when :meth:`generate_audio` samples with it (none here)."""
        return {}

    @torch.no_grad()
    def generate_audio(
        self,
        codec,
        conditions: dict,
        num_frames: int,
        *,
        scheduler=None,
        num_inference_steps: Optional[int] = None,
        guidance_scale: float = 3.0,
        generator=None,
        progress_bar: Optional[Callable] = None,
        **sampling,
    ) -> torch.Tensor:
        """Generate ``num_frames`` music frames and decode them: waveform ``[B, C, S]``.

        The one generate-and-decode path (pipeline, training validation, evaluation). ``scheduler``
        and ``num_inference_steps`` reach a scheduler-driven backend only (its own defaults when None);
        ``sampling`` holds backend options such as the AR's ``top_k`` / ``temperature``, and
        ``callback`` (``callback(step, timestep, tensors) -> dict | None``, see :class:`StepEnd`) for a
        backend with :attr:`callback_tensor_inputs`.
        """
        kwargs = dict(sampling, guidance_scale=guidance_scale, generator=generator, progress_bar=progress_bar)
        kwargs.update(self.codec_sampling_kwargs(codec))
        onload(self)
        if self.needs_scheduler:
            kwargs.update(scheduler=scheduler, num_inference_steps=num_inference_steps or self.default_inference_steps)
        target = self.generate(conditions, num_frames, **kwargs)
        onload(codec)  # under model CPU offload the codec comes to the execution device only now
        return self.decode_music(codec, target)


def onload(module) -> None:
    """Put ``module`` on its execution device under a pipeline's model CPU offload before a call that is
    not its ``forward`` (``generate``, ``decode``...): accelerate's offload hook moves a model only when its
    ``forward`` runs (and sends the previous model of the chain back to the CPU). No hook: nothing to do."""
    hook = getattr(module, "_hf_hook", None)
    if hook is not None:
        hook.pre_forward(module)


class StepEnd:
    """The end of one sampling step of a ``generate`` call: advances the progress bar and runs the
    caller's ``callback(step, timestep, tensors) -> dict | None``.

    ``step`` counts every step of the call (over all windows), ``tensors`` are the backend's
    :attr:`MusicGenerator.callback_tensor_inputs` as they stand after the step; a returned dict
    replaces any of them (same shape and dtype), as diffusers' ``callback_on_step_end`` does.
    """

    def __init__(self, bar, callback: Optional[Callable] = None):
        self.bar, self.callback, self.step = bar, callback, 0

    def __call__(self, timestep, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        from ...errors import InputError

        self.bar.update(1)
        step, self.step = self.step, self.step + 1
        if self.callback is None:
            return tensors
        returned = self.callback(step, timestep, dict(tensors)) or {}
        for name, value in returned.items():
            if name not in tensors:
                raise InputError(f"the step callback returned {name!r}; it may replace only {sorted(tensors)}")
            old = tensors[name]
            if not isinstance(value, torch.Tensor) or value.shape != old.shape or value.dtype != old.dtype:
                got = (tuple(value.shape), value.dtype) if isinstance(value, torch.Tensor) else type(value).__name__
                raise InputError(f"the step callback's {name!r} must keep shape {tuple(old.shape)} and {old.dtype}, got {got}")
        return {**tensors, **{name: value.to(tensors[name].device) for name, value in returned.items()}}


def draw_items(fn, size, generator=None, device=None, **kwargs) -> torch.Tensor:
    """A batch-first random tensor from ``fn`` (``torch.rand``, ``torch.randn``, ``torch.randint``).

    ``generator`` may be one ``torch.Generator`` or a list with one per batch item: then item
    ``i`` is drawn from ``generator[i]`` alone (``None`` items from the global RNG), so a batch sees
    the same randomness as its items run one by one (training on any number of processes then draws
    identically per sample). Draws happen on the generator's device and move to ``device``.
    """
    from ...errors import InputError

    size = tuple(size)
    if isinstance(generator, (list, tuple)):
        if len(generator) != size[0]:
            raise InputError(f"got {len(generator)} generators for a batch of {size[0]}")
        items = [fn(size=(1,) + size[1:], generator=g, device=device if g is None else g.device, **kwargs) for g in generator]
        return torch.cat(items).to(device)
    on = generator.device if generator is not None else device
    return fn(size=size, generator=generator, device=on, **kwargs).to(device)


def frame_weights(batch: dict, b: int, t: int, device) -> Optional[torch.Tensor]:
    """The batch's ``"frame_weight"`` ``[B, T]`` (float, on ``device``), or None when it has none.

    Both backends multiply their per-frame generation loss by it: a weight above 1 on the real
    music's onsets makes the frames where the visual beats matter count more than the texture
    between them, which otherwise dominates the loss."""
    from ...errors import InputError

    weight = batch.get("frame_weight")
    if weight is None:
        return None
    if tuple(weight.shape) != (b, t):
        raise InputError(f"batch['frame_weight'] must be [B, T] = {(b, t)}, got {tuple(weight.shape)}")
    return weight.to(device=device, dtype=torch.float32)


def draw_items_normal(size, generator=None, device=None, time_dim: int = -1) -> torch.Tensor:
    """Standard normal noise of ``size`` (batch first), drawn as :func:`draw_items` draws, whose values on
    the first ``n`` steps of ``time_dim`` do not depend on how long that axis is (the batch's padding).

    Uniforms are drawn time-first (a generator fills a tensor in order, so a longer axis only appends)
    and turned into normals by Box-Muller; ``torch.randn`` transforms blocks of 16 values and redraws
    its tail, which ties every value to the total size.
    """
    size = list(size)
    time_dim = time_dim % len(size)
    moved = [size[0], size[time_dim]] + [n for i, n in enumerate(size) if i not in (0, time_dim)]
    u = draw_items(torch.rand, moved + [2], generator, device)
    normal = torch.sqrt(-2.0 * torch.log1p(-u[..., 0])) * torch.cos(2.0 * torch.pi * u[..., 1])
    return normal.movedim(1, time_dim)


def pool_frames(hidden: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean of ``hidden [B, T, H]`` over the valid frames of ``mask [B, T]`` (all when None) -> ``[B, H]``:
    the pooled music embedding both backends hand the contrastive loss."""
    if mask is None:
        return hidden.mean(1)
    weights = mask[..., None].to(hidden)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)
