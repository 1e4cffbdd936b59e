"""Kernel receive timestamps (``SO_TIMESTAMPNS``) for NTP sockets.

A datagram's arrival time read in Python includes the wait for the thread to wake up and take
the GIL - tens of microseconds on a busy process, and different on the two sides of an
exchange, which is exactly the asymmetry NTP cannot see. The kernel stamps every datagram when
it arrives; with that stamp for t2 (server) and t4 (client) only the short send paths remain.

Kernel stamps are host-clock (``CLOCK_REALTIME``) nanoseconds. A clock that can say what it
would have read at a given host time (``at_host_ns``: ``SystemClock``, ``SimulatedClock``,
``SyncedClock`` over either) uses them; any other clock falls back to reading itself in Python.
"""

from __future__ import annotations

import socket
import struct
import sys
from collections.abc import Callable
from typing import Any

from streamprov.clock.physical import PhysicalClock

SO_TIMESTAMPNS: int | None = getattr(
    socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
ANC_BUFSIZE = socket.CMSG_SPACE(16) if hasattr(socket, "CMSG_SPACE") else 0
_TIMESPEC = struct.Struct("@qq")


def enable_rx_timestamps(sock: socket.socket) -> bool:
    """Ask the kernel to stamp received datagrams; False where unsupported."""
    if SO_TIMESTAMPNS is None or not ANC_BUFSIZE:
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    except OSError:
        return False
    return True


def rx_timestamp_ns(ancdata: list[tuple[int, int, bytes]]) -> int | None:
    """The kernel receive stamp (host ns) in a ``recvmsg`` ancillary list, if present."""
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = _TIMESPEC.unpack_from(data)
            return int(sec) * 1_000_000_000 + int(nsec)
    return None


def host_mapper(clock: PhysicalClock) -> Callable[[int], int] | None:
    """``clock.at_host_ns`` when the clock can map host time to its own reading, else None."""
    fn: Any = getattr(clock, "at_host_ns", None)
    if not callable(fn):
        return None
    inner = getattr(clock, "raw", None)  # a corrected clock maps only if its raw clock does
    if inner is not None and host_mapper(inner) is None:
        return None
    return fn  # type: ignore[no-any-return]
