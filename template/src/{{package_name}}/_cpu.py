"""CPUs this process may really use, from the cgroup CPU quota (docker --cpus, Kubernetes limits)."""

from __future__ import annotations

import math
import os
from pathlib import Path

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota in CPUs (may be fractional), or None when there is none."""
    try:  # cgroup v2: "max 100000" or "150000 100000"
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def available_cpus(root: Path = Path("/sys/fs/cgroup")) -> int:
    """Whole CPUs available: the affinity mask, lowered to the cgroup quota (rounded down, at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(root)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return cpus


_DEFAULTED: set[str] = set()  # the variables limit_threads set (not the user's)


def limit_threads(threads: int | None = None) -> None:
    """Default every native thread pool to `threads` (available_cpus()); variables the user set win."""
    value = str(threads or available_cpus())
    for variable in THREAD_VARIABLES:
        if variable not in os.environ or variable in _DEFAULTED:
            os.environ[variable] = value
            _DEFAULTED.add(variable)


def threads_per_worker(workers: int) -> int:
    """Native threads per server process so that `workers` processes together stay within the CPU quota."""
    return max(1, available_cpus() // workers)
