"""The timestamp service: N replicas, each an NTPv4 server with its own disciplined clock.

Reference (replicated clocks): a replica synchronizes with the first that answers of

1. the upstream NTP servers of the configuration, in order, then
2. the replicas with a lower index, in order (0 first).

So with no upstream, replica 0 is the leader and defines the service's time, the others follow
it, and when it stops answering the lowest-index live replica leads (its clock keeps running from
where it was; its bound relative to the old leader grows with its drift allowance). With upstream
servers every replica disciplines to upstream directly and the leader chain is the fallback.
A replica that has never synchronized serves its own clock at stratum 10 with reference id
``LOCL`` (like chrony's ``local stratum 10``); otherwise its stratum is its source's plus one and
its root delay / dispersion carry its distance to the reference, so clients' bounds include it.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from streamprov.clock.client import UPSTREAM_BASE, SyncClient, Target, query
from streamprov.clock.config import ClockConfig, replica_name
from streamprov.clock.ntp import MAX_STRATUM, refid_ipv4
from streamprov.clock.physical import PhysicalClock, SystemClock
from streamprov.clock.server import NtpServer, ReferenceInfo
from streamprov.clock.simulated import SimulatedClock
from streamprov.clock.synced import SyncedClock
from streamprov.errors import ClockError

LOCAL_STRATUM = 10


def raw_clock_for(config: ClockConfig, owner: str) -> PhysicalClock:
    """The physical clock of a node or replica: simulated when the config says so."""
    sim = config.simulation_for(owner)
    if sim is None:
        return SystemClock()
    return SimulatedClock(sim.offset_ns, sim.drift_ppm, sim.jitter_ns, seed=sim.seed)


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """One replica as seen from the service process."""

    index: int
    address: str
    running: bool
    role: str
    """``leader``: serves its own clock (it has no source, or none answered its latest round:
    then it holds over with a growing bound); ``follower``: synchronized with a lower replica;
    ``upstream``: synchronized with an upstream NTP server."""
    source: str | None
    stratum: int
    offset_ns: int | None
    error_bound_ns: int
    drift_ppm: float | None
    last_sync_ns: int | None
    syncs_ok: int
    syncs_failed: int
    server: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "address": self.address, "running": self.running,
            "role": self.role, "source": self.source, "stratum": self.stratum,
            "offsetNs": self.offset_ns, "errorNs": self.error_bound_ns,
            "driftPpm": self.drift_ppm, "lastSyncNs": self.last_sync_ns,
            "syncsOk": self.syncs_ok, "syncsFailed": self.syncs_failed, "server": self.server,
        }


class Replica:
    """One replica: a disciplined clock, its NTP server, and its sync client (if any source)."""

    def __init__(self, index: int, config: ClockConfig, host: str, port: int,
                 raw: PhysicalClock) -> None:
        self.index = index
        self.config = config
        self.clock = SyncedClock(raw)
        self.client: SyncClient | None = None
        self.server = NtpServer(
            host, port, self.clock, self.reference,
            rate_per_s=self.config.rate_limit_per_s, burst=self.config.rate_burst,
            poll=max(-6, min(17, round(math.log2(self.config.sync_interval_s)))),
            name=replica_name(self.index),
        )

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def bind(self) -> None:
        """Start serving (binds the port; the first start fixes an ephemeral port for good)."""
        if not self.server.running:
            self.server.start()

    def follow(self, targets: list[Target]) -> None:
        """Start the sync client for these sources (no-op without sources)."""
        if self.client is not None:
            self.client.stop()
            self.client = None
        if not targets:
            return
        cfg = self.config
        self.client = SyncClient(
            self.clock, targets, interval_s=cfg.sync_interval_s, exchanges=cfg.exchanges,
            timeout_s=cfg.effective_timeout_s, name=f"{replica_name(self.index)}-sync",
        )
        self.client.start()

    def stop(self) -> None:
        if self.client is not None:
            self.client.stop()
        self.server.stop()

    @property
    def running(self) -> bool:
        return self.server.running

    def reference(self) -> ReferenceInfo:
        clock = self.clock
        est = clock.estimate
        client = self.client
        if not clock.synced or est is None:
            return ReferenceInfo(LOCAL_STRATUM, b"LOCL", time.time_ns())
        bound = clock.error_bound_ns()
        source = client.current if client is not None else None
        ref_id = refid_ipv4(source.host) if source is not None else refid_ipv4("0.0.0.0")
        last = client.last_sync_ns if client is not None and client.last_sync_ns else 0
        return ReferenceInfo(
            min(MAX_STRATUM, est.stratum + 1), ref_id, last,
            est.root_delay_ns, max(0, bound - est.root_delay_ns // 2),
        )

    def status(self) -> ReplicaStatus:
        clock, client = self.clock, self.client
        est = clock.estimate
        current = client.current if client is not None else None
        if current is None:
            role, source = "leader", None
        elif current.source >= UPSTREAM_BASE:
            role, source = "upstream", current.label
        else:
            role, source = "follower", current.label
        ref = self.reference()
        host, port = self.address
        return ReplicaStatus(
            self.index, f"{host}:{port}", self.running, role, source, ref.stratum,
            est.offset_ns if est is not None else None, clock.error_bound_ns(),
            est.drift_ppm if est is not None else None,
            client.last_sync_ns if client is not None else None,
            client.syncs_ok if client is not None else 0,
            client.syncs_failed if client is not None else 0,
            self.server.stats.to_json(),
        )


class TimestampService:
    """N replicas on ``config.addresses()`` (``host:P..P+N-1``; port 0 = ephemeral).

    ``start`` binds every replica (``ClockError`` naming the port when one is taken), then
    starts their discipline threads; it returns at once, everything runs on daemon threads.
    ``serve_forever`` blocks (for ``streamprov clock serve``). ``node_config`` is the config to
    hand to nodes (with the bound addresses). ``stop_replica``/``start_replica`` take one
    replica down and back on the same port (fault tests, demos).
    """

    def __init__(self, config: ClockConfig,
                 clocks: Mapping[int, PhysicalClock] | None = None) -> None:
        self.config = config
        given = clocks or {}
        self.replicas: tuple[Replica, ...] = tuple(
            Replica(i, config, host, port,
                    given.get(i) or raw_clock_for(config, replica_name(i)))
            for i, (host, port) in enumerate(config.addresses())
        )
        self._started = False
        self._stopped = threading.Event()

    def __enter__(self) -> TimestampService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def addresses(self) -> tuple[tuple[str, int], ...]:
        return tuple(r.address for r in self.replicas)

    def node_config(self) -> ClockConfig:
        """``config`` with the replicas' bound addresses (what node processes need)."""
        return self.config.with_addresses(self.addresses)

    def start(self) -> None:
        if self._started:
            return
        try:
            for r in self.replicas:
                r.bind()
        except ClockError:
            for r in self.replicas:
                r.stop()
            raise
        self._started = True
        self._stopped.clear()
        for r in self.replicas:
            r.follow(self._sources(r.index))

    def stop(self) -> None:
        for r in self.replicas:
            r.stop()
        self._started = False
        self._stopped.set()

    def serve_forever(self) -> None:
        """Start (if needed) and block until ``stop`` is called from another thread or
        KeyboardInterrupt."""
        self.start()
        try:
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def stop_replica(self, index: int) -> None:
        """Take replica ``index`` down: it stops answering and stops syncing."""
        self.replicas[index].stop()

    def start_replica(self, index: int) -> None:
        """Bring replica ``index`` back on its port."""
        r = self.replicas[index]
        r.bind()
        r.follow(self._sources(index))

    def status(self) -> tuple[ReplicaStatus, ...]:
        return tuple(r.status() for r in self.replicas)

    def _sources(self, index: int) -> list[Target]:
        targets = [
            Target(h, p, f"upstream {h}:{p}", UPSTREAM_BASE + i)
            for i, (h, p) in enumerate(self.config.upstream_addresses())
        ]
        for j in range(index):
            h, p = self.replicas[j].address
            targets.append(Target(h, p, replica_name(j), j))
        return targets


@dataclass(frozen=True, slots=True)
class ReplicaProbe:
    """One replica as seen by an NTP client on this host (``streamprov clock status``)."""

    index: int
    address: str
    reachable: bool
    stratum: int | None = None
    offset_ns: int | None = None
    """Replica minus this host's clock."""
    delay_ns: int | None = None
    root_distance_ns: int | None = None
    """The replica's own bound against the service reference (root delay / 2 + dispersion)."""
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index, "address": self.address, "reachable": self.reachable,
            "stratum": self.stratum, "offsetNs": self.offset_ns, "delayNs": self.delay_ns,
            "rootDistanceNs": self.root_distance_ns, "error": self.error,
        }


def probe_replicas(config: ClockConfig, *, timeout_s: float = 0.5,
                   exchanges: int = 4) -> tuple[ReplicaProbe, ...]:
    """Query every replica of ``config`` once (best of ``exchanges``) from this process."""
    out = []
    for i, (host, port) in enumerate(config.addresses()):
        label = f"{host}:{port}"
        try:
            ex = query(host, port, timeout_s=timeout_s, exchanges=exchanges)
        except ClockError as exc:
            out.append(ReplicaProbe(i, label, False, error=exc.message))
            continue
        out.append(ReplicaProbe(i, label, True, ex.stratum, ex.offset_ns, ex.delay_ns,
                                ex.root_delay_ns // 2 + ex.root_dispersion_ns))
    return tuple(out)


# -- the service in its own process ------------------------------------------------------------


def _service_main(config: ClockConfig, conn: Any) -> None:
    service = TimestampService(config)
    try:
        service.start()
    except ClockError as exc:
        conn.send(("error", exc.message, exc.field))
        return
    conn.send(("ok", service.addresses))
    try:
        while True:
            if not conn.poll(0.5):
                continue
            msg = conn.recv()
            if msg == "status":
                conn.send(service.status())
            elif msg == "stop":
                break
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        service.stop()
        with contextlib.suppress(OSError):
            conn.send("stopped")


class ServiceProcess:
    """A ``TimestampService`` in its own OS process (spawned), so its replicas do not share a
    GIL with the caller. ``start`` returns once every replica is bound."""

    def __init__(self, config: ClockConfig) -> None:
        self.config = config
        self.addresses: tuple[tuple[str, int], ...] = ()
        self._proc: Any = None
        self._conn: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> tuple[tuple[str, int], ...]:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(target=_service_main, args=(self.config, child),
                                 name="streamprov-clock-service", daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        try:
            if not parent.poll(timeout_s):
                raise EOFError
            reply = parent.recv()
        except (EOFError, OSError):
            self.stop()
            raise ClockError(f"timestamp service process did not start within {timeout_s} s")\
                from None
        if reply[0] != "ok":
            self.stop()
            raise ClockError(reply[1], field=reply[2])
        self.addresses = tuple(reply[1])
        return self.addresses

    def node_config(self) -> ClockConfig:
        return self.config.with_addresses(self.addresses)

    def status(self, timeout_s: float = 5.0) -> tuple[ReplicaStatus, ...]:
        with self._lock:
            if self._conn is None:
                raise ClockError("timestamp service process is not running")
            self._conn.send("status")
            if not self._conn.poll(timeout_s):
                raise ClockError("timestamp service process did not answer")
            result: tuple[ReplicaStatus, ...] = self._conn.recv()
            return result

    def stop(self, timeout_s: float = 10.0) -> None:
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError, EOFError, BrokenPipeError):
                    self._conn.send("stop")
                    if self._conn.poll(timeout_s):
                        self._conn.recv()
                self._conn.close()
                self._conn = None
        if self._proc is not None:
            self._proc.join(timeout_s)
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(timeout_s)
            self._proc = None
