"""A processing node's clock: ``NodeClock`` (a ``PhysicalClock`` the node's HLC reads) with its
sync thread, skew tolerance, policy and status.

A node process receives ``(ClockConfig, node_id)`` - or a ``NodeClockFactory``, which is what
``runtime``'s ``clock_factory`` expects - and builds its own clock::

    clock = NodeClock(config, node_id); clock.start()
    hlc = HybridLogicalClock(clock)
    ...
    if clock.may_accept():           # policy "hold": False while out of tolerance
        ts, logical = hlc.stamp(n)
        error_ns = hlc.error_bound_ns()
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

from streamprov.clock.client import SyncClient, Target
from streamprov.clock.config import ClockConfig, SkewPolicy, replica_name
from streamprov.clock.history import Point
from streamprov.clock.physical import PhysicalClock
from streamprov.clock.ring import ReplicaRing
from streamprov.clock.service import raw_clock_for
from streamprov.clock.synced import SyncedClock, _boot_ns
from streamprov.errors import ClockError

_registry: weakref.WeakValueDictionary[str, NodeClock] = weakref.WeakValueDictionary()


@dataclass(frozen=True, slots=True)
class ClockStatus:
    """One node's synchronization state. Offsets follow RFC 5905: reference minus the node's raw
    clock (positive: the raw clock is behind). ``drift_ppm`` > 0: the raw clock runs fast."""

    node_id: str
    sync_enabled: bool
    synced: bool
    """At least one successful sync so far (before that the bound is unknown)."""
    replica: int | None
    """Replica synchronized with in the latest round; None when none answered."""
    replica_address: str | None
    home_replica: int | None
    """The replica owning this node on the ring (``replica`` differs after a failover)."""
    offset_ns: int | None
    error_bound_ns: int
    drift_ppm: float | None
    last_sync_ns: int | None
    last_sync_age_s: float | None
    within_tolerance: bool
    max_skew_ns: int
    policy: str
    accepting: bool
    violations: int
    """Times the node went out of tolerance (after its first sync)."""
    stamps_out_of_tolerance: int
    """Bound reads (one per stamped batch) made while out of tolerance."""
    syncs_ok: int
    syncs_failed: int
    failovers: int
    steps: int
    """Raw-clock steps detected."""
    history: tuple[Point, ...] = ()
    """``(time_ns, offset_ns, error_ns)`` per sync round, at most ``MAX_POINTS`` evenly
    thinned (``SyncHistory``); empty while sync is off or before the first sync."""

    def to_json(self) -> dict[str, Any]:
        return {
            "nodeId": self.node_id, "syncEnabled": self.sync_enabled, "synced": self.synced,
            "replica": self.replica, "replicaAddress": self.replica_address,
            "homeReplica": self.home_replica, "offsetNs": self.offset_ns,
            "errorNs": self.error_bound_ns, "driftPpm": self.drift_ppm,
            "lastSyncNs": self.last_sync_ns, "lastSyncAgeS": self.last_sync_age_s,
            "withinTolerance": self.within_tolerance, "maxSkewNs": self.max_skew_ns,
            "policy": self.policy, "accepting": self.accepting, "violations": self.violations,
            "stampsOutOfTolerance": self.stamps_out_of_tolerance, "syncsOk": self.syncs_ok,
            "syncsFailed": self.syncs_failed, "failovers": self.failovers, "steps": self.steps,
            "history": [list(p) for p in self.history],
        }


class NodeClock:
    """The corrected physical clock of node ``node_id``, kept in sync by a daemon thread.

    ``now_ns``/``error_bound_ns`` implement ``PhysicalClock`` (lock-free, never block). Each
    ``error_bound_ns`` call counts as one stamped batch for ``stamps_out_of_tolerance``.
    Pickles as ``(config, node_id)``: the receiving process builds a fresh, stopped clock.
    With ``config.enabled`` False the raw clock is used as is and the bound is 0 (unknown).
    """

    def __init__(self, config: ClockConfig, node_id: str, *,
                 raw: PhysicalClock | None = None) -> None:
        self.config = config
        self.node_id = node_id
        self.raw: PhysicalClock = raw if raw is not None else raw_clock_for(config, node_id)
        self.clock: SyncedClock | None = None
        self.client: SyncClient | None = None
        self.home_replica: int | None = None
        self._max_skew = config.max_skew_ns
        self._hold = config.policy is SkewPolicy.HOLD
        self._lock = threading.Lock()
        self._within: bool | None = None
        self.violations = 0
        self.stamps_out_of_tolerance = 0
        if config.enabled:
            addresses = config.addresses()
            if any(port == 0 for _, port in addresses):
                raise ClockError(
                    "replica addresses are not known (base_port 0): give nodes "
                    "TimestampService.node_config()", field="replica_addresses")
            order = ReplicaRing(len(addresses), config.vnodes).order(node_id)
            self.home_replica = order[0]
            targets = [Target(addresses[i][0], addresses[i][1], replica_name(i), i)
                       for i in order]
            self.clock = SyncedClock(self.raw)
            self.client = SyncClient(
                self.clock, targets, interval_s=config.sync_interval_s,
                exchanges=config.exchanges, timeout_s=config.effective_timeout_s,
                name=f"clock-{node_id}", on_tick=self._tick,
            )
            self._now = self.clock.now_ns
        else:
            self._now = self.raw.now_ns
        _registry[node_id] = self

    def __reduce__(self) -> tuple[Any, ...]:
        return (NodeClock, (self.config, self.node_id))

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, wait_s: float | None = None) -> bool:
        """Start the sync thread (first round at once). With ``wait_s``, wait up to that long
        for the first successful sync. Returns whether the clock is synced."""
        if self.client is None:
            return False
        self.client.start()
        if wait_s:
            deadline = time.monotonic() + wait_s
            while not self.synced and time.monotonic() < deadline:
                time.sleep(0.005)
        return self.synced

    def stop(self) -> None:
        if self.client is not None:
            self.client.stop()

    def __enter__(self) -> NodeClock:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def synced(self) -> bool:
        return self.clock is not None and self.clock.synced

    # -- PhysicalClock -----------------------------------------------------------------------

    def now_ns(self) -> int:
        return self._now()

    def error_bound_ns(self) -> int:
        bound = self.clock.error_bound_ns() if self.clock is not None else 0
        within = self._check(bound)
        if not within:
            self.stamps_out_of_tolerance += 1
        return bound

    # -- tolerance and policy ----------------------------------------------------------------

    def within_tolerance(self) -> bool:
        """Synced, and the current bound is at most ``max_skew_ns``."""
        return self._check(self.clock.error_bound_ns() if self.clock is not None else 0)

    def may_accept(self) -> bool:
        """Whether the node may accept records now: always under ``flag``; under ``hold`` only
        while within tolerance. Cheap (one bound computation); call before taking a batch."""
        if not self._hold:
            return True
        return self.within_tolerance()

    def wait_accepting(self, timeout_s: float) -> bool:
        """Block up to ``timeout_s`` until ``may_accept``; returns its final value."""
        deadline = time.monotonic() + timeout_s
        while not self.may_accept():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def _check(self, bound: int) -> bool:
        clock = self.clock
        within = clock is not None and clock.synced and bound <= self._max_skew
        if within != self._within:
            with self._lock:
                if within != self._within:
                    if not within and clock is not None and clock.synced:
                        self.violations += 1
                    self._within = within
        return within

    def _tick(self) -> None:
        self.within_tolerance()

    # -- status ------------------------------------------------------------------------------

    def status(self) -> ClockStatus:
        clock, client = self.clock, self.client
        bound = clock.error_bound_ns() if clock is not None else 0
        within = self._check(bound)
        est = clock.estimate if clock is not None else None
        cur = client.current if client is not None else None
        age = None
        if client is not None and client.last_sync_boot_ns is not None:
            age = (_boot_ns() - client.last_sync_boot_ns) / 1e9
        return ClockStatus(
            node_id=self.node_id,
            sync_enabled=clock is not None,
            synced=self.synced,
            replica=cur.source if cur is not None else None,
            replica_address=f"{cur.host}:{cur.port}" if cur is not None else None,
            home_replica=self.home_replica,
            offset_ns=est.offset_ns if est is not None else None,
            error_bound_ns=bound,
            drift_ppm=est.drift_ppm if est is not None else None,
            last_sync_ns=client.last_sync_ns if client is not None else None,
            last_sync_age_s=age,
            within_tolerance=within,
            max_skew_ns=self._max_skew,
            policy=self.config.policy.value,
            accepting=(not self._hold) or within,
            violations=self.violations,
            stamps_out_of_tolerance=self.stamps_out_of_tolerance,
            syncs_ok=client.syncs_ok if client is not None else 0,
            syncs_failed=client.syncs_failed if client is not None else 0,
            failovers=client.failovers if client is not None else 0,
            steps=clock.steps if clock is not None else 0,
            history=tuple(client.history.points()) if client is not None else (),
        )


@dataclass(frozen=True, slots=True)
class NodeClockFactory:
    """Picklable ``node_id -> PhysicalClock`` for ``runtime``'s ``clock_factory``: builds and
    starts a ``NodeClock`` in the calling (node) process, waiting up to ``wait_s`` (default: two
    sync intervals) for its first sync."""

    config: ClockConfig
    wait_s: float | None = None

    def __call__(self, node_id: str) -> NodeClock:
        clock = NodeClock(self.config, node_id)
        wait = self.wait_s if self.wait_s is not None else 2 * self.config.sync_interval_s
        clock.start(wait_s=wait)
        return clock


def node_clock_statuses() -> list[ClockStatus]:
    """Status of every live ``NodeClock`` of this process (what a worker reports upward)."""
    return [c.status() for c in list(_registry.values())]
