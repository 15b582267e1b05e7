"""Decoding speed of ``ARTokenLM.generate`` against transformers' ``MusicgenForCausalLM.generate``.

The anchor is transformers' MusicGen decoder called the way it decodes correctly: with
``cache=EncoderDecoderCache(DynamicCache(), DynamicCache())``. Called with
``encoder_hidden_states`` and no cache argument (transformers 5.x), it builds a plain
``DynamicCache`` and appends every layer's cross-attention keys and values to the self-attention
cache at each step: its cost grows with the square of the steps and its output is wrong. That
call is kept as a labelled row ("hf default call") at the tiny size only, not as the anchor.

Both models hold the *same weights* (transformers' initialisation copied into ours by name, its
``encoder_attn`` into our video ``cross_attn``) and read the same cross-attention context: our
fused video tokens for the conditional rows, zeros for the unconditional ones (our dropped
condition is masked out; with bias-free projections zeros attend to zero, the same output).
Before timing, an equality check runs in the same process:

* teacher-forced logits of both on the same codes, max abs difference (fp32: must be < 1e-4);
* greedy decoding: the share of code slots where both ``generate`` calls agree, and whether
  every greedy choice of ours is transformers' argmax up to a tie (its logit within 1e-4 of the
  maximum, transformers teacher-forced on our codes) -- random-init logits are nearly flat, so
  a float-rounding tie can flip one slot and everything after it.

Lossy fast modes of ours (``ARTokenLM.fast_copy("bf16" | "int8")``: fewer bytes per weight) are timed as
extra rows and checked against the fp32 logits (max abs difference relative to the logit spread
and the top-1 agreement of teacher-forced logits), never against the 1e-4 bar.

Timing: CPU time of the process (``time.process_time``; 1 intra-op thread by default) or wall
time with CUDA syncs on a GPU; the sides alternate within every round, in one process; reported
are medians and the min-max range over rounds. Per row: tokens/s (steps x codebooks x batch / s),
the speed-up against the fair anchor (median of the per-round ratios, with their range), and two
ceilings measured in the same process: the achieved FLOP/s as a fraction of a microbenchmark
running the same GEMM shapes back to back in fp32, in the faster of two layouts (so the lossy modes
can pass 100%), and the bytes a step must read (weights + KV caches)
per second as a fraction of a large memcpy's bandwidth (read + write bytes / s).

    python benchmarks/bench_ar_generate.py            # tiny (h256/L4, 250 steps) and MusicGen-small (h1024/L24, 40 steps)
    python benchmarks/bench_ar_generate.py --quick    # tiny only, 100 steps, 3 rounds
"""

import argparse
import os
import statistics
import time
import warnings
from dataclasses import dataclass

import torch

from vmas_diffusion.conditions import Condition
from vmas_diffusion.models.generators.ar_token_lm import ARTokenLM

K, V, CONTEXT, FPS = 4, 2048, 40, 4.0
TF_TOLERANCE = 1e-4  # fp32 teacher-forced logits and greedy ties


@dataclass
class Shape:
    hidden: int
    layers: int
    heads: int
    ffn: int
    steps: int  # default decoding steps
    label: str


SHAPES = {
    "tiny": Shape(256, 4, 4, 1024, 250, "tiny h256/L4"),
    "small": Shape(1024, 24, 16, 4096, 40, "MusicGen-small h1024/L24"),
}


# ------------------------------------------------------------------------------------------ timing
def clock(device):
    """CPU time of this process on CPU (immune to other processes' load), wall time with syncs on CUDA."""
    if device.type == "cuda":
        def now():
            torch.cuda.synchronize()
            return time.perf_counter()
        return now
    return time.process_time


def alternate(fns: dict, rounds: int, device) -> dict:
    """Run every fn once per round, order rotated each round; -> name -> list of seconds."""
    now = clock(device)
    times = {name: [] for name in fns}
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            start = now()
            fns[name]()
            times[name].append(now() - start)
    return times


def median_range(values):
    return statistics.median(values), min(values), max(values)


# --------------------------------------------------------------------------------------- ceilings
def layer_weights(shape: Shape) -> int:
    """Parameters one decoding step reads (self q,k,v,o; cross q,o; ffn; LM heads)."""
    h, f = shape.hidden, shape.ffn
    return shape.layers * (6 * h * h + 2 * h * f) + K * V * h


def weight_bytes(shape: Shape, mode: str) -> float:
    """Bytes of the weights one step reads: fp32, bf16, or int8 decoder layers with fp32 LM heads."""
    heads = K * V * shape.hidden
    per = {"fp32": (4, 4), "bf16": (2, 2), "int8": (1, 4)}[mode]
    return per[0] * (layer_weights(shape) - heads) + per[1] * heads


def step_flops(shape: Shape, rows: int, steps: int, context: int) -> float:
    """FLOPs of ``steps`` decoding steps on ``rows`` rows: the GEMMs and attention over the caches."""
    attn = 2 * rows * shape.layers * 2 * shape.hidden * (steps / 2 + context)  # QK^T and AV, self + cross
    return steps * (2 * rows * layer_weights(shape) + attn)


def step_bytes(shape: Shape, rows: int, steps: int, context: int, weight_bytes: float) -> float:
    """Bytes ``steps`` steps must read: every weight once per step, plus the K/V caches (fp32)."""
    kv = rows * shape.layers * 2 * shape.hidden * (steps / 2 + context) * 4
    return steps * (weight_bytes + kv)


def gemm_ceiling(shape: Shape, rows: int, device, dtype) -> float:
    """FLOP/s of the decoder's GEMM shapes at ``rows`` rows, back to back, nothing else: the faster of
    ``x @ W.t()`` (``F.linear``) and ``(W @ x.t()).t()``, which MKL runs up to 2x faster at 2 rows."""
    h, f = shape.hidden, shape.ffn
    ws = [torch.randn(h, h, device=device, dtype=dtype) for _ in range(6)]
    w1, w2 = torch.randn(f, h, device=device, dtype=dtype), torch.randn(h, f, device=device, dtype=dtype)
    head = torch.randn(K * V, h, device=device, dtype=dtype)
    x, xf = torch.randn(rows, h, device=device, dtype=dtype), torch.randn(rows, f, device=device, dtype=dtype)
    forms = {"linear": torch.nn.functional.linear, "w @ x.t()": lambda a, w: torch.mm(w, a.t())}

    def one_step(gemm):
        for _ in range(shape.layers):
            for w in ws:
                gemm(x, w)
            gemm(x, w1)
            gemm(xf, w2)
        gemm(x, head)

    n = max(2, 2000 // shape.layers // 4)
    for gemm in forms.values():
        one_step(gemm)
    times = alternate({name: lambda g=gemm: [one_step(g) for _ in range(n)] for name, gemm in forms.items()}, 3, device)
    return n * 2 * rows * layer_weights(shape) / min(min(ts) for ts in times.values())


def memcpy_bandwidth(device) -> float:
    """Bytes/s (read + write) of a 256 MiB copy: the memory ceiling of a weight-streaming decoder."""
    src = torch.empty(256 * 2**20, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = min(alternate({"copy": lambda: dst.copy_(src)}, 5, device)["copy"])
    return 2 * src.numel() / seconds


# ---------------------------------------------------------------------------------- the two models
def build_pair(shape: Shape, device):
    """transformers' MusicGen decoder and ours holding the same weights (fp32)."""
    from transformers import MusicgenDecoderConfig, MusicgenForCausalLM

    torch.manual_seed(0)
    hf_config = MusicgenDecoderConfig(
        vocab_size=V, hidden_size=shape.hidden, num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
        ffn_dim=shape.ffn, num_codebooks=K, pad_token_id=V, bos_token_id=V, max_position_embeddings=4096,
        dropout=0.0,
    )  # fmt: skip
    hf = MusicgenForCausalLM(hf_config).to(device).eval()
    ours = ARTokenLM(
        num_codebooks=K, cardinality=V, hidden_size=shape.hidden, num_layers=shape.layers, num_heads=shape.heads,
        ffn_dim=shape.ffn, video_dim=shape.hidden, frame_rate=50.0, max_duration=30.0, extend_stride=18.0,
        dropout=0.0,
    ).to(device).eval()  # fmt: skip
    state = ours.state_dict()
    taken = 0
    for key, value in hf.state_dict().items():
        name = key.removeprefix("model.decoder.").replace(".encoder_attn", ".cross_attn")
        name = name.replace(".fc1.", ".ffn.fc1.").replace(".fc2.", ".ffn.fc2.")
        if name in state:
            state[name] = value.clone()
            taken += 1
    ours.load_state_dict(state)
    assert taken == len(hf.state_dict()), "every transformers weight maps onto one of ours"
    return hf, ours


def conditions_for(shape: Shape, batch: int, device):
    g = torch.Generator().manual_seed(0)
    video = torch.randn(batch, CONTEXT, shape.hidden, generator=g).to(device)
    return {"video": Condition(video, torch.ones(batch, CONTEXT, dtype=torch.bool, device=device), FPS)}


def hf_context(ours, conds, steps: int, batch: int, cfg: bool):
    """The cross-attention context ours uses for ``steps`` steps, as transformers' ``encoder_hidden_states``."""
    with torch.no_grad():
        cross = ours.fuse_conditions(conds, steps, 0, batch).cross
    return torch.cat([cross, torch.zeros_like(cross)]) if cfg else cross


def hf_logits(hf, inputs, enc, scale):
    """Teacher-forced (guided) logits ``[B, K, S, V]`` of transformers on step inputs ``[B, K, S]``."""
    b, k, s = inputs.shape
    ids = inputs.reshape(b * k, s)
    if scale is not None:
        ids = torch.cat([ids, ids])
    with torch.no_grad():
        logits = hf(input_ids=ids, encoder_hidden_states=enc).logits.reshape(-1, k, s, V)
    if scale is None:
        return logits
    cond, uncond = logits.chunk(2)
    return uncond + scale * (cond - uncond)


def hf_generate(hf, enc, steps, batch, scale, greedy, fair=True):
    from transformers import GenerationConfig
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    config = GenerationConfig(
        do_sample=not greedy, top_k=None if greedy else 250, guidance_scale=scale, max_new_tokens=steps,
        decoder_start_token_id=V, pad_token_id=V, bos_token_id=V, num_return_sequences=1,
    )  # fmt: skip
    bos = torch.full((batch * K, 1), V, dtype=torch.long, device=enc.device)
    extra = {}
    if fair:
        extra["cache"] = EncoderDecoderCache(DynamicCache(config=hf.config), DynamicCache(config=hf.config))
    with torch.no_grad():
        out = hf.generate(bos, generation_config=config, encoder_hidden_states=enc, **extra)
    return out.reshape(batch, K, -1)


def ours_generate(ours, conds, steps, scale, greedy, batch):
    frames = steps - (K - 1)  # the delay pattern adds K - 1 steps: both decode exactly `steps` steps
    generators = [torch.Generator().manual_seed(i) for i in range(batch)]
    return ours.generate(
        conds, frames, guidance_scale=scale or 1.0, top_k=250, temperature=0.0 if greedy else 1.0,
        generator=generators, progress_bar=_NoBar,
    )  # fmt: skip


class _NoBar:
    def __init__(self, total=None):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def update(self, n):
        pass


# --------------------------------------------------------------------------------- equality checks
def equality(shape: Shape, hf, ours, conds, cfg: bool, modes, device, steps: int = 24) -> dict:
    """Teacher-forced logits and greedy codes of ours against transformers on the same weights."""
    scale = 3.0 if cfg else None
    frames = steps - (K - 1)
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, V, (1, K, frames), generator=g).to(device)
    _, inputs = ours._teacher_forcing(codes)
    one = {name: Condition(c.tensor[:1], c.mask[:1], c.frame_rate) for name, c in conds.items()}
    enc = hf_context(ours, one, inputs.shape[2], 1, cfg)
    ref = hf_logits(hf, inputs, enc, scale)
    with torch.no_grad():
        if cfg:
            both = {n: c.with_null() for n, c in one.items()}
            cond, uncond = ours(torch.cat([inputs, inputs]), both).chunk(2)
            mine = uncond + scale * (cond - uncond)
        else:
            mine = ours(inputs, one)
    result = {"tf_max_diff": float((mine - ref).abs().max())}

    # greedy: both generate; then transformers teacher-forced on our codes judges our choices
    ours_codes = ours_generate(ours, one, steps, scale, True, 1)
    hf_codes = hf_generate(hf, enc, steps, 1, scale, True)
    result["greedy_agree"] = float((ours_codes == hf_codes).float().mean())
    steps_tgt, inputs = ours._teacher_forcing(ours_codes)
    judge = hf_logits(hf, inputs, enc, scale)  # [1, K, S, V]
    layout = ours.codebook_pattern.layout(frames, device)
    valid = (layout >= 0)[None]
    chosen = judge.gather(-1, steps_tgt.clamp(max=V - 1)[..., None]).squeeze(-1)
    gap = (judge.max(-1).values - chosen).masked_fill(~valid, 0)
    result["greedy_max_gap"] = float(gap.max())
    result["greedy_ok"] = result["greedy_max_gap"] <= TF_TOLERANCE
    result["tf_ok"] = result["tf_max_diff"] <= TF_TOLERANCE

    # lossy modes: teacher-forced logits against our fp32 ones
    lossy = {}
    spread = float(mine.std())
    for mode in modes:
        if mode == "fp32":
            continue
        fast = ours.fast_copy(mode)
        with torch.no_grad():
            if cfg:
                cond, uncond = fast(torch.cat([inputs, inputs]), {n: c.with_null() for n, c in one.items()}).chunk(2)
                got = uncond + scale * (cond - uncond)
            else:
                got = fast(inputs, one)
        base = hf_logits(hf, inputs, enc, scale)
        lossy[mode] = {
            "rel_diff": float((got.float() - base).abs().max()) / spread,
            "top1": float((got.argmax(-1) == base.argmax(-1)).float().mean()),
        }
    result["lossy"] = lossy
    return result


# ------------------------------------------------------------------------------------------- rows
def run_shape(shape: Shape, steps: int, batch: int, rounds: int, device, modes, default_row: bool):
    hf, ours = build_pair(shape, device)
    conds = conditions_for(shape, batch, device)
    bandwidth = memcpy_bandwidth(device)
    fast_models = {mode: ours.fast_copy(mode) for mode in modes if mode != "fp32"}
    for cfg in (False, True):
        scale = 3.0 if cfg else None
        rows = batch * (2 if cfg else 1)
        check = equality(shape, hf, ours, conds, cfg, modes, device)
        enc = hf_context(ours, conds, steps, batch, cfg)
        context = enc.shape[1]
        fns = {"hf cached (anchor)": lambda: hf_generate(hf, enc, steps, batch, scale, False)}
        for mode in modes:
            model = ours if mode == "fp32" else fast_models[mode]
            fns[f"ours {mode}"] = lambda m=model: ours_generate(m, conds, steps, scale, False, batch)
        if default_row:
            fns["hf default call (broken cache)"] = lambda: hf_generate(hf, enc, steps, batch, scale, False, fair=False)
        for fn in fns.values():  # warm-up: allocators, kernels, lazy imports
            fn()
        times = alternate(fns, rounds, device)
        ceiling = gemm_ceiling(shape, rows, device, torch.float32)
        flops = step_flops(shape, rows, steps, context)
        anchor = times["hf cached (anchor)"]
        print(f"\n{shape.label}, CFG {'on (scale 3, cond+uncond batched)' if cfg else 'off'}, batch {batch}, "
              f"{steps} steps, context {context} tokens; GEMM ceiling {ceiling / 1e9:.1f} GFLOP/s, "
              f"memcpy {bandwidth / 1e9:.1f} GB/s")  # fmt: skip
        print(f"  equality (fp32, same weights): teacher-forced max |diff| {check['tf_max_diff']:.2e} "
              f"({'ok' if check['tf_ok'] else 'FAIL'} < {TF_TOLERANCE:g}); greedy codes agree in "
              f"{check['greedy_agree']:.1%} of slots; every greedy choice of ours is transformers' argmax "
              f"up to {check['greedy_max_gap']:.1e} ({'ok' if check['greedy_ok'] else 'FAIL'})")  # fmt: skip
        for mode, d in check["lossy"].items():
            print(f"  {mode} vs fp32 (teacher-forced): max |diff| {d['rel_diff']:.3f} x logit std, "
                  f"top-1 agreement {d['top1']:.1%}")
        header = f"  {'variant':<32} {'tok/s':>7} {'(min-max)':>13} {'vs anchor':>9} {'(min-max)':>13} {'GEMM ceil':>9} {'BW ceil':>8}"
        print(header)
        for name, ts in times.items():
            med, lo, hi = median_range(ts)
            ratios = [a / t for a, t in zip(anchor, ts)]
            r_med, r_lo, r_hi = median_range(ratios)
            tok = steps * K * batch
            wbytes = weight_bytes(shape, name.split()[1] if name.startswith("ours") else "fp32")
            bw = step_bytes(shape, rows, steps, context, wbytes) / med / bandwidth
            print(f"  {name:<32} {tok / med:>7.0f} {f'({tok / hi:.0f}-{tok / lo:.0f})':>13} {r_med:>8.2f}x "
                  f"{f'({r_lo:.2f}-{r_hi:.2f})':>13} {flops / med / ceiling:>9.1%} {bw:>8.1%}", flush=True)  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny only, 100 steps, 3 rounds")
    parser.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=None, help="default: tiny small")
    parser.add_argument("--steps", type=int, default=None, help="decoding steps (default per shape: 250 / 40)")
    parser.add_argument("--rounds", type=int, default=None, help="alternated timed rounds (default 5 tiny, 3 small)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=["fp32", "int8", "bf16"],
                        help="our weight modes to time (fp32 exact; int8 / bf16 lossy, opt-in)")  # fmt: skip
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU intra-op threads (default 1; 0 keeps torch's)")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message=".*quantiz.*")
    device = torch.device(args.device)
    names = args.shapes or (["tiny"] if args.quick else ["tiny", "small"])
    load = os.getloadavg()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} thread(s), CPU time"
    print(f"device: {where}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (before)")
    for name in names:
        shape = SHAPES[name]
        steps = args.steps or (100 if args.quick else shape.steps)
        rounds = args.rounds or (3 if args.quick else (5 if name == "tiny" else 3))
        run_shape(shape, steps, args.batch, rounds, device, args.modes, default_row=name == "tiny")
    load = os.getloadavg()
    print(f"\nload average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (after); goals: ours >= 2x the anchor at the "
          "tiny size, >= 1.5x at MusicGen-small size, with the fp32 equality check passing")  # fmt: skip


if __name__ == "__main__":
    main()
