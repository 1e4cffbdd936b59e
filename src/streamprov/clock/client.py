"""NTP client side: one exchange (``query``), and the ``SyncClient`` thread that keeps a
``SyncedClock`` synchronized with an ordered list of servers.

Each round (every ``interval_s``) takes ``exchanges`` (k) exchanges with the first server of the
preference list that answers, keeps the one with the smallest round-trip delay and feeds it to
the clock. A server that does not answer is skipped for ``retry_after_s`` and the next one is
tried in the same round, so a dead server costs one ``timeout_s`` and its clients fail over
within two intervals. Between rounds the thread polls for raw-clock steps (every 50 ms).
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from streamprov.clock.history import SyncHistory
from streamprov.clock.ntp import (
    LEAP_ALARM,
    MAX_STRATUM,
    MODE_CLIENT,
    MODE_SERVER,
    Exchange,
    MalformedPacket,
    NtpPacket,
    ntp_to_ns,
    short_to_ns,
)
from streamprov.clock.physical import PhysicalClock, SystemClock
from streamprov.clock.synced import Sample, SyncedClock, _boot_ns
from streamprov.clock.timestamping import (
    ANC_BUFSIZE,
    enable_rx_timestamps,
    host_mapper,
    rx_timestamp_ns,
)
from streamprov.errors import ClockError

POLL_S = 0.05
"""How often the sync thread checks for clock steps and tolerance between rounds."""


@dataclass(frozen=True, slots=True)
class Target:
    """A server to synchronize with. ``source`` is the id samples carry (replica index, or
    ``UPSTREAM_BASE + i`` for upstream server ``i``)."""

    host: str
    port: int
    label: str
    source: int


UPSTREAM_BASE = 1_000_000


def _open_socket(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise OSError(f"cannot resolve {host}")
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.connect(addr)
    except OSError:
        sock.close()
        raise
    return sock


def exchange_once(
    sock: socket.socket,
    read_ns: Callable[[], int],
    timeout_s: float,
    version: int = 4,
    at_host_ns: Callable[[int], int] | None = None,
) -> Exchange | None:
    """One client exchange on a connected UDP socket; None on timeout or refusal.

    ``read_ns`` reads the client clock (t1, and t4 without kernel stamps); ``at_host_ns``
    maps a kernel receive stamp to the client clock (the socket must have
    ``enable_rx_timestamps``). Replies that are malformed, not server mode, not answering this
    request (origin mismatch), unsynchronized (leap 3) or from stratum 0 / > 15 are skipped.
    """
    cookie = random.getrandbits(64) or 1
    request = NtpPacket(version=version, mode=MODE_CLIENT, transmit_ts=cookie).encode()
    deadline = time.monotonic() + timeout_s
    try:
        t1 = read_ns()
        sock.send(request)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            sock.settimeout(remaining)
            data, anc, _, _ = sock.recvmsg(1024, ANC_BUFSIZE)
            t4 = read_ns()
            if at_host_ns is not None:
                kernel = rx_timestamp_ns(anc)
                if kernel is not None:
                    t4 = at_host_ns(kernel)
            try:
                reply = NtpPacket.decode(data)
            except MalformedPacket:
                continue
            if (reply.mode != MODE_SERVER or reply.origin_ts != cookie or reply.transmit_ts == 0
                    or reply.leap == LEAP_ALARM or not 1 <= reply.stratum <= MAX_STRATUM):
                continue
            return Exchange(
                t1, ntp_to_ns(reply.receive_ts, t1), ntp_to_ns(reply.transmit_ts, t1), t4,
                reply.stratum, short_to_ns(reply.root_delay), short_to_ns(reply.root_dispersion),
                reply.ref_id,
            )
    except (TimeoutError, ConnectionRefusedError, ConnectionResetError):
        return None
    except OSError:
        return None


def query(host: str, port: int, *, clock: PhysicalClock | None = None,
          timeout_s: float = 1.0, exchanges: int = 1) -> Exchange:
    """Best (smallest delay) of ``exchanges`` exchanges with one NTP server, measured with
    ``clock`` (the system clock by default). Raises ``ClockError`` when it does not answer."""
    clk = clock if clock is not None else SystemClock()
    try:
        sock = _open_socket(host, port)
    except OSError as exc:
        raise ClockError(f"cannot reach NTP server {host}:{port}: {exc}") from exc
    with sock:
        mapper = host_mapper(clk) if enable_rx_timestamps(sock) else None
        got = [e for e in (exchange_once(sock, clk.now_ns, timeout_s, at_host_ns=mapper)
                           for _ in range(exchanges)) if e]
    if not got:
        raise ClockError(f"NTP server {host}:{port} did not answer within {timeout_s} s")
    return min(got, key=lambda e: e.delay_ns)


class SyncClient:
    """Keeps ``clock`` synchronized with the first answering server of ``targets``.

    ``start`` runs rounds on a daemon thread (first round at once); ``sync_now`` runs one round
    on the calling thread (tests). Never touches the system clock. ``on_tick`` is called from
    the thread after every round and every poll (for tolerance bookkeeping). ``history``
    keeps each round's time, offset and widest error bound (``SyncHistory``), from the first
    successful sync on.
    """

    def __init__(
        self,
        clock: SyncedClock,
        targets: Sequence[Target],
        *,
        interval_s: float = 1.0,
        exchanges: int = 8,
        timeout_s: float = 0.25,
        retry_after_s: float | None = None,
        name: str = "sync",
        on_tick: Callable[[], None] | None = None,
    ) -> None:
        if exchanges < 1:
            raise ValueError("exchanges must be >= 1")
        self.clock = clock
        self.targets = tuple(targets)
        self.interval_s = interval_s
        self.exchanges = exchanges
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s if retry_after_s is not None else 3 * interval_s
        self.name = name
        self.on_tick = on_tick
        self.current: Target | None = None
        self.syncs_ok = 0
        self.syncs_failed = 0
        self.failovers = 0
        self.consecutive_failures = 0
        self.last_sync_ns: int | None = None
        """Corrected time of the latest successful sync (Unix ns)."""
        self.last_sync_boot_ns: int | None = None
        self.history = SyncHistory()
        self._down_until: dict[int, int] = {}
        self._sockets: dict[int, socket.socket] = {}
        self._kernel_stamps: dict[int, bool] = {}
        self._host_map = host_mapper(clock.raw)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        clock.on_step = self._wake.set

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"streamprov-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout_s)
        self._thread = None
        for s in self._sockets.values():
            with contextlib.suppress(OSError):
                s.close()
        self._sockets.clear()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wake(self) -> None:
        """Run a round now (e.g. after a clock step)."""
        self._wake.set()

    # -- one round ---------------------------------------------------------------------------

    def sync_now(self) -> bool:
        """One round: returns True when a server answered and the clock was updated."""
        now = _boot_ns()
        # the bound only grows between syncs: read now, it is the widest since the last round
        widest = self.clock.error_bound_ns()
        ready = [t for t in self.targets if self._down_until.get(t.source, 0) <= now]
        for target in ready or list(self.targets):
            if self._stop.is_set():
                return False
            sample = self._measure(target)
            if sample is None:
                self._down_until[target.source] = _boot_ns() + int(self.retry_after_s * 1e9)
                continue
            self._down_until.pop(target.source, None)
            est = self.clock.update(sample)
            self.history.add(self.clock.now_ns(), est.offset_ns,
                             max(widest, self.clock.error_bound_ns()))
            if self.current is not None and self.current.source != target.source:
                self.failovers += 1
            self.current = target
            self.syncs_ok += 1
            self.consecutive_failures = 0
            self.last_sync_ns = self.clock.now_ns()
            self.last_sync_boot_ns = _boot_ns()
            return True
        self.current = None
        self.syncs_failed += 1
        self.consecutive_failures += 1
        known = self.clock.estimate
        if known is not None:  # an outage: the offset as extrapolated, the bound as it grows
            raw = self.clock.raw.now_ns()
            self.history.add(self.clock.correct(raw), known.offset_at(raw),
                             max(widest, self.clock.error_bound_ns()))
        return False

    def _socket(self, target: Target) -> socket.socket | None:
        sock = self._sockets.get(target.source)
        if sock is None:
            try:
                sock = _open_socket(target.host, target.port)
            except OSError:
                return None
            self._sockets[target.source] = sock
            self._kernel_stamps[target.source] = enable_rx_timestamps(sock)
        return sock

    def _measure(self, target: Target) -> Sample | None:
        sock = self._socket(target)
        if sock is None:
            return None
        read = self.clock.raw.now_ns
        mapper = self._host_map if self._kernel_stamps.get(target.source) else None
        best: Exchange | None = None
        for _ in range(self.exchanges):
            ex = exchange_once(sock, read, self.timeout_s, at_host_ns=mapper)
            if ex is None:
                if best is None:
                    return None  # the first exchange got no answer: fail over now
                break
            if best is None or ex.delay_ns < best.delay_ns:
                best = ex
        assert best is not None
        return Sample(best.mid_ns, best.offset_ns, best.delay_ns, best.half_width_ns,
                      target.source, best.stratum, best.root_delay_ns + best.delay_ns)

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        interval_ns = int(self.interval_s * 1e9)
        next_at = _boot_ns()
        while not self._stop.is_set():
            now = _boot_ns()
            if now >= next_at:
                self._round()
                next_at += interval_ns
                now = _boot_ns()
                if next_at <= now:
                    next_at = now + interval_ns
                continue
            if self._wake.wait(min((next_at - now) / 1e9, POLL_S)):
                self._wake.clear()
                if self._stop.is_set():
                    break
                self.clock.check_step()
                self._round()
            elif self.clock.check_step():
                self._round()
            else:
                self._tick()

    def _round(self) -> None:
        try:
            self.sync_now()
        except Exception:  # pragma: no cover - never let the daemon die silently
            self.syncs_failed += 1
        self._tick()

    def _tick(self) -> None:
        cb = self.on_tick
        if cb is not None:
            cb()
