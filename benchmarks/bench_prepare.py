"""Preparation benchmark: clips per second per core of ``vmas-diffusion prepare``, and what that means
for a DISCO-MV-sized set (2.2 million 10-second clips) spread over machines.

    python benchmarks/bench_prepare.py                  # both recipes, 6 clips each
    python benchmarks/bench_prepare.py --clips 3        # quicker
    python benchmarks/bench_prepare.py --cores-per-machine 64

One process, one thread (``torch.set_num_threads(1)``, so the figure is per core), real media from
``VMAS_TEST_MEDIA`` (default ``.cache/media``):

* ``bikes.mp4`` (640x272, 25 fps, 10 s) with ``tr808_125bpm.wav``'s first 10 s as its music: one
  10-second window per clip, the DISCO-MV clip length;
* ``bigbuckbunny.mp4`` (1280x720, its own audio, 5.28 s): a 720p source, one 5.28 s window per clip,
  reported per 10 s of media.

Each recipe's own codec and video input: ``vmas_tiny_ar`` (the bundled model's fitted mel codec,
32 px frames at 10 fps, ``train.init_from`` the bundled AR) and ``small_ar`` (EnCodec 32 kHz,
random weights but the real amount of compute, its frames). The fair reference in the same
process is decoding alone (``load_video`` at the recipe's fps and size plus ``load_audio``): what
no preparation can skip. Parallel processes share nothing, so N machines of C cores prepare
``N * C`` times the per-core rate (disk and network permitting; measure your storage separately).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TOTAL_CLIPS = 2_200_000
CLIP_SECONDS = 10.0


def _media(name: str) -> Path:
    folder = Path(os.environ.get("VMAS_TEST_MEDIA", ROOT / ".cache" / "media"))
    path = folder / name
    if not path.is_file():
        sys.exit(f"bench_prepare: {path} is missing (set VMAS_TEST_MEDIA to the folder of the test media)")
    return path


def _rows(clips: int):
    bikes, music, bbb = _media("bikes.mp4"), _media("tr808_125bpm.wav"), _media("bigbuckbunny.mp4")
    ten = [{"video": str(bikes), "audio": str(music), "end": CLIP_SECONDS, "id": f"bikes{i}"} for i in range(clips)]
    hd = [{"video": str(bbb), "id": f"bbb{i}"} for i in range(clips)]
    recipes = {
        "vmas_tiny_ar": (ROOT / "recipes" / "vmas_tiny_ar.yaml", [f"train.init_from={ROOT / 'vmas_diffusion/assets/vmas-tiny/ar'}"]),
        "small_ar": (ROOT / "recipes" / "small_ar.yaml", []),
    }
    for name, (recipe, overrides) in recipes.items():
        for label, items, seconds in (("640x272, 10 s", ten, CLIP_SECONDS), ("1280x720, 5.28 s", hd, 5.28)):
            yield name, recipe, overrides, label, items, seconds


def _decode_only(items, fps: float, size: int, sample_rate: int) -> float:
    from vmas_diffusion.media import load_audio, load_video

    start = time.perf_counter()
    for item in items:
        load_video(item["video"], fps=fps, end=item.get("end"), size=size)
        load_audio(item.get("audio") or item["video"], sample_rate, mono=True, end=item.get("end"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=6, help="clips per row")
    parser.add_argument("--cores-per-machine", type=int, default=32, help="cores of each machine in the projection")
    parser.add_argument("--machines", type=int, nargs="+", default=[1, 8, 32, 128])
    args = parser.parse_args()

    import logging

    import torch

    from vmas_diffusion.data import write_manifest
    from vmas_diffusion.data.prepare import prepare_from_recipe

    logging.getLogger("vmas_diffusion").setLevel(logging.ERROR)  # the random-codec warning of small_ar
    torch.set_num_threads(1)
    results = []
    for name, recipe, overrides, label, items, seconds in _rows(args.clips):
        with tempfile.TemporaryDirectory() as tmp:
            manifest = write_manifest(Path(tmp) / "m.jsonl", items)
            window = [f"data.window_seconds={seconds}", "data.hop_seconds=null", "data.min_seconds=1.0", "data.shard_size=64"]
            # one clip first: imports, building the codec and the first decode are not per-clip costs
            warm = write_manifest(Path(tmp) / "warm.jsonl", items[:1])
            prepare_from_recipe(warm, Path(tmp) / "warm", recipe, overrides + window, progress=False)
            start = time.perf_counter()
            report = prepare_from_recipe(manifest, Path(tmp) / "out", recipe, overrides + window, progress=False)
            elapsed = time.perf_counter() - start
            if report.num_failed:
                sys.exit(f"bench_prepare: {report.failures[0]['error']}")
            info = json.loads((Path(tmp) / "out" / "index.json").read_text())["info"]
            opts = info["options"]
            # the best of two: the machine is shared, and the reference must not be the slow side by chance
            decode = min(_decode_only(items, opts["fps"], opts["frame_size"], info["sample_rate"]) for _ in range(2))
        per_clip = elapsed / len(items) * CLIP_SECONDS / seconds  # seconds per 10 s of media
        results.append((name, label, 1.0 / per_clip, elapsed / decode, opts))
        print(f"{name:13s} {label:17s} {1.0 / per_clip:6.2f} clips/s/core (10 s clips)  "
              f"{elapsed / len(items):5.2f} s/clip  decode alone {decode / len(items):5.2f} s/clip  "
              f"prepare / decode {elapsed / decode:4.2f}x  ({opts['fps']:g} fps, {opts['frame_size']} px)", flush=True)

    cores = args.cores_per_machine
    print(f"\nProjected wall time for {TOTAL_CLIPS:,} clips of {CLIP_SECONDS:g} s, {cores} cores per machine "
          f"(one single-threaded process per core: `--num-workers {cores}` under `accelerate launch`):")
    print("| recipe | source | clips/s/core | " + " | ".join(f"{n} machine{'s' * (n > 1)}" for n in args.machines) + " |")
    print("|---|---|---|" + "---|" * len(args.machines))
    for name, label, rate, _, _ in results:
        hours = [TOTAL_CLIPS / (rate * cores * n) / 3600 for n in args.machines]
        cells = " | ".join(f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} d" for h in hours)
        print(f"| {name} | {label} | {rate:.2f} | {cells} |")


if __name__ == "__main__":
    main()
