"""Decoding speed of ``ARTokenLM.generate`` against transformers' ``MusicgenForCausalLM.generate``.

Both models get the same shapes (4 codebooks x 2048, the same hidden size, layers, heads and
FFN width), the same number of decoding steps, top-k 250 sampling, a 40-token context through
cross-attention (10 s of video at 4 fps; transformers gets it as ``encoder_hidden_states``),
with and without classifier-free guidance (scale 3, one batched forward of cond + uncond in
both). Reported per row: steps/s, tokens/s (= steps x codebooks x batch / s), the speed-up,
and the achieved FLOP/s of each as a fraction of a matmul microbenchmark that runs the same
GEMM shapes back to back (the ceiling of a decoder at this batch size on this device).

    python benchmarks/bench_ar_generate.py            # hidden 256/4 layers and 1024/24 layers, 250 steps
    python benchmarks/bench_ar_generate.py --quick    # hidden 256/4 layers, 100 steps (about 1 min on CPU)

Timings are best of two runs after a warm-up; both sides use the same device, dtype and threads.
"""

import argparse
import os
import time
from dataclasses import dataclass

import torch

from transformers import GenerationConfig

from vmas_diffusion.conditions import Condition
from vmas_diffusion.models.generators.ar_token_lm import ARTokenLM

K, V, CONTEXT = 4, 2048, 40


@dataclass
class Shape:
    hidden: int
    layers: int
    heads: int
    ffn: int


SHAPES = {"small": Shape(256, 4, 4, 1024), "large": Shape(1024, 24, 16, 4096)}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats=1):
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def step_flops(shape: Shape, rows: int, steps: int) -> float:
    """FLOPs of ``steps`` decoding steps on ``rows`` batch rows (GEMMs + attention over the cache)."""
    h, f = shape.hidden, shape.ffn
    per_layer = 4 * h * h + 2 * h * h + 2 * h * f  # self q,k,v,o; cross q,o; ffn
    gemm = 2 * rows * (shape.layers * per_layer + K * V * h)
    mean_ctx = steps / 2
    attn = 2 * rows * shape.layers * 2 * h * (mean_ctx + CONTEXT)  # QK^T and AV, self + cross
    return steps * (gemm + attn)


def matmul_ceiling(shape: Shape, rows: int, device, dtype) -> float:
    """FLOP/s of the decoder's GEMMs at ``rows`` rows, run back to back without anything else."""
    h, f = shape.hidden, shape.ffn
    weights = [torch.randn(h, h, device=device, dtype=dtype) for _ in range(6)]
    weights += [torch.randn(f, h, device=device, dtype=dtype), torch.randn(h, f, device=device, dtype=dtype)]
    head = torch.randn(K * V, h, device=device, dtype=dtype)
    x = torch.randn(rows, h, device=device, dtype=dtype)
    xf = torch.randn(rows, f, device=device, dtype=dtype)

    def one_step():
        for _ in range(shape.layers):
            for w in weights[:6]:
                torch.nn.functional.linear(x, w)
            torch.nn.functional.linear(x, weights[6])
            torch.nn.functional.linear(xf, weights[7])
        torch.nn.functional.linear(x, head)

    n = 20
    one_step()
    seconds = timed(lambda: [one_step() for _ in range(n)], device, repeats=3)
    h_flops = 2 * rows * (shape.layers * (6 * h * h + 2 * h * f) + K * V * h)
    return n * h_flops / seconds


def build_pair(shape: Shape, device, dtype):
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    torch.manual_seed(0)
    hf_config = MusicgenDecoderConfig(
        vocab_size=V, hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        ffn_dim=shape.ffn, num_codebooks=K, pad_token_id=V, bos_token_id=V, max_position_embeddings=4096,
        dropout=0.0,
    )  # fmt: skip
    hf = MusicgenForCausalLM(hf_config).to(device=device, dtype=dtype).eval()
    ours = ARTokenLM(
        num_codebooks=K, cardinality=V, hidden_size=shape.hidden, num_layers=shape.layers, num_heads=shape.heads,
        ffn_dim=shape.ffn, video_dim=shape.hidden, frame_rate=50.0, max_duration=30.0, extend_stride=18.0,
        dropout=0.0,
    ).to(device)  # fmt: skip
    if dtype != torch.float32:
        ours = ours.to(dtype)
    ours.eval()
    return hf, ours


def run_row(shape: Shape, steps: int, cfg: bool, batch: int, device, dtype, hf, ours, repeats: int):
    scale = 3.0 if cfg else 1.0
    rows = batch * (2 if cfg else 1)
    g = torch.Generator().manual_seed(0)
    video = torch.randn(batch, CONTEXT, shape.hidden, generator=g).to(device, dtype)
    conditions = {"video": Condition(video, torch.ones(batch, CONTEXT, dtype=torch.bool, device=device), 4.0)}

    def run_ours(steps=steps):
        frames = steps - (K - 1)  # the delay pattern adds K - 1 steps: both decode exactly `steps` steps
        generators = [torch.Generator().manual_seed(i) for i in range(batch)]
        out = ours.generate(conditions, frames, guidance_scale=scale, top_k=250, generator=generators,
                            progress_bar=lambda total: _NoBar())  # fmt: skip
        assert out.shape == (batch, K, frames)

    bos = torch.full((batch * K, 1), V, dtype=torch.long, device=device)
    # transformers' causal LM repeats input_ids for CFG but not the context: hand it both halves
    enc = torch.cat([video, torch.zeros_like(video)]) if cfg else video

    # what facebook/musicgen-* ship: start/pad id = vocab size, sampling with top-k 250

    def run_hf(steps=steps):
        config = GenerationConfig(
            do_sample=True, top_k=250, guidance_scale=scale if cfg else None, max_new_tokens=steps,
            decoder_start_token_id=V, pad_token_id=V, bos_token_id=V, num_return_sequences=1,
        )  # fmt: skip
        out = hf.generate(bos, generation_config=config, encoder_hidden_states=enc)
        assert out.shape[-1] == steps - (K - 1)

    # a short warm-up (allocators, kernels, lazy imports), then the best of `repeats`
    run_ours(steps=10)
    run_hf(steps=10)
    t_ours = timed(run_ours, device, repeats=repeats)
    t_hf = timed(run_hf, device, repeats=repeats)
    flops = step_flops(shape, rows, steps)
    ceiling = matmul_ceiling(shape, rows, device, dtype)
    return dict(
        shape=f"h{shape.hidden}/L{shape.layers}", cfg="yes" if cfg else "no", batch=batch, steps=steps,
        ours_tok_s=steps * K * batch / t_ours, hf_tok_s=steps * K * batch / t_hf, speedup=t_hf / t_ours,
        ours_frac=flops / t_ours / ceiling, hf_frac=flops / t_hf / ceiling, ceiling_gflops=ceiling / 1e9,
    )  # fmt: skip


class _NoBar:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="hidden 256 / 4 layers, 100 steps, one timed run")
    parser.add_argument("--steps", type=int, default=None, help="decoding steps (default 250, --quick 100)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs, best taken (default 2, --quick 1)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument(
        "--shapes", nargs="+", choices=sorted(SHAPES), default=None,
        help="small = hidden 256 / 4 layers, large = hidden 1024 / 24 layers (MusicGen-small); default both, --quick small",
    )  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument(
        "--threads", type=int, default=1,
        help="CPU intra-op threads (default 1: on a shared CPU, spinning OpenMP barriers make every op of a "
        "one-row decoder cost milliseconds; 0 keeps torch's default)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    steps = args.steps or (100 if args.quick else 250)
    repeats = args.repeats or (1 if args.quick else 2)
    names = args.shapes or (["small"] if args.quick else ["small", "large"])
    shapes = [SHAPES[name] for name in names]
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}, dtype {args.dtype}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (before)")

    header = (f"{'config':<10} {'cfg':>3} {'B':>2} {'steps':>5} {'ours tok/s':>11} {'hf tok/s':>10} "
              f"{'speed-up':>8} {'ours/ceil':>9} {'hf/ceil':>8} {'ceil GFLOP/s':>12}")  # fmt: skip
    print(header)
    print("-" * len(header), flush=True)
    for shape in shapes:
        hf, ours = build_pair(shape, device, dtype)
        for cfg in (False, True):
            r = run_row(shape, steps, cfg, args.batch, device, dtype, hf, ours, repeats)
            print(
                f"{r['shape']:<10} {r['cfg']:>3} {r['batch']:>2} {r['steps']:>5} {r['ours_tok_s']:>11.0f} "
                f"{r['hf_tok_s']:>10.0f} {r['speedup']:>7.2f}x {r['ours_frac']:>9.1%} {r['hf_frac']:>8.1%} "
                f"{r['ceiling_gflops']:>12.1f}",
                flush=True,
            )
        del hf, ours
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (after); target: speed-up >= 2x")


if __name__ == "__main__":
    main()
