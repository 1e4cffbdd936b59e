"""Replicas disciplined by a real upstream NTP server: chronyd on a loopback port.

chronyd runs with ``-x`` (never touches the system clock) and ``local stratum 8``, so it serves
the host clock - the truth here. Skipped when chronyd is not installed, except under CI=true
(where ``.ci/run`` installs the ``chrony`` package), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import ntplib
import pytest

from streamprov.clock import ClockConfig, TimestampService, query
from streamprov.errors import ClockError

from .conftest import host_offset_excess_s, wait_for


def _chronyd() -> str | None:
    return shutil.which("chronyd") or next(
        (p for p in ("/usr/sbin/chronyd", "/sbin/chronyd") if os.path.exists(p)), None)


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def chrony(tmp_path: Path) -> Iterator[tuple[str, int]]:
    exe = _chronyd()
    if exe is None:
        message = "chronyd is not installed (apt-get install chrony)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + "; CI must install it")
        pytest.skip(message)
    tmp_path.chmod(0o777)  # chronyd may drop privileges to its own user
    port = _free_udp_port()
    conf = tmp_path / "chrony.conf"
    conf.write_text(
        f"port {port}\nbindaddress 127.0.0.1\nallow 127.0.0.1\nlocal stratum 8\n"
        f"cmdport 0\npidfile {tmp_path}/chronyd.pid\n"
    )
    cmd = [exe, "-x", "-d", "-f", str(conf)]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd += ["-u", "root"]
    log = (tmp_path / "chronyd.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        def answers() -> bool:
            try:
                query("127.0.0.1", port, timeout_s=0.2)
            except ClockError:
                return False
            return True

        if not wait_for(answers, timeout_s=15, step_s=0.1):
            log.flush()
            pytest.fail("chronyd did not answer: " + (tmp_path / "chronyd.log").read_text())
        yield ("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait()
        log.close()


def test_our_client_reads_chrony(chrony: tuple[str, int]) -> None:
    ex = query(*chrony, exchanges=4)
    assert ex.stratum == 8
    assert abs(ex.offset_ns) < 2_000_000  # chrony serves this host's clock


def test_replicas_discipline_to_upstream(chrony: tuple[str, int]) -> None:
    cfg = ClockConfig.build(
        replicas=2, base_port=0, sync_interval_s=0.2, exchanges=4,
        upstream=[f"{chrony[0]}:{chrony[1]}"],
        simulate={"replica-0": {"offset_ns": "10ms", "drift_ppm": "50ppm"},
                  "replica-1": {"offset_ns": "-7ms"}},
    )
    with TimestampService(cfg) as svc:
        assert wait_for(lambda: all(s.role == "upstream" and s.syncs_ok >= 3
                                    for s in svc.status()), timeout_s=10)
        for st, address in zip(svc.status(), svc.addresses, strict=True):
            assert st.source == f"upstream {chrony[0]}:{chrony[1]}"
            assert st.stratum == 9
            stats = ntplib.NTPClient().request(address[0], version=4, port=address[1],
                                               timeout=2)
            assert stats.stratum == 9
            assert host_offset_excess_s(address) < 0.001  # corrected from 10 ms / -7 ms
