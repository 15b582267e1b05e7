"""Music codecs behind one interface (:class:`MusicCodec`)."""

from ...errors import ConfigError
from ..registry import build, check_config_keys, resolve
from .base import FrameCodec, MusicCodec

CODECS = {
    # EnCodec 32 kHz as MusicGen uses it, through transformers' EncodecModel
    "encodec_hf": "vmas_diffusion.models.codecs.encodec_hf:EncodecHFCodec",
    # EnCodec 24/48 kHz from the `encodec` package (installed with --no-deps, see README)
    "encodec": "vmas_diffusion.models.codecs.encodec_package:EncodecPackageCodec",
    # log-mel + residual k-means tokens + Griffin-Lim: no network, fitted in seconds (vmas-tiny)
    "mel_griffinlim": "vmas_diffusion.models.codecs.mel_griffinlim:MelGriffinLimCodec",
}


def build_codec(spec) -> MusicCodec:
    """``{type: NAME, config: {...}}`` -> a randomly initialised codec;
    ``{type: NAME, config: {...}, pretrained: PATH_OR_HUB_ID}`` -> real EnCodec weights through the
    class's ``from_encodec_pretrained`` (``config`` then holds only what to check or add, e.g.
    chunking or latent stats)."""
    spec = dict(spec)
    pretrained = spec.pop("pretrained", None)
    if pretrained is None:
        return build("codec", CODECS, spec)
    if "type" not in spec:
        raise ConfigError(f"codec spec must be {{type: ..., config: {{...}}}}, got keys {sorted(spec)}")
    cls = resolve("codec", CODECS, spec["type"])
    config = dict(spec.get("config") or {})
    check_config_keys(cls, config, f"codec {spec['type']!r}")
    return cls.from_encodec_pretrained(pretrained, **config)


__all__ = ["CODECS", "FrameCodec", "MusicCodec", "build_codec"]
