"""Data: manifests, shards, `prepare` on real media (skip-and-log, resume) and the streaming dataset's splits."""

import json
import tarfile
from pathlib import Path

import pytest
import torch

from vmas_diffusion.data import (
    PrepareOptions,
    ShardDataset,
    ShardWriter,
    collate_samples,
    iter_shard,
    prepare_dataset,
    read_index,
    read_manifest,
    read_sample,
    window_spans,
    write_manifest,
)
from vmas_diffusion.data.shards import write_index
from vmas_diffusion.errors import ConfigError, InputError

ROOT = Path(__file__).resolve().parents[1]
OPTIONS = dict(fps=8.0, frame_size=32, window_seconds=2.0, min_seconds=1.0, shard_size=1)


# ---------------------------------------------------------------------------------------- manifest
def test_manifest_resolves_paths_and_defaults(tmp_path):
    path = tmp_path / "sets" / "m.jsonl"
    path.parent.mkdir()
    path.write_text(
        '{"video": "clips/a.mp4", "start": 1, "end": 3.5, "id": "a"}\n'
        "\n# a comment\n"
        '{"video": "/abs/b.mp4", "audio": "b.wav"}\n'
    )
    items = read_manifest(path)
    assert [i.id for i in items] == ["a", "00000004-b"]
    assert items[0].video == str((path.parent / "clips/a.mp4").resolve())
    assert (items[0].start, items[0].end, items[0].audio) == (1.0, 3.5, None)
    assert items[1].audio == str((path.parent / "b.wav").resolve()) and items[1].line == 4


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 1: not valid JSON"),
        ('{"video": "a.mp4", "stat": 1}', "unknown key.*stat"),
        ('{"audio": "a.wav"}', "'video' must be"),
        ('{"video": "a.mp4", "start": 3, "end": 2}', "'end'.*after 'start'"),
        ('{"video": "a.mp4", "start": -1}', "'start' must be"),
        ('["a.mp4"]', "expected a JSON object"),
    ],
)
def test_manifest_errors_name_the_line(tmp_path, line, message):
    path = tmp_path / "m.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(InputError, match=message):
        read_manifest(path)


def test_manifest_duplicate_ids_and_empty(tmp_path):
    path = write_manifest(tmp_path / "m.jsonl", [{"video": "a.mp4", "id": "x"}, {"video": "b.mp4", "id": "x"}])
    with pytest.raises(InputError, match="id 'x' already used on line 1"):
        read_manifest(path)
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(InputError, match="lists no clips"):
        read_manifest(tmp_path / "e.jsonl")


def test_window_spans_known_answers():
    opts = PrepareOptions(fps=8, frame_size=32, window_seconds=2.0, min_seconds=1.0)
    assert window_spans(0.0, 5.3, opts) == [(0.0, 2.0), (2.0, 4.0), (4.0, 5.3)]
    assert window_spans(1.0, 3.5, opts) == [(1.0, 3.0)]  # the 0.5 s tail is under min_seconds
    assert window_spans(0.0, 0.5, opts) == []
    hop = PrepareOptions(fps=8, frame_size=32, window_seconds=2.0, hop_seconds=1.0, min_seconds=2.0)
    assert window_spans(0.0, 4.0, hop) == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0)]
    with pytest.raises(ConfigError, match="video_input"):
        PrepareOptions(fps=8, frame_size=32, video_input="pixels")


# ---------------------------------------------------------------------------------------- shards
def test_shard_writer_round_trip_and_atomicity(tmp_path):
    samples = {f"k{i}": {"codes": torch.arange(12).view(3, 4) + i, "onset": torch.rand(4)} for i in range(3)}
    writer = ShardWriter(tmp_path, 7)
    for key, tensors in samples.items():
        writer.write(key, tensors, {"i": key})
    assert not (tmp_path / "shard-000007.tar").exists()  # only the .tmp exists until close
    refs = writer.close()
    assert not list(tmp_path.glob("*.tmp"))
    # WebDataset layout: KEY.safetensors + KEY.json per sample
    with tarfile.open(tmp_path / "shard-000007.tar") as tar:
        assert tar.getnames()[:2] == ["k0.safetensors", "k0.json"]
    for ref in refs:
        got = read_sample(tmp_path, ref)
        assert torch.equal(got["codes"], samples[ref.key]["codes"]) and torch.equal(got["onset"], samples[ref.key]["onset"])
    streamed = list(iter_shard(tmp_path / "shard-000007.tar"))
    assert [k for k, _, _ in streamed] == ["k0", "k1", "k2"] and streamed[1][2] == {"i": "k1"}
    write_index(tmp_path, refs, {"x": 1})
    assert read_index(tmp_path)[1] == {"x": 1}

    aborted = ShardWriter(tmp_path, 8)
    aborted.write("a", {"x": torch.zeros(1)}, {})
    aborted.abort()
    assert not list(tmp_path.glob("shard-000008*"))
    with pytest.raises(InputError, match="must not contain"):
        ShardWriter(tmp_path, 9).write("a.b", {"x": torch.zeros(1)}, {})


def test_collate_pads_and_masks():
    a = {"visual_envelope": torch.ones(3), "onset": torch.ones(5), "codes": torch.ones(2, 5, dtype=torch.long), "uid": 4}
    b = {"visual_envelope": torch.ones(2), "onset": torch.ones(4), "codes": torch.ones(2, 4, dtype=torch.long), "uid": 9}
    batch = collate_samples([a, b])
    assert batch["codes"].shape == (2, 2, 5) and batch["codes"][1, :, 4].eq(0).all()
    assert batch["video_mask"].tolist() == [[True] * 3, [True, True, False]]
    assert batch["music_mask"].sum(1).tolist() == [5, 4]
    assert batch["uid"].tolist() == [4, 9] and batch["aligned"].all()


# ---------------------------------------------------------------------------------------- prepare (real media)
@pytest.fixture(scope="module")
def prepared(media, tmp_path_factory):
    """bigbuckbunny windows prepared in two runs: the first interrupted after one clip, the second resuming.

    Manifest: 0-4 s of bigbuckbunny (2 windows of 2 s), a corrupt file, a missing file, a video without
    audio (bikes), and bigbuckbunny 1-3.5 s (1 window; its 0.5 s tail is dropped).
    """
    import dummies

    root = tmp_path_factory.mktemp("prep")
    corrupt = root / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x13" * 4000)
    bbb = str(media("bigbuckbunny.mp4"))
    manifest = write_manifest(
        root / "manifest.jsonl",
        [
            {"video": bbb, "end": 4.0, "id": "bbb"},
            {"video": "corrupt.mp4"},
            {"video": "missing.mp4"},
            {"video": str(media("bikes.mp4")), "id": "silent"},
            {"video": bbb, "start": 1.0, "end": 3.5, "id": "bbb_mid"},
        ],
    )
    codec, encoder = dummies.dummy_codec(), dummies.dummy_video_encoder()
    out = root / "data"
    options = PrepareOptions(**OPTIONS)

    def interrupt(item, status):
        if item.id == "bbb":
            raise KeyboardInterrupt  # as a Ctrl-C after the first clip

    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(manifest, out, codec, options, encoder, progress=False, item_callback=interrupt)
    first_shards = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.tar")}
    report = prepare_dataset(manifest, out, codec, options, encoder, progress=False)
    return dict(out=out, manifest=manifest, report=report, first_shards=first_shards, codec=codec, encoder=encoder, options=options)


def test_prepare_skips_and_logs_bad_clips(prepared):
    report = prepared["report"]
    assert report.num_skipped == 1 and report.num_done == 1 and report.num_failed == 3
    errors = [json.loads(line) for line in (prepared["out"] / "errors.jsonl").read_text().splitlines()]
    by_video = {e["video"].rsplit("/", 1)[-1]: e["error"] for e in errors}
    assert by_video["corrupt.mp4"].startswith("VideoDecodeError")
    assert "does not exist" in by_video["missing.mp4"]
    assert "no audio track" in by_video["bikes.mp4"]


def test_prepare_resume_keeps_finished_shards(prepared):
    out = prepared["out"]
    # the interrupted run had finished the first clip's shard (its two windows); the rerun left it alone
    assert list(prepared["first_shards"]) == ["shard-000000.tar"]
    for name, mtime in prepared["first_shards"].items():
        assert (out / name).stat().st_mtime_ns == mtime
    refs, info = read_index(out)
    assert [(r.meta["id"], r.meta["start"], r.meta["end"]) for r in refs] == [
        ("bbb", 0.0, 2.0), ("bbb", 2.0, 4.0), ("bbb_mid", 1.0, 3.0),
    ]  # fmt: skip
    assert info["music_frame_rate"] == 50.0 and info["options"]["window_seconds"] == 2.0
    # a third run has nothing left to do
    again = prepare_dataset(prepared["manifest"], out, prepared["codec"], prepared["options"], prepared["encoder"], progress=False)
    assert again.num_done == 0 and again.num_skipped == 5 and not again.new_shards
    # --retry-failed tries the three bad clips again (and they fail again, logged again)
    retried = prepare_dataset(
        prepared["manifest"], out, prepared["codec"], prepared["options"], prepared["encoder"], progress=False, retry_failed=True
    )
    assert retried.num_failed == 3 and retried.num_skipped == 2 and not retried.new_shards
    # other settings in the same folder are refused instead of mixing two kinds of samples
    other = PrepareOptions(**{**OPTIONS, "window_seconds": 3.0})
    with pytest.raises(InputError, match="prepared with other settings"):
        prepare_dataset(prepared["manifest"], out, prepared["codec"], other, prepared["encoder"], progress=False)


def test_prepared_sample_contents(prepared):
    refs, _ = read_index(prepared["out"])
    sample = read_sample(prepared["out"], refs[0])
    assert sample["frames"].shape == (16, 32, 32, 3) and sample["frames"].dtype == torch.uint8  # 2 s at 8 fps
    assert sample["visual_envelope"].shape == (16,)
    assert sample["codes"].shape == (4, 100) and sample["codes"].dtype == torch.long  # 2 s at 50 Hz, 4 codebooks
    assert int(sample["codes"].max()) < 64
    assert sample["latents"].shape == (16, 100) and sample["onset"].shape == (100,)
    assert 0 <= float(sample["onset"].min()) and float(sample["onset"].max()) <= 1
    # the codes are the frozen codec's tokens of that window's soundtrack
    from vmas_diffusion.media import load_audio

    wav = torch.from_numpy(load_audio(refs[0].meta["video"], 16000, mono=True, start=0.0, end=2.0))[None]
    with torch.no_grad():
        expected = prepared["codec"].tokenize(wav[..., :32000])[0, :, :100]
    assert (expected == sample["codes"]).float().mean() > 0.95  # decoder edge effects aside


def test_prepared_envelope_is_the_whole_clips(prepared, media):
    """Each window's visual envelope is cut from the envelope of its whole clip (as the pipeline
    computes it over the whole video), not computed on the window alone."""
    from vmas_diffusion.beats import visual_beats
    from vmas_diffusion.media import load_video

    opts = prepared["options"]
    frames = load_video(str(media("bigbuckbunny.mp4")), fps=opts.fps, end=4.0, size=opts.frame_size).frames
    whole = torch.from_numpy(visual_beats(frames, opts.fps).envelope)
    refs, _ = read_index(prepared["out"])
    windows = [read_sample(prepared["out"], ref)["visual_envelope"] for ref in refs if ref.meta["id"] == "bbb"]
    torch.testing.assert_close(torch.cat(windows), whole[: sum(len(w) for w in windows)])
    alone = load_video(str(media("bigbuckbunny.mp4")), fps=opts.fps, start=2.0, end=4.0, size=opts.frame_size).frames
    assert not torch.equal(torch.from_numpy(visual_beats(alone, opts.fps).envelope), windows[1])  # the old way differs
    # the frames are cut from the clip decoded once, and equal the window decoded alone
    second = read_sample(prepared["out"], [ref for ref in refs if ref.meta["id"] == "bbb"][1])
    assert torch.equal(second["frames"], torch.as_tensor(alone))


# ---------------------------------------------------------------------------------------- dataset
def _uids(batches):
    return [b["uid"].tolist() for b in batches]


def test_sample_split_matches_one_process_and_resumes(prepared):
    out = prepared["out"]
    one = list(ShardDataset(out, batch_size=2, seed=3, num_batches=4))
    ranks = [list(ShardDataset(out, batch_size=1, rank=r, world_size=2, seed=3, num_batches=4)) for r in (0, 1)]
    for k in range(4):  # global batch k of the 2-process job is batch k of the 1-process job
        assert one[k]["uid"].tolist() == ranks[0][k]["uid"].tolist() + ranks[1][k]["uid"].tolist()
        assert torch.equal(one[k]["codes"], torch.cat([ranks[0][k]["codes"], ranks[1][k]["codes"]]))
    flat = [u for b in _uids(one) for u in b]
    assert sorted(flat[:3]) == [0, 1, 2] and sorted(flat[3:6]) == [3, 4, 5]  # each epoch visits every sample once
    assert flat[:3] != [0, 1, 2] or flat[3:6] != [3, 4, 5]  # shuffled
    resumed = list(ShardDataset(out, batch_size=2, seed=3, start_batch=2, num_batches=2))
    assert _uids(resumed) == _uids(one)[2:]


def test_loader_workers_do_not_change_the_order(prepared):
    from torch.utils.data import DataLoader

    dataset = ShardDataset(prepared["out"], batch_size=1, seed=1, start_batch=1, num_batches=5)
    plain = _uids(DataLoader(dataset, batch_size=None))
    workers = _uids(DataLoader(dataset, batch_size=None, num_workers=2))
    assert plain == workers and len(plain) == 5


def test_shard_split_gives_disjoint_shards_and_resumes(prepared):
    out = prepared["out"]
    refs, _ = read_index(out)
    shard_of = {i: r.shard for i, r in enumerate(refs)}
    seen = []
    for rank in (0, 1):
        batches = ShardDataset(out, batch_size=1, rank=rank, world_size=2, split="shard", seed=0, num_batches=4)
        seen.append({shard_of[u] for b in batches for u in b["uid"].tolist() if u < 3})  # epoch 0
    assert len(seen[0]) == len(seen[1]) == 1 and seen[0] != seen[1]  # two shards, one per process (per epoch)
    full = _uids(ShardDataset(out, batch_size=1, split="shard", seed=0, num_batches=6))
    assert sorted(u for b in full[:3] for u in b) == [0, 1, 2]
    assert _uids(ShardDataset(out, batch_size=1, split="shard", seed=0, start_batch=4, num_batches=2)) == full[4:]
    with pytest.raises(ConfigError, match="at least 3 shards"):
        next(iter(ShardDataset(out, batch_size=1, rank=0, world_size=3, split="shard")))


def test_cli_prepare_with_a_recipe(media, tmp_path, capsys):
    from vmas_diffusion.cli import main

    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    manifest = write_manifest(
        tmp_path / "m.jsonl", [{"video": str(media("bigbuckbunny.mp4")), "end": 2.0, "id": "bbb"}, {"video": "bad.mp4"}]
    )
    recipe = str(ROOT / "recipes" / "tiny_ar.yaml")
    options = ["--out", str(tmp_path / "d"), "--recipe", recipe, "--no-progress"]
    # key=value overrides follow the manifest (argparse takes positionals in one run)
    assert main(["prepare", str(manifest), "data.window_seconds=2.0", "data.min_seconds=1.0", *options]) == 0
    err = capsys.readouterr().err
    assert "1 clip(s) prepared, 1 failed" in err and "errors.jsonl" in err
    refs, info = read_index(tmp_path / "d")
    assert len(refs) == 1 and info["options"]["fps"] == 8.0 and info["options"]["frame_size"] == 32
    # the tiny encoder trains its CNN: stored features would go stale
    assert main(["prepare", str(manifest), "data.video_input=features", *options]) == 2
    assert "backbone" in capsys.readouterr().err
