"""Streaming dataset over prepared shards, split across processes, machines and loader workers.

The dataset yields whole, padded batches (use ``DataLoader(dataset, batch_size=None)``), so the
order of what every process sees is a pure function of ``(seed, rank, world_size, batch index)``
and never of the number of loader workers or of a restart.

Two ways to split the data (``split``):

``"sample"`` (default) - one global stream for the whole job: epoch ``e`` visits the ``N`` samples
    in the order ``perm_e = randperm(N, seed + e)``; global micro-batch ``k`` is stream positions
    ``k*G ... (k+1)*G - 1`` with ``G = batch_size * world_size``, and rank ``r`` takes the ``r``-th
    ``batch_size`` slice of it. A job on ``W`` processes therefore sees, step for step, the same global
    batches as one process with ``W`` times the batch size (tested). Each process reads only its own
    samples, seeking into the shards through ``index.json``.
``"shard"`` - WebDataset-style for many machines on remote storage: every (rank, worker) slot
    streams whole shards front to back (``perm`` of the shards per epoch, slot ``s`` takes shards
    ``s, s + S, ...``), shuffling within each shard. Needs at least as many shards as slots.

Every sample carries ``uid = epoch * N + index``, which seeds its per-sample randomness (condition
dropout, diffusion noise) in training, so that randomness does not depend on where it is computed.
"""

from pathlib import Path
from typing import Dict, Iterator, List, Optional

import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..errors import ConfigError, InputError
from .sources import DataSpec, read_folders

SPLITS = ("sample", "shard")
#: tensors of a sample whose first axis is video time / last axis is music time
VIDEO_KEYS = ("frames", "features", "visual_envelope")
MUSIC_KEYS = ("codes", "latents", "onset")


def _perm(n: int, seed: int) -> List[int]:
    if n == 0:
        return []
    gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    return torch.randperm(n, generator=gen).tolist()


def _pad_time(tensors: List[torch.Tensor], axis: int) -> torch.Tensor:
    """Stack along a new batch axis, zero-padding ``axis`` (of the unbatched tensors) to the longest."""
    length = max(t.shape[axis] for t in tensors)
    out = []
    for t in tensors:
        missing = length - t.shape[axis]
        if missing:
            shape = list(t.shape)
            shape[axis] = missing
            t = torch.cat([t, t.new_zeros(shape)], dim=axis)
        out.append(t)
    return torch.stack(out)


def _lengths_mask(lengths: List[int]) -> torch.Tensor:
    longest = max(lengths)
    return torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]


def collate_samples(samples: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Pad and stack samples into a batch.

    Returns ``frames [B, T, H, W, 3]`` uint8 or ``features [B, T, F]``, ``visual_envelope [B, T]``,
    ``video_mask [B, T]``, ``codes [B, K, Tm]`` and/or ``latents [B, D, Tm]``, ``onset [B, Tm]``,
    ``music_mask [B, Tm]``, ``aligned [B]`` bool (True: the pair is in sync) and ``uid [B]`` long.
    """
    if not samples:
        raise InputError("collate_samples: empty batch")
    batch: Dict[str, torch.Tensor] = {}
    video_len = [s["visual_envelope"].shape[0] for s in samples]
    music_len = [s["onset"].shape[-1] for s in samples]
    for key in VIDEO_KEYS:
        if key in samples[0]:
            batch[key] = _pad_time([s[key] for s in samples], 0)
    for key in MUSIC_KEYS:
        if key in samples[0]:
            batch[key] = _pad_time([s[key] for s in samples], samples[0][key].dim() - 1)
    batch["video_mask"] = _lengths_mask(video_len)
    batch["music_mask"] = _lengths_mask(music_len)
    batch["aligned"] = torch.ones(len(samples), dtype=torch.bool)
    batch["uid"] = torch.tensor([int(s["uid"]) for s in samples], dtype=torch.long)
    return batch


class ShardDataset(IterableDataset):
    """Batches from a prepared folder for one process of a (possibly multi-machine) job.

    Args:
        data_dir: folder written by ``vmas-diffusion prepare``, or several: a list, a glob, fsspec URLs
            (:mod:`vmas_diffusion.data.sources`); their samples are indexed in the order given.
        batch_size: samples per batch on this process.
        rank, world_size: this process's place in the job (``accelerator.process_index`` / ``num_processes``).
        seed: shuffling seed (epoch ``e`` uses ``seed + e``).
        shuffle: False visits samples in index order (validation).
        split: ``"sample"`` or ``"shard"`` (see the module docstring).
        start_batch: first local batch to yield (resuming skips what was trained on).
        num_batches: stop after this many local batches (None: endless, epochs repeat).
    """

    def __init__(
        self,
        data_dir: DataSpec,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
        split: str = "sample",
        start_batch: int = 0,
        num_batches: Optional[int] = None,
    ):
        super().__init__()
        if split not in SPLITS:
            raise ConfigError(f"data split must be one of {SPLITS}, got {split!r}")
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ConfigError(f"bad batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.data_dir = data_dir if isinstance(data_dir, (str, Path)) else ", ".join(map(str, data_dir))
        self.folders, per_folder, self.info = read_folders(data_dir)
        self.refs = [ref for refs in per_folder for ref in refs]
        #: the folder of each sample (its index into self.folders)
        self.folder_of = [f for f, refs in enumerate(per_folder) for _ in refs]
        self.batch_size = int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.seed, self.shuffle, self.split = int(seed), bool(shuffle), split
        self.start_batch = int(start_batch)
        self.num_batches = num_batches
        #: (folder, shard name) of every shard
        self.shards = sorted({(f, r.shard) for f, r in zip(self.folder_of, self.refs)})

    @property
    def num_samples(self) -> int:
        return len(self.refs)

    @property
    def video_fps(self) -> float:
        return float(self.info["options"]["fps"])

    @property
    def music_frame_rate(self) -> float:
        return float(self.info["music_frame_rate"])

    def _order(self, count: int, epoch: int) -> List[int]:
        """This epoch's order of ``count`` samples or shards."""
        return _perm(count, self.seed + epoch) if self.shuffle else list(range(count))

    def _load(self, index: int, epoch: int) -> Dict[str, torch.Tensor]:
        sample = self.folders[self.folder_of[index]].read_sample(self.refs[index])
        sample["uid"] = epoch * len(self.refs) + index
        return sample

    def _local_batches(self, worker: int, num_workers: int) -> Iterator[int]:
        k = self.start_batch + worker
        end = None if self.num_batches is None else self.start_batch + self.num_batches
        while end is None or k < end:
            yield k
            k += num_workers

    def __iter__(self) -> Iterator[Dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        if self.split == "sample":
            yield from self._iter_samples(worker, num_workers)
        else:
            yield from self._iter_shards(worker, num_workers)

    def _iter_samples(self, worker: int, num_workers: int):
        n = len(self.refs)
        global_batch = self.batch_size * self.world_size
        orders: Dict[int, List[int]] = {}
        for k in self._local_batches(worker, num_workers):
            samples = []
            first = k * global_batch + self.rank * self.batch_size
            for position in range(first, first + self.batch_size):
                epoch = position // n
                if epoch not in orders:
                    orders = {epoch: self._order(len(self.refs), epoch)}  # keep one epoch's order in memory
                samples.append(self._load(orders[epoch][position % n], epoch))
            yield collate_samples(samples)

    def _iter_shards(self, worker: int, num_workers: int):
        slots = self.world_size * num_workers
        if len(self.shards) < slots:
            raise ConfigError(
                f"data split 'shard' needs at least {slots} shards (processes x loader workers), "
                f"{self.data_dir} has {len(self.shards)}: prepare with a smaller shard_size or use split 'sample'"
            )
        # The loader takes batches from its workers round-robin starting at worker 0, so after a restart at
        # local batch `start_batch`, worker w plays the part of worker (start + w) % W of an unbroken run,
        # whose first (start + w) // W batches were already trained on.
        role = (self.start_batch + worker) % num_workers
        skip = (self.start_batch + worker) // num_workers
        remaining = None if self.num_batches is None else len(range(worker, self.num_batches, num_workers))
        slot = self.rank * num_workers + role
        position = {(f, r.shard, r.key): i for i, (f, r) in enumerate(zip(self.folder_of, self.refs))}
        epoch = 0
        buffer: List[Dict[str, torch.Tensor]] = []
        while remaining is None or remaining > 0:
            shards = [self.shards[i] for i in self._order(len(self.shards), epoch)]
            for folder, shard in shards[slot::slots]:
                items = list(self.folders[folder].iter_shard(shard))
                salt = hash_text(shard) + 7919 * folder  # the parts of a parallel prepare share shard names
                order = _perm(len(items), self.seed + epoch * 1_000_003 + salt) if self.shuffle else range(len(items))
                for i in order:
                    key, tensors, _ = items[i]
                    tensors["uid"] = epoch * len(self.refs) + position[(folder, shard, key)]
                    buffer.append(tensors)
                    if len(buffer) < self.batch_size:
                        continue
                    batch, buffer = buffer, []
                    if skip > 0:
                        skip -= 1
                        continue
                    yield collate_samples(batch)
                    if remaining is not None:
                        remaining -= 1
                        if remaining == 0:
                            return
            epoch += 1


def hash_text(text: str) -> int:
    """Stable (process-independent) 31-bit hash of a string (Python's ``hash`` is salted per process)."""
    value = 0
    for byte in text.encode():
        value = (value * 131 + byte) % 2_147_483_647
    return value
