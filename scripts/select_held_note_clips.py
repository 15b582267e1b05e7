"""A training folder of the clips whose music holds notes, to be mixed into training a second time.

The LDM trained on the fifth version of the set holds fewer notes the longer it trains: its train music
holds fewer (sustained pitched share 0.57) than the validation and held-out music (0.71), above all under
busy footage, where the electronic soundtracks sit (docs/alignment_results.md). This script measures
every clip of a set folder (``train.jsonl`` with ``music/`` and ``videos/``) with the evaluation's own
``sustained_pitch_share`` and writes a folder of the same shape with the clips at or above a threshold;
``vmas-diffusion prepare`` turns it into shards, and a recipe that lists both shard folders in
``data.train_dir`` sees those clips twice as often. Only the train split is read. ``--skip-kinds drift``
(with the set's ``meta.json``) leaves out the still footage, whose music holds its notes already.

    python scripts/select_held_note_clips.py --data .cache/music_set_v5_train --out .cache/music_set_v5_held \\
        --min-sustained 0.6 --meta .cache/music_set_v5/meta.json --skip-kinds drift

The shares are kept in ``<out>/sustained.json`` and reused on a rerun with another threshold.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path


def fail(message: str) -> None:
    print(message, file=sys.stderr)
    sys.exit(2)


def measure(path: str) -> float:
    import soundfile as sf

    from vmas_diffusion.evaluation.music_content import sustained_pitch_share

    audio, rate = sf.read(path, dtype="float32", always_2d=True)
    return sustained_pitch_share(audio.T, rate)


def read_items(data: Path) -> list:
    manifest = data / "train.jsonl"
    if not manifest.is_file():
        fail(f"{manifest} not found: --data is a set folder with train.jsonl, music/ and videos/")
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def shares_of(items: list, data: Path, cache: Path, workers: int) -> dict:
    from tqdm import tqdm

    shares = json.loads(cache.read_text()) if cache.is_file() else {}
    todo = [item for item in items if item["id"] not in shares]
    with ProcessPoolExecutor(workers) as pool:
        paths = [str(data / item["audio"]) for item in todo]
        for item, share in tqdm(zip(todo, pool.map(measure, paths)), total=len(todo), desc="sustained share"):
            shares[item["id"]] = share
    return shares


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="set folder with train.jsonl, music/, videos/")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (train.jsonl, links, sustained.json)")
    parser.add_argument("--min-sustained", type=float, default=0.7, help="keep clips whose share is at least this")
    parser.add_argument("--meta", type=Path, default=None, help="the set's meta.json (video kinds), for --skip-kinds")
    parser.add_argument("--skip-kinds", nargs="*", default=[], help="video kinds never kept (e.g. drift)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    if not 0.0 <= args.min_sustained <= 1.0:
        fail(f"--min-sustained must be in [0, 1], got {args.min_sustained}")
    if args.skip_kinds and args.meta is None:
        fail("--skip-kinds needs --meta, the set's meta.json with each clip's video_kind")
    kinds = {k: v["video_kind"] for k, v in json.loads(args.meta.read_text()).items()} if args.meta else {}
    items = read_items(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / "sustained.json"
    shares = shares_of(items, args.data, cache, args.workers)
    cache.write_text(json.dumps(shares, indent=0, sort_keys=True) + "\n")
    kept = [item for item in items
            if shares[item["id"]] >= args.min_sustained and kinds.get(item["id"]) not in args.skip_kinds]
    (args.out / "train.jsonl").write_text("".join(json.dumps(item) + "\n" for item in kept))
    for name in ("music", "videos"):
        link = args.out / name
        if not link.exists():
            link.symlink_to((args.data / name).resolve())
    mean = sum(shares[i["id"]] for i in items) / len(items)
    kept_mean = sum(shares[i["id"]] for i in kept) / max(len(kept), 1)
    print(f"{len(kept)} of {len(items)} clips kept (share >= {args.min_sustained}); mean share {mean:.3f} "
          f"-> {kept_mean:.3f} among them, {(mean * len(items) + kept_mean * len(kept)) / (len(items) + len(kept)):.3f} "
          f"in both folders together", file=sys.stderr)


if __name__ == "__main__":
    main()
