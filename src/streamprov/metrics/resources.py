"""CPU and memory of node processes, sampled with psutil while a deployment runs.

The sampler also applies a node type's CPU count to the local runner's processes: when a node
type has fewer CPUs than the machine, each new node process is pinned (CPU affinity) to that
many cores, assigned round robin. That is all the local runner can enforce; memory is measured
against the node type (utilization = peak RSS / memory), never limited.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil


@dataclass(slots=True)
class NodeUsage:
    """Resource samples of one node process (by role, e.g. ``parse-1``)."""

    role: str
    pid: int
    samples: int = 0
    cpu_percent_sum: float = 0.0
    cpu_percent_max: float = 0.0
    rss_bytes_max: int = 0
    affinity: list[int] | None = None

    def to_json(self, memory_bytes: int | None) -> dict[str, Any]:
        mean = self.cpu_percent_sum / self.samples if self.samples else 0.0
        out: dict[str, Any] = {
            "role": self.role, "pid": self.pid, "samples": self.samples,
            "cpuPercentMean": round(mean, 1), "cpuPercentMax": round(self.cpu_percent_max, 1),
            "rssBytesMax": self.rss_bytes_max,
        }
        if memory_bytes:
            out["memoryUtilization"] = round(self.rss_bytes_max / memory_bytes, 4)
        if self.affinity is not None:
            out["cpuAffinity"] = self.affinity
        return out


def machine_cpus() -> list[int]:
    """The cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


@dataclass(slots=True)
class ResourceSampler:
    """Samples the processes ``pids()`` names every ``interval_s`` on a background thread.

    ``pin_cpus``: when set and below the machine's core count, pin each process to that many
    cores (round robin). Processes that exit between samples keep their last figures.
    """

    pids: Callable[[], dict[str, int]]
    interval_s: float = 0.25
    pin_cpus: int | None = None
    usage: dict[str, NodeUsage] = field(default_factory=dict)
    _procs: dict[int, psutil.Process] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _next_core: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> ResourceSampler:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="streamprov-sampler",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, NodeUsage]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self.usage

    def set_pin_cpus(self, cpus: int | None) -> None:
        """Change the CPU count for processes seen from now on (a scale to another type)."""
        with self._lock:
            self.pin_cpus = cpus

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def _pin(self, proc: psutil.Process) -> list[int] | None:
        cores = machine_cpus()
        if self.pin_cpus is None or self.pin_cpus >= len(cores):
            return None
        chosen = [cores[(self._next_core + i) % len(cores)] for i in range(self.pin_cpus)]
        self._next_core = (self._next_core + self.pin_cpus) % len(cores)
        try:
            proc.cpu_affinity(chosen)
        except (psutil.Error, OSError, AttributeError):
            return None
        return chosen

    def sample(self) -> None:
        with self._lock:
            try:
                current = self.pids()
            except Exception:  # the deployment is shutting down
                return
            for role, pid in current.items():
                proc = self._procs.get(pid)
                try:
                    if proc is None:
                        proc = psutil.Process(pid)
                        proc.cpu_percent(None)  # primes the counter; the first reading is 0
                        self._procs[pid] = proc
                        node = NodeUsage(role, pid, affinity=self._pin(proc))
                        self.usage[role] = node
                        rss = int(proc.memory_info().rss)
                        node.rss_bytes_max = max(node.rss_bytes_max, rss)
                        continue
                    node = self.usage[role]
                    cpu = float(proc.cpu_percent(None))
                    rss = int(proc.memory_info().rss)
                except (psutil.Error, OSError, KeyError):
                    continue
                node.samples += 1
                node.cpu_percent_sum += cpu
                node.cpu_percent_max = max(node.cpu_percent_max, cpu)
                node.rss_bytes_max = max(node.rss_bytes_max, rss)
