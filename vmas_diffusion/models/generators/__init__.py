"""Music generators behind one interface (:class:`MusicGenerator`)."""

from ..registry import build
from .base import GeneratorTrainOutput, MusicGenerator

GENERATORS = {
    "ar": "vmas_diffusion.models.generators.ar_token_lm:ARTokenLM",
    "ldm": "vmas_diffusion.models.generators.latent_dit:LatentDiT",
}


def build_generator(spec) -> MusicGenerator:
    """``{type: "ar"|"ldm", config: {...}}`` -> generator instance."""
    return build("generator", GENERATORS, spec)


__all__ = ["GENERATORS", "GeneratorTrainOutput", "MusicGenerator", "build_generator"]
