"""The NTPv4 packet (RFC 5905, section 7.3) and the arithmetic of one exchange.

Only the 48-byte header is interpreted; extension fields and a MAC after it are tolerated and
ignored. Timestamps are 64-bit NTP (seconds since 1900 . 2^-32 fraction); conversion to and from
Unix nanoseconds picks the NTP era nearest to a pivot, so it keeps working past 2036.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from streamprov.errors import ClockError

NTP_UNIX_DELTA_S = 2_208_988_800
"""Seconds from the NTP epoch (1900-01-01) to the Unix epoch (1970-01-01)."""
_ERA_NS = (1 << 32) * 1_000_000_000
_NS = 1_000_000_000

HEADER = struct.Struct("!BBbbII4sQQQQ")
PACKET_LEN = HEADER.size  # 48

MODE_SYMMETRIC_ACTIVE = 1
MODE_CLIENT = 3
MODE_SERVER = 4
MODE_CONTROL = 6
MODE_PRIVATE = 7

LEAP_NONE = 0
LEAP_ALARM = 3
"""Leap indicator 3: the server's clock is not synchronized."""

SUPPORTED_VERSIONS = frozenset({2, 3, 4})
"""Versions answered. v2-v4 share this header; RFC 5905 servers answer older clients with
their own version number. v0/v1 and v5-v7 are rejected."""
MAX_STRATUM = 15


class MalformedPacket(ClockError):
    """A datagram that is not a usable NTP packet (too short, bad version or mode)."""


def ns_to_ntp(unix_ns: int) -> int:
    """Unix nanoseconds -> 64-bit NTP timestamp (rounded to the nearest 2^-32 s)."""
    total = unix_ns + NTP_UNIX_DELTA_S * _NS
    seconds, rem = divmod(total, _NS)
    frac = ((rem << 32) + _NS // 2) // _NS
    if frac >> 32:
        seconds, frac = seconds + 1, 0
    return ((seconds & 0xFFFFFFFF) << 32) | frac


def ntp_to_ns(ntp: int, pivot_ns: int) -> int:
    """64-bit NTP timestamp -> Unix nanoseconds, in the NTP era nearest to ``pivot_ns``."""
    seconds, frac = ntp >> 32, ntp & 0xFFFFFFFF
    in_era = seconds * _NS + ((frac * _NS + (1 << 31)) >> 32)
    base = pivot_ns + NTP_UNIX_DELTA_S * _NS
    era = (base - in_era + _ERA_NS // 2) // _ERA_NS
    return in_era + era * _ERA_NS - NTP_UNIX_DELTA_S * _NS


def ns_to_short(ns: int) -> int:
    """Non-negative nanoseconds -> NTP short format (16.16 s), rounded up, saturating."""
    if ns <= 0:
        return 0
    return min(0xFFFFFFFF, -((-ns << 16) // _NS))


def short_to_ns(short: int) -> int:
    return (short * _NS) >> 16


def refid_ipv4(host: str) -> bytes:
    """Reference id of an IPv4 source (its four address bytes); others hash to four bytes."""
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts):
        return bytes(int(p) for p in parts)
    return zlib.crc32(host.encode()).to_bytes(4, "big")


@dataclass(frozen=True, slots=True)
class NtpPacket:
    """The NTP header. Timestamps are raw 64-bit NTP values; 0 means "not set"."""

    leap: int = LEAP_NONE
    version: int = 4
    mode: int = MODE_CLIENT
    stratum: int = 0
    poll: int = 0
    precision: int = -20
    root_delay: int = 0
    """NTP short format (16.16 seconds)."""
    root_dispersion: int = 0
    """NTP short format (16.16 seconds)."""
    ref_id: bytes = b"\0\0\0\0"
    ref_ts: int = 0
    origin_ts: int = 0
    receive_ts: int = 0
    transmit_ts: int = 0

    def encode(self) -> bytes:
        return HEADER.pack(
            (self.leap & 3) << 6 | (self.version & 7) << 3 | (self.mode & 7),
            self.stratum & 0xFF, self.poll, self.precision,
            self.root_delay & 0xFFFFFFFF, self.root_dispersion & 0xFFFFFFFF,
            self.ref_id[:4].ljust(4, b"\0"),
            self.ref_ts, self.origin_ts, self.receive_ts, self.transmit_ts,
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> NtpPacket:
        """Parse a datagram; raises ``MalformedPacket`` when shorter than the header or its
        version is unsupported. The mode is not checked here (callers know which they want)."""
        if len(data) < PACKET_LEN:
            raise MalformedPacket(f"NTP packet too short: {len(data)} bytes")
        (first, stratum, poll, precision, root_delay, root_disp, ref_id,
         ref_ts, origin, receive, transmit) = HEADER.unpack_from(data)
        version = (first >> 3) & 7
        if version not in SUPPORTED_VERSIONS:
            raise MalformedPacket(f"unsupported NTP version {version}")
        return cls(first >> 6, version, first & 7, stratum, poll, precision, root_delay,
                   root_disp, ref_id, ref_ts, origin, receive, transmit)


@dataclass(frozen=True, slots=True)
class Exchange:
    """One client/server exchange, all times in ns on the respective clocks.

    ``t1`` client send, ``t2`` server receive, ``t3`` server send, ``t4`` client receive.
    ``offset_ns`` is server minus client (RFC 5905 theta: positive when the client is behind);
    the true offset lies within ``offset_ns +/- delay_ns / 2`` if the server is exact.
    """

    t1_ns: int
    t2_ns: int
    t3_ns: int
    t4_ns: int
    stratum: int
    root_delay_ns: int
    root_dispersion_ns: int
    ref_id: bytes

    @property
    def offset_ns(self) -> int:
        return ((self.t2_ns - self.t1_ns) + (self.t3_ns - self.t4_ns)) // 2

    @property
    def delay_ns(self) -> int:
        return max(0, (self.t4_ns - self.t1_ns) - (self.t3_ns - self.t2_ns))

    @property
    def mid_ns(self) -> int:
        """Client-clock time the offset refers to (the midpoint of the exchange)."""
        return (self.t1_ns + self.t4_ns) // 2

    @property
    def half_width_ns(self) -> int:
        """Bound on |measured - true offset|: half the round trip plus the server's root
        distance (its own bound against the reference)."""
        return (self.delay_ns + self.root_delay_ns) // 2 + self.root_dispersion_ns
