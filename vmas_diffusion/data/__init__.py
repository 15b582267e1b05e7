"""Data: manifests, preparation into shards, and the streaming dataset training reads."""

from .dataset import ShardDataset, collate_samples
from .manifest import ManifestItem, read_manifest, write_manifest
from .prepare import (
    PrepareOptions,
    PrepareReport,
    prepare_dataset,
    prepare_from_recipe,
    prepare_options,
    prepare_parallel,
    window_spans,
)
from .shards import SampleRef, ShardWriter, iter_shard, read_index, read_sample
from .sources import ShardFolder, shard_folders

__all__ = [
    "ManifestItem",
    "PrepareOptions",
    "PrepareReport",
    "SampleRef",
    "ShardFolder",
    "ShardDataset",
    "ShardWriter",
    "collate_samples",
    "iter_shard",
    "prepare_dataset",
    "prepare_from_recipe",
    "prepare_options",
    "prepare_parallel",
    "read_index",
    "read_manifest",
    "read_sample",
    "shard_folders",
    "window_spans",
    "write_manifest",
]
