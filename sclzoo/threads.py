"""How many threads sclzoo's PyTorch and onnxruntime pools use: the cores this process may actually run on.

A thread pool larger than the CPU time the process gets is slower than a smaller one: OpenMP workers wait for each
other at every parallel region, and when some of them are descheduled (other jobs, a CPU quota) everyone waits.
The count is chosen, first match wins, from

1. ``requested``: an explicit count (a ``--threads`` option);
2. ``SCLZOO_THREADS``;
3. ``OMP_NUM_THREADS`` (what PyTorch itself would honour);
4. the cores available to the process: its CPU affinity (``os.sched_getaffinity``: ``taskset``, ``docker
   --cpuset-cpus``) capped by its cgroup CPU quota (``/sys/fs/cgroup/…/cpu.max`` or cgroup v1's
   ``cpu.cfs_quota_us``: ``docker --cpus``, Kubernetes CPU limits), rounded down, at least 1.

Pools must not spin either: onnxruntime sessions are created with ``session.intra_op.allow_spinning = 0``
(:func:`sclzoo.zoo.onnx_export.onnx_session`), and :func:`passive_openmp` (run when ``sclzoo`` is imported, before
it imports torch) makes PyTorch's OpenMP workers sleep when idle instead of spinning for milliseconds after every
parallel region: spinning is a little faster on an idle machine and much slower when another job shares the
cores (measured in README.md, "Development", under "Threads"). A user's own ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` is left alone (``GOMP_SPINCOUNT=300000`` restores libgomp's default on an idle machine).
Nothing here imports torch.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from sclzoo.errors import ConfigError

__all__ = ["ThreadChoice", "available_cpus", "cgroup_cpu_limit", "choose_threads", "configure", "passive_openmp",
           "torch_threads"]

ENV_VAR = "SCLZOO_THREADS"
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class ThreadChoice:
    """A thread count and where it came from.

    Attributes:
        n: Threads for PyTorch's intra-op pool and onnxruntime's intra-op pool.
        source: ``"requested"``, ``"SCLZOO_THREADS"``, ``"OMP_NUM_THREADS"`` or ``"available"``.
        available: The cores available to the process (:func:`available_cpus`).
    """

    n: int
    source: str
    available: int


def _positive_int(value: object, what: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return n


def _cgroup_v2_limit(root: Path, proc_cgroup: str) -> float | None:
    """The smallest ``cpu.max`` quota/period on the path from the process's cgroup up to the root (v2)."""
    rel = next((line[3:] for line in proc_cgroup.splitlines() if line.startswith("0::")), None)
    if rel is None:
        return None
    limits = []
    d = root / rel.strip().lstrip("/")
    while True:
        try:
            quota, period, *_ = (d / "cpu.max").read_text().split() + ["100000"]
            if quota != "max" and float(period) > 0:
                limits.append(float(quota) / float(period))
        except (OSError, ValueError):
            pass
        if d == root or root not in d.parents:
            break
        d = d.parent
    return min(limits) if limits else None


def _cgroup_v1_limit(root: Path) -> float | None:
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota = float((root / name / "cpu.cfs_quota_us").read_text())
            period = float((root / name / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        if quota > 0 and period > 0:
            return quota / period
    return None


def cgroup_cpu_limit(root: str | Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The process's cgroup CPU quota in CPUs (e.g. 1.5), or None when there is no quota (or no cgroup fs).

    ``root`` and ``proc_cgroup`` (the text of ``/proc/self/cgroup``) are parameters for the tests.
    """
    root = Path(root)
    if proc_cgroup is None:
        try:
            proc_cgroup = Path("/proc/self/cgroup").read_text()
        except OSError:
            proc_cgroup = ""
    v2 = _cgroup_v2_limit(root, proc_cgroup)
    if v2 is None and (root / "cpu.max").is_file():  # a container's own namespace root
        v2 = _cgroup_v2_limit(root, "0::/")
    return v2 if v2 is not None else _cgroup_v1_limit(root)


def available_cpus(affinity: int | None = None, quota: float | None = None, *, read_quota: bool = True) -> int:
    """The cores this process can use: its CPU affinity, capped by its cgroup CPU quota (rounded down), >= 1."""
    if affinity is None:
        try:
            affinity = len(os.sched_getaffinity(0))
        except (AttributeError, OSError):  # not Linux
            affinity = os.cpu_count() or 1
    if quota is None and read_quota:
        quota = cgroup_cpu_limit()
    n = affinity if quota is None else min(affinity, math.floor(quota))
    return max(1, n)


def choose_threads(requested: int | str | None = None, environ: Mapping[str, str] | None = None,
                   available: int | None = None) -> ThreadChoice:
    """The thread count to use (see the module docstring for the order); raises ConfigError for a bad value."""
    env = os.environ if environ is None else environ
    avail = available_cpus() if available is None else available
    if requested is not None:
        return ThreadChoice(_positive_int(requested, "--threads"), "requested", avail)
    for var in (ENV_VAR, "OMP_NUM_THREADS"):
        value = env.get(var, "").strip()
        if value:
            # OMP_NUM_THREADS may be a list per nesting level ("4,2"): the first is the outer pool
            return ThreadChoice(_positive_int(value.split(",")[0], var), var, avail)
    return ThreadChoice(avail, "available", avail)


def passive_openmp(environ: MutableMapping[str, str] | None = None) -> bool:
    """Sets ``OMP_WAIT_POLICY=PASSIVE`` when torch is not imported yet and neither ``OMP_WAIT_POLICY`` nor
    ``GOMP_SPINCOUNT`` is set; returns whether it did. OpenMP reads the variable once, when torch loads it."""
    env = os.environ if environ is None else environ
    if "torch" in sys.modules or env.get("OMP_WAIT_POLICY") or env.get("GOMP_SPINCOUNT"):
        return False
    env["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def configure(requested: int | str | None = None,
              environ: MutableMapping[str, str] | None = None) -> ThreadChoice:
    """Applies :func:`choose_threads` to this process; call it once, early (the CLI does, before any work).

    Before torch is imported it sets ``OMP_NUM_THREADS`` (unless that is the source of the count) and
    :func:`passive_openmp`, which PyTorch's OpenMP runtime reads when it loads; once torch is imported it calls
    ``torch.set_num_threads``. onnxruntime sessions follow ``torch.get_num_threads()``
    (:func:`sclzoo.zoo.onnx_export.onnx_session`).
    """
    env = os.environ if environ is None else environ
    choice = choose_threads(requested, env)
    torch = sys.modules.get("torch")
    if torch is None:
        if choice.source != "OMP_NUM_THREADS":
            env["OMP_NUM_THREADS"] = str(choice.n)
        passive_openmp(env)
    else:
        torch.set_num_threads(choice.n)
    return choice


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Runs the block with ``torch.set_num_threads(n)`` and restores the previous count; ``None`` = no change."""
    import torch

    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    if n < 1:
        raise ConfigError(f"forward_threads must be a positive int, got {n!r}")
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
