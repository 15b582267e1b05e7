"""Fréchet Audio Distance (FAD) between two sets of audio embeddings.

FAD (Kilgour et al., 2019) fits one multivariate Gaussian to all frame-window embeddings of
a set (every clip's windows pooled together) and reports the Fréchet distance between the
two Gaussians::

    FAD = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

The value depends on the embedding model: numbers computed with different embedders (or
with the weight-free log-mel fallback) are not comparable with each other or with
published VGGish FADs.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.linalg

from ..errors import InputError


def _single_threaded_blas(fn):
    """Run ``fn`` with BLAS limited to one thread (threadpoolctl, when installed).

    FAD matrices are small (D <= 2048); a multi-threaded BLAS gains nothing on them, and on a
    busy machine its spinning threads made ``sqrtm``/``svd`` 10-20x slower in our measurements.
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            from threadpoolctl import threadpool_limits

            limit = threadpool_limits(limits=1, user_api="blas")
        except ImportError:
            limit = contextlib.nullcontext()
        with limit:
            return fn(*args, **kwargs)

    return wrapper


@dataclass(frozen=True)
class GaussianStats:
    """Mean ``[D]`` and covariance ``[D, D]`` of a set of embeddings, and how many rows fed them."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int


def fit_gaussian(embeddings: np.ndarray | Sequence[np.ndarray]) -> GaussianStats:
    """Fit the Gaussian of a set.

    Args:
        embeddings: ``[N, D]`` window embeddings, or a sequence of per-clip ``[N_i, D]`` arrays
            that are pooled (concatenated) first, as FAD does.

    Returns:
        :class:`GaussianStats` in float64.
    """
    x = _pool(embeddings, "fit_gaussian: the embedding set is empty")
    if x.ndim != 2:
        raise InputError(f"fit_gaussian: embeddings must be [N, D], got shape {x.shape}")
    if x.shape[0] < 2:
        raise InputError(f"fit_gaussian: need at least 2 embedding rows for a covariance, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise InputError("fit_gaussian: embeddings contain NaN or infinity")
    return GaussianStats(mu=x.mean(axis=0), sigma=np.cov(x, rowvar=False).reshape(x.shape[1], x.shape[1]), count=x.shape[0])


@_single_threaded_blas
def frechet_distance(a: GaussianStats, b: GaussianStats, eps: float = 1e-6) -> float:
    """Fréchet distance between two Gaussians.

    Numerical safeguards (the usual ones of FID/FAD code): when the product of the
    covariances is singular and its square root comes out non-finite, ``eps * I`` is added
    to both covariances; a complex square root whose imaginary part is round-off is
    replaced by its real part; a tiny negative result from cancellation is clamped to 0.

    Args:
        a, b: Gaussians with the same dimension ``D``.
        eps: diagonal offset used when the plain square root fails.
    """
    if a.mu.shape != b.mu.shape:
        raise InputError(f"frechet_distance: dimensions differ ({a.mu.shape[0]} vs {b.mu.shape[0]})")
    diff = a.mu - b.mu
    covmean = _sqrtm(a.sigma @ b.sigma)
    if not np.all(np.isfinite(covmean)):
        offset = np.eye(a.sigma.shape[0]) * eps
        covmean = _sqrtm((a.sigma + offset) @ (b.sigma + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(covmean.imag)) if covmean.size else 0.0
        scale = max(1.0, float(np.max(np.abs(covmean.real))) if covmean.size else 1.0)
        if imag > 1e-3 * scale:
            warnings.warn(
                f"frechet_distance: sqrtm has a large imaginary part ({imag:.3g}); keeping the real part",
                RuntimeWarning,
                stacklevel=2,
            )
        covmean = covmean.real
    value = float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


def _sqrtm(matrix: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        # scipy warns on singular input; the caller checks finiteness and retries with an offset.
        warnings.simplefilter("ignore")
        return np.asarray(scipy.linalg.sqrtm(matrix))


@_single_threaded_blas
def frechet_audio_distance(
    embeddings_a: np.ndarray | Sequence[np.ndarray],
    embeddings_b: np.ndarray | Sequence[np.ndarray],
    eps: float = 1e-6,
) -> float:
    """FAD between two sets of window embeddings (each ``[N, D]`` or a list of per-clip ``[N_i, D]``).

    When the two sets together have fewer independent centred rows than dimensions (small
    evaluation sets: a few dozen windows of 128-d or 2048-d embeddings), both covariances live
    in the span of those rows; the distance is computed in an orthonormal basis of that span,
    which gives the same value (the Fréchet distance is invariant to rotations, and directions
    outside the span carry no variance in either set) at a fraction of the cost, with a
    better-conditioned ``sqrtm``.
    """
    empty = "frechet_audio_distance: an embedding set is empty"
    a, b = _pool(embeddings_a, empty), _pool(embeddings_b, empty)
    if a.ndim == 2 and b.ndim == 2 and a.shape[1] == b.shape[1] and a.shape[0] >= 2 and b.shape[0] >= 2:
        centred = np.concatenate([a - a.mean(axis=0), b - b.mean(axis=0)])
        _, singular, vt = np.linalg.svd(centred, full_matrices=False)
        rank = int(np.sum(singular > singular[0] * 1e-10)) if singular.size and singular[0] > 0 else 0
        if 0 < rank < a.shape[1]:
            basis = vt[:rank].T  # [D, r]
            mean_gap = float(np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2))
            # the projected means keep the in-span part of the gap; add back the rest
            ga, gb = fit_gaussian(a @ basis), fit_gaussian(b @ basis)
            in_span = float(np.sum((ga.mu - gb.mu) ** 2))
            return frechet_distance(ga, gb, eps=eps) + max(mean_gap - in_span, 0.0)
    return frechet_distance(fit_gaussian(a), fit_gaussian(b), eps=eps)


def _pool(embeddings: np.ndarray | Sequence[np.ndarray], empty_error: str) -> np.ndarray:
    """One ``[N, D]`` float64 array: an array as it is, a sequence of per-clip arrays concatenated."""
    if isinstance(embeddings, np.ndarray):
        return np.asarray(embeddings, dtype=np.float64)
    parts = [np.asarray(e, dtype=np.float64) for e in embeddings if len(e)]
    if not parts:
        raise InputError(empty_error)
    return np.concatenate(parts, axis=0)
