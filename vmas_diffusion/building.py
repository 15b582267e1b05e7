"""Build a pipeline's components from a recipe.

The generator's shared values are derived from the codec and the video encoder
(see :func:`vmas_diffusion.recipes.derive_shared`), so one recipe change (say, the
generator's type) swaps one component only.
"""

from typing import Optional, Sequence

from .models.codecs import build_codec
from .models.generators import GENERATORS, build_generator
from .models.registry import build, resolve
from .recipes import RecipeLike, component_spec, derive_shared, load_recipe

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
        from .losses import ContrastiveLoss

        contrastive_head = ContrastiveLoss(
            video_dim=int(video_encoder.config.hidden_dim),
            music_dim=int(generator.config.hidden_size),
            embed_dim=cfg.contrastive.embed_dim,
            init_temperature=cfg.contrastive.init_temperature,
            learn_temperature=cfg.contrastive.learn_temperature,
        )
    return dict(
        video_encoder=video_encoder, generator=generator, codec=codec, scheduler=scheduler, contrastive_head=contrastive_head
    )
