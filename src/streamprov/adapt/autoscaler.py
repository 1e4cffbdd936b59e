"""The memory-utilization autoscaler: scale a stage out when its nodes' memory stays above a
high-water mark, in when it stays below a low-water mark, with a cool-down between decisions.

Utilization is a node's resident set (RSS) over its node type's ``memory_bytes``, sampled from
the live deployment's processes. A decision needs ``sustain`` consecutive samples on the same
side of a mark, and after one the autoscaler waits ``cooldown_s`` (state moves to new nodes, or
drains, only as records flow), so it does not oscillate.

How far to scale: like DS2, the target is computed, not stepped. Each node's *state* is its RSS
above the baseline of an idle node (the smallest RSS any of the stage's nodes has shown); the
stage's total state is spread over as many nodes as it takes to put each at the middle of the
band, ``target = (high + low) / 2``. So a step change in state converges in one decision when
the state redistributes with the keys, and the in-between band (low..high) keeps the result
from flapping.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from streamprov.errors import InvalidInput


class MemorySampler(Protocol):
    """Resident memory of the live deployment's node processes.

    Contract: ``sample()`` returns RSS in bytes by role (``<stage>-<slot>``, as
    ``Deployment.pids`` names them) for the processes that are up now; a process that just
    exited is simply absent. It must not block for long (it is called every interval).
    """

    def sample(self) -> dict[str, int]: ...


class ScalableDeployment(Protocol):
    """What the autoscaler needs of a running deployment (``runtime.local.Deployment`` is one).

    ``scale(stage, n)`` returns once the new instances are up, or the leaving ones drained,
    without losing records; it raises ``StreamprovError`` when it cannot.
    """

    def parallelism(self) -> dict[str, int]: ...

    def scale(self, stage: str, n: int) -> Any: ...


@dataclass(slots=True)
class PsutilMemorySampler:
    """RSS of every process ``pids()`` names (``Deployment.pids``), via psutil."""

    pids: Callable[[], dict[str, int]]

    def sample(self) -> dict[str, int]:
        import psutil

        out: dict[str, int] = {}
        for role, pid in self.pids().items():
            try:
                out[role] = int(psutil.Process(pid).memory_info().rss)
            except (psutil.Error, OSError):
                continue
        return out


@dataclass(frozen=True, slots=True)
class MemoryPolicy:
    """Marks (fractions of the node type's memory), patience and bounds."""

    high: float = 0.8
    low: float = 0.3
    sustain: int = 3
    cooldown_s: float = 5.0
    min_nodes: int = 1
    max_nodes: int = 8

    def __post_init__(self) -> None:
        if not 0 < self.low < self.high <= 1:
            raise InvalidInput("memory marks need 0 < low < high <= 1", field="low")
        if self.sustain < 1:
            raise InvalidInput("sustain must be at least 1 sample", field="sustain")
        if self.cooldown_s < 0:
            raise InvalidInput("cooldownS must not be negative", field="cooldownS")
        if not 1 <= self.min_nodes <= self.max_nodes:
            raise InvalidInput("node bounds need 1 <= min <= max", field="minNodes")

    @property
    def target(self) -> float:
        return (self.high + self.low) / 2


@dataclass(slots=True)
class MemoryAutoscaler:
    """Watches one stage of a live deployment; ``step()`` samples once and may scale.

    ``record(decision)`` receives every scaling decision (to the audit trail); ``clock`` is
    seconds, monotonic (injected by tests).
    """

    deployment: ScalableDeployment
    sampler: MemorySampler
    stage: str
    memory_bytes: int
    policy: MemoryPolicy = field(default_factory=MemoryPolicy)
    record: Callable[[dict[str, Any]], None] | None = None
    clock: Callable[[], float] = time.monotonic
    baseline_bytes: int | None = None
    """RSS of an idle node; learned as the smallest seen when not given."""
    decisions: list[dict[str, Any]] = field(default_factory=list)
    _above: int = 0
    _below: int = 0
    _last_decision_s: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _stage_rss(self) -> dict[str, int]:
        prefix = f"{self.stage}-"
        return {r: v for r, v in self.sampler.sample().items()
                if r.startswith(prefix) and r[len(prefix):].isdigit()}

    def step(self) -> dict[str, Any] | None:
        """Sample once; scale and return the decision when one is due."""
        rss = self._stage_rss()
        if not rss:
            return None
        low_seen = min(rss.values())
        self.baseline_bytes = (low_seen if self.baseline_bytes is None
                               else min(self.baseline_bytes, low_seen))
        utils = {r: v / self.memory_bytes for r, v in rss.items()}
        peak = max(utils.values())  # scale in only when even the fullest node is low
        now = self.clock()
        if self._last_decision_s is not None and \
                now - self._last_decision_s < self.policy.cooldown_s:
            return None
        self._above = self._above + 1 if peak > self.policy.high else 0
        self._below = self._below + 1 if peak < self.policy.low else 0
        n = self.deployment.parallelism()[self.stage]
        wanted = self._wanted(rss)
        if self._above >= self.policy.sustain:
            to = min(self.policy.max_nodes, max(n + 1, wanted))
            reason = (f"memory utilization {peak:.0%} above the high-water mark "
                      f"{self.policy.high:.0%} for {self._above} samples")
        elif self._below >= self.policy.sustain:
            to = max(self.policy.min_nodes, min(n - 1, wanted))
            reason = (f"memory utilization {peak:.0%} (fullest node) below the low-water "
                      f"mark {self.policy.low:.0%} for {self._below} samples")
        else:
            return None
        if to == n:
            return None
        self.deployment.scale(self.stage, to)
        self._above = self._below = 0
        self._last_decision_s = self.clock()
        decision = {
            "stage": self.stage, "from": n, "to": to, "trigger": "memory", "reason": reason,
            "figures": {"utilization": {r: round(u, 4) for r, u in sorted(utils.items())},
                        "rssBytes": dict(sorted(rss.items())),
                        "baselineBytes": self.baseline_bytes,
                        "memoryBytes": self.memory_bytes,
                        "high": self.policy.high, "low": self.policy.low},
        }
        self.decisions.append(decision)
        if self.record is not None:
            self.record(decision)
        return decision

    def _wanted(self, rss: dict[str, int]) -> int:
        """Nodes that put the stage's state at the band's middle (at least 1)."""
        base = self.baseline_bytes or 0
        state = sum(max(0, v - base) for v in rss.values())
        room = self.policy.target * self.memory_bytes - base
        if room <= 0:
            return self.policy.max_nodes
        return max(1, math.ceil(state / room))

    # -- running in the background ----------------------------------------------------------
    def start(self, interval_s: float = 0.5,
              on_error: Callable[[BaseException], None] | None = None) -> MemoryAutoscaler:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.step()
                except Exception as exc:  # a deployment that finished: stop watching
                    if on_error is not None:
                        on_error(exc)
                    return

        self._thread = threading.Thread(target=loop, name=f"streamprov-autoscale-{self.stage}",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
