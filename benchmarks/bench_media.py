"""Media benchmark: load_video speed (decord vs PyAV) and streaming memory vs video length.

    python benchmarks/bench_media.py            # full run
    python benchmarks/bench_media.py --quick    # under a minute on one shared core

1. Frames per second of ``load_video(fps=8)`` on a 720p clip (bigbuckbunny.mp4, 1280x720,
   25 fps), decord against PyAV, at full size and resized to 224x224; decord is the reference.
2. Peak resident memory of ``iter_video_chunks`` (8 fps, 10 s chunks; PyAV, the default, and
   decord) on generated videos of growing length, each measured in a fresh child process,
   next to ``load_video`` of the whole video (the in-memory reference): streaming must stay flat.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _proc_status_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process from /proc, MB.

    Not ``getrusage``: on Linux its ``ru_maxrss`` survives fork and exec, so a child would
    report the parent's peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    """Set VmHWM back to the current RSS (Linux >= 4.0), so the peak measures only what follows."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def bench_speed(path: Path, repeats: int) -> list[dict]:
    from vmas_diffusion.media import load_video, probe_video

    info = probe_video(path)
    rows = []
    for size in (None, 224):
        for backend in ("decord", "pyav"):
            load_video(path, fps=8, size=size, backend=backend)  # warm-up (codec init, page cache)
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                clip = load_video(path, fps=8, size=size, backend=backend)
                times.append(time.perf_counter() - start)
            best = float(np.median(times))
            rows.append({
                "backend": backend,
                "size": "native" if size is None else f"{size}x{size}",
                "frames": len(clip),
                "seconds": best,
                "fps": len(clip) / best,
                "realtime": info.duration / best,
            })
    return rows


def make_long_video(path: Path, seconds: float, width: int = 320, height: int = 240, rate: int = 25) -> None:
    """A synthetic clip with motion (a drifting gradient and a moving block), H.264 ultrafast."""
    import av
    from tqdm import tqdm

    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([(xx * 255 // width), (yy * 255 // height), ((xx + yy) * 127 // (width + height))], -1)
    base = base.astype(np.uint8)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(rate * 4)}
        for i in tqdm(range(int(seconds * rate)), desc=f"encode {seconds:.0f}s", leave=False):
            frame = np.roll(base, i * 3, axis=1)
            x = (i * 5) % (width - 40)
            frame[100:140, x : x + 40] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def _child(mode: str, path: str) -> None:
    """Run in a fresh process: report the peak RSS of one way of reading ``path`` at 8 fps."""
    from vmas_diffusion.media import iter_video_chunks, load_video

    base = _proc_status_mb("VmRSS")  # after the imports
    _reset_peak()
    frames = 0
    start = time.perf_counter()
    if mode.startswith("stream"):
        backend = mode.split("-")[1]
        for clip in iter_video_chunks(path, fps=8, chunk_seconds=10.0, backend=backend):
            frames += len(clip)
    else:
        frames = len(load_video(path, fps=8))
    seconds = time.perf_counter() - start
    print(json.dumps({"peak_mb": _proc_status_mb("VmHWM"), "base_mb": base, "frames": frames, "seconds": seconds}))


MODES = ("stream-pyav", "stream-decord", "whole")
WHOLE_LIMIT_BYTES = 1 << 30  # the in-memory reference is skipped above 1 GiB of frames


def bench_memory(lengths: list[float], workdir: Path) -> list[dict]:
    rows = []
    for seconds in lengths:
        path = workdir / f"long_{int(seconds)}s.mp4"
        if not path.exists():
            make_long_video(path, seconds)
        row = {"length_s": seconds}
        for mode in MODES:
            if mode == "whole" and seconds * 8 * 320 * 240 * 3 > WHOLE_LIMIT_BYTES:
                row["whole_mb"] = row["whole_s"] = float("nan")  # would not fit comfortably in memory
                continue
            result = subprocess.run(
                [sys.executable, __file__, "--child", mode, str(path)],
                capture_output=True, text=True, check=True, cwd=ROOT,
            )
            data = json.loads(result.stdout.strip().splitlines()[-1])
            row[f"{mode}_mb"] = data["peak_mb"]
            row["base_mb"] = data["base_mb"]
            row[f"{mode}_s"] = data["seconds"]
            row["frames"] = data["frames"]
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and shorter videos (< 1 min)")
    parser.add_argument("--video", default=str(ROOT / ".cache" / "media" / "bigbuckbunny.mp4"), help="a 720p clip")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    repeats = 2 if args.quick else 5
    lengths = [20.0, 60.0, 180.0] if args.quick else [60.0, 240.0, 960.0]

    print(f"## load_video(fps=8) on {Path(args.video).name} (median of {repeats})")
    rows = bench_speed(Path(args.video), repeats)
    ref = {r["size"]: r["fps"] for r in rows if r["backend"] == "decord"}
    print(f"{'backend':8} {'size':8} {'frames':>6} {'wall s':>8} {'frames/s':>9} {'x realtime':>10} {'vs decord':>9}")
    for r in rows:
        print(f"{r['backend']:8} {r['size']:8} {r['frames']:6d} {r['seconds']:8.3f} {r['fps']:9.1f} "
              f"{r['realtime']:10.1f} {r['fps'] / ref[r['size']]:9.2f}")

    print("\n## peak resident memory (MB, whole process) reading generated 320x240 25 fps videos at 8 fps")
    with tempfile.TemporaryDirectory() as tmp:
        mem = bench_memory(lengths, Path(tmp))
    print(f"{'length s':>8} {'frames':>7} {'frames MB':>9} {'imports MB':>10} {'stream pyav MB':>14} {'s':>6} "
          f"{'stream decord MB':>16} {'s':>6} {'whole MB':>9} {'s':>6} {'whole/stream':>12}")
    for r in mem:
        print(f"{r['length_s']:8.0f} {r['frames']:7d} {r['frames'] * 320 * 240 * 3 / 2**20:9.1f} {r['base_mb']:10.1f} "
              f"{r['stream-pyav_mb']:14.1f} {r['stream-pyav_s']:6.2f} {r['stream-decord_mb']:16.1f} "
              f"{r['stream-decord_s']:6.2f} {r['whole_mb']:9.1f} {r['whole_s']:6.2f} "
              f"{r['whole_mb'] / r['stream-pyav_mb']:12.2f}")
    for mode in ("stream-pyav", "stream-decord"):
        growth = mem[-1][f"{mode}_mb"] - mem[0][f"{mode}_mb"]
        print(f"{mode}: peak grew {growth:+.1f} MB from {mem[0]['length_s']:.0f} s to {mem[-1]['length_s']:.0f} s "
              f"({mem[-1]['length_s'] / mem[0]['length_s']:.0f}x longer)")


if __name__ == "__main__":
    main()
