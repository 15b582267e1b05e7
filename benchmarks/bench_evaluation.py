"""Benchmark of the evaluation metrics: embedder throughput and the Fréchet distance.

    python benchmarks/bench_evaluation.py [--quick]

Figures:
- log-mel statistics embedder (the FAD fallback) and the VGGish front end: seconds of audio
  embedded per wall second (x real time);
- Fréchet distance with ``scipy.linalg.sqrtm`` (what ``evaluate`` uses) against the reference
  closed form through symmetric eigendecompositions (``Tr sqrt(A^1/2 B A^1/2)``), measured in the
  same process: time ratio and the relative difference of the values;
- ``sqrtm`` with the default BLAS threads against one thread (what ``frechet_distance`` sets).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _timeit(fn, repeat: int) -> float:
    fn()  # warm-up (librosa/numba and BLAS first-call costs)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def frechet_eigh(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """Reference: the same distance via eigh of the symmetric product (no general sqrtm)."""
    w, v = np.linalg.eigh(sigma_a)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root @ sigma_b @ root)
    diff = mu_a - mu_b
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, < 1 min")
    args = parser.parse_args()

    from vmas_diffusion.evaluation import MelStatsEmbedder, fit_gaussian, frechet_distance
    from vmas_diffusion.evaluation.vggish import waveform_to_examples

    rng = np.random.default_rng(0)
    seconds = 10.0 if args.quick else 60.0
    repeat = 3 if args.quick else 10
    audio = rng.standard_normal(int(16000 * seconds)).astype(np.float32) * 0.1

    rows = []
    mel = MelStatsEmbedder()
    t_mel = _timeit(lambda: mel.embed(audio, 16000), repeat)
    rows.append(("mel-stats embed, 16 kHz", f"{t_mel * 1e3:.1f} ms / {seconds:.0f} s", f"{seconds / t_mel:.0f}x real time"))
    audio32 = rng.standard_normal(int(32000 * seconds)).astype(np.float32) * 0.1
    t_mel32 = _timeit(lambda: mel.embed(audio32, 32000), repeat)
    rows.append(("mel-stats embed, 32 kHz (+resample)", f"{t_mel32 * 1e3:.1f} ms / {seconds:.0f} s", f"{seconds / t_mel32:.0f}x real time"))
    t_vgg = _timeit(lambda: waveform_to_examples(audio), repeat)
    rows.append(("VGGish front end (log-mel examples)", f"{t_vgg * 1e3:.1f} ms / {seconds:.0f} s", f"{seconds / t_vgg:.0f}x real time"))

    from threadpoolctl import threadpool_limits
    import scipy.linalg

    for dim in ((64, 128) if args.quick else (64, 128, 512)):
        x = rng.standard_normal((4 * dim, dim))
        y = rng.standard_normal((4 * dim, dim)) @ (np.eye(dim) + 0.1 * rng.standard_normal((dim, dim)))
        a, b = fit_gaussian(x), fit_gaussian(y)
        t_sqrtm = _timeit(lambda: frechet_distance(a, b), repeat)
        with threadpool_limits(limits=1, user_api="blas"):  # same BLAS setting as frechet_distance
            t_ref = _timeit(lambda: frechet_eigh(a.mu, a.sigma, b.mu, b.sigma), repeat)
        d, d_ref = frechet_distance(a, b), frechet_eigh(a.mu, a.sigma, b.mu, b.sigma)
        rows.append(
            (f"Fréchet distance D={dim} (sqrtm vs eigh ref)", f"{t_sqrtm * 1e3:.1f} ms vs {t_ref * 1e3:.1f} ms",
             f"time x{t_sqrtm / t_ref:.1f}, rel. diff {abs(d - d_ref) / d_ref:.1e}")
        )
        product = a.sigma @ b.sigma
        t_multi = _timeit(lambda: scipy.linalg.sqrtm(product), repeat)
        with threadpool_limits(limits=1, user_api="blas"):
            t_single = _timeit(lambda: scipy.linalg.sqrtm(product), repeat)
        rows.append(
            (f"sqrtm D={dim}: default BLAS threads vs 1 thread", f"{t_multi * 1e3:.1f} ms vs {t_single * 1e3:.1f} ms",
             f"time ratio threads/1-thread x{t_multi / t_single:.1f}")
        )

    width = max(len(r[0]) for r in rows)
    print(f"{'measure'.ljust(width)} | time | ratio")
    print(f"{'-' * width}-|------|------")
    for name, t, ratio in rows:
        print(f"{name.ljust(width)} | {t} | {ratio}")


if __name__ == "__main__":
    main()
