"""What is measured on an evaluation clip itself, whatever the model, and its cache.

Per clip: its duration, the visual beats of its frames and, when it has real music, that
music's beats, its tonal content (:mod:`.music_content`), its FAD window embeddings and its
CLAP embedding. Re-runs (adding a model) read it back instead of decoding the video and the
music again; the key holds the video and audio file stats, the clip times, the analysis
settings and the embedders' identities.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .cache import atomic_savez, clip_fingerprint, file_fingerprint
from .dataset import EvalClip

ANALYSIS_FORMAT = 3  # bump when what is stored changes (3: onsets above ONSET_DELTA dB)


@dataclass
class ClipAnalysis:
    """Model-independent measurements of one clip.

    ``fad_windows`` is ``[N, D]`` (FAD embedder), ``clap_embedding`` is ``[D]``; both None without
    real music (and the CLAP one without a CLAP checkpoint).
    """

    clip: EvalClip
    duration: float
    visual: Any  # vmas_diffusion.beats.VisualBeats
    music: Any = None  # vmas_diffusion.beats.MusicBeats of the real music, or None
    fad_windows: Optional[np.ndarray] = None
    clap_embedding: Optional[np.ndarray] = None
    harmonic_share: Optional[float] = None  # of the real music (music_content)
    sustained_pitch: Optional[float] = None

    @property
    def visual_pace(self) -> float:
        """Visual beats per minute: the video's pace."""
        return 60.0 * len(self.visual.times) / self.duration if self.duration > 0 else 0.0

    @property
    def has_reference(self) -> bool:
        return self.music is not None


def analysis_key(clip: EvalClip, settings: dict[str, Any], embedders: list[Optional[dict]]) -> str:
    """Hex key of a clip's analysis: files, clip times, analysis settings, embedder identities."""
    payload = {
        "format": ANALYSIS_FORMAT,
        "clip": clip_fingerprint(clip),
        "audio": file_fingerprint(clip.audio),
        "settings": settings,
        "embedders": embedders,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _flatten(prefix: str, obj) -> dict[str, np.ndarray]:
    return {f"{prefix}.{f.name}": np.asarray(getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def _unflatten(cls, prefix: str, data) -> Any:
    kwargs = {}
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}"
        if key in data:
            value = data[key]
            kwargs[f.name] = value.item() if value.ndim == 0 else value
    return cls(**kwargs)


def save_analysis(path: Path, analysis: ClipAnalysis) -> None:
    arrays = {"duration": np.asarray(analysis.duration), **_flatten("visual", analysis.visual)}
    if analysis.music is not None:
        arrays.update(_flatten("music", analysis.music))
    if analysis.fad_windows is not None:
        arrays["fad_windows"] = np.asarray(analysis.fad_windows, dtype=np.float32)
    if analysis.clap_embedding is not None:
        arrays["clap_embedding"] = np.asarray(analysis.clap_embedding, dtype=np.float32)
    for key in ("harmonic_share", "sustained_pitch"):
        if getattr(analysis, key) is not None:
            arrays[key] = np.asarray(getattr(analysis, key))
    atomic_savez(Path(path), arrays)


def load_analysis(path: Path, clip: EvalClip) -> Optional[ClipAnalysis]:
    """The stored analysis, or None when it is missing or unreadable (then it is recomputed)."""
    from ..beats import MusicBeats, VisualBeats

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            has_music = any(k.startswith("music.") for k in data.files)
            return ClipAnalysis(
                clip=clip,
                duration=float(data["duration"]),
                visual=_unflatten(VisualBeats, "visual", data),
                music=_unflatten(MusicBeats, "music", data) if has_music else None,
                fad_windows=data["fad_windows"] if "fad_windows" in data.files else None,
                clap_embedding=data["clap_embedding"] if "clap_embedding" in data.files else None,
                harmonic_share=float(data["harmonic_share"]) if "harmonic_share" in data.files else None,
                sustained_pitch=float(data["sustained_pitch"]) if "sustained_pitch" in data.files else None,
            )
    except (OSError, ValueError, KeyError, TypeError):
        return None
