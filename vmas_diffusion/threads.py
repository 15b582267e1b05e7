"""How many CPU threads torch uses for one generation.

Default: ``VMAS_NUM_THREADS`` if set, else ``OMP_NUM_THREADS`` if set, else the idle physical
cores this process may run on (cores minus the 1-minute load average, rounded), at least 1 and
at most 4. A decoder at batch 1 runs thousands of small ops per second of music; past a few
threads they gain nothing, and on a CPU busy with other work OpenMP's spinning barriers make
every thread beyond the idle cores expensive (on a 2-core machine at load 7, ``generate`` on
the 6 s demo clip took 125 s wall and 32 CPU-s with 2 threads, against 3-4 CPU-s with 1).
``vmas-diffusion --threads N`` overrides it.
"""

import os
from pathlib import Path
from typing import Optional

from .errors import InputError

ENV = "VMAS_NUM_THREADS"
MAX_DEFAULT = 4


def physical_cores() -> int:
    """Physical cores among the CPUs this process may use (SMT siblings counted once)."""
    cpus = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add((topology / "physical_package_id").read_text().strip() + ":" + (topology / "core_id").read_text().strip())
        except OSError:  # no sysfs (not Linux): count logical CPUs
            cores.add(str(cpu))
    return max(1, len(cores))


def default_threads() -> int:
    """The thread count :func:`set_threads` uses when given none (see the module docstring)."""
    for name in (ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(name, "").strip()
        if value:
            return _positive(value, name)
    cores = physical_cores()
    busy = round(os.getloadavg()[0]) if hasattr(os, "getloadavg") else 0
    return max(1, min(cores - busy, MAX_DEFAULT))


def set_threads(threads: Optional[int] = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`); returns the count before."""
    import torch

    count = default_threads() if threads is None else _positive(threads, "threads")
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    return previous


def _positive(value, what: str) -> int:
    try:
        count = int(value)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise InputError(f"{what} must be a positive number of threads, got {value!r}")
    return count
