"""The codec interface every music codec implements.

A codec turns waveforms ``[B, C, S]`` (float, [-1, 1], at :attr:`sample_rate`) into
either discrete codes ``[B, K, T]`` (``tokenize`` / ``decode_tokens``) or continuous
latents ``[B, D, T]`` (``encode`` / ``decode``) at :attr:`frame_rate` frames per second.
Generators and the pipeline talk to codecs only through this class.
"""

import torch


class MusicCodec:
    """Mixin declaring the codec interface; concrete codecs are also ``ModelMixin, ConfigMixin``."""

    #: True when the codec offers ``tokenize`` / ``decode_tokens`` (the AR backend needs it).
    is_discrete: bool = False
    #: True when the codec offers ``encode`` / ``decode`` (the LDM backend needs it).
    is_continuous: bool = False

    @property
    def sample_rate(self) -> int:
        raise NotImplementedError

    @property
    def channels(self) -> int:
        raise NotImplementedError

    @property
    def frame_rate(self) -> float:
        """Codec frames (tokens or latent steps) per second."""
        raise NotImplementedError

    # discrete side
    @property
    def num_codebooks(self) -> int:
        raise NotImplementedError

    @property
    def cardinality(self) -> int:
        """Codes per codebook; valid ids are ``0 .. cardinality - 1``."""
        raise NotImplementedError

    def tokenize(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, C, S]`` -> ``codes [B, K, T]`` (long)."""
        raise NotImplementedError

    def decode_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, K, T]`` -> ``wav [B, C, S]``."""
        raise NotImplementedError

    # continuous side
    @property
    def latent_dim(self) -> int:
        raise NotImplementedError

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, C, S]`` -> normalised ``latents [B, D, T]``."""
        raise NotImplementedError

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised ``latents [B, D, T]`` -> ``wav [B, C, S]``."""
        raise NotImplementedError

    def num_frames(self, num_samples: int) -> int:
        """Codec frames covering ``num_samples`` samples."""
        hop = self.sample_rate / self.frame_rate
        return int(-(-num_samples // hop))
