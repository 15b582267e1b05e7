"""A signal-processing music codec: log-mel frames, a residual k-means quantizer, Griffin-Lim.

No neural network, so it gives audible, music-like output with nothing to download and only
seconds of fitting (the bundled ``vmas-tiny`` model uses it):

* latents ``[B, D, T]``: log-amplitude mel spectrogram frames (``D = n_mels``), normalised with
  ``latent_mean`` / ``latent_std`` (per channel, :meth:`FrameCodec.fit_latent_stats`);
* codes ``[B, K, T]``: a residual vector quantizer over the normalised frames, ``K`` codebooks of
  ``codebook_size`` centroids each, fitted by k-means on real music (:meth:`fit_codebooks`).
  With ``num_groups`` G > 1 the mel bands are split into G contiguous groups and each group is
  quantized on its own (product quantization), ``K / G`` residual levels per group: a 128-band
  frame of varied music has far more detail than one 128-d codebook entry can hold (4 x 128
  full-band codes kept 37% of held-out music's sustained pitched energy, see
  docs/alignment_results.md). A group's centroids are zero outside its bands, so the nearest
  full-frame centroid is the nearest in the group's bands and decoding still sums centroids;
* decoding: mel amplitudes -> linear magnitudes (the filterbank's pseudo-inverse, clipped at 0)
  -> phase from fast Griffin-Lim (Perraudin et al. 2013, momentum 0.99), from a fixed phase so
  decoding is deterministic.

Frame ``t`` covers samples ``t * hop_length ...`` (a centred STFT), so ``T = ceil(S / hop)``
and decoding gives ``T * hop`` samples, as :class:`~.base.FrameCodec` requires.
"""

import functools
import math
from typing import Iterable

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401 - diffusers' pipeline loader looks it up here

from ...errors import ConfigError, InputError
from .base import CodecModel, FloatOrList, check_chunking


def _hz_to_mel(hz):
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log = hz >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), mel)


def _mel_to_hz(mel):
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0)), mel * (200.0 / 3))


def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    """``[n_mels, n_fft // 2 + 1]`` Slaney-normalised triangular mel filters, as ``librosa.filters.mel``
    computes them (tests/test_codecs.py checks they match): written out here because importing
    librosa costs seconds of numba set-up on every start of the generation path."""
    fft_freqs = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    mel_freqs = _mel_to_hz(np.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2))
    fdiff = np.diff(mel_freqs)
    ramps = np.subtract.outer(mel_freqs, fft_freqs)
    weights = np.zeros((n_mels, len(fft_freqs)), dtype=np.float32)
    for i in range(n_mels):
        weights[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    weights *= (2.0 / (mel_freqs[2 : n_mels + 2] - mel_freqs[:n_mels]))[:, None]  # Slaney: equal area
    return weights


@functools.lru_cache(maxsize=8)
def _mel_matrices(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float):
    """The filterbank ``[M, F]`` and its pseudo-inverse ``[F, M]``, computed once per process and
    configuration (a load builds the codec more than once; the pinv is the slow part)."""
    fb = torch.from_numpy(_mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max))
    return fb, torch.linalg.pinv(fb)


class MelGriffinLimCodec(CodecModel):
    """Log-mel + residual k-means tokens + Griffin-Lim as a discrete and continuous codec.

    Args:
        sample_rate: audio rate in Hz (mono only).
        hop_length: samples per frame (frame rate = ``sample_rate / hop_length``).
        n_fft: STFT size (window = ``n_fft``, Hann).
        n_mels: mel bands = latent channels.
        f_min / f_max: mel band edges in Hz (``f_max`` 0 = Nyquist).
        num_codebooks / codebook_size: the quantizer (K codebooks x N centroids).
        num_groups: contiguous mel-band groups quantized separately (K must be a multiple);
            codebook ``k`` serves group ``k % num_groups`` at residual level ``k // num_groups``.
        griffin_lim_iters: phase-recovery iterations at decode.
        token_sharpening / sharpening_bands: the token decoder's post-filter. A centroid is the
            average of many frames, so the narrow peaks of held notes come out blurred across mel
            bands; decoded tokens get ``z + a * (z - smooth(z))`` (``smooth``: a Gaussian of
            ``sharpening_bands`` mel bands along frequency), which restores that local contrast, as
            the global-variance post-filters of statistical speech synthesis do for over-smoothed
            spectra. ``a`` = 0 turns it off; :meth:`fit_sharpening` fits it. Latents are not filtered.
        log_floor: amplitude floor before the log (sets the silence level).
        latent_mean / latent_std / chunk_frames / chunk_overlap_frames: see :class:`FrameCodec`.
    A fresh codec has random codebooks (codes still depend on the input); fit them with
    :meth:`fit_codebooks` on real music before training a token model.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        sample_rate: int = 16000,
        hop_length: int = 320,
        n_fft: int = 1024,
        n_mels: int = 48,
        f_min: float = 20.0,
        f_max: float = 0.0,
        num_codebooks: int = 4,
        codebook_size: int = 128,
        num_groups: int = 1,
        griffin_lim_iters: int = 32,
        token_sharpening: float = 0.0,
        sharpening_bands: float = 1.5,
        log_floor: float = 1e-4,
        latent_mean: FloatOrList = 0.0,
        latent_std: FloatOrList = 1.0,
        chunk_frames: int = 1500,
        chunk_overlap_frames: int = 50,
    ):
        super().__init__()
        where = "MelGriffinLimCodec"
        if hop_length <= 0 or n_fft < hop_length:
            raise ConfigError(f"{where}: need 0 < hop_length <= n_fft, got hop_length={hop_length}, n_fft={n_fft}")
        nyquist = sample_rate / 2
        top = f_max or nyquist
        if not 0 <= f_min < top <= nyquist:
            raise ConfigError(f"{where}: need 0 <= f_min < f_max <= {nyquist} Hz, got f_min={f_min}, f_max={f_max}")
        if num_codebooks < 1 or codebook_size < 2 or n_mels < 1 or griffin_lim_iters < 0:
            raise ConfigError(
                f"{where}: need num_codebooks >= 1, codebook_size >= 2, n_mels >= 1, griffin_lim_iters >= 0"
            )
        if num_groups < 1 or num_codebooks % num_groups or n_mels < num_groups:
            raise ConfigError(f"{where}: num_groups must divide num_codebooks and be <= n_mels, got "
                              f"num_groups={num_groups}, num_codebooks={num_codebooks}, n_mels={n_mels}")
        if not (token_sharpening >= 0 and sharpening_bands > 0):
            raise ConfigError(f"{where}: need token_sharpening >= 0 and sharpening_bands > 0, got "
                              f"{token_sharpening} and {sharpening_bands}")
        if not log_floor > 0:
            raise ConfigError(f"{where}: log_floor must be > 0, got {log_floor}")
        check_chunking(chunk_frames, chunk_overlap_frames, where)
        fb, inverse = _mel_matrices(sample_rate, n_fft, n_mels, float(f_min), float(top))
        # derived from the config: not saved, rebuilt on load (clones: the cached pair stays untouched)
        self.register_buffer("mel_basis", fb.clone(), persistent=False)  # [M, F]
        self.register_buffer("mel_inverse", inverse.clone(), persistent=False)  # [F, M]
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        # codebooks in normalised-latent space; level l draws with std 2^-l as residuals shrink
        level = torch.arange(num_codebooks) // num_groups
        scale = torch.pow(0.5, level.float()).view(-1, 1, 1)
        books = torch.randn(num_codebooks, codebook_size, n_mels) * scale * self._group_masks()[:, None, :]
        self.codebooks = torch.nn.Parameter(books, requires_grad=False)  # [K, N, D]
        self._check_latent_stats(latent_mean, latent_std, where)

    # ---- interface properties -----------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return int(self.config.sample_rate)

    @property
    def channels(self) -> int:
        return 1

    @property
    def hop_length(self) -> int:
        return int(self.config.hop_length)

    @property
    def num_codebooks(self) -> int:
        return int(self.config.num_codebooks)

    @property
    def cardinality(self) -> int:
        return int(self.config.codebook_size)

    @property
    def latent_dim(self) -> int:
        return int(self.config.n_mels)

    def _group_masks(self) -> torch.Tensor:
        """``[K, D]``: 1 on the mel bands codebook ``k`` quantizes (its group's), 0 elsewhere."""
        groups, bands = self.config.num_groups, self.config.n_mels
        group_of_band = torch.arange(bands) * groups // bands
        group_of_book = torch.arange(self.config.num_codebooks) % groups
        return (group_of_book[:, None] == group_of_band[None, :]).float()

    # ---- primitives ---------------------------------------------------------------------
    def _stft(self, wav: torch.Tensor) -> torch.Tensor:
        """``[N, S]`` -> complex ``[N, F, S // hop + 1]`` (centred)."""
        return torch.stft(wav, self.config.n_fft, self.hop_length, window=self.window, center=True,
                          pad_mode="reflect" if wav.shape[-1] > self.config.n_fft // 2 else "constant",
                          return_complex=True)

    def _encode_raw(self, wav: torch.Tensor) -> torch.Tensor:
        """``wav [B, 1, s]`` -> log-mel ``[B, n_mels, ceil(s / hop)]``."""
        frames = -(-wav.shape[-1] // self.hop_length)
        padded = torch.nn.functional.pad(wav[:, 0], (0, frames * self.hop_length - wav.shape[-1]))
        magnitude = self._stft(padded.float()).abs()[..., :frames]  # [B, F, T]
        mel = torch.matmul(self.mel_basis, magnitude)
        return torch.log(mel.clamp_min(self.config.log_floor)).to(wav.dtype)

    def _quantize(self, raw: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, D, t]`` -> codes ``[B, K, t]``: nearest centroid of each level, residual passed on."""
        residual = self._normalise(raw).transpose(1, 2).float()  # [B, t, D]
        codes = []
        for book in self.codebooks.float():  # [N, D]
            ids = torch.cdist(residual, book.unsqueeze(0).expand(residual.shape[0], -1, -1)).argmin(-1)
            codes.append(ids)
            residual = residual - book[ids]
        return torch.stack(codes, dim=1)

    def _dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, K, t]`` -> log-mel ``[B, D, t]`` (sum of the chosen centroids, de-normalised,
        post-filtered by ``token_sharpening``)."""
        return self._sharpen(self._centroid_sum(codes), self.config.token_sharpening)

    def _centroid_sum(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, K, t]`` -> the sum of their centroids as log-mel ``[B, D, t]`` (de-normalised)."""
        z = sum(book[codes[:, k]] for k, book in enumerate(self.codebooks))  # [B, t, D]
        mean, std = self._latent_stats(z)
        return z.transpose(1, 2) * std + mean

    def _band_smooth(self, raw: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, D, t]`` smoothed along frequency by a Gaussian of ``sharpening_bands`` bands."""
        sigma = float(self.config.sharpening_bands)
        reach = max(1, int(3 * sigma))
        offsets = torch.arange(-reach, reach + 1, dtype=torch.float32, device=raw.device)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        b, d, t = raw.shape
        bands = raw.float().transpose(1, 2).reshape(b * t, 1, d)
        bands = torch.nn.functional.pad(bands, (reach, reach), mode="replicate")
        smooth = torch.nn.functional.conv1d(bands, (kernel / kernel.sum()).view(1, 1, -1))
        return smooth.reshape(b, t, d).transpose(1, 2).to(raw.dtype)

    def _sharpen(self, raw: torch.Tensor, amount: float) -> torch.Tensor:
        return raw + amount * (raw - self._band_smooth(raw)) if amount else raw

    def _band_contrast(self, raw: torch.Tensor) -> float:
        """RMS of the log-mel's detail across bands (``raw - smooth(raw)``): how peaked the spectra are."""
        return float((raw - self._band_smooth(raw)).float().pow(2).mean().sqrt())

    def decibels(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised ``latents [B, D, T]`` -> the mel spectrogram they stand for, in dB (of amplitude)."""
        mean, std = self._latent_stats(latents)
        return (latents * std + mean) * (20.0 / math.log(10.0))

    def spectral_flux(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised ``latents [B, D, T]`` -> ``[B, T - 1]``: the mean rise of the mel bands from one
        frame to the next, in dB (librosa's onset strength, on this codec's frames). Differentiable,
        so a sampler can steer how much the music moves (:class:`~vmas_diffusion.models.generators.latent_dit.LatentDiT`'s
        flux guidance)."""
        decibels = self.decibels(latents)
        return torch.relu(decibels[..., 1:] - decibels[..., :-1]).mean(dim=1)

    def _decode_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """Log-mel ``[B, D, t]`` -> ``wav [B, 1, t * hop]`` by fast Griffin-Lim."""
        frames = raw.shape[-1]
        length = frames * self.hop_length
        mel = torch.exp(raw.float()) - self.config.log_floor
        magnitude = torch.matmul(self.mel_inverse, mel.clamp_min(0)).clamp_min(0)  # [B, F, t]
        # the centred STFT of `length` samples has one more frame than the codec: repeat the last
        magnitude = torch.cat([magnitude, magnitude[..., -1:]], dim=-1)
        n_fft, hop = self.config.n_fft, self.hop_length

        def istft(spec):
            return torch.istft(spec, n_fft, hop, window=self.window, center=True, length=length)

        spec = magnitude.to(torch.complex64)  # zero phase start: deterministic
        previous = torch.zeros_like(spec)
        for _ in range(self.config.griffin_lim_iters):
            projected = self._stft(istft(spec))
            accelerated = projected + 0.99 * (projected - previous)
            previous = projected
            spec = magnitude * torch.exp(1j * torch.angle(accelerated))
        wav = istft(spec).clamp(-1.0, 1.0)
        return wav.unsqueeze(1).to(raw.dtype)

    def _param_like(self) -> torch.Tensor:
        return self.codebooks

    # ---- fitting ------------------------------------------------------------------------
    @torch.no_grad()
    def fit_codebooks(self, wavs: Iterable[torch.Tensor], iters: int = 25, max_frames: int = 200_000,
                      seed: int = 0, progress: bool = False) -> dict:
        """Fit the residual quantizer by k-means, level by level, on the frames of ``wavs``
        (each ``[B, 1, S]``; call :meth:`fit_latent_stats` first so frames are normalised).
        Returns ``{"rmse": [normalised-latent RMSE after each codebook]}``."""
        frames = torch.cat([self.encode(w).transpose(1, 2).reshape(-1, self.latent_dim) for w in wavs]).float()
        if frames.shape[0] < self.cardinality:
            raise InputError(f"fit_codebooks needs at least {self.cardinality} frames, got {frames.shape[0]}")
        generator = torch.Generator().manual_seed(seed)
        if frames.shape[0] > max_frames:
            frames = frames[torch.randperm(frames.shape[0], generator=generator)[:max_frames]]
        residual, errors = frames, []
        books = range(self.num_codebooks)
        if progress:
            from tqdm.auto import tqdm

            books = tqdm(books, desc="k-means codebooks")
        masks = self._group_masks().to(frames)
        for k in books:
            bands = masks[k].bool()
            centroids = torch.zeros(self.cardinality, self.latent_dim, dtype=frames.dtype)
            centroids[:, bands] = _kmeans(residual[:, bands], self.cardinality, iters, generator)
            ids = torch.cdist(residual[:, bands], centroids[:, bands]).argmin(-1)
            residual = residual - centroids[ids]
            self.codebooks.data[k].copy_(centroids.to(self.codebooks))
            errors.append(float(residual.pow(2).mean().sqrt()))
        return {"rmse": errors}


    @torch.no_grad()
    def fit_sharpening(self, wavs: Iterable[torch.Tensor], max_amount: float = 4.0) -> dict:
        """Set ``token_sharpening`` so that decoded tokens have the band contrast of the music
        itself over ``wavs`` (each ``[B, 1, S]``; fit the codebooks first): the post-filter puts
        back the detail the centroids average away, no more. Returns the contrasts and the amount."""
        raws = [self._encode_chunked(self._check_wav(w)) for w in wavs]
        if not raws:
            raise InputError("fit_sharpening needs at least one waveform")
        sums = [self._centroid_sum(self._quantize(raw)) for raw in raws]
        target = sum(self._band_contrast(raw) for raw in raws) / len(raws)

        def contrast(amount):
            return sum(self._band_contrast(self._sharpen(z, amount)) for z in sums) / len(sums)

        low, high = 0.0, float(max_amount)  # the contrast grows with the amount: bisect
        if contrast(high) < target:
            low = high
        for _ in range(20 if low < high else 0):
            middle = (low + high) / 2
            low, high = (middle, high) if contrast(middle) < target else (low, middle)
        amount = round((low + high) / 2, 3)
        self.register_to_config(token_sharpening=amount)
        return {"music_contrast": target, "token_contrast": contrast(0.0), "token_sharpening": amount}


def _kmeans(x: torch.Tensor, k: int, iters: int, generator: torch.Generator) -> torch.Tensor:
    """``x [N, D]`` -> ``[k, D]`` centroids: k-means++ seeding, then Lloyd iterations; an empty
    cluster is re-seeded at the point farthest from its centroid."""
    n = x.shape[0]
    centroids = x[torch.randint(n, (1,), generator=generator)]
    closest = torch.cdist(x, centroids).squeeze(1).pow(2)
    for _ in range(1, k):
        pick = torch.multinomial(closest / closest.sum() if closest.sum() > 0 else torch.ones(n), 1, generator=generator)
        centroids = torch.cat([centroids, x[pick]])
        closest = torch.minimum(closest, (x - x[pick]).pow(2).sum(-1))
    for _ in range(iters):
        dist = torch.cdist(x, centroids)
        ids = dist.argmin(-1)
        sums = torch.zeros_like(centroids).index_add_(0, ids, x)
        counts = torch.bincount(ids, minlength=k).to(x.dtype)
        empty = counts == 0
        centroids = torch.where(empty[:, None], centroids, sums / counts.clamp_min(1)[:, None])
        if empty.any():
            far = dist.gather(1, ids[:, None]).squeeze(1).topk(int(empty.sum())).indices
            centroids[empty] = x[far]
    return centroids
