"""Beats: visual beats of frames, music beats and onsets, BCS/BHS scores, alignment plots, beat sync.

Names are imported from their module on first use: the music side needs librosa (seconds of
numba set-up) and the plots matplotlib, which generating music never touches.
"""

import importlib

_LAZY = {
    "VisualBeats": "visual",
    "visual_beats": "visual",
    "detect_cuts": "visual",
    "MusicBeats": "music",
    "music_beats": "music",
    "BeatGrid": "music",
    "beat_grid": "music",
    "onset_envelope": "music",
    "compile_beat_kernels": "music",
    "beat_scores": "metrics",
    "SCORE_KEYS": "metrics",
    "plot_alignment": "plot",
    "resample_envelope": "envelope",
    "beats_to_envelope": "envelope",
    "BeatSync": "sync",
    "sync_to_beats": "sync",
    "match_beats_monotone": "sync",
    "warp_audio": "sync",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY))


__all__ = list(_LAZY)
