"""Small metric pieces of the evaluation: beat offsets, cosine scores, peak memory."""

from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np


def beat_offsets(generated: np.ndarray, visual: np.ndarray) -> np.ndarray:
    """Signed offset (seconds) from each generated beat to its nearest visual beat.

    ``offset = generated - nearest visual``: negative when the music beat comes early.

    Args:
        generated: ``[G]`` generated (music) beat times in seconds.
        visual: ``[V]`` visual beat times in seconds.

    Returns:
        ``[G]`` offsets; empty when either input is empty.
    """
    g = np.asarray(generated, dtype=np.float64).reshape(-1)
    v = np.sort(np.asarray(visual, dtype=np.float64).reshape(-1))
    if g.size == 0 or v.size == 0:
        return np.zeros(0)
    right = np.clip(np.searchsorted(v, g), 0, v.size - 1)
    left = np.clip(right - 1, 0, v.size - 1)
    use_left = np.abs(g - v[left]) < np.abs(g - v[right])
    nearest = np.where(use_left, v[left], v[right])
    return g - nearest


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two ``[D]`` vectors (0 when one is all zeros)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1)
    b = np.asarray(b, dtype=np.float64).reshape(-1)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom > 0 else 0.0


def mean_or_none(values) -> Optional[float]:
    """Mean of the finite values, None when there are none (shown as "n/a")."""
    vals = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(vals)) if vals else None


_STATUS = "/proc/self/status"


def _kernel_hwm_bytes() -> int:
    """The kernel's peak resident set size of this process (VmHWM), in bytes."""
    with open(_STATUS) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM line")


def _reset_kernel_hwm() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _kernel_hwm_bytes()
        return True
    except OSError:
        return False


class PeakMemory:
    """Context manager measuring the peak memory of a block.

    On CUDA: ``torch.cuda.max_memory_allocated`` over the block (``kind = "cuda-allocated"``).
    On CPU: peak resident set size minus the value at entry (``kind = "cpu-rss-delta"``). On
    Linux the kernel's own high-water mark is reset at entry (``/proc/self/clear_refs``) and read
    at exit, so no peak is missed; elsewhere the RSS is sampled every ``interval`` seconds in a
    thread, which can miss allocations shorter than the interval. Memory freed by an earlier call
    and reused does not count either way.
    """

    def __init__(self, device: str = "cpu", interval: float = 0.005):
        self.device = str(device)
        self.interval = interval
        self.peak_mb = 0.0
        self.kind = "cuda-allocated" if self.device.startswith("cuda") else "cpu-rss-delta"

    def __enter__(self) -> "PeakMemory":
        if self.kind == "cuda-allocated":
            import torch

            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        self._process = psutil.Process()
        self._kernel_hwm = _reset_kernel_hwm()
        self._base = self._peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = None if self._kernel_hwm else threading.Thread(target=self._sample, daemon=True)
        if self._thread is not None:
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        if self.kind == "cuda-allocated":
            import torch

            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            self._peak = max(self._peak, self._process.memory_info().rss)
            if self._kernel_hwm:
                self._peak = max(self._peak, _kernel_hwm_bytes())
            peak = self._peak - self._base
        self.peak_mb = max(float(peak), 0.0) / 2**20
