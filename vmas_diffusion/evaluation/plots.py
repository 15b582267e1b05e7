"""Plots of the evaluation: the per-model histogram of beat offsets (PNG, matplotlib Agg).

The per-clip beat alignment figure is :func:`vmas_diffusion.beats.plot_alignment`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vmas_diffusion.atomic import atomic_path


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
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
    fig.tight_layout()
    try:
        with atomic_path(out_path) as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return out_path
