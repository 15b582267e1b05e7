"""Plots of the evaluation (PNG, matplotlib Agg): the per-model histogram of beat offsets, and the
video's pace against the music's onset density over the clips (per model and for the real music).

The per-clip beat alignment figure is :func:`vmas_diffusion.beats.plot_alignment`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vmas_diffusion.atomic import atomic_path


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, plt, out_path: str | Path) -> Path:
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    try:
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return out_path


def plot_offset_histogram(
    out_path: str | Path, offsets: np.ndarray, title: str, tolerance: float = 0.1, max_offset: float = 1.0
) -> Path:
    """Histogram of generated-beat -> nearest-visual-beat offsets (seconds).

    Args:
        out_path: the PNG to write (folders are created).
        offsets: ``[N]`` signed offsets, e.g. from :func:`.metrics.beat_offsets`, pooled over clips.
        title: figure title (the model's name).
        tolerance: the hit window of the beat scores, shaded.
        max_offset: x-range is ``[-max_offset, max_offset]``; larger offsets go to the edge bins.
    """
    plt = _figure()
    offsets = np.asarray(offsets, dtype=np.float64).reshape(-1)
    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.axvspan(-tolerance, tolerance, color="tab:green", alpha=0.15, label=f"hit window ±{tolerance:g} s")
    if offsets.size:
        bins = np.linspace(-max_offset, max_offset, 41)
        ax.hist(np.clip(offsets, -max_offset, max_offset), bins=bins, color="tab:blue", edgecolor="white")
        within = float(np.mean(np.abs(offsets) <= tolerance))
        ax.set_title(f"{title}: {offsets.size} beats, {100 * within:.0f}% within ±{tolerance:g} s, "
                     f"median |offset| {np.median(np.abs(offsets)):.3f} s", fontsize=9)
    else:
        ax.set_title(f"{title}: no generated or visual beats", fontsize=9)
    ax.set_xlim(-max_offset, max_offset)
    ax.set_xlabel("generated beat - nearest visual beat (s)")
    ax.set_ylabel("beats")
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, plt, out_path)


def plot_pace(out_path: str | Path, series: dict[str, tuple], rho: dict[str, float | None]) -> Path:
    """Scatter of each clip's video pace (visual beats per minute) against its music's onsets per
    second, one colour per series (each model, and the real music when there is some).

    Args:
        out_path: the PNG to write (folders are created).
        series: ``{name: (pace [N], onset density [N])}``; missing values (None) are skipped.
        rho: ``{name: rank correlation or None}``, shown in the legend.
    """
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, (pace, density) in series.items():
        pairs = np.array([(p, d) for p, d in zip(pace, density) if p is not None and d is not None], dtype=np.float64)
        label = name if rho.get(name) is None else f"{name} (rank corr. {rho[name]:+.2f})"
        if pairs.size:
            ax.scatter(pairs[:, 0], pairs[:, 1], s=14, alpha=0.7, label=label)
    ax.set_xlabel("video pace (visual beats per minute)")
    ax.set_ylabel("music onsets per second")
    ax.set_title("does the music's density follow the video's pace?", fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, plt, out_path)
