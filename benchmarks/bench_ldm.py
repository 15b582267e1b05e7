"""Generation speed of the LDM backend (LatentDiT) against the AR backend (ARTokenLM).

Both generators are built at about the same parameter count (the AR depth is chosen to
match) and timed in this one process on the same input: ``--seconds`` of music at 50
latent/token frames per second, classifier-free guidance 3.0 (both run the conditional
and unconditional branches as one batched forward), a video condition at 8 Hz and a beat
condition at 25 Hz. Times are CPU seconds of this process (1 thread by default). The LDM runs
``--steps`` DPM-Solver++ steps over the whole window; the AR backend one step per frame (plus the delay pattern's K - 1) with a KV cache.

    python benchmarks/bench_ldm.py            # ~45M-parameter models (minutes on a laptop CPU)
    python benchmarks/bench_ldm.py --quick    # ~3M parameters, < 1 min
"""

import argparse
import sys
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vmas_diffusion.conditions import BEAT, VIDEO, Condition  # noqa: E402
from vmas_diffusion.models.generators.latent_dit import LatentDiT  # noqa: E402

FULL = dict(hidden_size=512, num_layers=8, num_heads=8)
QUICK = dict(hidden_size=192, num_layers=4, num_heads=4)


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def silent_bar(total):
    return tqdm(total=total, disable=True)


def conditions(seconds: float, video_dim: int) -> dict:
    g = torch.Generator().manual_seed(0)
    tv, tb = int(seconds * 8), int(seconds * 25)
    return {
        VIDEO: Condition(torch.randn(1, tv, video_dim, generator=g), torch.ones(1, tv, dtype=torch.bool), 8.0),
        BEAT: Condition(torch.rand(1, tb, 1, generator=g), torch.ones(1, tb, dtype=torch.bool), 25.0),
    }


def build_ar(size: dict, target_params: int, video_dim: int, seconds: float, num_layers: int = 0):
    """ARTokenLM of the same width, ``num_layers`` deep, or (0) with the depth whose parameter
    count is closest to ``target_params``."""
    from vmas_diffusion.models.generators.ar_token_lm import ARTokenLM

    def make(layers):
        torch.manual_seed(0)
        return ARTokenLM(
            num_codebooks=4, cardinality=2048, hidden_size=size["hidden_size"], num_layers=layers,
            num_heads=size["num_heads"], ffn_dim=4 * size["hidden_size"], video_dim=video_dim,
            max_duration=seconds, dropout=0.0,
        ).eval()  # fmt: skip

    if num_layers:
        return make(num_layers)
    one, two = count(make(1)), count(make(2))  # parameters grow linearly with depth
    best = min(range(1, 65), key=lambda n: abs(one + (n - 1) * (two - one) - target_params))
    return make(best)


def denoiser_flops(fn) -> float:
    """FLOPs of one call of ``fn``, counted by torch's FlopCounterMode (matmuls and attention)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def gemm_ceiling(rows: int, hidden: int) -> float:
    """FLOP/s of the denoiser's dominant GEMM shape (``[rows, H] x [H, 4H]``, the feed-forward), back to back."""
    x, w = torch.randn(rows, hidden), torch.randn(4 * hidden, hidden)
    n = 10
    seconds = timed(lambda: [torch.nn.functional.linear(x, w) for _ in range(n)], 3, warmup=lambda: torch.nn.functional.linear(x, w))
    return n * 2 * rows * hidden * 4 * hidden / seconds


def timed(fn, repeats: int, warmup=None) -> float:
    """Mean CPU seconds of this process for ``fn()`` over ``repeats`` calls, after one ``warmup()``
    (allocations, lazy init). CPU time, not wall time: other work on a shared machine does not count."""
    if warmup is not None:
        warmup()
    start = time.process_time()
    for _ in range(repeats):
        fn()
    return (time.process_time() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="~3M-parameter models (< 1 min)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of music to generate")
    parser.add_argument("--steps", type=int, default=25, help="LDM denoising steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 keeps a shared box stable)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = QUICK if args.quick else FULL
    latent_dim, video_dim, frame_rate = 128, 512, 50.0
    num_frames = int(round(args.seconds * frame_rate))
    conds = conditions(args.seconds, video_dim)

    torch.manual_seed(0)
    ldm = LatentDiT(
        latent_dim=latent_dim, video_dim=video_dim, frame_rate=frame_rate, max_duration=args.seconds, **size
    ).eval()
    scheduler = ldm.make_scheduler("dpmsolver++")
    gen = torch.Generator().manual_seed(0)

    def run_ldm():
        ldm.generate(conds, num_frames, scheduler=scheduler, num_inference_steps=args.steps, guidance_scale=3.0,
                     generator=gen, progress_bar=silent_bar)  # fmt: skip

    sample = torch.randn(1, latent_dim, num_frames)

    def ldm_step_call():
        with torch.no_grad():
            ldm.guided_output(sample, torch.tensor(500), conds, guidance_scale=3.0)

    ldm_step = timed(ldm_step_call, max(3, args.repeats), warmup=ldm_step_call)
    flops, ceiling = denoiser_flops(ldm_step_call), gemm_ceiling(2 * num_frames, size["hidden_size"])
    ldm_total = timed(run_ldm, args.repeats)  # already warm
    rows = [("ldm (DiT, DPM-Solver++)", count(ldm), args.steps, ldm_step, ldm_total)]

    try:
        ar = build_ar(size, count(ldm), video_dim, args.seconds)
    except ImportError as err:
        print(f"AR backend not importable ({err}); LDM figures only")
        ar = None
    ars = [] if ar is None else [ar]
    if ar is not None and ar.config.num_layers != size["num_layers"]:  # also the same width and depth
        ars.append(build_ar(size, 0, video_dim, args.seconds, num_layers=size["num_layers"]))
    for model in ars:
        steps = model.codebook_pattern.num_steps(num_frames)

        def run_ar(frames=num_frames):
            model.generate(
                conds, frames, guidance_scale=3.0, generator=torch.Generator().manual_seed(0), progress_bar=silent_bar
            )

        total = timed(run_ar, args.repeats, warmup=lambda: run_ar(10))
        rows.append((f"ar (LM, {model.config.num_layers} layers, KV cache)", count(model), steps, total / steps, total))

    print(f"\n{args.seconds:g} s of music ({num_frames} frames at {frame_rate:g} Hz), CFG 3.0, batch 1, "
          f"{args.threads} CPU thread(s), torch {torch.__version__}")  # fmt: skip
    header = f"{'backend':<34}{'params':>10}{'steps':>7}{'s/step':>10}{'total s':>10}{'x realtime':>12}{'vs AR':>8}"
    print(header)
    print("-" * len(header))
    ar_time = rows[1][4] if len(rows) > 1 else None  # the parameter-matched AR model
    for name, params, steps, per_step, total in rows:
        ratio = f"{total / ar_time:.2f}" if ar_time else "-"
        print(
            f"{name:<34}{params / 1e6:>9.1f}M{steps:>7}{per_step:>10.4f}{total:>10.2f}"
            f"{args.seconds / total:>12.2f}{ratio:>8}"
        )
    print("(s/step: LDM = one CFG-batched denoiser call over the whole window; AR = one token step.)")
    print(f"LDM denoiser: {1 / ldm_step:.2f} steps/s, {flops / 1e9:.1f} GFLOP per CFG-batched call (counted), "
          f"{flops / ldm_step / 1e9:.1f} GFLOP/s = {flops / ldm_step / ceiling:.0%} of a same-shape GEMM "
          f"([{2 * num_frames}, {size['hidden_size']}] x [{size['hidden_size']}, {4 * size['hidden_size']}]: "
          f"{ceiling / 1e9:.1f} GFLOP/s in this process)")
    calls = len(ldm.plan_windows(num_frames)) * args.steps
    print(f"LDM generate: {calls / ldm_total:.2f} denoiser steps/s over the whole loop ({calls} steps in "
          f"{ldm_total:.2f} s; the context's cross-attention keys/values projected once per window)")


if __name__ == "__main__":
    main()
