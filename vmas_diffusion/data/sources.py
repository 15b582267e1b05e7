"""Where training reads prepared shards from: one folder, several, a glob, or remote fsspec URLs.

``data.train_dir`` (and ``ShardDataset``) take any of

* a folder written by ``vmas-diffusion prepare``; a folder that ``prepare`` filled from several
  processes holds one ``part-NNNNN/`` folder per process, and counts as all of them;
* a glob (``/data/vmas/*/part-*``), matched folders in sorted order;
* an fsspec URL (``s3://bucket/shards``, ``gcs://...``, ``https://...``, ``memory://...``,
  ``file:///...``): read through fsspec, seeking into the shards, so the same layout streams from
  object storage (fsspec's own extras, e.g. ``s3fs``, are needed for each remote protocol);
* a list of any of these (YAML list, or one string with commas).

Every folder must have been prepared with the same settings (``index.json`` ``info``).
"""

import glob
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple, Union

import torch

from ..errors import InputError
from .shards import INDEX_NAME, SampleRef, iter_shard, parse_index, read_member

#: the sub-folder each process of a parallel ``prepare`` writes (``part-00003``)
PART_PATTERN = "part-{:05d}"
PART_GLOB = "part-*"

DataSpec = Union[str, Path, Sequence[Union[str, Path]]]


def _filesystem(url: str):
    """``(fsspec file system, path in it)`` of a URL."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as err:  # an unknown protocol or its package missing
        raise InputError(f"cannot read {url} through fsspec: {err}") from err


class ShardFolder:
    """One prepared folder, local (a path) or remote (an fsspec URL)."""

    def __init__(self, location: Union[str, Path]):
        self.location = str(location)
        self.remote = "://" in self.location
        if self.remote:
            self.fs, self.root = _filesystem(self.location)
        else:
            self.fs, self.root = None, self.location

    def __repr__(self) -> str:
        return f"ShardFolder({self.location!r})"

    def exists(self, name: str) -> bool:
        return self.fs.exists(f"{self.root}/{name}") if self.remote else (Path(self.root) / name).is_file()

    def open(self, name: str):
        """A binary, seekable file of this folder."""
        try:
            return self.fs.open(f"{self.root}/{name}", "rb") if self.remote else open(Path(self.root) / name, "rb")
        except FileNotFoundError as err:
            raise InputError(f"{self.location} has no {name}") from err

    def read_index(self, allow_empty: bool = False) -> Tuple[List[SampleRef], dict]:
        if not self.exists(INDEX_NAME):
            raise InputError(f"data folder {self.location} has no {INDEX_NAME}: run `vmas-diffusion prepare MANIFEST "
                             f"--out {self.location}`")
        with self.open(INDEX_NAME) as handle:
            return parse_index(handle.read().decode("utf-8"), self.location, allow_empty)

    def read_sample(self, ref: SampleRef) -> Dict[str, torch.Tensor]:
        with self.open(ref.shard) as handle:
            return read_member(handle, ref)

    def iter_shard(self, shard: str) -> Iterator[Tuple[str, Dict[str, torch.Tensor], dict]]:
        with self.open(shard) as handle:
            yield from iter_shard(handle)

    def parts(self) -> List["ShardFolder"]:
        """The ``part-*`` folders a parallel ``prepare`` wrote inside this one (sorted), with an index each."""
        if self.remote:
            found = sorted(self.fs.glob(f"{self.root}/{PART_GLOB}/{INDEX_NAME}"))
            return [ShardFolder(self.fs.unstrip_protocol(path.rsplit("/", 1)[0])) for path in found]
        return [ShardFolder(p.parent) for p in sorted(Path(self.root).glob(f"{PART_GLOB}/{INDEX_NAME}"))]


def _split(spec: DataSpec) -> List[str]:
    if isinstance(spec, (str, Path)):
        return [s.strip() for s in str(spec).split(",") if s.strip()]
    if isinstance(spec, Sequence) or hasattr(spec, "__iter__"):  # a list, or an OmegaConf ListConfig
        return [item for entry in spec for item in _split(entry)]
    raise InputError(f"data folders must be a path, a URL, a glob or a list of them, got {type(spec).__name__}")


def _glob(pattern: str) -> List[ShardFolder]:
    """The folders a local or fsspec glob matches, sorted."""
    if "://" in pattern:
        fs, path = _filesystem(pattern)
        matches = [fs.unstrip_protocol(m) for m in sorted(fs.glob(path)) if fs.isdir(m)]
    else:
        matches = [m for m in sorted(glob.glob(pattern)) if Path(m).is_dir()]
    if not matches:
        raise InputError(f"data folder pattern {pattern} matches nothing")
    return [ShardFolder(m) for m in matches]


def shard_folders(spec: DataSpec) -> List[ShardFolder]:
    """The prepared folders ``spec`` names (see the module docstring), each holding an ``index.json``."""
    folders: List[ShardFolder] = []
    for entry in _split(spec):
        if glob.has_magic(entry.split("://", 1)[-1]):
            candidates = _glob(entry)
        else:
            candidates = [ShardFolder(entry)]
        for folder in candidates:
            # a folder counts with the parts a parallel prepare wrote in it (a folder with neither is
            # kept, so that reading it says what is missing)
            own = [folder] if folder.exists(INDEX_NAME) else []
            folders.extend(own + folder.parts() or [folder])
    if not folders:
        raise InputError(f"no data folder in {spec!r}")
    return folders


def read_folders(spec: DataSpec, allow_empty: bool = False) -> Tuple[List[ShardFolder], List[List[SampleRef]], dict]:
    """``(folders, sample references per folder, the shared info)``; folders prepared with other settings
    than the first raise InputError (one training run must not mix two kinds of samples)."""
    folders = shard_folders(spec)
    refs, info = [], None
    for folder in folders:
        folder_refs, folder_info = folder.read_index(allow_empty=True)
        if info is None:
            info, first = folder_info, folder
        elif folder_info != info:
            raise InputError(f"{folder.location} was prepared with other settings than {first.location}: "
                             f"{folder_info} vs {info}")
        refs.append(folder_refs)
    if not allow_empty and not any(refs):
        where = folders[0].location if len(folders) == 1 else f"{len(folders)} folders ({folders[0].location}, ...)"
        raise InputError(f"data folder {where} holds no samples (every clip failed or the manifest was empty)")
    return folders, refs, info or {}
