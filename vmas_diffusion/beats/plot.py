"""A picture of video-music beat alignment (matplotlib, Agg backend, PNG)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vmas_diffusion.atomic import atomic_path
from vmas_diffusion.beats.metrics import beat_scores
from vmas_diffusion.beats.music import MusicBeats, music_beats
from vmas_diffusion.beats.visual import VisualBeats
from vmas_diffusion.errors import InputError, MediaExportError


def plot_alignment(
    out_path,
    visual: VisualBeats,
    audio=None,
    sample_rate: int | None = None,
    music: MusicBeats | None = None,
    title: str | None = None,
    tolerance: float = 0.1,
) -> str:
    """Draw the visual beat envelope, the music onset envelope and both beat sets on one time axis.

    The visual envelope rises above the axis and the music onset envelope hangs below it
    (mirrored), so peaks that line up face each other. Visual beats are marked on top, music
    beats at the bottom; a music beat within ``tolerance`` s of a visual beat is drawn green.
    The window-form scores (music beats against visual beats) go in the title.

    Args:
        out_path: PNG file to write (parent folders are created).
        visual: from :func:`~vmas_diffusion.beats.visual_beats`.
        audio, sample_rate: the music, analysed with :func:`~vmas_diffusion.beats.music_beats`
            unless ``music`` is given.
        music: precomputed music beats; optional (without music only the visual part is drawn).
    Returns:
        ``out_path`` as str.
    """
    if music is None and audio is not None:
        if sample_rate is None:
            raise InputError("plot_alignment: sample_rate is required with audio")
        music = music_beats(audio, sample_rate)

    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend (renders with Agg)

    fig = Figure(figsize=(12, 4.6), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    t_vis = np.arange(visual.envelope.size) / visual.fps
    ax.fill_between(t_vis, 0, visual.envelope, step="post", color="tab:blue", alpha=0.35,
                    label="visual beat strength")
    ax.vlines(visual.times, 1.02, 1.18, color="tab:blue", lw=1.5, label="visual beats")
    if visual.cuts.size:
        ax.plot(visual.cuts, np.full(visual.cuts.size, 1.22), "v", color="tab:blue", ms=6, label="cuts")
    end = t_vis[-1] + 1.0 / visual.fps if t_vis.size else 0.0
    header = title or "video-music beat alignment"
    if music is not None:
        t_mus = np.arange(music.onset_envelope.size) / music.onset_fps
        ax.fill_between(t_mus, 0, -music.onset_envelope, color="tab:orange", alpha=0.35,
                        label="music onset strength")
        gap = np.abs(music.times[:, None] - visual.times[None, :]) if visual.times.size else None
        hit = gap.min(1) <= tolerance if gap is not None else np.zeros(music.times.size, bool)
        ax.vlines(music.times[~hit], -1.18, -1.02, color="tab:orange", lw=1.5, label="music beats")
        ax.vlines(music.times[hit], -1.18, -1.02, color="tab:green", lw=2.0,
                  label=f"music beats within {tolerance:g} s of a visual beat")
        end = max(end, t_mus[-1] if t_mus.size else 0.0)
        scores = beat_scores(music.times, visual.times, max(end, 1e-3), tolerance)
        header += (f"\ntempo {music.tempo:.1f} BPM | BCS {scores['bcs_window']:.2f} "
                   f"BHS {scores['bhs_window']:.2f} F1 {scores['f1_window']:.2f} (window {tolerance:g} s) | "
                   f"bins: BCS {scores['bcs_bins']:.2f} BHS {scores['bhs_bins']:.2f}")
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlim(0, max(end, 1e-3))
    ax.set_ylim(-1.3, 1.3)
    ax.set_yticks([-1, 0, 1], ["music 1", "0", "video 1"])
    ax.set_xlabel("time (s)")
    ax.set_title(header, fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    fig.legend(*ax.get_legend_handles_labels(), loc="lower center", fontsize=8, ncol=6, frameon=False)
    out = Path(out_path)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    except (OSError, ValueError) as exc:
        raise MediaExportError(f"cannot write plot {out}: {exc}") from exc
    return os.fspath(out)
