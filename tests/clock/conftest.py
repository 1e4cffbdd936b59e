"""Fixtures for the clock tests: real UDP sockets on 127.0.0.1, short sync intervals."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from streamprov.clock import ClockConfig, TimestampService

FAST = {"base_port": 0, "sync_interval_s": 0.1, "exchanges": 4}


def wait_for(cond: Callable[[], bool], timeout_s: float = 5.0, step_s: float = 0.01) -> bool:
    """Poll ``cond`` until true or ``timeout_s``; returns its last value."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return cond()


@pytest.fixture
def service() -> Iterator[TimestampService]:
    """Three replicas on ephemeral loopback ports, syncing every 0.1 s."""
    svc = TimestampService(ClockConfig.build(replicas=3, **FAST))
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def host_offset_excess_s(address: tuple[str, int], version: int = 4, tries: int = 4) -> float:
    """How far a server provably is from this host's clock, by ntplib (an independent client):
    ``|offset| - delay / 2`` of the best of ``tries`` exchanges, floored at 0. ntplib reads its
    timestamps in Python, so on a loaded machine its delay (and offset noise) is large; only
    the part beyond half the round trip is an error of the server."""
    import ntplib

    client = ntplib.NTPClient()
    best: tuple[float, float] | None = None
    for _ in range(tries + 4):
        try:
            s = client.request(address[0], version=version, port=address[1], timeout=1)
        except ntplib.NTPException:
            continue
        if best is None or s.delay < best[1]:
            best = (float(s.offset), float(s.delay))
        tries -= 1
        if tries <= 0:
            break
    if best is None:
        raise AssertionError(f"no NTP answer from {address}")
    return max(0.0, abs(best[0]) - best[1] / 2)
