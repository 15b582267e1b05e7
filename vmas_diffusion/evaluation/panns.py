"""PANNs Cnn14 (Kong et al., 2020) as an FAD embedder, for a local AudioSet checkpoint.

The network follows the published Cnn14 at 32 kHz: power STFT (1024-point Hann window, hop
320, centred, reflect padding) -> 64 mel bands 50-14000 Hz (Slaney mel filters) -> dB
(``10 log10(max(mel, 1e-10))``) -> batch norm over mel bands -> six conv blocks (two 3x3
conv + BN + ReLU, 2x2 average pooling; 64 ... 2048 channels) -> mean over frequency ->
max + mean over time -> ``fc1`` + ReLU: the 2048-d embedding.

Checkpoints are the released ``Cnn14_mAP=0.431.pth`` layout (a dict whose ``model`` entry is the
state dict), read with ``torch.load(weights_only=True)``, or a safetensors file. The
checkpoint's own STFT/mel buffers (``spectrogram_extractor.*``, ``logmel_extractor.*``) are not
needed by this front end; its mel matrix, when present, is checked against ours so that a
checkpoint trained with another front end is refused instead of silently mis-embedding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError
from ..weights import read_weights
from .network_embedder import NetworkEmbedder

SAMPLE_RATE = 32000
N_FFT = 1024
HOP = 320
N_MELS = 64
FMIN, FMAX = 50.0, 14000.0
EMBED_DIM = 2048
NUM_CLASSES = 527  # AudioSet


class ConvBlock(nn.Module):
    """Two 3x3 conv + batch norm + ReLU, then 2-D average pooling: ``[B, C, T, F] -> [B, C', T/p, F/p]``."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.bn2 = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.avg_pool2d(x, pool) if pool != (1, 1) else x


class LogMelFrontEnd(nn.Module):
    """``[B, S]`` 32 kHz audio -> ``[B, 1, T, 64]`` dB mel power (Cnn14's input); no learned weights."""

    def __init__(self):
        super().__init__()
        import librosa

        mel = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=FMIN, fmax=FMAX)  # Slaney
        # buffers are rebuilt from the constants, so they stay out of the state dict
        self.register_buffer("mel_basis", torch.from_numpy(mel.T.astype(np.float32)), persistent=False)  # [F, M]
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, N_FFT, HOP, window=self.window, center=True, pad_mode="reflect", return_complex=True)
        power = spec.abs().pow(2).transpose(1, 2)  # [B, T, F]
        return (10.0 * torch.log10(torch.clamp(power @ self.mel_basis, min=1e-10)))[:, None]


class Cnn14(nn.Module):
    """Cnn14: ``[B, S]`` 32 kHz audio -> ``[B, 2048]`` embeddings (eval mode; no augmentation)."""

    def __init__(self):
        super().__init__()
        self.front_end = LogMelFrontEnd()
        self.bn0 = nn.BatchNorm2d(N_MELS)
        widths = (1, 64, 128, 256, 512, 1024, 2048)
        for i in range(6):
            setattr(self, f"conv_block{i + 1}", ConvBlock(widths[i], widths[i + 1]))
        self.fc1 = nn.Linear(EMBED_DIM, EMBED_DIM)
        self.fc_audioset = nn.Linear(EMBED_DIM, NUM_CLASSES)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.front_end(audio)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)  # normalise each mel band
        for i in range(6):
            x = getattr(self, f"conv_block{i + 1}")(x, (2, 2) if i < 5 else (1, 1))
        x = x.mean(dim=3)  # over frequency: [B, C, T]
        x = x.max(dim=2).values + x.mean(dim=2)
        return F.relu(self.fc1(x))


class PannsEmbedder(NetworkEmbedder):
    """FAD embedder over :class:`Cnn14`: one 2048-d embedding per window (default 1 s, hop 0.5 s)."""

    name = "panns-cnn14"
    weights_hint = "panns=/path/to/Cnn14_mAP=0.431.pth"
    sample_rate = SAMPLE_RATE
    dim = EMBED_DIM

    def __init__(self, model: Cnn14, device: str = "cpu", window_seconds: float = 1.0, hop_seconds: float = 0.5,
                 batch_size: int = 16):
        super().__init__(model, device, batch_size)
        self.window = int(window_seconds * SAMPLE_RATE)
        self.hop = int(hop_seconds * SAMPLE_RATE)

    @classmethod
    def from_checkpoint(cls, path: Path, device: str = "cpu") -> "PannsEmbedder":
        state = read_weights(path, torch_format=True, what="weights file")
        model = Cnn14()
        own_mel = state.get("logmel_extractor.melW")
        if own_mel is not None and (
            tuple(own_mel.shape) != tuple(model.front_end.mel_basis.shape)
            or not torch.allclose(own_mel.float(), model.front_end.mel_basis, atol=1e-4)
        ):
            raise CheckpointError(f"{path}: its mel front end is not Cnn14 at 32 kHz / 64 bands / 50-14000 Hz")
        weights = {k: v for k, v in state.items() if not k.startswith(("spectrogram_extractor.", "logmel_extractor."))}
        return cls._with_weights(model, weights, path, "a PANNs Cnn14 checkpoint", device)

    def _embed_mono(self, audio: np.ndarray) -> np.ndarray:
        if audio.size < self.window:
            audio = np.pad(audio, (0, self.window - audio.size))
        starts = range(0, audio.size - self.window + 1, self.hop)
        windows = torch.from_numpy(np.stack([audio[s : s + self.window] for s in starts]).astype(np.float32))
        return self._forward_batched(windows)
