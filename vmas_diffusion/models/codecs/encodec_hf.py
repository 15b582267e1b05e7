"""EnCodec through transformers' ``EncodecModel`` (the 32 kHz codec MusicGen uses).

The defaults are facebook/encodec_32khz: mono 32 kHz, hop 640 (ratios 8*5*4*4) so 50 frames
per second, 4 codebooks x 2048 codes (``target_bandwidths=[2.2]`` kbps / 11 bits / 50 Hz),
128-d latents. Sharing this token space lets a MusicGen checkpoint warm-start the AR backend.

* codes ``[B, K, T]``: the residual vector quantizer's ids (what MusicGen predicts);
* latents ``[B, D, T]``: the encoder output before quantization, normalised with
  ``latent_mean`` / ``latent_std`` from the config (see :class:`~.base.FrameCodec`).

Loading: ``EncodecHFCodec(**config)`` is a random init (codebooks included, so codes vary);
``EncodecHFCodec.from_pretrained(dir)`` reloads a folder written by ``save_pretrained``;
:meth:`EncodecHFCodec.from_encodec_pretrained` reads real EnCodec weights (a transformers
EncodecModel folder, a weights file, or a Hub id when online).
"""

import inspect
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401 - diffusers' pipeline loader looks it up here
from transformers import EncodecConfig, EncodecModel

from ...errors import CheckpointError, ConfigError
from ...weights import load_state_dict_checked, read_weights
from .base import (
    CodecModel,
    FloatOrList,
    check_chunking,
    draw_codebooks_from_probe,
    rename_legacy_weight_norm,
)

# EncodecConfig fields this codec mirrors (the architecture); everything else is ours.
ARCHITECTURE_KEYS = (
    "sampling_rate",
    "audio_channels",
    "num_filters",
    "upsampling_ratios",
    "codebook_size",
    "codebook_dim",
    "hidden_size",
    "num_lstm_layers",
    "num_residual_layers",
    "target_bandwidths",
    "use_causal_conv",
    "use_conv_shortcut",
    "norm_type",
    "pad_mode",
    "compress",
    "residual_kernel_size",
    "dilation_growth_rate",
    "kernel_size",
    "last_kernel_size",
    "trim_right_ratio",
    "normalize",
)
# Weight files a transformers model folder may hold, in the order transformers prefers them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# Where a MusicGen checkpoint keeps its EnCodec (config key and weight-name prefix).
MUSICGEN_AUDIO_ENCODER = "audio_encoder"


class EncodecHFCodec(CodecModel):
    """EnCodec (transformers ``EncodecModel``) as a discrete and continuous music codec.

    Args mirror transformers' ``EncodecConfig`` (defaults: facebook/encodec_32khz), plus
        latent_mean / latent_std: latent normalisation, a float or one value per latent channel.
        chunk_frames: most frames one encoder/decoder call sees (0: whole clips at once).
        chunk_overlap_frames: context frames either side when encoding in chunks, and the
            crossfade length when decoding in chunks.
    ``normalize=True`` (per-chunk volume scaling, the 48 kHz model) is refused: the scale is
    not part of the codes; use the ``encodec`` package codec for 48 kHz.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sampling_rate: int = 32000,
        audio_channels: int = 1,
        num_filters: int = 64,
        upsampling_ratios: List[int] = (8, 5, 4, 4),
        codebook_size: int = 2048,
        codebook_dim: Optional[int] = 128,
        hidden_size: int = 128,
        num_lstm_layers: int = 2,
        num_residual_layers: int = 1,
        target_bandwidths: List[float] = (2.2,),
        use_causal_conv: bool = False,
        use_conv_shortcut: bool = False,
        norm_type: str = "weight_norm",
        pad_mode: str = "reflect",
        compress: int = 2,
        residual_kernel_size: int = 3,
        dilation_growth_rate: int = 2,
        kernel_size: int = 7,
        last_kernel_size: int = 7,
        trim_right_ratio: float = 1.0,
        normalize: bool = False,
        latent_mean: FloatOrList = 0.0,
        latent_std: FloatOrList = 1.0,
        chunk_frames: int = 1500,
        chunk_overlap_frames: int = 50,
    ):
        super().__init__()
        where = "EncodecHFCodec"
        if normalize:
            raise ConfigError(f"{where}: normalize=True is not supported (codes would lose the per-chunk volume)")
        if codebook_size < 2 or codebook_size & (codebook_size - 1):
            raise ConfigError(f"{where}: codebook_size must be a power of two, got {codebook_size}")
        if codebook_dim not in (None, hidden_size):
            # transformers' quantizer has no projection: codebooks live in the latent space
            raise ConfigError(f"{where}: codebook_dim={codebook_dim} must equal hidden_size={hidden_size} (or be None)")
        check_chunking(chunk_frames, chunk_overlap_frames, where)
        try:
            hf_config = EncodecConfig(**self._architecture_kwargs(self.config))
        except Exception as err:  # transformers' strict config validation
            raise ConfigError(f"{where}: invalid EnCodec architecture: {err}") from err
        if hf_config.num_quantizers < 1:
            raise ConfigError(f"{where}: target_bandwidths={list(target_bandwidths)} gives no codebook")
        self.model = EncodecModel(hf_config)
        self._check_latent_stats(latent_mean, latent_std, where)
        self._randomize_codebooks()

    @staticmethod
    def _architecture_kwargs(config) -> Dict[str, Any]:
        kwargs = {key: config[key] for key in ARCHITECTURE_KEYS}
        kwargs["upsampling_ratios"] = [int(r) for r in kwargs["upsampling_ratios"]]
        kwargs["target_bandwidths"] = [float(b) for b in kwargs["target_bandwidths"]]
        return kwargs

    def _randomize_codebooks(self) -> None:
        # transformers initialises codebooks to zeros (EnCodec learns them by k-means on its
        # first batch); zeros would map every frame to id 0
        codebooks = [layer.codebook for layer in self.model.quantizer.layers]
        draw_codebooks_from_probe(self.model.encoder, [c.embed for c in codebooks], self.sample_rate, self.channels)
        for codebook in codebooks:
            codebook.embed_avg.data.copy_(codebook.embed)

    # ---- properties ----------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.config.sampling_rate)

    @property
    def channels(self) -> int:
        return int(self.config.audio_channels)

    @property
    def hop_length(self) -> int:
        return int(self.model.config.hop_length)

    @property
    def num_codebooks(self) -> int:
        return int(self.model.config.num_quantizers)

    @property
    def cardinality(self) -> int:
        return int(self.config.codebook_size)

    @property
    def latent_dim(self) -> int:
        return int(self.config.hidden_size)

    # ---- primitives ----------------------------------------------------------------------
    def _encode_raw(self, wav: torch.Tensor) -> torch.Tensor:
        return self.model.encoder(wav)

    def _quantize(self, raw: torch.Tensor) -> torch.Tensor:
        # bandwidth None -> all num_quantizers codebooks; the quantizer returns [K, B, T]
        return self.model.quantizer.encode(raw, None).transpose(0, 1)

    def _dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        return self.model.quantizer.decode(codes.transpose(0, 1))

    def _decode_raw(self, raw: torch.Tensor) -> torch.Tensor:
        return self.model.decoder(raw)

    # ---- loading -------------------------------------------------------------------------

    @classmethod
    def from_encodec_pretrained(cls, path_or_hub_id: Union[str, os.PathLike], **kwargs) -> "EncodecHFCodec":
        """Real EnCodec weights as a codec.

        ``path_or_hub_id`` is one of
          * a transformers ``EncodecModel`` folder (``config.json`` + ``model.safetensors`` or
            ``pytorch_model.bin``, the latter read with ``weights_only=True``);
          * a transformers MusicGen folder (``MusicgenForConditionalGeneration``, sharded or
            not): its ``audio_encoder``, i.e. exactly the codec whose tokens that MusicGen
            predicts, which is what an AR warm start from it needs;
          * a weights file (``.safetensors``, or a torch file read with ``weights_only=True``)
            holding an ``EncodecModel`` state dict; the architecture then comes from ``kwargs``
            (default: facebook/encodec_32khz);
          * a Hub id such as ``"facebook/encodec_32khz"`` (needs network or the HF cache).
        ``kwargs`` are constructor arguments: our own (latent stats, chunking) are applied;
        architecture keys are checked against the checkpoint's config, and a difference (e.g. a
        24 kHz checkpoint where ``sampling_rate=32000`` was asked) raises CheckpointError.
        Old-style weight-norm keys (``weight_g``/``weight_v``) are renamed on the way in.
        """
        where = f"EnCodec checkpoint {path_or_hub_id}"
        unknown = set(kwargs) - set(cls._init_params())
        if unknown:
            raise ConfigError(f"from_encodec_pretrained: unknown argument(s) {', '.join(sorted(unknown))}")
        path = Path(path_or_hub_id)
        if path.is_dir():
            hf_config, state, where = _read_transformers_folder(path, where)
        elif path.is_file():
            hf_config, state = None, read_weights(path, torch_format=True, what="EnCodec checkpoint")
        else:
            hf_config, state = cls._fetch_from_hub(str(path_or_hub_id))
        codec = cls(**cls._merge_checkpoint_config(hf_config, kwargs, where))
        load_state_dict_checked(codec.model, rename_legacy_weight_norm(state), where)
        codec.eval()
        return codec

    @classmethod
    def _init_params(cls) -> List[str]:
        return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]

    @classmethod
    def _merge_checkpoint_config(cls, hf_config: Optional[dict], kwargs: dict, where: str) -> dict:
        """Constructor kwargs: the checkpoint's architecture, checked against what the caller asked."""
        merged = dict(kwargs)
        if hf_config is None:
            return merged
        if hf_config.get("normalize"):
            raise CheckpointError(
                f"{where} normalises volume per chunk (the 48 kHz EnCodec): load it with the 'encodec' codec"
            )
        # a key an older transformers did not write takes transformers' default, not ours
        defaults = EncodecConfig().to_dict()
        differs = []
        for key in ARCHITECTURE_KEYS:
            found = hf_config.get(key, defaults[key])
            if key == "codebook_dim" and found is None:
                found = hf_config.get("hidden_size", defaults["hidden_size"])
            if key in kwargs and _normalised(kwargs[key]) != _normalised(found):
                label = "sample rate" if key == "sampling_rate" else key
                differs.append(f"{label}: checkpoint {found!r} vs requested {kwargs[key]!r}")
            merged[key] = found
        if differs:
            raise CheckpointError(f"{where} does not match the requested codec: " + "; ".join(differs))
        return merged

    @staticmethod
    def _fetch_from_hub(hub_id: str):
        """``(config dict, state dict)`` of a Hub EncodecModel (network or HF cache)."""
        try:
            model = EncodecModel.from_pretrained(hub_id)
        except Exception as err:  # offline, unknown id, no such repo: one cause for the user
            raise CheckpointError(
                f"EnCodec checkpoint {hub_id!r} is not a local folder or file and cannot be fetched from the Hub: {err}"
            ) from err
        return model.config.to_dict(), model.state_dict()


def _read_transformers_folder(path: Path, where: str):
    """``(EncodecConfig dict, EncodecModel state dict, where)`` of a transformers EnCodec or
    MusicGen folder; only the EnCodec tensors are read (safetensors opens lazily)."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{where}: folder has no config.json")
    config = _read_json(config_file)
    prefix = ""
    if config.get("model_type") != "encodec":
        sub = config.get(MUSICGEN_AUDIO_ENCODER)
        if not isinstance(sub, dict) or sub.get("model_type") != "encodec":
            hint = " (a codec saved by vmas-diffusion loads with from_pretrained)" if "_class_name" in config else ""
            raise CheckpointError(
                f"{where}: config.json has model_type {config.get('model_type')!r}, neither 'encodec' "
                f"nor a model with an EnCodec {MUSICGEN_AUDIO_ENCODER!r} (MusicGen){hint}"
            )
        config, prefix = sub, MUSICGEN_AUDIO_ENCODER + "."
    weights = next((path / name for name in WEIGHT_FILES if (path / name).is_file()), None)
    if weights is None:
        raise CheckpointError(f"{where}: folder holds none of {', '.join(WEIGHT_FILES)}")
    where = f"{where} ({weights.name})"
    if weights.suffix == ".bin":
        state = read_weights(weights, torch_format=True, what="EnCodec checkpoint")
    else:
        from safetensors import safe_open

        if weights.name.endswith(".index.json"):
            weight_map = _read_json(weights).get("weight_map", {})
            files = sorted({f for key, f in weight_map.items() if key.startswith(prefix)})
        else:
            files = [weights.name]
        state = {}
        try:
            for name in files:
                with safe_open(str(path / name), framework="pt") as handle:
                    state.update({key: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)})
        except Exception as err:  # missing shard, corrupt file
            raise CheckpointError(f"{where}: cannot read {name}: {err}") from err
    state = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
    if not state:
        raise CheckpointError(f"{where}: no {prefix or 'EnCodec '}weights found")
    return config, state, where


def _read_json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable JSON config: {err}") from err


def _normalised(value):
    """Compare config values across JSON round trips (tuples vs lists, 2 vs 2.0)."""
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    return float(value)
