"""Audio embedders for FAD and CLAP-style scores.

Every embedder maps one clip to per-window embeddings ``[N, D]`` (FAD pools all windows of a
set, then fits one Gaussian); :meth:`AudioEmbedder.embed_clip` mean-pools them to one ``[D]``
vector for similarity scores. Choices, by name (:func:`build_embedder`):

- ``"mel"``: the weight-free fallback, :class:`MelStatsEmbedder` (log-mel frame statistics);
  always available offline, so ``evaluate`` always runs.
- ``"vggish=PATH"``: VGGish (Hershey et al., 2017), the embedder of the original FAD, from a
  local state dict (:mod:`.vggish`).
- ``"panns=PATH"``: PANNs Cnn14 (Kong et al., 2020), 2048-d, from a local AudioSet checkpoint
  (:mod:`.panns`).
- ``"clap"`` / ``"clap=PATH"``: the audio branch of LAION-CLAP from a local checkpoint
  (``clap_checkpoint`` or PATH), through :mod:`vmas_diffusion.models.clap_audio`.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError
from ..media.audio import resample
from ..models.registry import resolve
from .cache import file_fingerprint


def to_mono(audio: np.ndarray) -> np.ndarray:
    """``(S,)`` or ``(C, S)`` float audio -> ``(S,)`` float32 (channel mean)."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=0)
    if x.ndim != 1:
        raise InputError(f"audio must be (samples,) or (channels, samples), got shape {np.shape(audio)}")
    return x


class AudioEmbedder(abc.ABC):
    """Maps audio to per-window embeddings. Subclasses set ``name``, ``sample_rate`` and ``dim``."""

    name: str
    sample_rate: int
    dim: int
    checkpoint: Path | None = None  # the weights file, for embedders loaded from one
    #: how a spec names this embedder's local weights (``"vggish=/path/to/vggish.pth"``); None: it needs none
    weights_hint: str | None = None

    @classmethod
    def from_spec(cls, path: str | None, device: str = "cpu", clap_checkpoint: str | None = None) -> "AudioEmbedder":
        """The embedder a :func:`build_embedder` spec names: weight-free ones are built, the others load ``path``
        with their ``from_checkpoint``. ``clap_checkpoint`` is the evaluation's CLAP file (the CLAP embedder uses it)."""
        if cls.weights_hint is None:
            return cls()
        if not path:
            raise ConfigError(f"fad_embedder {cls.name!r} needs a local weights file: use {cls.weights_hint!r}")
        return cls.from_checkpoint(Path(path), device=device)

    def identity(self) -> dict:
        """What determines this embedder's output (name, settings, weights file stats): part of cache keys."""
        ident: dict = {"name": self.name, "sample_rate": self.sample_rate, "dim": self.dim}
        if self.checkpoint is not None:
            ident["checkpoint"] = file_fingerprint(self.checkpoint)
        return ident

    def embed(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Embed one clip.

        Args:
            audio: ``(S,)`` or ``(C, S)`` float waveform in [-1, 1] (channels are averaged).
            sample_rate: its rate in Hz; it is resampled to ``self.sample_rate``.

        Returns:
            ``[N, D]`` float32 window embeddings, ``N >= 1`` for any non-empty clip.
        """
        if int(sample_rate) <= 0:
            raise InputError(f"{self.name} embedder: sample_rate must be positive, got {sample_rate}")
        x = resample(to_mono(audio)[None], int(sample_rate), int(self.sample_rate))[0]
        if x.size == 0:
            raise InputError(f"{self.name} embedder: the audio clip is empty")
        return np.asarray(self._embed_mono(x), dtype=np.float32)

    def embed_clip(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """One ``[D]`` embedding per clip: the mean of its window embeddings."""
        return self.embed(audio, sample_rate).mean(axis=0)

    @abc.abstractmethod
    def _embed_mono(self, audio: np.ndarray) -> np.ndarray:
        """``(S,)`` mono audio at ``self.sample_rate`` -> ``[N, D]``."""


@dataclass
class MelStatsConfig:
    """Settings of the log-mel statistics embedder (VGGish-like front end, 0.96 s windows)."""

    sample_rate: int = 16000
    n_fft: int = 400  # 25 ms
    hop_length: int = 160  # 10 ms
    n_mels: int = 64
    fmin: float = 125.0
    fmax: float = 7500.0
    window_frames: int = 96  # 0.96 s windows, as VGGish examples
    window_hop_frames: int = 48  # 50 % overlap: more windows for the covariance of short sets
    log_offset: float = 0.01


class MelStatsEmbedder(AudioEmbedder):
    """Weight-free fallback embedder: per 0.96 s window, the mean and standard deviation of
    each log-mel band over the window's 10 ms frames (``D = 2 * n_mels = 128``).

    It sees timbre and spectral balance (mean) and their movement (std), nothing learned;
    FAD computed with it ranks sets by spectral similarity and is not comparable with a
    VGGish FAD. A clip shorter than one window gives one window over all its frames.
    """

    name = "mel-stats"

    def __init__(self, config: MelStatsConfig | None = None):
        import librosa

        self.config = config or MelStatsConfig()
        c = self.config
        self.sample_rate = c.sample_rate
        self.dim = 2 * c.n_mels
        self._mel = librosa.filters.mel(
            sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax, htk=True, norm=None
        ).astype(np.float32)

    def identity(self) -> dict:
        return {**super().identity(), "config": asdict(self.config)}

    def log_mel(self, audio: np.ndarray) -> np.ndarray:
        """``(S,)`` audio at ``sample_rate`` -> ``[frames, n_mels]`` log-mel magnitudes."""
        import librosa

        c = self.config
        spec = np.abs(librosa.stft(audio, n_fft=c.n_fft, hop_length=c.hop_length, window="hann", center=True))
        return np.log(self._mel @ spec + c.log_offset).T

    def _embed_mono(self, audio: np.ndarray) -> np.ndarray:
        c = self.config
        mel = self.log_mel(audio)
        if mel.shape[0] <= c.window_frames:
            starts = [0]
        else:
            starts = list(range(0, mel.shape[0] - c.window_frames + 1, c.window_hop_frames))
        windows = [mel[s : s + c.window_frames] for s in starts]
        return np.stack([np.concatenate([w.mean(axis=0), w.std(axis=0)]) for w in windows])


#: fad_embedder name -> "module:Class" (:mod:`vmas_diffusion.models.registry`): an embedder with
#: weights costs no import until it is chosen, and a new one is one line here
EMBEDDERS = {
    "mel": "vmas_diffusion.evaluation.embedders:MelStatsEmbedder",
    "vggish": "vmas_diffusion.evaluation.vggish:VGGishEmbedder",
    "panns": "vmas_diffusion.evaluation.panns:PannsEmbedder",
    "clap": "vmas_diffusion.evaluation.clap:ClapAudioEmbedder",
}
ALIASES = {"mel-stats": "mel"}


def build_embedder(spec: str, clap_checkpoint: str | None = None, device: str = "cpu") -> AudioEmbedder:
    """Build an embedder from its spec, ``NAME`` or ``NAME=PATH``: ``"mel"``, ``"vggish=PATH"``,
    ``"panns=PATH"``, ``"clap"`` (with ``clap_checkpoint``) or ``"clap=PATH"``.

    Raises:
        ConfigError: unknown name (the message lists the valid ones), or a name that needs a checkpoint given none.
        CheckpointError: the checkpoint file is missing or does not fit the model.
    """
    name, _, path = spec.partition("=")
    name = name.strip().lower()
    cls = resolve("fad_embedder", EMBEDDERS, ALIASES.get(name, name))
    return cls.from_spec(path.strip() or None, device=device, clap_checkpoint=clap_checkpoint)
