"""The replicas' NTP servers, queried over real UDP with ntplib as an independent client."""

from __future__ import annotations

import socket
import threading
import time

import ntplib
import pytest

from streamprov.clock import ClockConfig, NtpPacket, TimestampService, query
from streamprov.clock.ntp import MODE_CLIENT
from streamprov.clock.physical import SystemClock
from streamprov.clock.server import NtpServer, ReferenceInfo
from streamprov.errors import ClockError

from .conftest import host_offset_excess_s, wait_for


def ntplib_request(address: tuple[str, int], version: int = 4) -> ntplib.NTPStats:
    """ntplib with a few retries (UDP may drop under a flood)."""
    client = ntplib.NTPClient()
    last: Exception | None = None
    for _ in range(5):
        try:
            return client.request(address[0], version=version, port=address[1], timeout=1)
        except ntplib.NTPException as exc:
            last = exc
    raise AssertionError(f"no NTP answer from {address}: {last}")


@pytest.mark.parametrize("version", [2, 3, 4])
def test_ntplib_gets_a_valid_answer(service: TimestampService, version: int) -> None:
    stats = ntplib_request(service.addresses[0], version)
    assert stats.version == version
    assert stats.mode == 4
    assert stats.stratum == 10  # replica 0 is the leader: local stratum 10, refid LOCL
    assert stats.ref_id.to_bytes(4, "big") == b"LOCL"
    assert stats.leap == 0
    assert abs(stats.offset) - stats.delay / 2 < 0.001  # same host clock
    assert 0 <= stats.delay < 0.05


def test_followers_report_their_distance_to_the_leader(service: TimestampService) -> None:
    assert wait_for(lambda: all(s.role == "follower" for s in service.status()[1:]))
    stats = ntplib_request(service.addresses[2])
    assert stats.stratum == 11
    assert ntplib.ref_id_to_text(stats.ref_id, stats.stratum) == "127.0.0.1"
    assert 0 < stats.root_dispersion < 0.01
    assert host_offset_excess_s(service.addresses[2]) < 0.001


def _server(**kw: float) -> NtpServer:
    return NtpServer("127.0.0.1", 0, SystemClock(),
                     lambda: ReferenceInfo(10, b"LOCL", time.time_ns()), **kw)  # type: ignore[arg-type]


def _bad_packets() -> dict[str, list[bytes]]:
    good = bytearray(NtpPacket(version=4, mode=MODE_CLIENT, transmit_ts=12345).encode())

    def with_first(first: int) -> bytes:
        p = bytearray(good)
        p[0] = first
        return bytes(p)

    return {
        "malformed": [b"", b"\x23", bytes(good[:47]), b"garbage!" * 3],
        "bad_version": [with_first(v << 3 | MODE_CLIENT) for v in (0, 1, 5, 7)],
        "bad_mode": [with_first(4 << 3 | m) for m in (0, 1, 2, 4, 5, 6, 7)],
    }


def test_bad_packets_are_ignored_counted_and_the_server_keeps_serving() -> None:
    server = _server()
    server.start()
    try:
        bad = _bad_packets()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)
            for packets in bad.values():
                for p in packets:
                    sock.sendto(p, server.address)
            with pytest.raises(TimeoutError):
                sock.recvfrom(1024)  # nothing was answered
        total = sum(len(v) for v in bad.values())
        assert wait_for(lambda: server.stats.received >= total)
        st = server.stats
        assert st.malformed == len(bad["malformed"])
        assert st.bad_version == len(bad["bad_version"])
        assert st.bad_mode == len(bad["bad_mode"])
        assert st.answered == 0
        assert st.ignored == total
        assert host_offset_excess_s(server.address) < 0.001
        assert wait_for(lambda: server.stats.answered >= 1)
    finally:
        server.stop()


def test_a_flood_is_rate_limited_and_others_are_still_served() -> None:
    server = _server(rate_per_s=200.0, burst=20)
    server.start()
    request = NtpPacket(version=4, mode=MODE_CLIENT, transmit_ts=1).encode()
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            while not stop.is_set():
                try:
                    s.sendto(request, server.address)
                    sent[0] += 1
                except BlockingIOError:
                    time.sleep(0.0005)

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    try:
        assert wait_for(lambda: server.stats.rate_limited > 1000, timeout_s=10)
        answers = [ntplib_request(server.address) for _ in range(3)]  # during the flood
        assert all(abs(a.offset) < 0.05 for a in answers)
    finally:
        stop.set()
        flooder.join()
        server.stop()
    st = server.stats
    assert st.rate_limited > 1000
    assert st.answered < 20 + 200 * 30 + 3  # the flooder got at most its burst + rate
    assert st.received <= sent[0] + 3


def test_a_taken_port_is_a_clock_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        cfg = ClockConfig.build(base_port=port, replicas=1)
        with pytest.raises(ClockError) as exc:
            TimestampService(cfg).start()
        assert str(port) in str(exc.value)
        assert exc.value.field == "port"


def test_query_measures_a_replica(service: TimestampService) -> None:
    ex = query(*service.addresses[0], exchanges=4)
    assert abs(ex.offset_ns) < 5_000_000
    assert ex.stratum == 10
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ClockError):
        query("127.0.0.1", port, timeout_s=0.2)
