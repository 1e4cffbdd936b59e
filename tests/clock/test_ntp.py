from __future__ import annotations

import random

import pytest

from streamprov.clock.ntp import (
    MODE_CLIENT,
    MODE_SERVER,
    NTP_UNIX_DELTA_S,
    Exchange,
    MalformedPacket,
    NtpPacket,
    ns_to_ntp,
    ns_to_short,
    ntp_to_ns,
    short_to_ns,
)

ERA_NS = (1 << 32) * 1_000_000_000


def test_unix_epoch_is_ntp_second_2208988800() -> None:
    assert ns_to_ntp(0) == NTP_UNIX_DELTA_S << 32
    assert ntp_to_ns(NTP_UNIX_DELTA_S << 32, pivot_ns=0) == 0
    assert ns_to_ntp(500_000_000) & 0xFFFFFFFF == 1 << 31


def test_round_trip_is_within_one_nanosecond() -> None:
    rng = random.Random(3)
    for _ in range(2000):
        ns = rng.randrange(0, 4_000_000_000 * 1_000_000_000)
        back = ntp_to_ns(ns_to_ntp(ns), pivot_ns=ns + rng.randrange(-10**18, 10**18))
        assert abs(back - ns) <= 1


def test_era_rollover_2036_uses_the_era_nearest_the_pivot() -> None:
    rollover_ns = ERA_NS - NTP_UNIX_DELTA_S * 1_000_000_000  # 2036-02-07T06:28:16Z
    before, after = rollover_ns - 1_000_000_000, rollover_ns + 1_000_000_000
    assert ns_to_ntp(after) >> 32 == 1  # era 1, second 1
    assert ntp_to_ns(ns_to_ntp(after), pivot_ns=before) == after
    assert ntp_to_ns(ns_to_ntp(before), pivot_ns=after) == before


def test_short_format_rounds_up_and_saturates() -> None:
    assert ns_to_short(0) == 0
    assert ns_to_short(-5) == 0
    assert ns_to_short(1) == 1  # never rounds an error bound down to zero
    assert short_to_ns(ns_to_short(1_000_000_000)) == 1_000_000_000
    assert short_to_ns(ns_to_short(123_456)) >= 123_456
    assert ns_to_short(10**15) == 0xFFFFFFFF


def test_packet_round_trip() -> None:
    p = NtpPacket(leap=0, version=4, mode=MODE_SERVER, stratum=2, poll=3, precision=-20,
                  root_delay=77, root_dispersion=99, ref_id=b"LOCL", ref_ts=1, origin_ts=2,
                  receive_ts=3, transmit_ts=4)
    data = p.encode()
    assert len(data) == 48
    assert NtpPacket.decode(data) == p
    assert NtpPacket.decode(data + b"\0" * 20) == p  # extension fields / MAC are ignored


@pytest.mark.parametrize("version", [0, 1, 5, 6, 7])
def test_unsupported_versions_are_malformed(version: int) -> None:
    data = bytearray(NtpPacket(mode=MODE_CLIENT).encode())
    data[0] = (version << 3) | MODE_CLIENT
    with pytest.raises(MalformedPacket):
        NtpPacket.decode(bytes(data))


@pytest.mark.parametrize("size", [0, 1, 47])
def test_truncated_packets_are_malformed(size: int) -> None:
    with pytest.raises(MalformedPacket):
        NtpPacket.decode(NtpPacket().encode()[:size])


def test_exchange_arithmetic() -> None:
    # Server 1 ms ahead; 100 us each way; server holds 20 us.
    t1 = 10_000_000
    ex = Exchange(t1, t1 + 1_100_000, t1 + 1_120_000, t1 + 220_000, 1, 0, 0, b"LOCL")
    assert ex.offset_ns == 1_000_000
    assert ex.delay_ns == 200_000
    assert ex.mid_ns == t1 + 110_000
    assert ex.half_width_ns == 100_000
    far = Exchange(t1, t1 + 1, t1 + 2, t1 + 10, 2, 40_000, 5_000, b"\x7f\0\0\1")
    assert far.half_width_ns == (9 + 40_000) // 2 + 5_000
