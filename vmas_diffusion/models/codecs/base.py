"""The codec interface every music codec implements, and the machinery codecs share.

A codec turns waveforms ``[B, C, S]`` (float, [-1, 1], at :attr:`sample_rate`) into
either discrete codes ``[B, K, T]`` (``tokenize`` / ``decode_tokens``) or continuous
latents ``[B, D, T]`` (``encode`` / ``decode``) at :attr:`frame_rate` frames per second.
Generators and the pipeline talk to codecs only through this class.

:class:`FrameCodec` implements the public methods once for every codec whose encoder maps
``hop_length`` samples to one frame (EnCodec and its kin): input checks, latent
normalisation, freezing, and bounded-memory chunked processing of long audio.
"""

import contextlib
import math
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin

from ...errors import CheckpointError, ConfigError, InputError
from ...weights import safetensors_shapes, state_dict_mismatch

FloatOrList = Union[float, List[float]]


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


# --------------------------------------------------------------------------------------
# chunked processing (bounded memory on long audio)
# --------------------------------------------------------------------------------------


def check_chunking(chunk_frames: int, chunk_overlap_frames: int, where: str) -> None:
    """Raise ConfigError unless ``chunk_frames`` (0 = off) leaves room for two overlaps."""
    if chunk_frames < 0 or chunk_overlap_frames < 0:
        raise ConfigError(f"{where}: chunk_frames and chunk_overlap_frames must be >= 0")
    if chunk_frames and chunk_frames <= 2 * chunk_overlap_frames:
        raise ConfigError(
            f"{where}: chunk_frames={chunk_frames} must exceed 2 * chunk_overlap_frames={2 * chunk_overlap_frames}"
        )


def encode_in_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor],
    wav: torch.Tensor,
    hop: int,
    chunk_frames: int,
    context_frames: int,
) -> torch.Tensor:
    """Apply a frame encoder ``fn: [B, C, s] -> [B, X, ceil(s / hop)]`` to long audio in pieces.

    The ``T = ceil(S / hop)`` output frames are split into cores of
    ``chunk_frames - 2 * context_frames`` frames; each core is encoded together with up to
    ``context_frames`` frames of audio either side and only the core's frames are kept. Cuts
    fall on frame boundaries, so frame ``t`` always comes from samples ``t * hop ...`` as in
    the one-piece path, and the context hides the receptive-field edge: codes are identical
    or near-identical to encoding everything at once. No call sees more than
    ``chunk_frames`` frames of audio. ``chunk_frames = 0`` encodes in one piece.

    ``wav [B, C, S]`` -> ``[B, X, T]``.
    """
    num_samples = wav.shape[-1]
    total = -(-num_samples // hop)
    if chunk_frames <= 0 or total <= chunk_frames:
        return fn(wav)
    core = chunk_frames - 2 * context_frames
    pieces = []
    for start in range(0, total, core):
        end = min(start + core, total)
        left = max(0, start - context_frames)
        right = min(total, end + context_frames)
        out = fn(wav[..., left * hop : min(num_samples, right * hop)])
        pieces.append(out[..., start - left : end - left])
    return torch.cat(pieces, dim=-1)


def chunk_windows(total: int, chunk_frames: int, overlap_frames: int) -> List[Tuple[int, int]]:
    """Frame windows ``[(start, end), ...]`` of at most ``chunk_frames`` frames covering
    ``0 .. total``, each overlapping the next by exactly ``overlap_frames`` frames."""
    if chunk_frames <= 0 or total <= chunk_frames:
        return [(0, total)]
    step = chunk_frames - overlap_frames
    return [(s, min(s + chunk_frames, total)) for s in range(0, max(total - overlap_frames, 1), step)]


def crossfade_ramp(length: int, device=None, dtype=None) -> torch.Tensor:
    """``[length]`` raised-cosine fade-in from ~0 to ~1; ``1 - ramp`` is the matching fade-out
    (the two sum to one, so a signal decoded twice the same is left unchanged)."""
    t = (torch.arange(length, device=device, dtype=torch.float64) + 0.5) / length
    return (0.5 - 0.5 * torch.cos(math.pi * t)).to(dtype)


def decode_in_chunks(
    fn: Callable[[torch.Tensor], torch.Tensor],
    frames: torch.Tensor,
    hop: int,
    chunk_frames: int,
    overlap_frames: int,
) -> torch.Tensor:
    """Apply a frame decoder ``fn: [B, X, t] -> [B, C, t * hop]`` to long sequences in pieces.

    Windows of at most ``chunk_frames`` frames overlap by ``overlap_frames``; their waveforms
    are overlap-added with a raised-cosine crossfade over the shared ``overlap_frames * hop``
    samples, so no seam clicks and memory stays bounded by one window.
    ``frames [B, X, T]`` -> ``wav [B, C, T * hop]``.
    """
    total = frames.shape[-1]
    windows = chunk_windows(total, chunk_frames, overlap_frames)
    if len(windows) == 1:
        return fn(frames)
    out = None
    fade_len = overlap_frames * hop
    for index, (start, end) in enumerate(windows):
        piece = fn(frames[..., start:end])
        if out is None:
            out = piece.new_zeros(*piece.shape[:-1], total * hop)
        if fade_len:
            ramp = crossfade_ramp(fade_len, piece.device, piece.dtype)
            piece = piece.clone()
            if index > 0:
                piece[..., :fade_len] *= ramp
            if index < len(windows) - 1:
                piece[..., -fade_len:] *= 1.0 - ramp
        out[..., start * hop : end * hop] += piece
    return out


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------


def rename_legacy_weight_norm(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map ``...weight_g`` / ``...weight_v`` (old ``nn.utils.weight_norm``, as in the Hub's EnCodec
    files) to ``...parametrizations.weight.original0/1`` (``nn.utils.parametrizations.weight_norm``, which
    the codecs use: it survives ``copy.deepcopy``)."""
    renamed = {}
    for key, value in state.items():
        if key.endswith(".weight_g"):
            key = key[: -len("weight_g")] + "parametrizations.weight.original0"
        elif key.endswith(".weight_v"):
            key = key[: -len("weight_v")] + "parametrizations.weight.original1"
        renamed[key] = value
    return renamed


def check_pretrained_folder(cls, path, subfolder: Optional[str] = None) -> None:
    """Before diffusers' ``from_pretrained``: raise CheckpointError unless ``path`` (a folder written
    by ``cls.save_pretrained``) holds a ``cls`` config whose weights match it key for key and
    shape for shape (diffusers would only warn about some differences). Hub ids pass through."""
    folder = Path(str(path)) / (subfolder or "")
    if not Path(str(path)).is_dir():
        return
    where = f"codec folder {folder}"
    config_file = folder / cls.config_name
    config = cls.load_config(folder) if config_file.is_file() else {}
    if config.get("_class_name") != cls.__name__:
        raise CheckpointError(
            f"{where}: {config_file.name} is not a {cls.__name__} config (class {config.get('_class_name')!r}); "
            "original EnCodec weights load with from_encodec_pretrained"
        )
    weights = folder / "diffusion_pytorch_model.safetensors"
    if weights.is_file():
        with torch.device("meta"):  # the architecture only: no memory, no init time
            expected = cls.from_config(config).state_dict()
        problem = state_dict_mismatch(expected, safetensors_shapes(weights))
        if problem:
            raise CheckpointError(f"{where} ({weights.name}) does not match the model: {problem}")


@contextlib.contextmanager
def load_errors_as_checkpoint_errors(where: str):
    """Turn what diffusers/transformers raise on a bad folder into CheckpointError naming ``where``."""
    try:
        yield
    except CheckpointError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{where} cannot be loaded: {err}") from err


# --------------------------------------------------------------------------------------
# random init of codebooks
# --------------------------------------------------------------------------------------


def probe_signal(sample_rate: int, channels: int, seconds: float = 0.25) -> torch.Tensor:
    """``[1, C, S]`` fixed music-like signal (a two-tone chord under decaying noise bursts),
    the same whatever the global seed."""
    generator = torch.Generator().manual_seed(0)
    t = torch.arange(int(seconds * sample_rate)) / sample_rate
    chord = 0.2 * torch.sin(2 * math.pi * 220.0 * t) + 0.1 * torch.sin(2 * math.pi * 330.0 * t)
    bursts = torch.randn(t.shape, generator=generator) * torch.exp(-(t % 0.125) * 40.0) * 0.2
    return (chord + bursts).expand(1, channels, -1).contiguous()


@torch.no_grad()
def draw_codebooks_from_probe(
    encoder: torch.nn.Module, embeds: Sequence[torch.Tensor], sample_rate: int, channels: int
) -> None:
    """Fill residual-VQ codebooks ``embeds`` (each ``[N, D]``) of a randomly initialised codec.

    EnCodec learns its codebooks by k-means on a first batch; without data, the random
    encoder's latents on :func:`probe_signal` give the per-channel mean/std to draw from
    (level 0 around the latents, later levels around zero, as residuals are), so codes
    depend on the input instead of all being id 0. Draws use the global RNG (seeded
    builds stay deterministic). Nothing happens for meta tensors (diffusers builds on the
    meta device before loading real weights)."""
    if not embeds or embeds[0].is_meta or any(p.is_meta for p in encoder.parameters()):
        return
    ref = next(encoder.parameters())
    latents = encoder(probe_signal(sample_rate, channels).to(ref))
    latents = latents.transpose(1, 2).reshape(-1, latents.shape[1]).float()
    mean, std = latents.mean(0), latents.std(0).clamp_min(1e-6)
    for level, embed in enumerate(embeds):
        draw = torch.randn(embed.shape) * std.cpu() + (mean.cpu() if level == 0 else 0.0)
        embed.data.copy_(draw.to(embed))


# --------------------------------------------------------------------------------------
# the shared implementation
# --------------------------------------------------------------------------------------


class FrameCodec(MusicCodec):
    """Public codec methods built from five primitives of a frame codec.

    A concrete codec (also ``ModelMixin, ConfigMixin`` with config keys ``latent_mean``,
    ``latent_std``, ``chunk_frames``, ``chunk_overlap_frames``) provides:

    * :attr:`hop_length` - samples per frame;
    * ``_encode_raw(wav [B, C, s]) -> [B, D, ceil(s / hop)]`` un-normalised encoder latents;
    * ``_quantize(raw [B, D, t]) -> codes [B, K, t]`` and ``_dequantize(codes) -> [B, D, t]``;
    * ``_decode_raw(raw [B, D, t]) -> wav [B, C, t * hop]``.

    Latents handed out by :meth:`encode` are ``(raw - latent_mean) / latent_std`` (a float
    or one value per latent channel, stored in the config); :meth:`decode` undoes it.
    A frozen codec (:meth:`freeze`) stays in eval mode and runs encode/tokenize without
    autograd; :meth:`decode` keeps the caller's grad mode so losses can reach the latents.
    """

    is_discrete = True
    is_continuous = True

    # ---- primitives ------------------------------------------------------------------
    @property
    def hop_length(self) -> int:
        raise NotImplementedError

    def _encode_raw(self, wav: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _quantize(self, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode_raw(self, raw: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _prepare_input(self, wav: torch.Tensor) -> torch.Tensor:
        """Whole-clip preprocessing before chunking (e.g. loudness normalisation); identity here."""
        return wav

    def _finish_output(self, wav: torch.Tensor) -> torch.Tensor:
        """Whole-clip postprocessing after the overlap-add; identity here."""
        return wav

    # ---- shared ----------------------------------------------------------------------
    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: int) -> int:
        return -(-int(num_samples) // self.hop_length)

    @property
    def is_frozen(self) -> bool:
        return getattr(self, "_frozen", False)

    def freeze(self):
        """Eval mode, no parameter gradients, and ``train()`` no longer leaves eval mode
        (so a frozen codec inside a training module stays deterministic). Returns self."""
        self.requires_grad_(False)
        self._frozen = True
        self.eval()
        return self

    def _frozen_context(self):
        return torch.no_grad() if self.is_frozen else contextlib.nullcontext()

    def _param_like(self) -> torch.Tensor:
        return next(self.parameters())

    def _check_wav(self, wav: torch.Tensor, name: str = "wav") -> torch.Tensor:
        if not isinstance(wav, torch.Tensor) or wav.dim() != 3:
            shape = tuple(wav.shape) if isinstance(wav, torch.Tensor) else type(wav).__name__
            raise InputError(f"{name} must be a tensor [B, C, S], got {shape}")
        if wav.shape[1] != self.channels:
            raise InputError(f"{name} has {wav.shape[1]} channel(s); this codec takes {self.channels}")
        if wav.shape[-1] == 0:
            raise InputError(f"{name} is empty (0 samples)")
        if not wav.is_floating_point():
            raise InputError(f"{name} must be float in [-1, 1], got {wav.dtype}")
        ref = self._param_like()
        return self._prepare_input(wav.to(device=ref.device, dtype=ref.dtype))

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        if not isinstance(codes, torch.Tensor) or codes.dim() != 3 or codes.shape[1] != self.num_codebooks:
            shape = tuple(codes.shape) if isinstance(codes, torch.Tensor) else type(codes).__name__
            raise InputError(f"codes must be a tensor [B, K={self.num_codebooks}, T], got {shape}")
        if codes.is_floating_point() or codes.is_complex():
            raise InputError(f"codes must be integer ids, got {codes.dtype}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.cardinality):
            raise InputError(
                f"codes hold ids in [{int(codes.min())}, {int(codes.max())}]; valid ids are 0 .. {self.cardinality - 1}"
            )
        return codes.to(device=self._param_like().device, dtype=torch.long)

    def _check_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if not isinstance(latents, torch.Tensor) or latents.dim() != 3 or latents.shape[1] != self.latent_dim:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise InputError(f"latents must be a tensor [B, D={self.latent_dim}, T], got {shape}")
        ref = self._param_like()
        return latents.to(device=ref.device, dtype=ref.dtype)

    # latent normalisation: the config is the source of truth
    def _latent_stats(self, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        def as_column(value) -> torch.Tensor:
            t = torch.as_tensor(value, dtype=like.dtype, device=like.device)
            return t.view(1, -1, 1) if t.dim() else t

        return as_column(self.config.latent_mean), as_column(self.config.latent_std)

    def _check_latent_stats(self, latent_mean: FloatOrList, latent_std: FloatOrList, where: str) -> None:
        for name, value in (("latent_mean", latent_mean), ("latent_std", latent_std)):
            if isinstance(value, (list, tuple)) and len(value) != self.latent_dim:
                raise ConfigError(f"{where}: {name} has {len(value)} values; latent_dim is {self.latent_dim}")
        stds = latent_std if isinstance(latent_std, (list, tuple)) else [latent_std]
        if any(not s > 0 for s in stds):
            raise ConfigError(f"{where}: latent_std must be > 0, got {latent_std}")

    def set_latent_stats(self, latent_mean: FloatOrList, latent_std: FloatOrList) -> None:
        """Store the latent normalisation (float, or one value per channel) in the config,
        so ``save_pretrained`` keeps it."""
        self._check_latent_stats(latent_mean, latent_std, type(self).__name__)
        self.register_to_config(latent_mean=latent_mean, latent_std=latent_std)

    @torch.no_grad()
    def fit_latent_stats(
        self, wavs: Iterable[torch.Tensor], per_channel: bool = True
    ) -> Tuple[FloatOrList, FloatOrList]:
        """Measure mean/std of the raw encoder latents over ``wavs`` (each ``[B, C, S]``),
        store them with :meth:`set_latent_stats` and return them (floats or per-channel lists)."""
        count, total, total_sq = 0, 0.0, 0.0
        for wav in wavs:
            raw = self._encode_chunked(self._check_wav(wav)).double()
            dims = (0, 2) if per_channel else (0, 1, 2)
            count += raw.numel() // (raw.shape[1] if per_channel else 1)
            total = total + raw.sum(dims)
            total_sq = total_sq + raw.pow(2).sum(dims)
        if count == 0:
            raise InputError("fit_latent_stats needs at least one waveform")
        mean = total / count
        std = (total_sq / count - mean.pow(2)).clamp_min(1e-10).sqrt()
        mean_v, std_v = (mean.tolist(), std.tolist()) if per_channel else (float(mean), float(std))
        self.set_latent_stats(mean_v, std_v)
        return mean_v, std_v

    def _encode_chunked(self, wav: torch.Tensor, fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
        """``fn`` (default :meth:`_encode_raw`) over ``wav`` in overlapping chunks of ``chunk_frames``."""
        cfg = self.config
        return encode_in_chunks(fn or self._encode_raw, wav, self.hop_length, cfg.chunk_frames, cfg.chunk_overlap_frames)

    def _normalise(self, raw: torch.Tensor) -> torch.Tensor:
        """Raw latents -> latents normalised by the codec's latent stats."""
        mean, std = self._latent_stats(raw)
        return (raw - mean) / std

    def _decode_chunked(self, fn: Callable[[torch.Tensor], torch.Tensor], frames: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        return decode_in_chunks(fn, frames, self.hop_length, cfg.chunk_frames, cfg.chunk_overlap_frames)

    # ---- public interface --------------------------------------------------------------
    @torch.no_grad()
    def tokenize(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, C, S]`` -> ``codes [B, K, T]`` (long), ``T = ceil(S / hop_length)``."""
        return self._encode_chunked(self._check_wav(wav), lambda piece: self._quantize(self._encode_raw(piece)))

    def decode_tokens(self, codes: torch.Tensor) -> torch.Tensor:
        """``codes [B, K, T]`` -> ``wav [B, C, T * hop_length]``."""
        codes = self._check_codes(codes)
        with self._frozen_context():
            wav = self._decode_chunked(lambda piece: self._decode_raw(self._dequantize(piece)), codes)
            return self._finish_output(wav)

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, C, S]`` -> normalised ``latents [B, D, T]``, ``T = ceil(S / hop_length)``."""
        wav = self._check_wav(wav)
        with self._frozen_context():
            return self._normalise(self._encode_chunked(wav))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised ``latents [B, D, T]`` -> ``wav [B, C, T * hop_length]``."""
        latents = self._check_latents(latents)
        mean, std = self._latent_stats(latents)
        return self._finish_output(self._decode_chunked(self._decode_raw, latents * std + mean))


class CodecModel(ModelMixin, ConfigMixin, FrameCodec):
    """Base of the serializable codecs: a :class:`FrameCodec` that stays in eval mode once frozen
    and whose ``from_pretrained`` turns a missing, foreign or mismatched folder into CheckpointError."""

    def train(self, mode: bool = True):
        return super().train(mode and not self.is_frozen)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """diffusers' loader for folders written by ``save_pretrained``, with checked errors."""
        with load_errors_as_checkpoint_errors(f"codec folder {pretrained_model_name_or_path}"):
            check_pretrained_folder(cls, pretrained_model_name_or_path, kwargs.get("subfolder"))
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
