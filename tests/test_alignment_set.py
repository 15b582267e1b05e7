"""The alignment set's generators (scripts/build_alignment_set.py): their beats are where they say."""

import sys
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import build_alignment_set as build  # noqa: E402

from vmas_diffusion.beats import visual_beats  # noqa: E402


def _hits(found, wanted, tolerance=0.1):
    """Fraction of ``wanted`` times with one of ``found`` within ``tolerance``."""
    found = np.asarray(found)
    return float(np.mean([found.size > 0 and np.abs(found - t).min() <= tolerance for t in wanted]))


def test_shapes_video_beats_are_the_music_beats():
    """At the encoder's 10 fps, the visual beats of a shapes video are its beats and little else."""
    seconds, bpm = 8.0, 132.0
    beats = np.arange(0.0, seconds, 60.0 / bpm)
    frames = build.shapes_video(np.random.default_rng(3), beats, seconds)
    assert frames.shape == (200, build.SIZE, build.SIZE, 3) and frames.dtype == np.uint8
    picks = np.round(np.arange(0, seconds, 0.1) * build.FPS).astype(int)  # the frame shown at each 10 fps tick
    found = visual_beats(frames[picks], 10.0, timestamps=picks / build.FPS).times
    assert _hits(found, beats) >= 0.9  # recall
    assert _hits(beats, found) >= 0.8  # precision


def test_medley_cuts_songs_on_their_beats(tmp_path):
    """Segments of two click tracks at other tempos: every listed beat of the medley is a click."""
    rate = build.SAMPLE_RATE
    songs = [{"id": "slow", "bpm": 90.0}, {"id": "fast", "bpm": 150.0}]
    for song in songs:
        audio = np.zeros(int(16 * rate), np.float32)
        for t in np.arange(0.0, 16.0, 60.0 / song["bpm"]):
            audio[int(round(t * rate)) : int(round(t * rate)) + 80] = 0.8  # a 5 ms click on every beat
        sf.write(str(tmp_path / f"{song['id']}.wav"), audio, rate)
    plan = build.medley_plan(songs, count=2, seed=0, seconds=8.0)
    assert all(item["split"] == "train" for item in plan)
    assert any(len({period for _, _, period, _ in item["segments"]}) == 2 for item in plan)  # the tempo changes
    for item in plan:
        audio, beats = build.assemble_medley(tmp_path, item["segments"], 8.0)
        assert audio.shape == (8 * rate,) and beats[0] == 0.0 and beats[-1] < 8.0
        assert len(item["segments"]) >= 2
        starts = np.flatnonzero((audio[1:] > 0.4) & (audio[:-1] <= 0.4)) + 1  # click onsets (after the fade-in)
        clicks = starts / rate
        assert np.abs(clicks[:, None] - beats[None]).min(0).max() < 0.006  # each beat is a click...
        assert np.abs(clicks[:, None] - beats[None]).min(1).max() < 0.006  # ...and each click a beat


def test_medley_song_changes_come_as_often_as_asked():
    songs = [{"id": f"song{i}", "bpm": bpm} for i, bpm in enumerate((90.0, 120.0, 150.0))]
    for low, high in ((4, 10), (2, 3)):
        plan = build.medley_plan(songs, count=4, seed=0, seconds=16.0, beats=(low, high))
        lengths = [length for item in plan for *_, length in item["segments"]]
        assert min(lengths) >= low and max(lengths) <= high
