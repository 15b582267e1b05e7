"""EnCodec 24 kHz (mono) and 48 kHz (stereo) from the ``encodec`` package.

The package is imported through :mod:`._encodec_compat` (no torchaudio). Two presets, chosen
by ``sample_rate``:

==========  ========  =======  ==========  ===================  ===========================
sample rate channels  hop      frame rate  bandwidths (kbps)    codebooks (1024 ids each)
==========  ========  =======  ==========  ===================  ===========================
24000       1         320      75 Hz       1.5, 3, 6, 12, 24    bandwidth / 0.75 (6 -> 8)
48000       2         320      150 Hz      3, 6, 12, 24         bandwidth / 1.5  (6 -> 4)
==========  ========  =======  ==========  ===================  ===========================

The 48 kHz model was trained on audio scaled to unit RMS per chunk; codes do not carry that
scale, so :meth:`tokenize` / :meth:`encode` scale each clip to unit RMS (one scale per clip,
whole-clip, so chunks agree) and :meth:`decode_tokens` / :meth:`decode` return audio at
``output_rms``. The 24 kHz model works on raw audio and ignores ``output_rms``.

Weights: ``EncodecPackageCodec(...)`` is a random init; ``from_pretrained`` reloads a folder
written by ``save_pretrained``; :meth:`EncodecPackageCodec.from_encodec_pretrained` reads the
original ``.th`` checkpoint (local file or folder, ``weights_only=True``; or its URL when online).
"""

import warnings
from pathlib import Path
from typing import Optional, Union

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401 - diffusers' pipeline loader looks it up here

from ...errors import CheckpointError, ConfigError
from ...weights import load_state_dict_checked, read_weights, state_dict_mismatch
from ._encodec_compat import import_encodec
from .base import (
    CodecModel,
    FloatOrList,
    check_chunking,
    draw_codebooks_from_probe,
    rename_legacy_weight_norm,
)

#: sample rate -> (preset builder name, original checkpoint file, supported bandwidths)
PRESETS = {
    24000: ("encodec_model_24khz", "encodec_24khz-d7cc33bc.th", (1.5, 3.0, 6.0, 12.0, 24.0)),
    48000: ("encodec_model_48khz", "encodec_48khz-7e698e3e.th", (3.0, 6.0, 12.0, 24.0)),
}
CHECKPOINT_ROOT_URL = "https://dl.fbaipublicfiles.com/encodec/v0/"


def build_preset(sample_rate: int):
    """A randomly initialised ``encodec.EncodecModel`` of the preset for ``sample_rate``.

    The package applies the deprecated hook-based ``torch.nn.utils.weight_norm``, which breaks
    ``copy.deepcopy`` (EMA copies, pipeline copies) once a forward has run; each such layer is
    switched to ``torch.nn.utils.parametrizations.weight_norm`` (same function, keys
    ``parametrizations.weight.original0/1`` instead of ``weight_g/weight_v``;
    original checkpoints are renamed on load by :func:`rename_legacy_weight_norm`)."""
    encodec = import_encodec()
    builder = getattr(encodec.EncodecModel, PRESETS[sample_rate][0])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
        model = builder(pretrained=False)
    for module in model.modules():
        if hasattr(module, "weight_g") and hasattr(module, "weight_v"):
            torch.nn.utils.remove_weight_norm(module)
            torch.nn.utils.parametrizations.weight_norm(module)
    return model


class EncodecPackageCodec(CodecModel):
    """EnCodec 24/48 kHz (``encodec`` package) as a discrete and continuous music codec.

    Args:
        sample_rate: 24000 (mono, causal) or 48000 (stereo, non-causal).
        bandwidth: kbps, one of the preset's; sets the number of codebooks.
        latent_mean / latent_std: latent normalisation, a float or one value per channel (128).
        chunk_frames / chunk_overlap_frames: bounded-memory chunking (see FrameCodec).
        output_rms: RMS of decoded audio for the 48 kHz model (see the module docstring).
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sample_rate: int = 24000,
        bandwidth: float = 6.0,
        latent_mean: FloatOrList = 0.0,
        latent_std: FloatOrList = 1.0,
        chunk_frames: int = 1500,
        chunk_overlap_frames: int = 50,
        output_rms: float = 0.1,
    ):
        super().__init__()
        where = "EncodecPackageCodec"
        if sample_rate not in PRESETS:
            raise ConfigError(f"{where}: sample_rate must be one of {sorted(PRESETS)}, got {sample_rate}")
        if float(bandwidth) not in PRESETS[sample_rate][2]:
            raise ConfigError(
                f"{where}: bandwidth {bandwidth} kbps is not offered at {sample_rate} Hz; "
                f"choose one of {PRESETS[sample_rate][2]}"
            )
        if not output_rms > 0:
            raise ConfigError(f"{where}: output_rms must be > 0, got {output_rms}")
        check_chunking(chunk_frames, chunk_overlap_frames, where)
        self.model = build_preset(sample_rate)
        self.model.set_target_bandwidth(float(bandwidth))
        self._check_latent_stats(latent_mean, latent_std, where)
        self._randomize_codebooks()

    def _codebooks(self):
        return [layer._codebook for layer in self.model.quantizer.vq.layers]

    def _randomize_codebooks(self) -> None:
        # the package starts codebooks at zero, waiting for k-means on a first training batch
        codebooks = self._codebooks()
        draw_codebooks_from_probe(self.model.encoder, [c.embed for c in codebooks], self.sample_rate, self.channels)
        for codebook in codebooks:
            if not codebook.embed.is_meta:
                codebook.embed_avg.data.copy_(codebook.embed)
                codebook.inited.data.fill_(1.0)

    # ---- properties ----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    @property
    def channels(self) -> int:
        return int(self.model.channels)

    @property
    def hop_length(self) -> int:
        return int(self.model.encoder.hop_length)

    @property
    def num_codebooks(self) -> int:
        return int(self.model.quantizer.get_num_quantizers_for_bandwidth(self.model.frame_rate, self.config.bandwidth))

    @property
    def cardinality(self) -> int:
        return int(self.model.quantizer.bins)

    @property
    def latent_dim(self) -> int:
        return int(self.model.quantizer.dimension)

    # ---- primitives ----------------------------------------------------------------------
    def _prepare_input(self, wav: torch.Tensor) -> torch.Tensor:
        if not self.model.normalize:
            return wav
        # one unit-RMS scale per clip (the package scales each 1 s segment; one scale keeps
        # chunked and one-piece encodings identical)
        rms = wav.mean(dim=1, keepdim=True).pow(2).mean(dim=2, keepdim=True).sqrt()
        return wav / (rms + 1e-8)

    def _finish_output(self, wav: torch.Tensor) -> torch.Tensor:
        if not self.model.normalize:
            return wav
        rms = wav.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
        return wav * (self.config.output_rms / (rms + 1e-8))

    def _encode_raw(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(wav)

    def _quantize(self, raw: torch.Tensor) -> torch.Tensor:
        codes = self.model.quantizer.encode(raw, self.model.frame_rate, self.config.bandwidth)  # [K, B, T]
        return codes.transpose(0, 1)

    def _dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.quantizer.decode(codes.transpose(0, 1))

    def _decode_raw(self, raw: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(raw)

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def from_encodec_pretrained(
        cls, path: Optional[Union[str, Path]] = None, sample_rate: int = 24000, **kwargs
    ) -> "EncodecPackageCodec":
        """The original EnCodec weights of the ``sample_rate`` preset.

        ``path``: the checkpoint file (e.g. ``encodec_24khz-d7cc33bc.th``, read with
        ``weights_only=True``, or a ``.safetensors`` of the same state dict), or a folder
        holding it under its original name; ``None`` downloads it from the package's URL
        (network needed; the file's hash is checked). ``kwargs``: other constructor
        arguments. A checkpoint of the other preset raises CheckpointError naming both
        sample rates; any other mismatch names the differing keys and shapes.
        """
        if sample_rate not in PRESETS:
            raise ConfigError(f"EncodecPackageCodec: sample_rate must be one of {sorted(PRESETS)}, got {sample_rate}")
        file_name = PRESETS[sample_rate][1]
        if path is None:
            url = CHECKPOINT_ROOT_URL + file_name
            try:
                state = torch.hub.load_state_dict_from_url(url, map_location="cpu", check_hash=True, weights_only=True)
            except Exception as err:  # offline, hash mismatch: one cause for the user
                raise CheckpointError(f"EnCodec checkpoint {url} cannot be downloaded: {err}") from err
            where = f"EnCodec checkpoint {url}"
        else:
            path = Path(path)
            if path.is_dir():
                path = path / file_name
            state = read_weights(path, torch_format=True, what="EnCodec checkpoint")
            where = f"EnCodec checkpoint {path}"
        state = rename_legacy_weight_norm(state)
        codec = cls(sample_rate=sample_rate, **kwargs)
        if state_dict_mismatch(codec.model.state_dict(), state):
            for other in PRESETS:
                if other != sample_rate:
                    with torch.device("meta"):
                        other_model = build_preset(other)
                    if not state_dict_mismatch(other_model.state_dict(), state):
                        raise CheckpointError(
                            f"{where} is the {other} Hz EnCodec; this codec was asked for sample rate {sample_rate} Hz"
                        )
        load_state_dict_checked(codec.model, state, where)
        codec.eval()
        return codec
