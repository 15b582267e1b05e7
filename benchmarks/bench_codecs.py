"""Codec throughput and bounded-memory chunking, on the real Big Buck Bunny soundtrack.

    python benchmarks/bench_codecs.py --quick    # < 1 min: tiny codec + 32 kHz EnCodec on 4-6 s
    python benchmarks/bench_codecs.py            # the same + encodec 24 kHz, on 20 s (speed) and 30 s (chunking)

Table 1: seconds per call and speed as a multiple of real time (audio seconds / wall seconds).
Table 2: one-piece vs chunked processing of the same audio with the same weights: wall time,
peak resident memory growth during the call (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``), and how far chunked outputs are from one-piece outputs.
Weights are random (the architecture sets the cost); speed does not depend on them.
"""

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def music(sample_rate: int, seconds: float, channels: int = 1) -> torch.Tensor:
    """``[1, C, S]``: the real soundtrack, looped to ``seconds`` and peak-normalised to 0.5."""
    from vmas_diffusion.media import load_audio

    audio = torch.from_numpy(load_audio(ROOT / ".cache/media/bigbuckbunny.mp4", sample_rate))
    repeats = int(seconds * sample_rate // audio.shape[-1]) + 1
    wav = audio.repeat(1, repeats)[:, : int(seconds * sample_rate)]
    wav = wav.mean(0, keepdim=True).expand(channels, -1)
    return (0.5 * wav / wav.abs().max())[None].contiguous()


def peak_rss_growth(fn):
    """``(result, seconds, MiB)``: wall time and growth of the peak resident set during ``fn()``."""

    def rss(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) / 1024
        return float("nan")

    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        base = rss("VmRSS:")
    except OSError:
        base = float("nan")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return result, seconds, rss("VmHWM:") - base


def build(name: str, **overrides):
    torch.manual_seed(0)
    if name == "tiny (dummy_codec)":
        from dummies import dummy_codec

        return dummy_codec(**overrides)
    if name == "encodec_hf 32 kHz":
        from vmas_diffusion.models.codecs.encodec_hf import EncodecHFCodec

        return EncodecHFCodec(**overrides).eval()
    from vmas_diffusion.models.codecs.encodec_package import EncodecPackageCodec

    return EncodecPackageCodec(sample_rate=24000, bandwidth=6.0, **overrides).eval()


def throughput(names, seconds, repeats):
    from tqdm import tqdm

    rows = []
    for name in tqdm(names, desc="throughput", leave=False):
        codec = build(name, chunk_frames=0)
        wav = music(codec.sample_rate, seconds, codec.channels)
        codes, latents = codec.tokenize(wav), codec.encode(wav)
        calls = {
            "tokenize": lambda: codec.tokenize(wav),
            "decode_tokens": lambda: codec.decode_tokens(codes),
            "encode": lambda: codec.encode(wav),
            "decode": lambda: codec.decode(latents),
        }
        with torch.no_grad():
            for call, fn in calls.items():
                best = min(_timed(fn) for _ in range(repeats))
                rows.append((name, call, best, seconds / best))
    print(f"\nThroughput on {seconds:.0f} s of music ({torch.get_num_threads()} thread(s), best of {repeats})")
    print(f"{'codec':<22}{'call':<15}{'s/call':>10}{'x realtime':>12}")
    for name, call, best, speed in rows:
        print(f"{name:<22}{call:<15}{best:>10.3f}{speed:>12.1f}")


def _timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def chunking(name, seconds, chunk_frames, overlap):
    whole = build(name, chunk_frames=0)
    chunked = build(name, chunk_frames=chunk_frames, chunk_overlap_frames=overlap)
    wav = music(whole.sample_rate, seconds, whole.channels)
    print(
        f"\nOne piece vs chunks of {chunk_frames} frames ({chunk_frames / whole.frame_rate:.1f} s, "
        f"overlap {overlap}) on {seconds:.0f} s, {name}"
    )
    print(f"{'call':<15}{'mode':<8}{'s/call':>9}{'peak MiB':>10}{'time ratio':>12}{'memory ratio':>14}  agreement")
    with torch.no_grad():
        codes, t_whole, m_whole = peak_rss_growth(lambda: whole.tokenize(wav))
        chunk_codes, t_chunk, m_chunk = peak_rss_growth(lambda: chunked.tokenize(wav))
        agree = f"{(codes == chunk_codes).float().mean().item():.2%} codes equal"
        _rows("tokenize", t_whole, m_whole, t_chunk, m_chunk, agree)
        audio, t_whole, m_whole = peak_rss_growth(lambda: whole.decode_tokens(codes))
        chunk_audio, t_chunk, m_chunk = peak_rss_growth(lambda: chunked.decode_tokens(codes))
        error = ((chunk_audio - audio).norm() / audio.norm()).item()
        _rows("decode_tokens", t_whole, m_whole, t_chunk, m_chunk, f"relative L2 difference {error:.1e}")


def _rows(call, t_whole, m_whole, t_chunk, m_chunk, agreement):
    print(f"{call:<15}{'whole':<8}{t_whole:>9.3f}{m_whole:>10.0f}{1.0:>12.2f}{1.0:>14.2f}")
    print(
        f"{call:<15}{'chunked':<8}{t_chunk:>9.3f}{m_chunk:>10.0f}{t_chunk / t_whole:>12.2f}"
        f"{m_chunk / max(m_whole, 1e-9):>14.2f}  {agreement}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small run (< 1 min)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        throughput(["tiny (dummy_codec)", "encodec_hf 32 kHz"], seconds=4.0, repeats=1)
        chunking("encodec_hf 32 kHz", seconds=6.0, chunk_frames=100, overlap=20)
    else:
        throughput(["tiny (dummy_codec)", "encodec_hf 32 kHz", "encodec 24 kHz"], seconds=20.0, repeats=2)
        # one-piece decoding of 30 s of 32 kHz audio already peaks at several GB
        chunking("encodec_hf 32 kHz", seconds=30.0, chunk_frames=250, overlap=25)


if __name__ == "__main__":
    main()
