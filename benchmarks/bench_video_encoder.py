"""Temporal video encoder: time and peak memory against video length.

Each size runs in its own subprocess (a fresh heap, so peak RSS is that size's alone):
the process builds the encoder (seed 0), makes ``[1, T, F]`` random features, warms up on a
short input, then times ``encode_features`` under ``torch.no_grad()`` and reads the peak
RSS (``getrusage`` ru_maxrss) against the RSS just before the call. Torch's CPU allocations
go through malloc, which tracemalloc does not see; RSS does. Workers run with a fixed glibc
``MALLOC_MMAP_THRESHOLD_`` so freed temporaries leave the RSS (``--malloc-default`` to not).
Timing ratios use CPU time of the one torch thread, which a busy shared machine disturbs less
than wall time (both are printed).

The claim checked: time grows linearly with length and the working memory, i.e. the peak
RSS increase minus the output tensor the call must return, stays flat. Ratios are against
the first (shortest) size, measured in the same run.

    python benchmarks/bench_video_encoder.py            # 1, 5, 20, 60 min + backbone table
    python benchmarks/bench_video_encoder.py --quick    # 1, 5, 20 min, one repeat: < 1 min
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

MB = 1024 * 1024


def current_rss() -> int:
    """Resident set size now, bytes (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import psutil

        return psutil.Process().memory_info().rss


def peak_rss() -> int:
    """Peak resident set size of this process so far, bytes (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def worker(args) -> dict:
    """One size, in this process: returns the timing and memory figures as a dict."""
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from vmas_diffusion.models.video_encoder import TemporalVideoEncoder

    torch.manual_seed(0)
    enc = TemporalVideoEncoder(**json.loads(args.config)).eval()
    t = int(round(args.minutes[0] * 60 * enc.config.fps))
    if args.part == "temporal":
        x = torch.randn(1, t, enc.frame_feature_dim)
        run = enc.encode_features
        warm = x[:, : min(t, 64)]
        out_bytes = t * enc.config.hidden_dim * 4
    else:  # backbone over uint8 frames
        size = enc.config.frame_size
        x = torch.randint(0, 256, (1, t, size, size, 3), dtype=torch.uint8)
        run = enc.encode_frames
        warm = x[:, : min(t, 64)]
        out_bytes = t * enc.frame_feature_dim * 4
    with torch.no_grad():
        run(warm)
        walls, cpus = [], []
        before = current_rss()
        for _ in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            out = run(x)
            walls.append(time.perf_counter() - start)
            cpus.append(time.process_time() - start_cpu)
            del out
        peak = peak_rss()
    return {
        "frames": t,
        "seconds": min(walls),
        "cpu_seconds": min(cpus),
        "peak_delta": max(peak - before, 0),
        "out_bytes": out_bytes,
        "in_bytes": x.numel() * x.element_size(),
    }


def measure(part: str, minutes: float, config: dict, threads: int, repeats: int, malloc_default: bool) -> dict:
    env = dict(os.environ)
    if not malloc_default:
        # glibc raises its mmap threshold after big frees, then keeps freed chunk-sized temporaries in
        # the heap; RSS then creeps with the number of chunks. A fixed threshold returns them, so RSS
        # tracks live tensors.
        env.setdefault("MALLOC_MMAP_THRESHOLD_", str(128 * 1024))
    cmd = [
        sys.executable, os.path.abspath(__file__), "--worker", "--part", part, "--minutes", str(minutes),
        "--config", json.dumps(config), "--threads", str(threads), "--repeats", str(repeats),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode:
        raise SystemExit(f"worker failed for {part} {minutes} min:\n{res.stderr}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def table(title: str, minutes, rows) -> None:
    ref_min, ref = minutes[0], rows[0]
    ref_work = max(ref["peak_delta"] - ref["out_bytes"], 1)
    print(f"\n{title}")
    head = f"{'minutes':>8} {'frames':>7} {'wall s':>7} {'cpu s':>7} {'cpu ms/min':>10} {'t ratio':>8} {'len ratio':>9} " \
           f"{'peak dMB':>9} {'out MB':>7} {'work MB':>8} {'work ratio':>10}"  # fmt: skip
    print(head)
    print("-" * len(head))
    for m, r in zip(minutes, rows):
        work = r["peak_delta"] - r["out_bytes"]
        print(
            f"{m:>8g} {r['frames']:>7d} {r['seconds']:>7.3f} {r['cpu_seconds']:>7.3f} {1000 * r['cpu_seconds'] / m:>10.0f} "
            f"{r['cpu_seconds'] / ref['cpu_seconds']:>8.2f} {m / ref_min:>9.2f} {r['peak_delta'] / MB:>9.1f} "
            f"{r['out_bytes'] / MB:>7.1f} {work / MB:>8.1f} {work / ref_work:>10.2f}"
        )


def plot(minutes, rows, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(9, 3.5))
    ax_t.plot(minutes, [r["cpu_seconds"] for r in rows], "o-")
    ax_t.set(xlabel="video minutes (8 fps)", ylabel="CPU seconds", title="encode_features time")
    ax_m.plot(minutes, [r["peak_delta"] / MB for r in rows], "o-", label="peak RSS increase")
    ax_m.plot(minutes, [r["out_bytes"] / MB for r in rows], "s--", label="output tensor")
    ax_m.plot(minutes, [(r["peak_delta"] - r["out_bytes"]) / MB for r in rows], "^-", label="working memory")
    ax_m.set(xlabel="video minutes (8 fps)", ylabel="MB", title="memory")
    ax_m.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1, 5, 20 min, one repeat, no backbone table (< 1 min)")
    parser.add_argument("--minutes", type=float, nargs="+", default=None, help="video lengths (default 1 5 20 60)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 gives steadier timings on a shared box)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default="{}", help="JSON overrides of TemporalVideoEncoder's config")
    parser.add_argument("--malloc-default", action="store_true", help="leave glibc's dynamic mmap threshold on")
    parser.add_argument("--png", default=None, help="also plot CPU time and memory against length to this PNG")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--part", default="temporal", choices=["temporal", "backbone"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from tqdm import tqdm

    config = json.loads(args.config)
    repeats = 1 if args.quick else args.repeats
    if args.minutes is None:
        args.minutes = [1, 5, 20] if args.quick else [1, 5, 20, 60]
    print(f"TemporalVideoEncoder, config overrides {config or 'none (defaults)'}; {args.threads} thread(s), "
          f"best of {repeats}; no grad; 8 fps unless overridden")  # fmt: skip
    rows = [measure("temporal", m, config, args.threads, repeats, args.malloc_default) for m in tqdm(args.minutes, desc="temporal")]
    table("encode_features (temporal transformer over [1, T, F] features)", args.minutes, rows)
    if args.png:
        plot(args.minutes, rows, args.png)
    if not args.quick:
        frame_minutes = [0.25, 1.0, 2.0]
        rows = [measure("backbone", m, config, args.threads, 1, args.malloc_default) for m in tqdm(frame_minutes, desc="backbone")]
        table("encode_frames (CNN backbone over uint8 [1, T, S, S, 3] frames, chunked)", frame_minutes, rows)
    print(
        "\nt ratio (CPU time, robust to a busy shared machine) should follow len ratio (linear time); "
        "work = peak RSS increase - output tensor "
        "should stay flat (work ratio ~1) once T exceeds one chunk (inference_chunk_frames)."
    )


if __name__ == "__main__":
    main()
