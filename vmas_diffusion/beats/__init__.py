"""Beats: visual beats of frames, music beats and onsets, BCS/BHS scores, alignment plots, beat sync."""

from vmas_diffusion.beats.envelope import beats_to_envelope, resample_envelope
from vmas_diffusion.beats.metrics import SCORE_KEYS, beat_scores
from vmas_diffusion.beats.music import BeatGrid, MusicBeats, beat_grid, music_beats, onset_envelope
from vmas_diffusion.beats.plot import plot_alignment
from vmas_diffusion.beats.sync import BeatSync, match_beats_monotone, sync_to_beats, warp_audio
from vmas_diffusion.beats.visual import VisualBeats, detect_cuts, visual_beats

__all__ = [
    "VisualBeats",
    "MusicBeats",
    "visual_beats",
    "music_beats",
    "BeatGrid",
    "beat_grid",
    "onset_envelope",
    "beat_scores",
    "plot_alignment",
    "detect_cuts",
    "resample_envelope",
    "beats_to_envelope",
    "SCORE_KEYS",
    "BeatSync",
    "sync_to_beats",
    "match_beats_monotone",
    "warp_audio",
]
