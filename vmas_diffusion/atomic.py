"""Atomic file writes: an output appears complete at its final path, or not at all.

Every file the project writes for a user (audio, mp4, plots, reports, shards, indexes) is
written to a temporary file in the same folder, flushed to disk with ``fsync`` and renamed
over the final path with ``os.replace`` (atomic on POSIX and Windows within one file
system). Any failure on the way (full disk, file-size limit, a writer's exception,
Ctrl-C) removes the temporary file, so an error never leaves a 0-byte or truncated file
behind, nor replaces a good file with a broken one.
"""

from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


def temp_path_for(path: PathLike) -> Path:
    """A fresh hidden name next to ``path`` that keeps its suffix (writers pick the format from it)."""
    final = Path(path)
    return final.with_name(f".{final.stem}.{os.getpid()}-{secrets.token_hex(4)}.tmp{final.suffix}")


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def fsync_dir(folder: Path) -> None:
    """Make renames and new entries in ``folder`` durable; a no-op where folders cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(tmp: PathLike, path: PathLike) -> None:
    """fsync the finished ``tmp`` and rename it to ``path``; ``tmp`` is removed if that fails."""
    tmp, final = Path(tmp), Path(path)
    try:
        _fsync_file(tmp)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(final.parent)


@contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path for a writer; on success it becomes ``path``, on any error it is removed.

    >>> with atomic_path("music.wav") as tmp:
    ...     soundfile.write(tmp, data, rate)

    The parent folders of ``path`` are created. The writer creates the temporary file itself
    (so it gets the usual permissions); it has the same suffix as ``path``.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(final)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    commit(tmp, final)


def write_bytes(path: PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a Path."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
    return Path(path)


def write_text(path: PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically; returns ``path`` as a Path."""
    return write_bytes(path, text.encode(encoding))
