"""Music content measures: tones vs drums, and the pace correlation."""

import numpy as np

from vmas_diffusion.evaluation.music_content import (
    harmonic_share,
    onset_density,
    pace_correlation,
    sustained_pitch_share,
    tonal_shares,
)
from vmas_diffusion.media import load_audio

RATE = 16000


def held_chords(seconds: float = 8.0) -> np.ndarray:
    """A chord progression of harmonic tones (5 partials each), one chord per second, no attack noise."""
    t = np.arange(int(seconds * RATE)) / RATE
    roots = [220.0, 174.6, 261.6, 196.0]
    audio = np.zeros_like(t)
    for k, root in enumerate(roots * int(np.ceil(seconds / len(roots)))):
        inside = (t >= k) & (t < k + 1)
        for ratio in (1.0, 1.25, 1.5):  # a major triad
            for partial in range(1, 6):
                audio[inside] += np.sin(2 * np.pi * root * ratio * partial * t[inside]) / partial
    return (0.2 * audio / np.abs(audio).max()).astype(np.float32)


def test_held_chords_are_tonal_and_a_drum_loop_is_not(media):
    tones = held_chords()
    drums = load_audio(media("tr808_125bpm.wav"), RATE, start=0.0, end=8.0)
    assert sustained_pitch_share(tones, RATE) > 0.9
    assert sustained_pitch_share(drums, RATE) < 0.15
    assert harmonic_share(tones, RATE) > 0.95
    assert harmonic_share(drums, RATE) < harmonic_share(tones, RATE) - 0.2
    assert tonal_shares(drums, RATE) == (harmonic_share(drums, RATE), sustained_pitch_share(drums, RATE))


def test_silence_scores_zero():
    silence = np.zeros(RATE * 2, np.float32)
    assert sustained_pitch_share(silence, RATE) == 0.0
    assert harmonic_share(silence, RATE) == 0.0


def test_short_notes_are_not_sustained():
    """The same tones cut to 0.1 s notes (with gaps) hold no pitch for 0.3 s."""
    tones = held_chords()
    gate = (np.arange(tones.size) / RATE) % 0.25 < 0.1
    assert sustained_pitch_share(tones * gate, RATE) < 0.1


def test_onset_density_and_pace_correlation():
    assert onset_density(np.arange(10), 5.0) == 2.0
    assert onset_density(np.arange(10), 0.0) == 0.0
    assert pace_correlation([1, 2, 3, 4], [10, 20, 30, 45]) == 1.0
    assert pace_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == -1.0
    assert pace_correlation([1, 2, None, 4], [1, 2, 3, None]) is None  # fewer than 3 known pairs
    assert pace_correlation([1, 1, 1], [1, 2, 3]) is None  # no spread
