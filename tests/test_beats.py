"""Beats: hand-computed BCS/BHS, envelopes, cuts and motion on real video, tempo of real music."""

import os
import subprocess
import sys

import numpy as np
import pytest

from vmas_diffusion.beats import (
    SCORE_KEYS,
    MusicBeats,
    VisualBeats,
    beat_scores,
    beats_to_envelope,
    detect_cuts,
    music_beats,
    onset_envelope,
    plot_alignment,
    resample_envelope,
    visual_beats,
)
from vmas_diffusion.errors import InputError
from vmas_diffusion.media import load_audio, load_video

BIKES_CUTS = np.array([1.2, 3.0, 5.5, 7.5, 9.7])
TR808_BPM = 125.0  # <bpm> of Hydrogen's TR808kit-demo.h2song


def _clicks(times, seconds, rate=22050, seed=0):
    """Short decaying noise bursts at ``times`` over faint noise."""
    rng = np.random.default_rng(seed)
    audio = 0.001 * rng.standard_normal(int(seconds * rate)).astype(np.float32)
    burst = (rng.standard_normal(400) * np.exp(-np.arange(400) / 60.0)).astype(np.float32) * 0.8
    for t in times:
        i = int(round(t * rate))
        audio[i : i + burst.size] += burst[: audio.size - i]
    return audio


# --------------------------------------------------------------------------- metrics


def test_beat_scores_known_answer():
    # generated 1.00 ~ reference 1.05, generated 2.05 ~ reference 2.00 (2.10 is left unmatched),
    # generated 3.50 hits nothing, reference 5.00 is missed.
    scores = beat_scores([1.0, 2.05, 3.5], [1.05, 2.0, 2.1, 5.0], duration=6.0, tolerance=0.1)
    assert set(scores) == set(SCORE_KEYS)
    assert scores["bcs_window"] == pytest.approx(3 / 4)
    assert scores["bhs_window"] == pytest.approx(2 / 4)
    assert scores["f1_window"] == pytest.approx(2 * 2 / (3 + 4))
    # bins: generated {1, 2, 3}, reference {1, 2, 5} -> 2 shared of 3 and 3
    assert scores["bcs_bins"] == pytest.approx(2 / 3)
    assert scores["bhs_bins"] == pytest.approx(2 / 3)
    assert scores["f1_bins"] == pytest.approx(2 / 3)


def test_beat_scores_one_to_one_and_bins():
    # one generated beat between two reference beats hits only one of them
    s = beat_scores([1.0], [0.95, 1.05], duration=2.0, tolerance=0.1)
    assert s["bhs_window"] == pytest.approx(0.5) and s["bcs_window"] == pytest.approx(0.5)
    # a greedy "closest pair first" matcher takes (1.00, 1.03) and stops at 1 hit; the optimum is 2
    s = beat_scores([1.0, 1.08], [0.95, 1.03], duration=2.0, tolerance=0.06)
    assert s["bhs_window"] == pytest.approx(1.0) and s["f1_window"] == pytest.approx(1.0)
    # bins count a bin once however many beats it holds; beats past `duration` are ignored
    s = beat_scores([0.1, 0.2, 0.3, 2.5, 9.0], [0.9, 1.5, 2.0], duration=3.0)
    assert s["bcs_bins"] == pytest.approx(2 / 2)  # generated bins {0, 2}, all shared
    assert s["bhs_bins"] == pytest.approx(2 / 3)  # reference bins {0, 1, 2}; shared {0, 2}
    assert s["f1_bins"] == pytest.approx(0.8)
    assert s["bcs_window"] == pytest.approx(4 / 3)  # 9.0 s is outside the 3 s clip


def test_beat_scores_empty_and_perfect():
    assert all(v == 0.0 for v in beat_scores([], [1.0, 2.0], duration=3.0).values())
    assert all(v == 0.0 for v in beat_scores([1.0], [], duration=3.0).values())
    perfect = beat_scores([0.5, 1.5, 2.5], [0.52, 1.48, 2.5], duration=3.0, tolerance=0.05)
    assert all(v == pytest.approx(1.0) for v in perfect.values())
    with pytest.raises(InputError, match="duration"):
        beat_scores([1.0], [1.0], duration=0)


# --------------------------------------------------------------------------- envelopes


def test_resample_envelope_keeps_peaks():
    src = np.zeros(100, np.float32)  # 100 Hz
    src[37] = 1.0
    down = resample_envelope(src, 100, 10)  # frame k covers [k/10, (k+1)/10)
    assert down.shape == (10,) and down[3] == 1.0 and down.sum() == 1.0
    up = resample_envelope(np.array([0.0, 1.0, 0.0]), 10, 20, num_frames=7)  # sample and hold
    np.testing.assert_allclose(up, [0, 0, 1, 1, 0, 0, 0])
    odd = resample_envelope(np.array([0.1, 0.9, 0.2, 0.3]), 8, 5)  # times 0, .125, .25, .375 -> bins 0, 0, 1, 1
    np.testing.assert_allclose(odd, [0.9, 0.3, 0.3], rtol=1e-6)
    np.testing.assert_allclose(resample_envelope(np.arange(5.0), 8, 8), np.arange(5.0))


def test_beats_to_envelope():
    env = beats_to_envelope([0.5, 1.0], frame_rate=50, num_frames=100, width=0.05)
    assert env.dtype == np.float32 and env.shape == (100,)
    assert env[25] == pytest.approx(1.0) and env[50] == pytest.approx(1.0)
    assert env[75] < 1e-6 and env[28] == pytest.approx(np.exp(-0.5 * (0.06 / 0.05) ** 2), rel=1e-4)


# --------------------------------------------------------------------------- visual beats


@pytest.mark.parametrize("fps", [None, 8])
def test_cuts_of_bikes(media, fps):
    clip = load_video(media("bikes.mp4"), fps=fps)
    beats = visual_beats(clip.frames, clip.fps, timestamps=clip.timestamps)
    assert isinstance(beats, VisualBeats)
    assert beats.cuts.size == BIKES_CUTS.size
    assert np.abs(beats.cuts - BIKES_CUTS).max() <= 0.2
    assert set(np.round(beats.cuts, 6)) <= set(np.round(beats.times, 6))  # cuts are beats
    assert beats.envelope.shape == (len(clip),) and beats.envelope.dtype == np.float32
    assert beats.envelope.min() >= 0 and beats.envelope.max() <= 1
    # min_interval (0.25 s) holds on the sampling grid; real timestamps jitter by < 1 native frame
    assert np.all(np.diff(beats.times) >= 0.25 - 1 / 25)


def test_cuts_between_real_shots(media):
    """Three real clips spliced at frames 16 and 30 at 8 fps: exactly those two cuts, reported
    midway between the last frame of a shot and the first of the next."""
    shots = [
        load_video(media("carphone_pristine.mp4"), fps=8, end=2.0, size=(96, 128)).frames,
        load_video(media("bigbuckbunny.mp4"), fps=8, end=1.75, size=(96, 128)).frames,
        load_video(media("bikes.mp4"), fps=8, start=3.5, end=5.0, size=(96, 128)).frames,
    ]
    frames = np.concatenate(shots)
    beats = visual_beats(frames, 8.0)
    np.testing.assert_allclose(beats.cuts, [15.5 / 8, 29.5 / 8])
    assert np.all(beats.envelope[[16, 30]] == 1.0)


def test_static_frames_have_no_beats():
    frames = np.full((40, 32, 32, 3), 120, np.uint8)
    beats = visual_beats(frames, 8.0)
    assert beats.times.size == 0 and beats.cuts.size == 0
    assert np.all(beats.envelope == 0)
    assert detect_cuts(np.zeros(1, np.float32)).size == 0


def test_motion_accent_and_embedding_hook():
    # a bright square that jumps twice on a still background: motion accents at the jumps
    frames = np.zeros((48, 64, 64, 3), np.uint8)
    for t in range(48):
        x = 8 if t < 20 else (32 if t < 36 else 16)
        frames[t, 20:36, x : x + 16] = 200
    beats = visual_beats(frames, 8.0, cut_threshold=2.0)  # no cut detection: motion only
    np.testing.assert_allclose(beats.times, [19.5 / 8, 35.5 / 8])  # between the frames before and after
    # embeddings that change abruptly at frame 12 on otherwise static frames
    still = np.full((24, 32, 32, 3), 90, np.uint8)
    emb = np.zeros((24, 8), np.float32)
    emb[:12, 0], emb[12:, 1] = 1.0, 1.0
    hooked = visual_beats(still, 6.0, frame_embeddings=emb)
    np.testing.assert_allclose(hooked.times, [11.5 / 6])
    with pytest.raises(InputError, match="frame_embeddings"):
        visual_beats(still, 6.0, frame_embeddings=emb[:5])


def test_visual_beats_bad_input():
    with pytest.raises(InputError, match="uint8"):
        visual_beats(np.zeros((4, 8, 8, 3), np.float32), 8.0)
    with pytest.raises(InputError, match="fps"):
        visual_beats(np.zeros((4, 8, 8, 3), np.uint8), 0)


def test_envelope_at_codec_rate(media):
    clip = load_video(media("bikes.mp4"), fps=8)
    beats = visual_beats(clip.frames, 8.0)
    at50 = beats.envelope_at(50, num_frames=500)
    assert at50.shape == (500,)
    # every 8 fps value lands in the 50 Hz frame holding its time (peaks preserved)
    assert at50.max() == pytest.approx(beats.envelope.max())
    k = np.arange(len(clip))
    np.testing.assert_allclose(at50[np.floor(k * 50 / 8 + 1e-9).astype(int)], beats.envelope)


# --------------------------------------------------------------------------- music beats


def test_tempo_of_a_real_drum_track(media):
    audio = load_audio(media("tr808_125bpm.wav"), 22050)
    beats = music_beats(audio, 22050)
    assert isinstance(beats, MusicBeats)
    ratio = beats.tempo / TR808_BPM
    octave = min((1.0, 0.5, 2.0), key=lambda k: abs(ratio / k - 1))
    print(f"tempo {beats.tempo:.2f} BPM vs {TR808_BPM} (x{octave})")
    assert abs(ratio / octave - 1) <= 0.02
    # beats are a steady grid at that period
    period = 60.0 / beats.tempo
    assert np.median(np.diff(beats.times)) == pytest.approx(period, rel=0.03)
    assert beats.onsets.size >= beats.times.size
    assert beats.onset_envelope.max() == pytest.approx(1.0)


def test_click_track_beats_and_onset_envelope():
    clicks = np.arange(0.5, 9.6, 0.6)  # 100 BPM
    audio = _clicks(clicks, 10.0)
    beats = music_beats(np.stack([audio, audio]), 22050)  # stereo input
    assert beats.tempo == pytest.approx(100.0, rel=0.02)
    matched = np.abs(beats.times[:, None] - clicks[None]).min(1)
    assert np.all(matched < 0.05)
    env = onset_envelope(audio, 22050, frame_rate=50)
    assert env.shape == (500,) and env.dtype == np.float32 and env.max() == pytest.approx(1.0)
    peaks = np.flatnonzero(env > 0.5)
    assert np.abs(peaks[:, None] / 50 - clicks[None]).min(1).max() < 0.05  # strong frames are at clicks
    assert all(np.any(np.abs(peaks / 50 - c) < 0.05) for c in clicks)  # every click shows
    assert onset_envelope(audio, 22050, frame_rate=50, num_frames=320).shape == (320,)
    # a grid finer than the default analysis (150 Hz, as the 48 kHz EnCodec): analysed finer still
    fine = onset_envelope(audio, 22050, frame_rate=150)
    fine_peaks = np.flatnonzero(fine > 0.5)
    assert np.abs(fine_peaks[:, None] / 150 - clicks[None]).min(1).max() < 0.02
    assert all(np.any(np.abs(fine_peaks / 150 - c) < 0.02) for c in clicks)


def test_silence_has_no_beats():
    beats = music_beats(np.zeros(22050 * 3, np.float32), 22050)
    assert beats.tempo == 0.0 and beats.times.size == 0
    assert np.all(onset_envelope(np.zeros(16000, np.float32), 16000, 50) == 0)


def test_onset_envelope_rejects_a_bad_sample_rate():
    for bad_rate in (0, -8000, 22050.5):
        with pytest.raises(InputError, match="sample_rate"):
            onset_envelope(np.zeros(16000, np.float32), bad_rate, frame_rate=50)


# --------------------------------------------------------------------------- plot


def test_plot_alignment_png(tmp_path, media):
    clip = load_video(media("bikes.mp4"), fps=8, end=5.0)
    visual = visual_beats(clip.frames, 8.0)
    audio = _clicks(np.arange(0.25, 5.0, 0.5), 5.0)
    out = plot_alignment(tmp_path / "plots" / "align.png", visual, audio, 22050, title="bikes")
    data = (tmp_path / "plots" / "align.png").read_bytes()
    assert out.endswith("align.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    only_visual = plot_alignment(tmp_path / "v.png", visual)
    assert (tmp_path / "v.png").stat().st_size > 5_000 and only_visual.endswith("v.png")
    with pytest.raises(InputError, match="sample_rate"):
        plot_alignment(tmp_path / "x.png", visual, audio)


def test_beat_grid_on_the_beat_of_a_click_and_tone_track():
    # 100 BPM, first beat at 0.23 s: loud clicks on the beats, softer tones on the off-beats
    # (a tracker may lock onto either); the grid must keep the tempo and sit on the clicks.
    from vmas_diffusion.beats import beat_grid

    rate, bpm, phase, seconds = 22050, 100.0, 0.23, 12.0
    period = 60.0 / bpm
    beats = np.arange(phase, seconds - 0.1, period)
    audio = _clicks(beats, seconds, rate)
    tone = 0.3 * np.sin(2 * np.pi * 440.0 * np.arange(int(0.15 * rate)) / rate) * np.exp(-np.arange(int(0.15 * rate)) / 800.0)
    for t in beats + period / 2:
        i = int(round(t * rate))
        audio[i : i + tone.size] += tone[: max(0, audio.size - i)].astype(np.float32)
    grid = beat_grid(audio, rate)
    assert grid.tempo == pytest.approx(bpm, rel=0.02)
    assert np.abs(grid.times[:, None] - beats[None, :]).min(1).max() < 0.03  # on the beat, not 0.3 s off
    assert grid.contrast > 1.3 and grid.trusted()


def test_onsets_need_an_attack_not_a_scaled_wiggle():
    """A steady chord has no onsets (librosa's default, on the envelope scaled to [0, 1], counts
    about 20 a second); decaying notes once a second are found one by one; ``onset_delta=None``
    is librosa's default (the count that paced the music set's fourth version)."""
    import librosa

    from vmas_diffusion.beats.music import ANALYSIS_RATE, HOP_LENGTH, onset_strength

    rate = 16000
    t = np.arange(8 * rate) / rate
    chord = (0.1 * sum(np.sin(2 * np.pi * f * t) for f in (220.0, 277.2, 329.6))).astype(np.float32)
    assert music_beats(chord, rate).onsets.size == 0
    assert music_beats(chord, rate, onset_delta=None).onsets.size / 8 > 5  # the count it replaces

    starts = np.arange(0.5, 8.0, 1.0)
    notes = np.zeros_like(t)
    for k, s in enumerate(starts):
        after = t >= s
        notes[after] += 0.3 * np.sin(2 * np.pi * 220 * 2 ** (k % 4 / 12) * (t[after] - s)) * np.exp(-2 * (t[after] - s))
    onsets = music_beats(notes.astype(np.float32), rate).onsets
    assert onsets.size == starts.size
    np.testing.assert_allclose(onsets, starts, atol=0.05)

    env, _ = onset_strength(notes.astype(np.float32), rate)
    default = librosa.onset.onset_detect(onset_envelope=env, sr=ANALYSIS_RATE, hop_length=HOP_LENGTH, units="time")
    np.testing.assert_array_equal(music_beats(notes.astype(np.float32), rate, onset_delta=None).onsets, default)


def test_compile_beat_kernels_caches_what_music_beats_runs(tmp_path):
    """In a fresh process with an empty numba cache, compile_beat_kernels writes the cache of the
    beat tracker's and the peak picker's kernels, so worker processes started after it load them
    instead of compiling them at the same time (which left a corrupt cache: segfaults)."""
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    code = "from vmas_diffusion.beats import compile_beat_kernels; compile_beat_kernels()"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=300)
    cached = " ".join(p.name for p in tmp_path.rglob("*.nbi"))
    assert "beat_track_dp" in cached and "peak_pick" in cached
