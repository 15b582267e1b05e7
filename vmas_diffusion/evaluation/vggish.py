"""VGGish (Hershey et al., 2017), the embedding model of the original FAD, for local weights.

The network and its front end follow the published description: 16 kHz mono, a 25 ms / 10 ms
STFT (512-point FFT, periodic Hann, no centering), 64 mel bands from 125 to 7500 Hz on the
HTK mel scale with triangles built in the mel domain, ``log(mel + 0.01)``, examples of 96
frames (0.96 s, no overlap) -> VGG-style convolutions -> 128-d embedding. The embedding is
taken before the PCA/quantisation post-processing, as FAD does.

Weights are read from a local file: a safetensors file or a PyTorch state dict (loaded with
``weights_only=True``) whose keys follow the common PyTorch port (``features.{0,3,6,8,11,13}``,
``embeddings.{0,2,4}``). Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..weights import read_weights
from .network_embedder import NetworkEmbedder

SAMPLE_RATE = 16000
WINDOW = 400  # 25 ms
HOP = 160  # 10 ms
FFT = 512
N_MELS = 64
FMIN, FMAX = 125.0, 7500.0
EXAMPLE_FRAMES = 96
LOG_OFFSET = 0.01


def hertz_to_mel(hz: np.ndarray) -> np.ndarray:
    """HTK mel scale: ``1127 ln(1 + f / 700)``."""
    return 1127.0 * np.log1p(np.asarray(hz, dtype=np.float64) / 700.0)


def vggish_mel_matrix() -> np.ndarray:
    """``[FFT // 2 + 1, N_MELS]`` triangular mel weights, triangles linear in mel, DC bin zeroed."""
    bins_mel = hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2, FFT // 2 + 1))
    edges = np.linspace(hertz_to_mel(FMIN), hertz_to_mel(FMAX), N_MELS + 2)
    lower, center, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_mel[:, None] - lower) / (center - lower)
    falling = (upper - bins_mel[:, None]) / (upper - center)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0  # the DC bin carries no pitch information
    return weights


def waveform_to_examples(audio: np.ndarray) -> np.ndarray:
    """``(S,)`` 16 kHz mono audio -> ``[N, 96, 64]`` log-mel examples (short clips are zero-padded to one)."""
    audio = np.asarray(audio, dtype=np.float64)
    if audio.size < WINDOW + (EXAMPLE_FRAMES - 1) * HOP:
        audio = np.pad(audio, (0, WINDOW + (EXAMPLE_FRAMES - 1) * HOP - audio.size))
    n_frames = 1 + (audio.size - WINDOW) // HOP
    idx = np.arange(WINDOW)[None, :] + HOP * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)  # periodic Hann
    spec = np.abs(np.fft.rfft(audio[idx] * window, n=FFT))
    log_mel = np.log(spec @ vggish_mel_matrix() + LOG_OFFSET)
    n_examples = log_mel.shape[0] // EXAMPLE_FRAMES
    return log_mel[: n_examples * EXAMPLE_FRAMES].reshape(n_examples, EXAMPLE_FRAMES, N_MELS).astype(np.float32)


class VGGish(nn.Module):
    """VGGish network: ``[B, 1, 96, 64]`` log-mel examples -> ``[B, 128]`` embeddings."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        channels = 1
        # (out_channels, pool after) per conv, as in the VGGish release
        for out, pool in ((64, True), (128, True), (256, False), (256, True), (512, False), (512, True)):
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=True)]
            if pool:
                layers.append(nn.MaxPool2d(2, 2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.embeddings = nn.Sequential(
            nn.Linear(512 * 4 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, 128),
            nn.ReLU(inplace=True),
        )

    def forward(self, examples: torch.Tensor) -> torch.Tensor:
        x = self.features(examples)  # [B, 512, 6, 4]
        # the TensorFlow original flattens channels-last: [B, 6, 4, 512]
        x = x.permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        return self.embeddings(x)


class VGGishEmbedder(NetworkEmbedder):
    """FAD embedder over :class:`VGGish`: one 128-d embedding per 0.96 s of audio."""

    name = "vggish"
    weights_hint = "vggish=/path/to/vggish.pth"
    sample_rate = SAMPLE_RATE
    dim = 128

    def __init__(self, model: VGGish, device: str = "cpu", batch_size: int = 64):
        super().__init__(model, device, batch_size)

    @classmethod
    def from_checkpoint(cls, path: Path, device: str = "cpu") -> "VGGishEmbedder":
        state = read_weights(path, torch_format=True, what="weights file")
        return cls._with_weights(VGGish(), state, path, "a VGGish state dict", device)

    def _embed_mono(self, audio: np.ndarray) -> np.ndarray:
        return self._forward_batched(torch.from_numpy(waveform_to_examples(audio))[:, None])  # [N, 1, 96, 64]
