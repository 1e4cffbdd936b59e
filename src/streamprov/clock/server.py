"""An NTPv4 server (RFC 5905 server mode) over UDP, serving one replica's clock.

Answers client-mode requests (versions 2-4, replying with the request's version). Everything
else is dropped and counted, never answered: datagrams shorter than the 48-byte header,
unsupported versions, other modes (symmetric, broadcast, control/mode 6, private/mode 7 -
the classic amplification vectors), and requests beyond a per-client token bucket (a flood).
One thread per server; the receive loop does no allocation beyond the reply.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from streamprov.clock.ntp import (
    HEADER,
    LEAP_NONE,
    MODE_CLIENT,
    MODE_SERVER,
    PACKET_LEN,
    SUPPORTED_VERSIONS,
    ns_to_ntp,
    ns_to_short,
)
from streamprov.clock.physical import PhysicalClock
from streamprov.clock.timestamping import (
    ANC_BUFSIZE,
    enable_rx_timestamps,
    host_mapper,
    rx_timestamp_ns,
)
from streamprov.errors import ClockError

_TRANSMIT = struct.Struct("!Q")
_MAX_CLIENTS = 8192


@dataclass(frozen=True, slots=True)
class ReferenceInfo:
    """What a server says about its own synchronization, copied into every reply."""

    stratum: int
    ref_id: bytes
    ref_ns: int
    """When the clock was last set (Unix ns; 0 = never)."""
    root_delay_ns: int = 0
    root_dispersion_ns: int = 0
    leap: int = LEAP_NONE


@dataclass(slots=True)
class ServerStats:
    """Counters of one server. ``ignored`` = malformed + bad_version + bad_mode + rate_limited."""

    received: int = 0
    answered: int = 0
    malformed: int = 0
    bad_version: int = 0
    bad_mode: int = 0
    rate_limited: int = 0
    send_errors: int = 0

    @property
    def ignored(self) -> int:
        return self.malformed + self.bad_version + self.bad_mode + self.rate_limited

    def to_json(self) -> dict[str, int]:
        out = asdict(self)
        out["ignored"] = self.ignored
        return out


class NtpServer:
    """Serves ``clock`` over NTP on ``host:port`` (port 0: ephemeral; see ``address``).

    ``reference`` is called per reply for stratum, reference id and root distance. ``start``
    binds synchronously (raises ``ClockError`` if the port is taken) and serves on a daemon
    thread; ``stop`` returns within ~0.1 s.
    """

    def __init__(
        self,
        host: str,
        port: int,
        clock: PhysicalClock,
        reference: Callable[[], ReferenceInfo],
        *,
        rate_per_s: float = 256.0,
        burst: int = 64,
        poll: int = 0,
        precision: int = -20,
        name: str = "ntp",
    ) -> None:
        self.host = host
        self.port = port
        self.clock = clock
        self.reference = reference
        self.rate_per_s = rate_per_s
        self.burst = float(burst)
        self.poll = poll
        self.precision = precision
        self.name = name
        self.stats = ServerStats()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._buckets: dict[Any, tuple[float, float]] = {}
        self.address: tuple[str, int] = (host, port)
        self._host_map: Callable[[int], int] | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
            family, kind, proto, _, addr = infos[0]
            sock = socket.socket(family, kind, proto)
        except OSError as exc:
            raise ClockError(f"cannot open NTP socket on {self.host}:{self.port}: {exc}") \
                from exc
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise ClockError(
                f"cannot bind NTP server to {self.host}:{self.port}: {exc.strerror or exc}",
                field="port",
            ) from exc
        sock.settimeout(0.1)
        self._host_map = host_mapper(self.clock) if enable_rx_timestamps(sock) else None
        self._sock = sock
        self.port = sock.getsockname()[1]  # a restart binds the same port again
        self.address = (self.host, self.port)
        self._stop.clear()
        self._thread = threading.Thread(target=self._serve, name=f"streamprov-{self.name}",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _allow(self, client: Any) -> bool:
        now = time.monotonic()
        tokens, last = self._buckets.get(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate_per_s)
        if tokens < 1.0:
            self._buckets[client] = (tokens, now)
            return False
        if len(self._buckets) >= _MAX_CLIENTS and client not in self._buckets:
            self._buckets.clear()
        self._buckets[client] = (tokens - 1.0, now)
        return True

    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        buf = bytearray(2048)
        bufs = [buf]
        now_ns = self.clock.now_ns
        host_map = self._host_map
        stats = self.stats
        while not self._stop.is_set():
            try:
                n, anc, _, client = sock.recvmsg_into(bufs, ANC_BUFSIZE)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue
            t2 = now_ns()
            if host_map is not None:
                kernel = rx_timestamp_ns(anc)
                if kernel is not None:
                    t2 = host_map(kernel)
            stats.received += 1
            if n < PACKET_LEN:
                stats.malformed += 1
                continue
            first = buf[0]
            version, mode = (first >> 3) & 7, first & 7
            if version not in SUPPORTED_VERSIONS:
                stats.bad_version += 1
                continue
            if mode != MODE_CLIENT:
                stats.bad_mode += 1
                continue
            if not self._allow(client):
                stats.rate_limited += 1
                continue
            ref = self.reference()
            reply = bytearray(HEADER.pack(
                (ref.leap & 3) << 6 | version << 3 | MODE_SERVER,
                ref.stratum, self.poll, self.precision,
                ns_to_short(ref.root_delay_ns), ns_to_short(ref.root_dispersion_ns),
                ref.ref_id, ns_to_ntp(ref.ref_ns) if ref.ref_ns else 0,
                int.from_bytes(buf[40:48], "big"), ns_to_ntp(t2), 0,
            ))
            _TRANSMIT.pack_into(reply, 40, ns_to_ntp(now_ns()))
            try:
                sock.sendto(reply, client)
                stats.answered += 1
            except OSError:
                stats.send_errors += 1
