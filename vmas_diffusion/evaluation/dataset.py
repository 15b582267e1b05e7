"""The evaluation set: a folder of videos or a JSON Lines manifest of clips.

- A folder: every video file in it (sorted by name, not recursive); the reference music of a
  clip is the video's own audio track, and a video without one has no reference.
- A manifest (``.jsonl``, the project's format, read by :func:`vmas_diffusion.data.manifest.read_manifest`):
  ``video`` (required), ``audio`` (optional, a separate music file; default the video's own
  track when it has one), ``start``/``end`` (optional seconds, applied to both video and audio),
  ``id`` (optional). Relative paths resolve against the manifest's folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import InputError

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg")


@dataclass(frozen=True)
class EvalClip:
    """One evaluation clip: a video (or a time range of it) and its optional reference music."""

    id: str
    video: Path
    audio: Optional[Path] = None  # reference music file (may be the video itself); None: no reference
    start: Optional[float] = None
    end: Optional[float] = None

    @property
    def is_whole_file(self) -> bool:
        return self.start is None and self.end is None


def safe_name(text: str) -> str:
    """A file-name-safe form of an id or model name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "clip"


def load_eval_set(data: str | Path, max_videos: int | None = None) -> list[EvalClip]:
    """Read the evaluation set from a folder of videos or a JSON Lines manifest.

    Args:
        data: folder or manifest path.
        max_videos: keep the first N clips (None: all).

    Raises:
        InputError: missing path, empty folder/manifest, a malformed manifest line (named by
            line number), a missing video or audio file, bad start/end, duplicate ids.
    """
    path = Path(data)
    if max_videos is not None and (not isinstance(max_videos, int) or max_videos < 1):
        raise InputError(f"max_videos must be a positive integer, got {max_videos!r}")
    if not path.exists():
        raise InputError(f"evaluation data {path} does not exist (give a folder of videos or a .jsonl manifest)")
    clips = _from_folder(path) if path.is_dir() else _from_manifest(path)
    if not clips:
        what = f"folder {path} has no video files ({', '.join(VIDEO_SUFFIXES)})" if path.is_dir() else f"manifest {path} has no clips"
        raise InputError(f"evaluation data: {what}")
    ids = [c.id for c in clips]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InputError(f"evaluation data {path}: duplicate clip ids {duplicates}; give each line an 'id'")
    return clips[:max_videos] if max_videos else clips


def _has_audio(video: Path) -> bool:
    from ..media import probe_video

    return bool(probe_video(str(video)).has_audio)


def _from_folder(folder: Path) -> list[EvalClip]:
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    return [EvalClip(id=p.stem, video=p, audio=p if _has_audio(p) else None) for p in videos]


def _from_manifest(manifest: Path) -> list[EvalClip]:
    from ..data.manifest import read_manifest  # the project's one manifest format and its checks

    clips = []
    for item in read_manifest(manifest):
        where = f"manifest {manifest} line {item.line}"
        video = Path(item.video)
        if not video.is_file():
            raise InputError(f"{where}: video {video} does not exist")
        if item.audio is not None:
            audio = Path(item.audio)
            if not audio.is_file():
                raise InputError(f"{where}: audio {audio} does not exist")
        else:
            audio = video if _has_audio(video) else None
        clips.append(EvalClip(id=item.id, video=video, audio=audio, start=item.start, end=item.end))
    return clips
