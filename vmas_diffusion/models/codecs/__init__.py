"""Music codecs behind one interface (:class:`MusicCodec`)."""

from ..registry import build
from .base import MusicCodec

CODECS = {
    # EnCodec 32 kHz as MusicGen uses it, through transformers' EncodecModel
    "encodec_hf": "vmas_diffusion.models.codecs.encodec_hf:EncodecHFCodec",
    # EnCodec 24/48 kHz from the `encodec` package (installed with --no-deps, see README)
    "encodec": "vmas_diffusion.models.codecs.encodec_package:EncodecPackageCodec",
}


def build_codec(spec) -> MusicCodec:
    """``{type: NAME, config: {...}}`` -> codec instance (random init, or pretrained when the config says so)."""
    return build("codec", CODECS, spec)


__all__ = ["CODECS", "MusicCodec", "build_codec"]
