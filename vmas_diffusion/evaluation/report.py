"""The evaluation table: metric rows, one column per model; Markdown for the terminal, JSON beside it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .. import atomic

BEAT_KEYS = ("bcs_window", "bhs_window", "f1_window", "bcs_bins", "bhs_bins", "f1_bins")
BEAT_LABELS = {
    "bcs_window": "BCS (window)",
    "bhs_window": "BHS (window)",
    "f1_window": "F1 (window)",
    "bcs_bins": "BCS (1 s bins)",
    "bhs_bins": "BHS (1 s bins)",
    "f1_bins": "F1 (1 s bins)",
}
# the Markdown shows BCS/BHS in both forms; the JSON also holds the F1 values
TABLE_BEAT_KEYS = ("bcs_window", "bhs_window", "bcs_bins", "bhs_bins")
# music content and pace (music_content), shown for each model and for the real music
CONTENT_ROWS = (
    ("harmonic_share", "Harmonic share of energy (HPSS)"),
    ("sustained_pitch", "Sustained pitched share (time)"),
    ("onset_density", "Onsets per second"),
    ("pace_tempo_rho", "Rank corr. video pace ↔ music tempo"),
    ("pace_onsets_rho", "Rank corr. video pace ↔ onset density"),
)
# best-of-N and beat sync (runner._alignment_values), shown when a column has them
ALIGNMENT_ROWS = (
    ("visual.bhs_window_before_sync", "BHS (window) vs visual beats, before beat sync"),
    ("sync.mean_abs_stretch", "Beat sync: mean abs(stretch - 1), time-weighted"),
    ("sync.max_abs_stretch", "Beat sync: max abs(stretch - 1) over all clips"),
    ("sync.matched_share", "Beat sync: share of visual beats matched"),
    ("candidates.bhs_selected", "Best-of-N: BHS of the kept candidate (pipeline's visual beats)"),
    ("candidates.bhs_mean", "Best-of-N: mean BHS of all candidates (pipeline's visual beats)"),
)
ALIGNMENT_KEYS = tuple(key for key, _ in ALIGNMENT_ROWS)
TIMING_KEYS = ("rtf", "seconds_per_clip", "peak_memory_mb", "generated_this_run")


@dataclass
class ModelColumn:
    """One model's column: its name, where it came from, and its metric values (None = n/a)."""

    name: str
    path: str
    backend: str
    metrics: dict[str, Optional[float]]
    memory_kind: str = ""
    per_clip: list[dict[str, Any]] = field(default_factory=list)
    guidance_scale: Optional[float] = None  # the classifier-free guidance its music was made with

    @property
    def header(self) -> str:
        return f"{self.name} ({self.backend})"


@dataclass
class EvaluationReport:
    """What ``vmas-diffusion evaluate`` prints and writes.

    Attributes:
        markdown: the table(s) as Markdown (what the CLI prints).
        json_path: the JSON file with every value, per model and per clip.
        markdown_path: the same Markdown, written beside the JSON.
        columns: the model column headers, in the order given.
        rows: ``(metric label, [cell text per model])`` in table order.
        results: the JSON content as a dict.
        plots: paths of the PNGs written.
    """

    markdown: str
    json_path: str
    markdown_path: str
    columns: list[str]
    rows: list[tuple[str, list[str]]]
    results: dict[str, Any]
    plots: list[str] = field(default_factory=list)


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table_rows(columns: list[ModelColumn], embedder_name: str) -> list[tuple[str, list[str]]]:
    """The metric rows of the main table, cells formatted (``n/a`` where a value is missing)."""

    def row(label: str, key: str, digits: int = 3) -> tuple[str, list[str]]:
        return label, [_fmt(c.metrics.get(key), digits) for c in columns]

    rows = [row(f"FAD ↓ vs real music [{embedder_name}]", "fad", 4)]
    rows.append(row("CLAP score ↑ (generated ↔ real music, CLAP audio)", "clap_music"))
    rows.append(row("Video-music score ↑ (contrastive head cosine)", "video_music"))
    for ref, ref_label in (("visual", "visual beats"), ("music", "real-music beats")):
        for key in TABLE_BEAT_KEYS:
            rows.append(row(f"{BEAT_LABELS[key]} vs {ref_label}", f"{ref}.{key}"))
    rows.append(row("Mean abs. offset, generated → nearest visual beat (s) ↓", "mean_abs_beat_offset"))
    for key, label in ALIGNMENT_ROWS:
        if any(c.metrics.get(key) is not None for c in columns):
            rows.append(row(label, key))
    for key, label in CONTENT_ROWS:
        rows.append(row(label, key))
    chance = next((c.metrics.get("chance@1") for c in columns if c.metrics.get("chance@1") is not None), None)
    chance5 = next((c.metrics.get("chance@5") for c in columns if c.metrics.get("chance@5") is not None), None)
    rows.append(row(f"R@1 video→generated music (chance {_fmt(chance, 2)})", "R@1"))
    rows.append(row(f"R@5 video→generated music (chance {_fmt(chance5, 2)})", "R@5"))
    rows.append(row("Real-time factor ↓ (generation s / music s)", "rtf"))
    kinds = sorted({c.memory_kind for c in columns if c.memory_kind})
    rows.append(row(f"Peak memory MiB ({', '.join(kinds) or 'n/a'})", "peak_memory_mb", 1))
    rows.append(row("Clips", "clips", 0))
    return rows


def render_markdown(
    columns: list[ModelColumn],
    embedder_name: str,
    reference: dict[str, Optional[float]],
    num_clips: int,
    num_with_reference: int,
    seed: int,
) -> tuple[str, list[tuple[str, list[str]]]]:
    """Markdown of the main table plus a short reference table (real music vs visual beats)."""
    rows = table_rows(columns, embedder_name)
    headers = ["metric"] + [c.header.replace("|", "\\|") for c in columns]  # a '|' would split the cell
    guidance = sorted({c.guidance_scale for c in columns if c.guidance_scale is not None})
    if len(guidance) > 1:
        guidance_text = ", guidance " + ", ".join(f"{c.name} {c.guidance_scale:g}" for c in columns)
    else:
        guidance_text = f", guidance {guidance[0]:g}" if guidance else ""
    lines = [
        f"Evaluation on {num_clips} clip(s) ({num_with_reference} with real music), seed {seed}{guidance_text}, "
        f"FAD embedder: {embedder_name}",
        "",
        "| " + " | ".join(headers) + " |",
        "|" + "|".join(["---"] + ["---:"] * len(columns)) + "|",
    ]
    lines += ["| " + " | ".join([label] + cells) + " |" for label, cells in rows]
    if num_with_reference:
        lines += ["", "| real music (reference) | value |", "|---|---:|"]
        lines += [
            f"| {BEAT_LABELS[key]} vs visual beats | {_fmt(reference.get(f'visual.{key}'))} |" for key in TABLE_BEAT_KEYS
        ]
        lines += [f"| {label} | {_fmt(reference.get(key))} |" for key, label in CONTENT_ROWS]
    return "\n".join(lines) + "\n", rows


def write_report(
    out_dir: Path,
    columns: list[ModelColumn],
    embedder_name: str,
    reference: dict[str, Optional[float]],
    clips: list[dict[str, Any]],
    settings: dict[str, Any],
    plots: list[str],
    computed: dict[str, int] | None = None,
) -> EvaluationReport:
    """Write ``evaluation.md`` and ``evaluation.json`` in ``out_dir`` and return the report.

    ``computed`` counts what this run computed rather than read from the cache.
    """
    num_ref = sum(1 for c in clips if c.get("reference_audio"))
    markdown, rows = render_markdown(columns, embedder_name, reference, len(clips), num_ref, settings["seed"])
    results = {
        "fad_embedder": embedder_name,
        "settings": settings,
        "clips": clips,
        "reference": reference,
        "computed": computed or {},
        "models": [
            {
                "name": c.name,
                "path": c.path,
                "backend": c.backend,
                "memory_kind": c.memory_kind,
                "guidance_scale": c.guidance_scale,
                "metrics": c.metrics,
                "per_clip": c.per_clip,
            }
            for c in columns
        ],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = out_dir / "evaluation.json"
    md_path = out_dir / "evaluation.md"
    atomic.write_text(json_path, json.dumps(results, indent=2, sort_keys=False) + "\n")
    atomic.write_text(md_path, markdown)
    return EvaluationReport(
        markdown=markdown,
        json_path=str(json_path),
        markdown_path=str(md_path),
        columns=[c.header for c in columns],
        rows=rows,
        results=results,
        plots=plots,
    )
