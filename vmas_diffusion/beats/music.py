"""Music beats, onsets and tempo with librosa.

Audio is mixed to mono and resampled (soxr) to 22050 Hz; the onset-strength envelope uses a
hop of 256 samples (~86 frames per second). librosa's tempo estimate is quantised by its
tempogram bins (at 120 BPM neighbouring bins are ~2.5 BPM apart), so the reported tempo is
refined by a least-squares line through the tracked beat times when the beats are steady.

Onsets are peaks of the onset strength (the mean rise of the log-mel bands, in dB) that rise at
least ``ONSET_DELTA`` dB above their neighbourhood's mean. librosa's own default first scales the
envelope to [0, 1], so a clip without any attack has its smallest wiggles counted as onsets: a
steady chord gave 22 onsets a second, steady noise 3, and calm, held music more than busy music.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import librosa
import numpy as np
from scipy.stats import theilslopes

from vmas_diffusion.beats.envelope import resample_envelope
from vmas_diffusion.errors import InputError
from vmas_diffusion.media._common import audio_to_numpy
from vmas_diffusion.media.audio import _check_sample_rate, resample

ANALYSIS_RATE = 22050
HOP_LENGTH = 256
#: dB of onset strength above the local mean that make an onset (librosa's delta, unnormalised
#: envelope): a steady chord 0 onsets/s, steady noise 0.1, one decaying note a second 0.9; real
#: training music close to librosa's normalised count (e.g. 4.6 vs 4.3, 6.0 vs 6.0 a second)
ONSET_DELTA = 0.5


@dataclass
class MusicBeats:
    """Beats of a piece of music.

    Attributes:
        times: float64 ``(N,)`` beat times, seconds.
        tempo: beats per minute (0.0 when no beat was found).
        onset_envelope: float32 ``(F,)`` onset strength in [0, 1] at ``onset_fps``.
        onset_fps: frames per second of ``onset_envelope``.
        onsets: float64 ``(M,)`` onset times (librosa.onset.onset_detect, see ``ONSET_DELTA``), seconds.
    """

    times: np.ndarray
    tempo: float
    onset_envelope: np.ndarray
    onset_fps: float
    onsets: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _mono(audio, sample_rate) -> tuple[np.ndarray, int]:
    rate = _check_sample_rate(sample_rate)
    mono = audio_to_numpy(audio).mean(axis=0, keepdims=True)
    return resample(mono, rate, ANALYSIS_RATE)[0], ANALYSIS_RATE


def onset_strength(audio, sample_rate: int, hop_length: int = HOP_LENGTH,
                   fmax: float | None = None) -> tuple[np.ndarray, float]:
    """Raw librosa onset strength of ``audio`` ((S,) or (C, S)); returns ``(envelope (F,), fps)``.
    ``fmax`` limits it to the mel bands below that frequency (e.g. kick and bass)."""
    y, sr = _mono(audio, sample_rate)
    band = {} if fmax is None else {"fmax": fmax, "n_mels": 16}
    with warnings.catch_warnings():  # clips shorter than one FFT window are zero-padded: fine here
        warnings.filterwarnings("ignore", message="n_fft=.* is too large", category=UserWarning)
        warnings.filterwarnings("ignore", message="Empty filters detected", category=UserWarning)
        env = librosa.onset.onset_strength(y=y, sr=sr, hop_length=hop_length, **band)
    return env.astype(np.float32), sr / hop_length


def refine_tempo(beat_times: np.ndarray, tempo: float, max_deviation: float = 0.08) -> float:
    """Tempo from the slope of a robust line through beat index vs. beat time.

    A Theil-Sen line picks the steady beats (within 10 % of a beat of it); when they are at
    least 75 % of all beats, a least-squares line through them gives the period. The result
    is kept only within ``max_deviation`` of librosa's estimate; otherwise ``tempo`` is returned.
    """
    if beat_times.size < 8 or tempo <= 0:
        return float(tempo)
    index = np.arange(beat_times.size, dtype=np.float64)
    slope, intercept, _, _ = theilslopes(beat_times, index)
    if slope <= 0:
        return float(tempo)
    steady = np.abs(beat_times - (slope * index + intercept)) < 0.1 * slope
    if steady.sum() < max(8, 0.75 * beat_times.size):
        return float(tempo)
    slope = np.polyfit(index[steady], beat_times[steady], 1)[0]
    refined = 60.0 / slope
    return float(refined) if abs(refined / tempo - 1.0) <= max_deviation else float(tempo)


def music_beats(audio, sample_rate: int, start_bpm: float = 120.0, tightness: float = 100.0,
                onset_delta: float | None = ONSET_DELTA) -> MusicBeats:
    """Beats (librosa.beat.beat_track), onsets (librosa.onset.onset_detect) and tempo of music.

    Args:
        audio: float waveform ``(S,)`` or ``(C, S)`` (numpy or torch).
        sample_rate: its rate in Hz.
        start_bpm, tightness: passed to ``librosa.beat.beat_track``.
        onset_delta: dB an onset rises above its neighbourhood (``ONSET_DELTA``); None: librosa's
            default on the envelope scaled to [0, 1] (the count that paced ``music_set_v4``, which the
            bundled models trained on).
    """
    env, fps = onset_strength(audio, sample_rate)
    sr = ANALYSIS_RATE
    if not np.any(env > 0):  # silence: no beat to find
        return MusicBeats(np.zeros(0), 0.0, np.zeros_like(env), fps, np.zeros(0))
    tempo, frames = librosa.beat.beat_track(
        onset_envelope=env, sr=sr, hop_length=HOP_LENGTH, start_bpm=start_bpm, tightness=tightness
    )
    tempo = float(np.atleast_1d(tempo)[0])
    times = librosa.frames_to_time(frames, sr=sr, hop_length=HOP_LENGTH).astype(np.float64)
    peaks = {} if onset_delta is None else {"normalize": False, "delta": float(onset_delta)}
    onsets = librosa.onset.onset_detect(onset_envelope=env, sr=sr, hop_length=HOP_LENGTH, units="time", **peaks)
    return MusicBeats(
        times=times,
        tempo=refine_tempo(times, tempo),
        onset_envelope=(env / env.max()).astype(np.float32),
        onset_fps=fps,
        onsets=np.asarray(onsets, np.float64),
    )


def compile_beat_kernels() -> None:
    """Find the beats of a few seconds of noise, so that librosa's numba kernels behind
    :func:`music_beats` are compiled, and written to numba's on-disk cache, by this process alone.

    Call it before starting worker processes that find beats: workers compiling the same kernels at
    once can leave a corrupt cache next to librosa, after which every process that loads it segfaults
    (seen here with numba 0.68 when ``build_music_set.py``'s workers started on a fresh install)."""
    noise = np.random.default_rng(0).standard_normal(ANALYSIS_RATE * 4).astype(np.float32)
    music_beats(0.1 * noise, ANALYSIS_RATE)


def onset_envelope(audio, sample_rate: int, frame_rate: float, num_frames: int | None = None) -> np.ndarray:
    """Music onset strength on an arbitrary frame grid (e.g. a codec's 50 Hz), float32 ``(T,)`` in [0, 1].

    Frame ``k`` covers ``[k / frame_rate, (k + 1) / frame_rate)`` and holds the strongest onset
    inside it (see :func:`~vmas_diffusion.beats.envelope.resample_envelope`). ``num_frames``
    defaults to ``ceil(duration * frame_rate)``. Divided by its maximum (silence gives zeros).
    """
    if not frame_rate or frame_rate <= 0:
        raise InputError(f"frame_rate must be positive, got {frame_rate!r}")
    data = audio_to_numpy(audio)
    if num_frames is None:
        num_frames = math.ceil(data.shape[1] / _check_sample_rate(sample_rate) * frame_rate - 1e-9)
    # analyse at least 4x finer than the target grid, so resampling only ever merges neighbours
    hop = max(1, min(HOP_LENGTH, int(ANALYSIS_RATE // (4 * frame_rate))))
    env, fps = onset_strength(data, sample_rate, hop)
    out = resample_envelope(env, fps, frame_rate, num_frames)
    peak = float(out.max()) if out.size else 0.0
    return (out / peak).astype(np.float32) if peak > 0 else out


@dataclass
class BeatGrid:
    """A constant-tempo beat grid checked against the music's onset strength.

    Attributes:
        times: float64 ``(N,)`` beat times, seconds (``phase + k * 60 / tempo``).
        tempo: beats per minute (0.0 when no grid was found).
        contrast: mean onset strength on the beats over that at the half-beat points; above 1
            the grid sits on the strong pulse, near 1 beat and off-beat are alike.
        salience: mean onset strength on the beats over the clip's mean onset strength.
        tracker_on_grid: share of librosa's own beats within 70 ms of the grid: a steady clip
            whose tracked beats agree with one grid.
    """

    times: np.ndarray
    tempo: float
    contrast: float
    salience: float
    tracker_on_grid: float

    def trusted(self, min_on_grid: float = 0.6, min_salience: float = 1.2, min_contrast: float = 1.1) -> bool:
        """Whether the grid is a beat worth training on. Measured on MIDI renders with exact beats
        and known-BPM music (``scripts/validate_beats.py``): agreement with the tracked beats
        separates right from wrong grids; contrast alone does not (wrong tempos can score high)."""
        return (self.tempo > 0 and self.tracker_on_grid >= min_on_grid and self.salience >= min_salience
                and self.contrast >= min_contrast)


def _comb(env: np.ndarray, fps: float, period: float, phases: np.ndarray) -> np.ndarray:
    """Mean over the grid ``phase + k * period`` of the envelope's peak within one frame: ``(P,)``."""
    peak = np.maximum(env, np.maximum(np.roll(env, 1), np.roll(env, -1)))
    steps = np.arange(0.0, env.size / fps - 1e-9, period)
    index = np.rint((phases[:, None] + steps[None, :]) * fps).astype(np.int64)
    valid = index < env.size
    return np.where(valid, peak[np.minimum(index, env.size - 1)], 0.0).sum(1) / np.maximum(valid.sum(1), 1)


#: tempo alternatives to librosa's (octave and triplet confusions) and how much better their
#: prior-weighted grid must score to replace it: the tracker is right more often than not
TEMPO_FACTORS = (0.5, 2.0 / 3.0, 1.5, 2.0)
SWITCH_MARGIN = 1.15
LOW_BAND_HZ = 200.0  # kick and bass: where the beat is louder than the off-beat


def beat_grid(audio, sample_rate: int, min_bpm: float = 60.0, max_bpm: float = 190.0,
              prior_bpm: float = 120.0, tracked: MusicBeats | None = None) -> BeatGrid:
    """The beats of a steady clip as a constant-tempo grid whose tempo and phase are checked.

    librosa's tracker sometimes doubles or halves the tempo, takes 2/3 or 3/2 of it, or locks onto
    the off-beat. Here its tempo stays unless one of those alternatives collects clearly more onset
    strength (x1.15 after a log-normal tempo prior, one octave wide around ``prior_bpm``, so a denser
    grid does not win by catching subdivisions). The phase is the one whose grid collects the most
    onset strength, then beat and off-beat are told apart by the low band alone (below 200 Hz,
    kick and bass), where syncopated chords and hats do not count. ``BeatGrid.trusted`` says
    whether to use it. ``tracked``: :func:`music_beats` of the same audio, when the caller has it.
    """
    tracked = tracked if tracked is not None else music_beats(audio, sample_rate)
    env = tracked.onset_envelope.astype(np.float64)
    fps = tracked.onset_fps
    empty = BeatGrid(np.zeros(0), 0.0, 0.0, 0.0, 0.0)
    if tracked.tempo <= 0 or env.size < 4 * fps or not np.any(env > 0):
        return empty

    def candidate(bpm: float):
        period = 60.0 / bpm
        phases = np.arange(0.0, period, 1.0 / fps)
        comb = _comb(env, fps, period, phases)
        k = int(np.argmax(comb))
        return comb[k] * math.exp(-0.5 * math.log2(bpm / prior_bpm) ** 2), bpm, period, phases[k]

    best = candidate(tracked.tempo) if min_bpm <= tracked.tempo <= max_bpm else None
    for factor in TEMPO_FACTORS:
        bpm = tracked.tempo * factor
        if min_bpm <= bpm <= max_bpm:
            other = candidate(bpm)
            if best is None or other[0] > SWITCH_MARGIN * best[0]:
                best = other
    if best is None:
        return empty
    _, bpm, period, phase = best
    low, _ = onset_strength(audio, sample_rate, fmax=LOW_BAND_HZ)
    low = low[: env.size].astype(np.float64)
    if np.any(low > 0):
        on_low, off_low = _comb(low, fps, period, np.array([phase, (phase + period / 2) % period]))
        if off_low > 1.1 * on_low:
            phase = (phase + period / 2) % period
    on, off = _comb(env, fps, period, np.array([phase, (phase + period / 2) % period]))
    times = np.arange(phase, env.size / fps - 1e-9, period)
    near = (np.abs(tracked.times[:, None] - times[None, :]).min(1) < 0.07).mean() if tracked.times.size else 0.0
    return BeatGrid(times=times, tempo=float(bpm), contrast=float(on / max(off, 1e-6)),
                    salience=float(on / max(env.mean(), 1e-6)), tracker_on_grid=float(near))
