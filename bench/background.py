"""How busy the machine was with work other than the benchmark, while it ran.

A benchmark on a shared 2-core machine is only as good as its quiet: a second
torch process makes every OpenMP parallel region wait for a descheduled thread, and
per-token times grow tenfold. :class:`BackgroundLoad` reads the machine's busy CPU
time (``/proc/stat``) and this process tree's own (children included once reaped)
at start and end; the difference is CPU that other processes used, reported in cores.
"""

from __future__ import annotations

import os
import time
from pathlib import Path


def _machine_busy_s() -> float | None:
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(x) for x in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _process_cpu_s(pid: int | None) -> float:
    """CPU seconds of a process that is not ours (a server under test given by --pid)."""
    if pid is None:
        return 0.0
    try:
        import psutil

        times = psutil.Process(pid).cpu_times()
        return times.user + times.system
    except Exception:  # gone, or not ours to read: count nothing
        return 0.0


class BackgroundLoad:
    def __init__(self, server_pid: int | None = None) -> None:
        self.server_pid = server_pid  # an external server under test is not "other" load
        self.machine0 = _machine_busy_s()
        self.own0 = _own_cpu_s() + _process_cpu_s(server_pid)
        self.wall0 = time.perf_counter()
        self.loadavg_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    def result(self) -> dict[str, float | None]:
        """Cores' worth of CPU used by other processes on average over the run (only
        meaningful once every server this run started has been stopped and reaped)."""
        machine1 = _machine_busy_s()
        wall = time.perf_counter() - self.wall0
        foreign = None
        if self.machine0 is not None and machine1 is not None and wall > 0:
            own = _own_cpu_s() + _process_cpu_s(self.server_pid) - self.own0
            foreign = max(0.0, (machine1 - self.machine0) - own) / wall
        return {
            "other_processes_cores": None if foreign is None else round(foreign, 2),
            "loadavg_1min_before": None if self.loadavg_before is None else round(self.loadavg_before, 2),
        }
