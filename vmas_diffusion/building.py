"""Build a pipeline's components from a recipe.

The generator's shared values are derived from the codec and the video encoder
(see :func:`vmas_diffusion.recipes.derive_shared`), so one recipe change (say, the
generator's type) swaps one component only.
"""

import json
import logging
from pathlib import Path
from typing import Callable, Optional, Sequence

from .errors import ConfigError
from .models.codecs import build_codec
from .models.generators import GENERATORS, build_generator
from .models.registry import build, resolve
from .recipes import RecipeLike, component_spec, derive_shared, load_recipe

logger = logging.getLogger(__name__)

VIDEO_ENCODERS = {"temporal": "vmas_diffusion.models.video_encoder:TemporalVideoEncoder"}


def shared_generator_config(generator_cls, codec, video_encoder) -> dict:
    """What a generator of class ``generator_cls`` must agree on with the codec and the video encoder."""
    return {**generator_cls.codec_config(codec), "video_dim": int(video_encoder.config.hidden_dim)}


def build_components(recipe: RecipeLike, overrides: Optional[Sequence[str]] = None) -> dict:
    """Recipe -> ``{video_encoder, generator, codec, scheduler, contrastive_head}`` (random init)."""
    cfg = load_recipe(recipe, list(overrides or []))
    codec = build_codec(component_spec(cfg.codec))
    video_encoder = build("video encoder", VIDEO_ENCODERS, component_spec(cfg.video_encoder))
    gen_spec = component_spec(cfg.generator)
    backend = gen_spec["type"]
    generator_cls = resolve("generator", GENERATORS, backend)
    gen_spec["config"] = derive_shared(
        gen_spec.get("config") or {}, shared_generator_config(generator_cls, codec, video_encoder), f"generator {backend!r}"
    )
    generator = build_generator(gen_spec)
    scheduler = generator.make_scheduler(cfg.scheduler.type) if generator.needs_scheduler else None
    contrastive_head = None
    if cfg.contrastive is not None:
        from .models.contrastive_head import ContrastiveHead

        contrastive_head = ContrastiveHead(
            video_dim=int(video_encoder.config.hidden_dim),
            music_dim=int(generator.config.hidden_size),
            embed_dim=cfg.contrastive.embed_dim,
            init_temperature=cfg.contrastive.init_temperature,
            learn_temperature=cfg.contrastive.learn_temperature,
            rhythm_frames=cfg.contrastive.rhythm_frames,
            rhythm_reach=cfg.contrastive.rhythm_reach,
            rhythm_share=cfg.contrastive.rhythm_share,
        )
    return dict(
        video_encoder=video_encoder, generator=generator, codec=codec, scheduler=scheduler, contrastive_head=contrastive_head
    )


def build_training_components(cfg, with_generator: bool = True, load_pipeline: Optional[Callable] = None) -> dict:
    """Components to train (or to prepare data with) from a validated recipe.

    Random init from the recipe, then: every component from a saved pipeline (``train.init_from``,
    read by ``load_pipeline(folder)``, e.g. ``VideoToMusicPipeline.from_pretrained``: the caller
    passes it because the pipeline sits above this module); the frozen codec from
    ``train.codec_checkpoint`` (else from ``train.musicgen_checkpoint``, whose codec is the one its
    LM was trained on); the generator from ``train.musicgen_checkpoint`` when it has ``from_musicgen``.
    """
    t = cfg.train
    components = build_components(cfg)
    if t.init_from:
        if load_pipeline is None:
            raise ConfigError("train.init_from is set, but no pipeline loader was given to read it")
        pipe = load_pipeline(t.init_from)
        for name in ("video_encoder", "generator", "codec", "scheduler", "contrastive_head"):
            loaded = getattr(pipe, name, None)
            if loaded is not None:
                components[name] = loaded
    codec_source = t.codec_checkpoint or (t.musicgen_checkpoint if _is_full_musicgen(t.musicgen_checkpoint) else None)
    if not codec_source and not t.init_from:
        logger.warning(
            "the %s codec has random weights (no train.codec_checkpoint, full-MusicGen train.musicgen_checkpoint or "
            "train.init_from): fine for tests, useless for real training", type(components["codec"]).__name__,
        )
    if codec_source:
        codec = components["codec"]
        if not hasattr(codec, "from_encodec_pretrained"):
            raise ConfigError(f"train.codec_checkpoint: the {type(codec).__name__} codec cannot load EnCodec/MusicGen folders")
        kwargs = {k: v for k, v in codec.config.items() if not k.startswith("_")}
        components["codec"] = type(codec).from_encodec_pretrained(codec_source, **kwargs)
    if t.musicgen_checkpoint and with_generator:
        generator = components["generator"]
        if not hasattr(generator, "from_musicgen"):
            raise ConfigError(
                f"train.musicgen_checkpoint warm starts a generator with from_musicgen (the AR backend); "
                f"this recipe's generator is {generator.backend!r}"
            )
        kwargs = {k: v for k, v in generator.config.items() if not k.startswith("_")}
        video_dim = kwargs.pop("video_dim")
        components["generator"] = type(generator).from_musicgen(t.musicgen_checkpoint, video_dim, **kwargs)
    return components


def _is_full_musicgen(folder: Optional[str]) -> bool:
    """True for a MusicgenForConditionalGeneration folder (it holds the codec); False for a decoder-only one."""
    config = Path(folder) / "config.json" if folder else None
    if config is None or not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("model_type") == "musicgen"
    except (OSError, json.JSONDecodeError):
        return False
