"""vmas-diffusion: background music for videos, aligned to what is seen and to its beats."""

import importlib

__version__ = "0.1.0"

# Public names, imported on first use so that `import vmas_diffusion` stays light.
# The component classes are listed here too: diffusers' from_pretrained finds a saved
# pipeline's components as attributes of the library named in model_index.json.
_LAZY = {
    "VideoToMusicPipeline": "vmas_diffusion.pipelines.video_to_music",
    "VideoToMusicPipelineOutput": "vmas_diffusion.pipelines.video_to_music",
    "TemporalVideoEncoder": "vmas_diffusion.models.video_encoder",
    "ARTokenLM": "vmas_diffusion.models.generators.ar_token_lm",
    "LatentDiT": "vmas_diffusion.models.generators.latent_dit",
    "EncodecHFCodec": "vmas_diffusion.models.codecs.encodec_hf",
    "EncodecPackageCodec": "vmas_diffusion.models.codecs.encodec_package",
    "MelGriffinLimCodec": "vmas_diffusion.models.codecs.mel_griffinlim",
    "ContrastiveHead": "vmas_diffusion.models.contrastive_head",
    "VMASError": "vmas_diffusion.errors",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vmas_diffusion' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = list(_LAZY)
