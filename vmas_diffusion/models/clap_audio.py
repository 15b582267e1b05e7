"""CLAP's audio branch (laion-clap HTS-AT + audio projection), loaded alone and offline.

The one place that touches ``laion_clap`` (the optional ``clap`` extra). Importing the package
itself is not possible here: ``laion_clap/__init__.py`` builds the whole CLAP (text towers from
transformers, tokenizers fetched from the Hub at import), and ``clap_module/utils.py`` imports
``torchvision`` and ``h5py`` at module level; the package also pins ``numpy<2``. So this module:

1. finds the installed package with ``importlib.util.find_spec`` (which runs nothing),
2. registers an empty stand-in package whose ``__path__`` is ``laion_clap/clap_module`` and imports
   only ``htsat.py`` from it (plus what it imports relatively: ``utils.py``, ``feature_fusion.py``),
   so neither ``__init__.py`` runs,
3. while ``utils.py`` executes, puts shims for its two unused module-level imports in
   ``sys.modules`` -- ``torchvision.ops.misc.FrozenBatchNorm2d`` (used only by ``freeze_batch_norm_2d``,
   which the audio branch never calls) and ``h5py`` (used only by a dataset-index helper) -- and
   removes them right after, so nothing else in the process ever sees a fake ``torchvision``.
   A real torchvision / h5py, when installed, is used as is.

The audio branch then needs only ``torch``, ``numpy`` and ``torchlibrosa`` (pure Python, installed
with ``--no-deps``; it uses librosa for the mel filters and works with numpy 2).

:class:`ClapAudioEncoder` holds ``audio_branch`` and ``audio_projection`` under the same names as
``laion_clap``'s ``CLAP`` model, so a CLAP checkpoint's audio keys load unchanged
(:meth:`ClapAudioEncoder.from_clap_checkpoint`); the text branch's keys are ignored. Embeddings
follow ``CLAP.get_audio_embedding``: HTS-AT pooled ``embedding`` -> ``audio_projection`` -> L2 norm,
``[B, 512]``, from 48 kHz mono clips of 10 s filled as laion-clap's ``repeatpad`` does.
"""

import importlib
import importlib.util
import os
import sys
import types
import warnings
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config

from ..errors import CheckpointError, ConfigError, InputError
from ..weights import read_weights, state_dict_mismatch

#: name of the stand-in package that hosts laion-clap's audio files
_STANDIN = "_vmas_laion_clap_audio"

#: HTS-AT sizes as laion-clap's ``create_htsat_model`` builds them (checkpoint compatibility)
HTSAT_SIZES = {
    "tiny": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [4, 8, 16, 32]},
    "base": {"embed_dim": 128, "depths": [2, 2, 12, 2], "num_heads": [4, 8, 16, 32]},
    "large": {"embed_dim": 256, "depths": [2, 2, 12, 2], "num_heads": [4, 8, 16, 32]},
}


def clap_available() -> bool:
    """True when laion-clap and torchlibrosa are installed (the ``clap`` extra)."""
    return importlib.util.find_spec("laion_clap") is not None and importlib.util.find_spec("torchlibrosa") is not None


class _UnavailableFrozenBatchNorm2d(nn.Module):
    """Stands in for torchvision's FrozenBatchNorm2d, which the audio branch never builds."""

    def __init__(self, *args, **kwargs):
        raise ConfigError("FrozenBatchNorm2d needs torchvision, which the CLAP audio branch does not use")


def _shim_modules() -> dict:
    """Stand-ins for the unused module-level imports of ``clap_module/utils.py`` that are missing."""
    shims = {}
    if importlib.util.find_spec("torchvision") is None:
        torchvision = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")
        misc = types.ModuleType("torchvision.ops.misc")
        misc.FrozenBatchNorm2d = _UnavailableFrozenBatchNorm2d
        torchvision.ops, ops.misc = ops, misc
        shims.update({"torchvision": torchvision, "torchvision.ops": ops, "torchvision.ops.misc": misc})
    if importlib.util.find_spec("h5py") is None:
        shims["h5py"] = types.ModuleType("h5py")
    return shims


def load_htsat_module() -> types.ModuleType:
    """laion-clap's ``clap_module/htsat.py``, imported without the rest of the package (see module doc)."""
    name = f"{_STANDIN}.htsat"
    if name in sys.modules:
        return sys.modules[name]
    if not clap_available():
        raise ConfigError(
            "the CLAP audio branch needs the `clap` extra: pip install --no-deps laion-clap==1.1.7 torchlibrosa==0.1.0"
        )
    spec = importlib.util.find_spec("laion_clap")
    folder = Path(spec.origin).parent / "clap_module"
    if not (folder / "htsat.py").exists():
        raise ConfigError(f"laion_clap at {folder.parent} has no clap_module/htsat.py; install laion-clap==1.1.7")
    package = types.ModuleType(_STANDIN)
    package.__path__ = [str(folder)]
    package.__package__ = _STANDIN
    sys.modules[_STANDIN] = package
    shims = _shim_modules()
    added = [key for key in shims if key not in sys.modules]
    sys.modules.update({key: shims[key] for key in added})
    try:
        return importlib.import_module(name)
    except Exception:
        for key in [k for k in sys.modules if k == _STANDIN or k.startswith(_STANDIN + ".")]:
            del sys.modules[key]
        raise
    finally:
        for key in added:
            sys.modules.pop(key, None)


def fft_resample(waveform: torch.Tensor, src_rate: int, dst_rate: int) -> torch.Tensor:
    """Band-limited resampling of ``[..., S]`` by FFT truncation / zero padding (``scipy.signal.resample``)."""
    if src_rate == dst_rate:
        return waveform
    n_in = waveform.shape[-1]
    n_out = int(round(n_in * dst_rate / src_rate))
    spectrum = torch.fft.rfft(waveform.float(), dim=-1)
    bins = n_out // 2 + 1
    if spectrum.shape[-1] >= bins:
        spectrum = spectrum[..., :bins]
    else:
        spectrum = F.pad(spectrum, (0, bins - spectrum.shape[-1]))
    return torch.fft.irfft(spectrum, n=n_out, dim=-1) * (n_out / n_in)


class ClapAudioEncoder(ModelMixin, ConfigMixin):
    """Frozen-teacher music embedding: laion-clap's HTS-AT audio branch + audio projection.

    Args:
        htsat_size: "tiny" (630k / 630k-audioset checkpoints) or "base" / "large" (the music
            checkpoints, e.g. ``music_audioset_epoch_15_esc_90.14.pt`` is "base").
        sample_rate, window_size, hop_size, mel_bins, fmin, fmax, clip_samples, class_num:
            laion-clap's ``audio_cfg`` (defaults = its HTSAT configs).
        joint_embed_dim: CLAP's joint embedding width (512).

    ``forward(waveform [B, S] or [B, C, S], sample_rate) -> [B, joint_embed_dim]`` L2-normalised.
    """

    @register_to_config
    def __init__(
        self,
        htsat_size: str = "tiny",
        sample_rate: int = 48000,
        window_size: int = 1024,
        hop_size: int = 480,
        mel_bins: int = 64,
        fmin: int = 50,
        fmax: int = 14000,
        clip_samples: int = 480000,
        class_num: int = 527,
        joint_embed_dim: int = 512,
    ):
        super().__init__()
        if htsat_size not in HTSAT_SIZES:
            raise ConfigError(f"ClapAudioEncoder: htsat_size {htsat_size!r} unknown; valid choices: {', '.join(HTSAT_SIZES)}")
        htsat = load_htsat_module()
        audio_cfg = types.SimpleNamespace(
            sample_rate=sample_rate, window_size=window_size, hop_size=hop_size, mel_bins=mel_bins,
            fmin=fmin, fmax=fmax, clip_samples=clip_samples, class_num=class_num,
            model_type="HTSAT", model_name=htsat_size,
        )
        size = HTSAT_SIZES[htsat_size]
        with warnings.catch_warnings():
            # laion-clap's window attention calls torch.meshgrid without `indexing` (same result, "ij").
            warnings.filterwarnings("ignore", message="torch.meshgrid", category=UserWarning)
            self.audio_branch = htsat.HTSAT_Swin_Transformer(
                spec_size=256, patch_size=4, patch_stride=(4, 4), num_classes=class_num,
                embed_dim=size["embed_dim"], depths=list(size["depths"]), num_heads=list(size["num_heads"]),
                window_size=8, config=audio_cfg, enable_fusion=False, fusion_type="None",
            )
        width = self.audio_branch.num_features
        self.audio_projection = nn.Sequential(
            nn.Linear(width, joint_embed_dim), nn.ReLU(), nn.Linear(joint_embed_dim, joint_embed_dim)
        )

    @classmethod
    def from_clap_checkpoint(
        cls, path: Union[str, os.PathLike], htsat_size: str = "tiny", allow_pickle: bool = False, **config
    ) -> "ClapAudioEncoder":
        """Build and load the audio keys of a laion-clap checkpoint (``.pt`` with ``state_dict``, or ``.safetensors``).

        ``.pt`` files load with ``torch.load(weights_only=True)``; pass ``allow_pickle=True`` only for a
        trusted file that needs full unpickling. ``module.`` prefixes (DDP) and every non-audio key
        (text branch, logit scales, ``audio_transform``) are dropped; a missing or mis-shaped audio
        key raises :class:`CheckpointError`.
        """
        path = Path(path)
        state = read_weights(path, torch_format=True, what="CLAP checkpoint", allow_pickle=allow_pickle)
        state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
        audio = {k: v for k, v in state.items() if k.startswith(("audio_branch.", "audio_projection."))}
        model = cls(htsat_size=htsat_size, **config)
        expected = model.state_dict()
        audio = {k: v for k, v in audio.items() if k in expected}  # audio keys of other variants do not matter
        problem = state_dict_mismatch(expected, audio)
        if problem:
            raise CheckpointError(
                f"CLAP checkpoint {path} lacks or mis-shapes audio keys for htsat_size={htsat_size!r} ({problem}); "
                "is it a fusion checkpoint or another HTS-AT size?"
            )
        model.load_state_dict(audio)
        return model.eval()

    def prepare(self, waveform: torch.Tensor, sample_rate: int, lengths: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``[B, S]`` / ``[B, C, S]`` audio -> ``[B, W, clip_samples]`` 48 kHz mono windows.

        Clips no longer than ``clip_samples`` are repeated whole and zero padded (laion-clap's
        ``repeatpad``) into one window; longer ones are cut into consecutive windows, the last one
        aligned to the end, and shorter items repeat their last window so every row has ``W`` windows.
        ``lengths`` ``[B]`` (samples at ``sample_rate``) marks padding to drop before filling.
        """
        if waveform.dim() == 3:
            waveform = waveform.mean(dim=1)
        if waveform.dim() != 2 or waveform.shape[-1] == 0:
            raise InputError(f"ClapAudioEncoder: waveform must be [B, S] or [B, C, S], got shape {tuple(waveform.shape)}")
        if sample_rate <= 0:
            raise InputError(f"ClapAudioEncoder: sample_rate must be > 0, got {sample_rate}")
        target = self.config.sample_rate
        clip = self.config.clip_samples
        items = []
        for b in range(waveform.shape[0]):
            n = waveform.shape[-1] if lengths is None else int(lengths[b])
            if n <= 0:
                raise InputError(f"ClapAudioEncoder: item {b} has length {n}")
            items.append(fft_resample(waveform[b, :n], sample_rate, target))
        windows = []
        for item in items:
            n = item.shape[-1]
            if n <= clip:
                filled = item.repeat(clip // n)
                windows.append([F.pad(filled, (0, clip - filled.shape[-1]))])
            else:
                starts = list(range(0, n - clip, clip)) + [n - clip]
                windows.append([item[s:s + clip] for s in starts])
        count = max(len(w) for w in windows)
        return torch.stack([torch.stack(w + [w[-1]] * (count - len(w))) for w in windows])

    def forward(
        self, waveform: torch.Tensor, sample_rate: int, lengths: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """``[B, S]`` or ``[B, C, S]`` audio at ``sample_rate`` -> ``[B, joint_embed_dim]`` L2-normalised.

        Windows from :meth:`prepare` are embedded separately; a clip's embedding is the
        normalised mean of its windows' normalised embeddings.
        """
        windows = self.prepare(waveform, sample_rate, lengths).to(self.device, self.dtype)
        batch, count, samples = windows.shape
        pooled = self.audio_branch({"waveform": windows.reshape(batch * count, samples)}, device=self.device)["embedding"]
        embedding = F.normalize(self.audio_projection(pooled), dim=-1).reshape(batch, count, -1)
        return F.normalize(embedding.mean(dim=1), dim=-1)
