"""Model CPU offload and lower precision on an accelerator: the check a GPU run makes.

    python benchmarks/bench_offload.py                 # the accelerator torch finds (CUDA, XPU, MPS)
    python benchmarks/bench_offload.py --device cpu    # the same code path on the CPU (no memory figure)

For each bundled model (vmas-tiny AR and LDM), 4 s of the bundled clip, seed 0, guidance 6:

1. the plain pipeline on the device (the reference): wall time and peak accelerator memory;
2. ``enable_model_cpu_offload()``: the same audio (asserted equal within 1e-5), its wall time and
   peak memory against the reference;
3. ``torch_dtype=torch.float16`` and ``torch.bfloat16`` for everything but the codec: wall time and
   how far the model's own output moves (LDM: relative L2 of the final latents; AR: share of the
   float32 run's token steps whose next-token argmax is unchanged), against float32.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", help="default: the accelerator torch finds")
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()

    import torch
    from diffusers.utils.torch_utils import get_device

    from vmas_diffusion import VideoToMusicPipeline
    from vmas_diffusion.conditions import BEAT, VIDEO
    from vmas_diffusion.defaults import DEMO_VIDEO

    device = torch.device(args.device or get_device())
    accel = getattr(torch, device.type, None) if device.type != "cpu" else None

    def timed(pipe, **kwargs):
        final = {}
        if accel is not None:
            accel.synchronize()
            accel.reset_peak_memory_stats()
        start = time.perf_counter()
        out = pipe(str(DEMO_VIDEO), duration=args.seconds, guidance_scale=6.0, generator=torch.Generator().manual_seed(0),
                   callback_on_step_end=lambda p, s, t, kw: final.update(kw) or kw, **kwargs)
        if accel is not None:
            accel.synchronize()
        peak = accel.max_memory_allocated() / 2**20 if accel is not None else float("nan")
        return out.audios, time.perf_counter() - start, peak, final

    def load(name, dtype=None):
        dtypes = {} if dtype is None else {"torch_dtype": {"codec": torch.float32, "default": dtype}}
        pipe = VideoToMusicPipeline.from_pretrained(name, **dtypes)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    print(f"device: {device}")
    for name in ("vmas-tiny-ar", "vmas-tiny-ldm"):
        ref_pipe = load(name).to(device)
        timed(ref_pipe)  # warm-up: kernels, allocator
        audio, seconds, peak, final = timed(ref_pipe)
        print(f"{name}: plain {seconds:.2f} s, peak {peak:.1f} MiB")

        offloaded = load(name)
        offloaded.enable_model_cpu_offload(device=device)
        timed(offloaded)
        o_audio, o_seconds, o_peak, _ = timed(offloaded)
        same = float(abs(o_audio - audio).max())
        assert same < 1e-5, f"offloaded audio differs by {same}"
        print(f"  model CPU offload: {o_seconds:.2f} s ({o_seconds / seconds:.2f}x), peak {o_peak:.1f} MiB "
              f"({o_peak / peak if peak == peak else float('nan'):.2f}x), audio max diff {same:.1e}")

        for dtype in (torch.float16, torch.bfloat16):
            low = load(name, dtype).to(device)
            try:
                timed(low)
                _, l_seconds, l_peak, l_final = timed(low)
            except RuntimeError as err:  # an op without a kernel for this dtype on this device
                print(f"  {dtype}: fails: {str(err).splitlines()[0]}")
                continue
            if "latents" in final:
                ref, got = final["latents"].float(), l_final["latents"].float()
                moved = f"final latents move {((got - ref).norm() / ref.norm()).item():.1%} (relative L2)"
            else:
                steps = final["tokens"]
                agree = []
                for p in (ref_pipe, low):
                    video, beat, _ = p.encode_video([p.prepare_video(str(DEMO_VIDEO), None)])
                    inputs = torch.cat([torch.full_like(steps[..., :1], p.generator.special_id), steps[..., :-1]], 2)
                    with torch.no_grad():
                        agree.append(p.generator(inputs.to(device), {VIDEO: video, BEAT: beat}).argmax(-1))
                moved = f"next-token argmax unchanged on {(agree[0] == agree[1]).float().mean().item():.1%} of the steps"
            print(f"  {str(dtype).split('.')[-1]}: {l_seconds:.2f} s ({l_seconds / seconds:.2f}x), peak {l_peak:.1f} MiB; {moved}")


if __name__ == "__main__":
    main()
