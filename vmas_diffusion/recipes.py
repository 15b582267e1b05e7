"""Recipes: OmegaConf YAML validated against dataclass schemas.

A recipe names each component as ``{type: NAME, config: {...}}``. The top-level keys
are checked by OmegaConf's structured config (a misspelt key is an error naming it);
each component's ``config`` is checked against its class's constructor by the factory.
Values the generator must share with the codec and the video encoder (codebooks,
cardinality, latent size, frame rate, condition width) are derived, not repeated: a
recipe may omit them, and a recipe that states them inconsistently is rejected.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Union

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError


@dataclass
class ComponentSpec:
    type: str = MISSING
    config: Dict[str, Any] = field(default_factory=dict)


@dataclass
class SchedulerSpec:
    #: one of LatentDiT.make_scheduler's names: "ddpm", "ddim", "dpmsolver++", "euler"
    type: str = "dpmsolver++"


@dataclass
class ContrastiveSpec:
    embed_dim: int = 128
    init_temperature: float = 0.07
    learn_temperature: bool = True
    #: bins of the rhythm part (visual beat vs music onset envelopes, models/contrastive_head.py); 0 = none
    rhythm_frames: int = 0
    rhythm_reach: int = 3
    rhythm_share: float = 0.0


@dataclass
class TrainSpec:
    """The ``train`` section: the Accelerate training loop (see docs/training.md)."""

    seed: int = 0
    #: run folder (checkpoints, logs, samples); null = runs/<recipe name>
    output_dir: Optional[str] = None
    max_steps: int = 1000
    #: samples per process per micro-batch; the global batch is batch_size x processes x accumulation
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    adam_epsilon: float = 1e-8
    #: diffusers.optimization.get_scheduler name: constant, constant_with_warmup, linear, cosine, ...
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    #: gradient clipping by global norm; 0 switches it off
    max_grad_norm: float = 1.0
    #: "auto" (bf16 where the GPU supports it, else fp16 on older GPUs, else none), "no", "fp16", "bf16"
    mixed_precision: str = "auto"
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    validate_every: int = 500
    validation_batches: int = 2
    #: music samples written at each validation (wav), drawn from the validation set
    num_validation_samples: int = 2
    validation_guidance_scale: float = 3.0
    #: diffusion steps for validation samples (LDM)
    validation_inference_steps: int = 25
    #: "auto" (TensorBoard when installed, plus JSON Lines), "tensorboard", "jsonl", "wandb", ...
    trackers: str = "auto"
    num_workers: int = 0
    #: DDP option; True tolerates parameters a step does not use (a zero loss weight)
    find_unused_parameters: bool = True
    #: warm start every component from a saved pipeline folder (a checkpoint's pipeline/)
    init_from: Optional[str] = None
    #: keep an exponential moving average of the generator's weights (LDM; e.g. 0.9999); the exported pipeline uses it
    ema_decay: Optional[float] = None
    #: real weights for the frozen codec: a local EnCodec or MusicGen folder (null = musicgen_checkpoint's codec, else the
    #: recipe's random init, fine for tests only). `prepare` and `train` must use the same codec.
    codec_checkpoint: Optional[str] = None
    #: warm start the AR generator from a local MusicGen folder (transformers MusicgenForConditionalGeneration or MusicgenForCausalLM)
    musicgen_checkpoint: Optional[str] = None


@dataclass
class DataSpec:
    """The ``data`` section: where the prepared shards are and how windows are cut by ``prepare``."""

    #: folder written by `vmas-diffusion prepare`, or several: a list, a glob, fsspec URLs (data/sources.py)
    train_dir: Any = None
    #: validation folder(s), as train_dir; null = the first batches of train_dir in order
    val_dir: Any = None
    #: "sample" (exact global order, any number of processes) or "shard" (whole shards per process)
    split: str = "sample"
    shuffle: bool = True
    window_seconds: float = 10.0
    #: distance between window starts; null = window_seconds
    hop_seconds: Optional[float] = None
    min_seconds: float = 2.0
    #: "frames" (the frame backbone trains) or "features" (frozen backbone features computed once)
    video_input: str = "frames"
    shard_size: int = 256


@dataclass
class LossWeights:
    """The ``losses`` section: weights of the named training losses; 0 skips a term."""

    #: generator's own loss (AR cross-entropy / LDM diffusion loss)
    generation: float = 1.0
    #: global video-music InfoNCE (needs the recipe's contrastive heads)
    contrastive: float = 0.1
    #: beat head supervised by the real music's onsets
    beat_onset: float = 0.5
    #: beat head pulled toward the visual beats
    beat_visual: float = 0.5
    #: each music frame's generation loss weighted by 1 + onset_emphasis x the real music's onset
    #: strength there (in [0, 1]): the frames the beat condition predicts count more (0 = plain loss)
    onset_emphasis: float = 0.0
    #: half-width of the beat tolerance window, in music frames
    beat_tolerance_frames: int = 2


@dataclass
class Recipe:
    name: str = "unnamed"
    codec: ComponentSpec = MISSING
    video_encoder: ComponentSpec = MISSING
    generator: ComponentSpec = MISSING
    #: the LDM backend's inference scheduler; ignored by AR
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    #: projection heads of the global video-music contrastive objective; null to leave them out
    contrastive: Optional[ContrastiveSpec] = field(default_factory=ContrastiveSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    data: DataSpec = field(default_factory=DataSpec)
    losses: LossWeights = field(default_factory=LossWeights)


RecipeLike = Union[str, Path, DictConfig, dict]


def load_recipe(recipe: RecipeLike, overrides: Optional[list] = None) -> DictConfig:
    """Read and validate a recipe (a YAML path, a dict or a DictConfig) plus ``key=value`` overrides.

    A YAML recipe may start from another: ``base: tiny_ar.yaml`` (relative to its own folder)
    loads that recipe first and merges this one over it, so an ablation states only what it changes.
    """
    where = f"recipe {recipe}" if isinstance(recipe, (str, Path)) else "recipe"
    try:
        if isinstance(recipe, (str, Path)):
            user = _read_yaml_with_base(Path(recipe), seen=())
        else:
            user = OmegaConf.create(recipe) if isinstance(recipe, dict) else recipe
        merged = OmegaConf.merge(OmegaConf.structured(Recipe), user, OmegaConf.from_dotlist(list(overrides or [])))
        plain = OmegaConf.to_container(merged, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(f"{where}: {_first_line(err)}") from err
    except (OSError, ValueError, yaml.YAMLError) as err:  # unreadable file, YAML syntax error
        raise ConfigError(f"{where}: {_first_line(err)}") from err
    for key, value in _leaves(plain):
        if isinstance(value, float) and not math.isfinite(value):  # no setting means anything at nan or inf
            raise ConfigError(f"{where}: {key} must be a finite number, got {value}")
    return merged


def _leaves(node, prefix: str = ""):
    """``(dotted key, value)`` of every leaf of a nested dict / list."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, (dict, list)):
            yield from _leaves(value, name)
        else:
            yield name, value


def _read_yaml_with_base(path: Path, seen: tuple) -> DictConfig:
    """One YAML recipe, merged over its ``base`` chain (without schema validation yet)."""
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    if path.resolve() in seen:
        raise ConfigError(f"recipe {path}: its `base` chain loops back to itself")
    user = OmegaConf.load(path)
    if not isinstance(user, DictConfig):
        raise ConfigError(f"recipe {path} is not a mapping")
    base = user.pop("base", None)
    if base is None:
        return user
    if not isinstance(base, str):
        raise ConfigError(f"recipe {path}: `base` must be a recipe file name, got {base!r}")
    return OmegaConf.merge(_read_yaml_with_base(path.parent / base, seen + (path.resolve(),)), user)


def _first_line(err: Exception) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def component_spec(spec) -> dict:
    """A validated ComponentSpec node as a plain ``{type, config}`` dict."""
    return OmegaConf.to_container(spec, resolve=True)


def derive_shared(config: dict, shared: dict, where: str) -> dict:
    """Fill ``config`` with the values it must share with other components.

    Missing keys are filled from ``shared``; a key stated with another value raises.
    """
    out = dict(config)
    for key, value in shared.items():
        if key in out and out[key] != value:
            raise ConfigError(f"{where}: {key}={out[key]!r} contradicts the value {value!r} the other components imply")
        out[key] = value
    return out
