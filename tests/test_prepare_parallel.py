"""Preparation spread over processes (``--num-workers``, a launcher's RANK / WORLD_SIZE) writes the samples
one process writes, and training reads them from several folders, a glob or fsspec URLs."""

import io
import tarfile
from pathlib import Path

import pytest
import torch

import dummies
from vmas_diffusion.data import PrepareOptions, ShardDataset, prepare_dataset, shard_folders, write_manifest
from vmas_diffusion.data.prepare import launcher_share, prepare_parallel
from vmas_diffusion.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "tiny_ar.yaml")
WINDOWS = ["data.window_seconds=2.0", "data.min_seconds=1.0", "data.shard_size=2"]


def _manifest(media, folder: Path) -> Path:
    bbb = str(media("bigbuckbunny.mp4"))
    return write_manifest(folder / "manifest.jsonl", [
        {"video": bbb, "end": 4.0, "id": "bbb"},  # 2 windows
        {"video": str(media("bikes.mp4")), "id": "silent"},  # no audio: fails, logged by its share
        {"video": bbb, "start": 1.0, "end": 3.5, "id": "bbb_mid"},  # 1 window
        {"video": bbb, "start": 2.5, "end": 5.2, "id": "bbb_end"},  # 1 window (the 0.7 s after it is dropped)
        {"video": bbb, "start": 0.5, "end": 2.5, "id": "bbb_early"},  # 1 window
    ])  # fmt: skip


def _samples(folder: Path) -> dict:
    """key -> (safetensors bytes, json bytes) of every sample in the shards under ``folder``."""
    members = {}
    for shard in sorted(folder.rglob("shard-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                members[member.name] = tar.extractfile(member).read()
    keys = {name.split(".")[0] for name in members}
    return {key: (members[f"{key}.safetensors"], members[f"{key}.json"]) for key in keys}


@pytest.fixture(scope="module")
def prepared(media, tmp_path_factory):
    """The manifest prepared by one process (the CLI) and as the two shares of a 2-process job, run here
    one after the other (the real processes: the slow test below)."""
    from vmas_diffusion.cli import main

    root = tmp_path_factory.mktemp("parallel")
    manifest = _manifest(media, root)
    # one thread on both sides, for torch and for numpy's BLAS (librosa's onset envelope), as the launched
    # processes below run (OMP_NUM_THREADS=1): float sums split over another number of threads round
    # differently (1e-7 in the onsets), and the CLI's default thread count follows the machine's load
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            assert main(["--threads", "1", "prepare", str(manifest), *WINDOWS, "--out", str(root / "one"),
                         "--recipe", RECIPE, "--no-progress"]) == 0
            for rank in (0, 1):
                prepare_parallel(manifest, root / "two", RECIPE, WINDOWS, progress=False, rank=rank, world_size=2)
    finally:
        torch.set_num_threads(threads)
    return dict(root=root, manifest=manifest, one=root / "one", two=root / "two")


def _assert_same_samples_as_one(one: Path, two: Path) -> None:
    assert sorted(p.name for p in two.iterdir()) == ["part-00000", "part-00001"]
    single = _samples(one)
    parts = [_samples(two / name) for name in ("part-00000", "part-00001")]
    assert len(single) == 5 and all(parts) and not set(parts[0]) & set(parts[1])
    assert {**parts[0], **parts[1]} == single  # byte for byte, up to which shard holds them
    # each process took every other manifest item: bbb, bbb_mid, bbb_early / silent (failed), bbb_end
    assert {key.split("_w")[0] for key in parts[1]} == {"00000003_bbb_end"}
    assert "silent" in (two / "part-00001" / "errors.jsonl").read_text()


def test_two_shares_write_the_samples_of_one(prepared):
    _assert_same_samples_as_one(prepared["one"], prepared["two"])


@pytest.mark.slow
def test_two_worker_processes_write_the_samples_of_one(prepared, tmp_path, monkeypatch):
    """`--num-workers 2`: two spawned processes, each building its own codec (~2 min on a shared 2-core machine)."""
    from vmas_diffusion.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the workers' BLAS on one thread, as the reference ran (fixture)
    args = [str(prepared["manifest"]), *WINDOWS, "--out", str(tmp_path / "two"), "--num-workers", "2", "--recipe", RECIPE]
    assert main(["prepare", *args, "--no-progress"]) == 0
    _assert_same_samples_as_one(prepared["one"], tmp_path / "two")


def test_training_reads_the_parts_as_one_folder(prepared):
    one, two = prepared["one"], prepared["two"]

    def epoch(spec, **kwargs):
        dataset = ShardDataset(spec, batch_size=1, shuffle=False, num_batches=5, **kwargs)
        return dataset, sorted(b["codes"].numpy().tobytes() for b in dataset)

    reference, expected = epoch(one)
    for spec in (two, str(two / "part-*"), [two / "part-00000", two / "part-00001"], f"{two}/part-00000,{two}/part-00001"):
        dataset, got = epoch(spec)
        assert len(dataset.folders) == 2 and dataset.num_samples == 5 and got == expected
    assert epoch(two, split="shard")[1] == expected  # whole shards per slot, from both parts

    with pytest.raises(InputError, match="matches nothing"):
        ShardDataset(str(two / "nothing-*"), batch_size=1)
    with pytest.raises(InputError, match="has no index.json"):
        ShardDataset([one, two / "missing"], batch_size=1)


def test_a_training_run_reads_a_list_of_folders(prepared, tmp_path):
    from vmas_diffusion.training import train

    recipe = dummies.tiny_recipe("ar", tmp_path / "run", prepared["two"], max_steps=2, validate_every=10,
                                 num_validation_samples=0, checkpoint_every=10)
    recipe["data"] = {"train_dir": [str(prepared["two"] / "part-00000"), str(prepared["two"] / "part-00001")],
                      "val_dir": str(prepared["one"])}
    assert train(recipe, progress=False).step == 2


def test_folders_prepared_otherwise_do_not_mix(prepared, tmp_path):
    other = tmp_path / "other"
    report = prepare_dataset(prepared["manifest"], other, dummies.dummy_codec(), PrepareOptions(fps=8.0, frame_size=32,
                             window_seconds=2.0, min_seconds=1.0), dummies.dummy_video_encoder(), progress=False)
    assert report.num_samples
    with pytest.raises(InputError, match="prepared with other settings"):
        ShardDataset([prepared["one"], other], batch_size=1)


def test_remote_folders_through_fsspec(prepared):
    import fsspec

    two = prepared["two"]
    memory = fsspec.filesystem("memory")
    for path in two.rglob("*"):
        if path.is_file():
            memory.pipe(f"/vmas/{path.relative_to(two).as_posix()}", path.read_bytes())
    _, expected = None, sorted(b["codes"].numpy().tobytes() for b in ShardDataset(two, batch_size=1, shuffle=False, num_batches=5))
    for url in ("memory://vmas", f"file://{two}", "memory://vmas/part-*"):
        for split in ("sample", "shard"):
            dataset = ShardDataset(url, batch_size=1, shuffle=False, num_batches=5, split=split)
            assert len(dataset.folders) == 2 and all(f.remote for f in dataset.folders)
            assert sorted(b["codes"].numpy().tobytes() for b in dataset) == expected
    with pytest.raises(InputError, match="memory://nowhere has no index.json"):
        ShardDataset("memory://nowhere", batch_size=1)
    with pytest.raises(InputError, match="through fsspec"):
        shard_folders("nosuchprotocol://bucket/data")


def test_each_process_resumes_and_skips_what_any_did(media, tmp_path):
    manifest = _manifest(media, tmp_path)
    codec, encoder = dummies.dummy_codec(), dummies.dummy_video_encoder()
    options = PrepareOptions(fps=8.0, frame_size=32, window_seconds=2.0, min_seconds=1.0, shard_size=1)
    out = tmp_path / "data"

    def interrupt(item, status):
        raise KeyboardInterrupt  # Ctrl-C after rank 0's first clip

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(manifest, out, codec, options, encoder, progress=False, item_callback=interrupt, rank=0, world_size=2)
    first = prepare_dataset(manifest, out, codec, options, encoder, progress=False, rank=0, world_size=2)
    assert (first.num_items, first.num_skipped, first.num_done) == (3, 1, 2) and first.out_dir == out / "part-00000"
    second = prepare_dataset(manifest, out, codec, options, encoder, progress=False, rank=1, world_size=2)
    assert (second.num_done, second.num_failed) == (1, 1)
    # a rerun on another split (three processes, or one) finds everything done by someone
    for rank, world in ((2, 3), (0, 1)):
        again = prepare_dataset(manifest, out, codec, options, encoder, progress=False, rank=rank, world_size=world)
        assert again.num_done == again.num_failed == 0 and not again.new_shards
    assert ShardDataset(out, batch_size=1).num_samples == 5
    with pytest.raises(ConfigError, match="0 <= rank < world_size"):
        prepare_dataset(manifest, out, codec, options, encoder, progress=False, rank=2, world_size=2)


def test_a_launchers_processes_split_the_manifest(media, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert launcher_share() == (1, 2)
    manifest = _manifest(media, tmp_path)
    (report,) = prepare_parallel(manifest, tmp_path / "d", RECIPE, WINDOWS, progress=False)
    assert report.out_dir == tmp_path / "d" / "part-00001" and report.num_items == 2  # items 1 and 3 of 5
    assert sorted(p.name for p in (tmp_path / "d").iterdir() if p.is_dir()) == ["part-00001"]
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="RANK / WORLD_SIZE"):
        launcher_share()
    with pytest.raises(ConfigError, match="num_workers"):
        prepare_parallel(manifest, tmp_path / "d", RECIPE, WINDOWS, num_workers=0, rank=0, world_size=1)


def test_iter_shard_reads_an_open_file(prepared):
    from vmas_diffusion.data import iter_shard

    shard = next(prepared["one"].glob("shard-*.tar"))
    from_path = [(key, meta) for key, _, meta in iter_shard(shard)]
    from_file = [(key, meta) for key, _, meta in iter_shard(io.BytesIO(shard.read_bytes()))]
    assert from_path == from_file and len(from_path) == 2
    assert torch.equal(next(iter_shard(shard))[1]["codes"], next(iter_shard(io.BytesIO(shard.read_bytes())))[1]["codes"])


@pytest.mark.slow
def test_accelerate_launch_prepares_a_share_per_process(prepared, tmp_path):
    """`accelerate launch` with 2 processes: each reads its RANK / WORLD_SIZE and writes its part (~2 min)."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    launch = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port),
        "-m", "vmas_diffusion.cli", "prepare", str(prepared["manifest"]), *WINDOWS, "--out", str(tmp_path / "two"),
        "--recipe", RECIPE, "--no-progress",
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _assert_same_samples_as_one(prepared["one"], tmp_path / "two")
