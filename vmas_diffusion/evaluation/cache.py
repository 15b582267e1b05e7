"""Cache of generated music per (model, clip, seed, generation settings).

The key hashes what decides the output: the model's files (relative path, size and mtime of
every file of the folder, or of the recipe file), the video's path, size and mtime, the clip
times, the seed and the generation keyword arguments. Editing or retraining a model, touching
a video or changing a setting gives a new key, so a re-run recomputes exactly what changed;
adding a model to the table computes only its column. The key holds the package version but
not the code itself: after editing the pipeline code in place, delete ``OUT/cache``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ..atomic import atomic_path
from ..errors import CheckpointError
from .dataset import EvalClip


def _file_stat(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def model_fingerprint(model: str | Path) -> dict:
    """Stats of a model folder's files (or of one recipe file); no weights are read."""
    path = Path(model)
    if not path.exists():
        raise CheckpointError(f"model {path} does not exist (give a saved pipeline folder or a recipe .yaml)")
    if path.is_file():
        return {"path": str(path.resolve()), "files": {path.name: _file_stat(path)}}
    files = {
        str(p.relative_to(path)): _file_stat(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    }
    if not files:
        raise CheckpointError(f"model folder {path} is empty")
    return {"path": str(path.resolve()), "files": files}


def clip_fingerprint(clip: EvalClip) -> dict:
    """Video path and stats, and the clip times (what a generation reads from the clip)."""
    video = clip.video.resolve()
    return {"video": str(video), **_file_stat(video), "start": clip.start, "end": clip.end}


def file_fingerprint(path: Path | None) -> dict | None:
    """Path, size and mtime of a file (None for None)."""
    if path is None:
        return None
    return {"path": str(Path(path).resolve()), **_file_stat(Path(path))}


def generation_key(model_fp: dict, clip: EvalClip, seed: int, generation_kwargs: dict[str, Any]) -> str:
    """Hex key of one generation: model files, video file, seed and generation kwargs."""
    from .. import __version__

    payload = {
        "vmas_diffusion": __version__,  # the cache cannot see code edits; a release bump invalidates it
        "model": model_fp,
        "clip": clip_fingerprint(clip),
        "seed": int(seed),
        "kwargs": generation_kwargs,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


@dataclass
class GenerationRecord:
    """One generated clip and what was measured while generating it.

    ``audio`` is ``(C, S)`` float32; embeddings are ``[E]`` (None without a contrastive head).
    With beat sync, ``audio`` is the synced music and ``audio_before_sync`` the music as generated;
    ``extras`` holds the JSON summaries of beat sync (``"beat_sync"``) and best-of-N (``"candidates"``).
    """

    audio: np.ndarray
    sample_rate: int
    backend: str
    seconds: float  # wall time of the pipeline call
    peak_memory_mb: float
    memory_kind: str  # "cuda-allocated" or "cpu-rss-delta"
    video_embedding: Optional[np.ndarray] = None
    music_embedding: Optional[np.ndarray] = None
    audio_before_sync: Optional[np.ndarray] = None
    extras: Optional[dict] = None

    @property
    def duration(self) -> float:
        return self.audio.shape[-1] / float(self.sample_rate)

    @property
    def real_time_factor(self) -> float:
        """Generation seconds per second of music (< 1 is faster than real time)."""
        return self.seconds / max(self.duration, 1e-9)


class GenerationCache:
    """Records as ``.npz`` files named by key in ``folder``; writes are atomic (temp file + rename)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def get(self, key: str) -> Optional[GenerationRecord]:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
                return GenerationRecord(
                    audio=data["audio"].astype(np.float32),
                    video_embedding=data["video_embedding"] if "video_embedding" in data else None,
                    music_embedding=data["music_embedding"] if "music_embedding" in data else None,
                    audio_before_sync=data["audio_before_sync"] if "audio_before_sync" in data else None,
                    **meta,
                )
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a truncated or stale entry is recomputed

    def put(self, key: str, record: GenerationRecord) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "sample_rate": int(record.sample_rate),
            "backend": str(record.backend),
            "seconds": float(record.seconds),
            "peak_memory_mb": float(record.peak_memory_mb),
            "memory_kind": str(record.memory_kind),
        }
        if record.extras:
            meta["extras"] = record.extras
        arrays = {"audio": np.asarray(record.audio, dtype=np.float32), "meta": np.array(json.dumps(meta))}
        if record.video_embedding is not None:
            arrays["video_embedding"] = np.asarray(record.video_embedding, dtype=np.float32)
        if record.music_embedding is not None:
            arrays["music_embedding"] = np.asarray(record.music_embedding, dtype=np.float32)
        if record.audio_before_sync is not None:
            arrays["audio_before_sync"] = np.asarray(record.audio_before_sync, dtype=np.float32)
        atomic_savez(self._path(key), arrays)


def atomic_savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` to a temp file then rename, so a crash never leaves a half-written entry."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
