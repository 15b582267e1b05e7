"""What is in a piece of music, whatever its video: tonal content and pace.

- ``harmonic_share``: share of the spectrogram's energy that librosa's harmonic-percussive
  separation (HPSS, median filtering) gives to the harmonic part. Drums score low, sustained
  instruments high.
- ``sustained_pitch_share``: share of the music's non-silent time in which at least half of the
  energy between C3 (130.8 Hz) and 4 kHz sits in sustained pitched tones: spectral peaks at least
  20 dB above the frame's median magnitude in that band that stay in the same bin (+-1) for at
  least 0.3 s. A drum hit's ring is shorter; a held note, chord or melody line is not (a TR-808
  drum loop scores 0.05, orchestral game music 0.7-1.0).
- ``onset_density``: onsets per second (:func:`~vmas_diffusion.beats.music_beats`: peaks of the onset
  strength ``ONSET_DELTA`` dB above their neighbourhood, so held notes count none).
- ``pace_correlation``: Spearman rank correlation of two per-clip series (e.g. the video's visual
  beats per minute against the music's tempo); None when undefined.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..media._common import audio_to_numpy
from ..media.audio import _check_sample_rate, resample

ANALYSIS_RATE = 16000
N_FFT = 2048  # 128 ms: 7.8 Hz bins, fine enough to hold a note's partial in one bin
HOP = 256  # 16 ms
C3_HZ = 130.81
TOP_HZ = 4000.0
PEAK_DB = 20.0
MIN_SUSTAIN_S = 0.3
TONAL_FRACTION = 0.5  # of a frame's C3-4 kHz energy in sustained peaks
SILENCE_DB = -50.0


def _magnitude(audio, sample_rate: int) -> np.ndarray:
    """``|STFT|`` of the mono mix at 16 kHz: ``(N_FFT // 2 + 1, frames)``."""
    import librosa

    mono = audio_to_numpy(audio).mean(axis=0, keepdims=True)
    y = resample(mono, _check_sample_rate(sample_rate), ANALYSIS_RATE)[0]
    return np.abs(librosa.stft(y, n_fft=N_FFT, hop_length=HOP))


def tonal_shares(audio, sample_rate: int) -> tuple[float, float]:
    """``(harmonic_share, sustained_pitch_share)`` from one analysis of ``audio``."""
    magnitude = _magnitude(audio, sample_rate)
    return _harmonic_share(magnitude), _sustained_pitch_share(magnitude)


def harmonic_share(audio, sample_rate: int) -> float:
    """Harmonic energy / (harmonic + percussive energy) of HPSS, in [0, 1]; 0.0 for silence."""
    return _harmonic_share(_magnitude(audio, sample_rate))


def _harmonic_share(magnitude: np.ndarray) -> float:
    import librosa

    harmonic, percussive = librosa.decompose.hpss(magnitude)
    h, p = float((harmonic**2).sum()), float((percussive**2).sum())
    return h / (h + p) if h + p > 0 else 0.0


def _run_lengths(mask: np.ndarray) -> np.ndarray:
    """For a boolean ``(F, T)`` mask, each True cell's length of its run along time (0 elsewhere)."""
    out = np.zeros(mask.shape, np.int32)
    for f in np.flatnonzero(mask.any(axis=1)):
        row = np.concatenate([[0], mask[f].astype(np.int8), [0]])
        edges = np.flatnonzero(np.diff(row))
        for start, stop in zip(edges[::2], edges[1::2]):
            out[f, start:stop] = stop - start
    return out


def sustained_pitch_share(audio, sample_rate: int) -> float:
    """Share of the non-silent frames whose C3-4 kHz energy is mostly sustained tones (module docstring)."""
    return _sustained_pitch_share(_magnitude(audio, sample_rate))


def _sustained_pitch_share(magnitude: np.ndarray) -> float:
    freqs = np.fft.rfftfreq(N_FFT, 1.0 / ANALYSIS_RATE)
    band = magnitude[(freqs >= C3_HZ) & (freqs <= TOP_HZ)]
    if band.size == 0:
        return 0.0
    power_db = 20 * np.log10(magnitude.max(axis=0) + 1e-10)
    loud = power_db > power_db.max() + SILENCE_DB
    if not loud.any():
        return 0.0
    floor = np.median(band, axis=0, keepdims=True) + 1e-10
    local_max = (band >= np.roll(band, 1, axis=0)) & (band >= np.roll(band, -1, axis=0))
    peaks = local_max & (band > floor * 10 ** (PEAK_DB / 20))
    # a partial that drifts by one bin is still the same tone
    spread = peaks | np.roll(peaks, 1, axis=0) | np.roll(peaks, -1, axis=0)
    sustained = (_run_lengths(spread) * HOP / ANALYSIS_RATE >= MIN_SUSTAIN_S) & peaks
    # a peak's energy is its bin and the two beside it (the window's main lobe)
    tone = sustained | np.roll(sustained, 1, axis=0) | np.roll(sustained, -1, axis=0)
    energy = band**2
    tonal = (energy * tone).sum(axis=0) >= TONAL_FRACTION * energy.sum(axis=0)
    return float((tonal & loud & (energy.sum(axis=0) > 0)).sum() / loud.sum())


def onset_density(onsets: np.ndarray, duration: float) -> float:
    """Onsets per second."""
    return float(len(onsets) / duration) if duration > 0 else 0.0


def pace_correlation(a: Sequence[Optional[float]], b: Sequence[Optional[float]]) -> Optional[float]:
    """Spearman rank correlation of the pairs where both are known; None with < 3 pairs or no spread."""
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b) if x is not None and y is not None and np.isfinite(x) and np.isfinite(y)]
    if len(pairs) < 3:
        return None
    x, y = np.asarray(pairs, dtype=np.float64).T
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y).statistic)
