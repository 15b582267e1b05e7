"""Training shards: POSIX tar files in the WebDataset layout, tensors as safetensors.

A shard ``shard-000003.tar`` holds, per training window ``KEY``, two members:
``KEY.safetensors`` (the window's tensors) and ``KEY.json`` (its metadata), the layout
WebDataset readers expect (files grouped by the name before the first dot), so the shards
also stream through ``webdataset`` / S3 / HTTP tooling. Nothing is pickled.

Shards are written atomically: to ``shard-N.tar.tmp`` first, renamed when complete, so an
interrupted writer never leaves a half shard behind under the final name. ``index.json`` next to
the shards lists every finished shard with its samples' member offsets, so a reader can seek
straight to one sample (:func:`read_sample`) or stream a whole shard (:func:`iter_shard`).
"""

import io
import json
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Tuple, Union

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .. import atomic
from ..atomic import commit
from ..errors import InputError

INDEX_NAME = "index.json"
SHARD_PATTERN = "shard-{:06d}.tar"


@dataclass(frozen=True)
class SampleRef:
    """Where one sample's tensors sit: shard file name, byte offset and size of its safetensors member."""

    shard: str
    key: str
    offset: int
    size: int
    meta: dict


def encode_sample(tensors: Dict[str, torch.Tensor]) -> bytes:
    """Tensors -> safetensors bytes (contiguous CPU copies)."""
    return st_save({name: t.detach().cpu().contiguous() for name, t in tensors.items()})


def decode_sample(data: bytes) -> Dict[str, torch.Tensor]:
    """safetensors bytes -> tensors."""
    return st_load(data)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


class ShardWriter:
    """Write samples into one shard atomically (``.tmp`` then rename on :meth:`close`).

    >>> with ShardWriter(out_dir, 0) as writer:
    ...     writer.write("clip-w0000", {"codes": codes}, {"id": "clip"})
    """

    def __init__(self, out_dir: Union[str, Path], number: int):
        self.out_dir = Path(out_dir)
        self.name = SHARD_PATTERN.format(number)
        self.final = self.out_dir / self.name
        self.tmp = self.out_dir / (self.name + ".tmp")  # prepare drops leftovers of a kill by this name
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._tar = tarfile.open(self.tmp, "w", format=tarfile.USTAR_FORMAT)
        self.keys: List[str] = []
        self.metas: Dict[str, dict] = {}

    def write(self, key: str, tensors: Dict[str, torch.Tensor], meta: dict) -> None:
        if "." in key or "/" in key:
            raise InputError(f"sample key {key!r} must not contain '.' or '/' (WebDataset groups members by it)")
        now = time.time()
        _add_bytes(self._tar, f"{key}.safetensors", encode_sample(tensors), now)
        _add_bytes(self._tar, f"{key}.json", json.dumps(meta, sort_keys=True).encode(), now)
        self.keys.append(key)
        self.metas[key] = meta

    def __len__(self) -> int:
        return len(self.keys)

    def close(self) -> List[SampleRef]:
        """Finish the shard: flush, fsync, rename to the final name; returns its sample references."""
        try:
            self._tar.close()
        except BaseException:
            self.tmp.unlink(missing_ok=True)
            raise
        commit(self.tmp, self.final)
        return shard_refs(self.final, self.metas)

    def abort(self) -> None:
        """Drop the unfinished shard."""
        try:
            self._tar.close()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def shard_refs(path: Path, metas: Dict[str, dict]) -> List[SampleRef]:
    """Offsets of the safetensors members of a finished shard (reads tar headers only)."""
    refs = []
    with tarfile.open(path, "r") as tar:
        for member in tar.getmembers():
            key, _, ext = member.name.partition(".")
            if ext == "safetensors":
                refs.append(SampleRef(path.name, key, member.offset_data, member.size, metas.get(key, {})))
    return refs


def write_index(out_dir: Union[str, Path], refs: List[SampleRef], info: dict) -> Path:
    """Write ``index.json`` (atomically) listing every sample of every finished shard."""
    out_dir = Path(out_dir)
    payload = {
        "format": "vmas-shards-v1",
        "info": info,
        "samples": [
            {"shard": r.shard, "key": r.key, "offset": r.offset, "size": r.size, "meta": r.meta} for r in refs
        ],
    }
    return atomic.write_text(out_dir / INDEX_NAME, json.dumps(payload, indent=1))


def read_index(data_dir: Union[str, Path], allow_empty: bool = False) -> Tuple[List[SampleRef], dict]:
    """``(sample references, dataset info)`` of a prepared folder."""
    data_dir = Path(data_dir)
    path = data_dir / INDEX_NAME
    if not path.is_file():
        raise InputError(f"data folder {data_dir} has no {INDEX_NAME}: run `vmas-diffusion prepare MANIFEST --out {data_dir}`")
    return parse_index(path.read_text(encoding="utf-8"), data_dir, allow_empty)


def parse_index(text: str, data_dir, allow_empty: bool = False) -> Tuple[List[SampleRef], dict]:
    """:func:`read_index` of an ``index.json``'s text (read from any file system) of folder ``data_dir``."""
    path = f"{data_dir}/{INDEX_NAME}"
    try:
        payload = json.loads(text)
        refs = [SampleRef(s["shard"], s["key"], int(s["offset"]), int(s["size"]), s.get("meta", {})) for s in payload["samples"]]
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise InputError(f"{path} is not a vmas shard index: {err}") from err
    if not refs and not allow_empty:
        raise InputError(f"data folder {data_dir} holds no samples (every clip failed or the manifest was empty)")
    return refs, payload.get("info", {})


def read_sample(data_dir: Union[str, Path], ref: SampleRef) -> Dict[str, torch.Tensor]:
    """Seek to one sample's safetensors member and decode it."""
    with open(Path(data_dir) / ref.shard, "rb") as handle:
        return read_member(handle, ref)


def read_member(handle, ref: SampleRef) -> Dict[str, torch.Tensor]:
    """One sample's tensors from its open shard file ``handle`` (local or remote, seekable)."""
    handle.seek(ref.offset)
    data = handle.read(ref.size)
    if len(data) != ref.size:
        raise InputError(f"shard {ref.shard} is truncated at sample {ref.key}")
    return decode_sample(data)


def iter_shard(path) -> Iterator[Tuple[str, Dict[str, torch.Tensor], dict]]:
    """Stream a shard front to back (no seeking): yields ``(key, tensors, meta)``; ``path`` may also be an
    open binary file (a remote one, say)."""
    pending: Dict[str, dict] = {}
    opened = {"name": path} if isinstance(path, (str, Path)) else {"fileobj": path}
    with tarfile.open(mode="r|", **opened) as tar:
        for member in tar:
            key, _, ext = member.name.partition(".")
            data = tar.extractfile(member).read()
            entry = pending.setdefault(key, {})
            if ext == "safetensors":
                entry["tensors"] = decode_sample(data)
            elif ext == "json":
                entry["meta"] = json.loads(data)
            if "tensors" in entry and "meta" in entry:
                del pending[key]
                yield key, entry["tensors"], entry["meta"]
