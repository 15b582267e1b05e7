"""Data manifests: JSON Lines, one clip per line, as a DISCO-MV-like set of web music videos is listed.

Each line is an object with::

    {"video": "clips/abc.mp4",          # required; relative paths are relative to the manifest's folder
     "audio": "clips/abc.wav",          # optional: separate music track (default: the video's own audio)
     "start": 12.0, "end": 52.0,        # optional: the part of the video to use, in seconds
     "id": "abc"}                       # optional: stable id (default: the line number and file name)

Blank lines and lines starting with ``#`` are ignored. A malformed line is an
:class:`~vmas_diffusion.errors.InputError` naming the manifest and the line number.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

from .. import atomic
from ..errors import InputError

KEYS = ("video", "audio", "start", "end", "id")


@dataclass(frozen=True)
class ManifestItem:
    """One clip of a manifest; paths are absolute after :func:`read_manifest`."""

    video: str
    id: str
    audio: Optional[str] = None
    start: Optional[float] = None
    end: Optional[float] = None
    #: 1-based line number in the manifest (for messages)
    line: int = 0


def _number(value, key: str, where: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise InputError(f"{where}: {key!r} must be a finite number of seconds >= 0, got {value!r}")
    return float(value)


def parse_manifest_line(text: str, base_dir: Path, line: int, where: str) -> Optional[ManifestItem]:
    """One manifest line -> :class:`ManifestItem` (None for a blank or comment line)."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    where = f"{where} line {line}"
    try:
        entry = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{where}: not valid JSON ({err.msg})") from err
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(KEYS)}")
    video = entry.get("video")
    if not isinstance(video, str) or not video:
        raise InputError(f"{where}: 'video' must be a non-empty path string")
    audio = entry.get("audio")
    if audio is not None and (not isinstance(audio, str) or not audio):
        raise InputError(f"{where}: 'audio' must be a non-empty path string when given")
    start = _number(entry.get("start"), "start", where)
    end = _number(entry.get("end"), "end", where)
    if start is not None and end is not None and end <= start:
        raise InputError(f"{where}: 'end' ({end}) must be after 'start' ({start})")
    video_path = (base_dir / video).resolve()
    item_id = entry.get("id")
    if item_id is None:
        item_id = f"{line:08d}-{video_path.stem}"
    if not isinstance(item_id, (str, int)):
        raise InputError(f"{where}: 'id' must be a string or an int")
    return ManifestItem(
        video=str(video_path),
        id=str(item_id),
        audio=str((base_dir / audio).resolve()) if audio else None,
        start=start,
        end=end,
        line=line,
    )


def read_manifest(path: Union[str, Path]) -> List[ManifestItem]:
    """Read and validate a JSON Lines manifest; ids must be unique."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"manifest {path} does not exist or is not a file")
    items: List[ManifestItem] = []
    seen = {}
    try:  # streamed: a large binary file given by mistake fails at its first undecodable chunk
        with open(path, encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                item = parse_manifest_line(text, path.parent, number, f"manifest {path}")
                if item is None:
                    continue
                if item.id in seen:
                    raise InputError(f"manifest {path} line {number}: id {item.id!r} already used on line {seen[item.id]}")
                seen[item.id] = number
                items.append(item)
    except UnicodeDecodeError:
        raise InputError(f"manifest {path} is not a UTF-8 text file: give a JSON Lines file, one clip per line") from None
    except OSError as err:
        raise InputError(f"cannot read manifest {path}: {err.strerror or err}") from None
    if not items:
        raise InputError(f"manifest {path} lists no clips")
    return items


def write_manifest(path: Union[str, Path], entries: List[dict]) -> Path:
    """Write ``entries`` (dicts with the keys above) as a JSON Lines manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        unknown = set(entry) - set(KEYS)
        if unknown:
            raise InputError(f"manifest entry has unknown key(s) {sorted(unknown)}")
    atomic.write_text(path, "".join(json.dumps(entry) + "\n" for entry in entries))
    return path
