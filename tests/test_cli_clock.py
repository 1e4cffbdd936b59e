"""``streamprov clock ...`` against a real run's clocks and a real timestamp service."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import ntplib
import pytest

from streamprov.app import App, Settings
from streamprov.cli import main
from streamprov.examples.demo import build


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    got = capsys.readouterr()
    return int(exc.value.code or 0), got.out, got.err


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_run_records_every_nodes_synchronized_clock(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    application = App(Settings.resolve(tmp_path / "d"))
    try:
        summary = application.run(build(records=2_000, sources=2, rate=None))
    finally:
        application.close()
    assert summary.result.ingested == 2_000
    code, out, _ = cli(capsys, "clock", "status", "--data-dir", str(tmp_path / "d"), "--json")
    assert code == 0
    doc = json.loads(out)
    nodes = {n["nodeId"]: n for n in doc["nodes"]}
    assert {"demo/source/0", "demo/source/1", "demo/parse/0", "demo/sink/0"} <= set(nodes)
    for n in nodes.values():
        assert n["synced"] and n["withinTolerance"]
        assert 0 < n["errorNs"] < doc["maxSkewNs"]
    # the bounds the nodes had are the ones stored with their hops
    with application.provenance() as store:
        chain = store.window("demo", 0, 2**63 - 1, limit=1)[0]
    assert all(0 < h.error_ns < doc["maxSkewNs"] for h in chain.hops)


def test_clock_serve_answers_standard_ntp_clients(tmp_path: Path) -> None:
    port = free_udp_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamprov.cli", "clock", "serve", "--port", str(port),
         "--replicas", "1"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert "NTPv4 replicas" in proc.stdout.readline()
        deadline = time.monotonic() + 10
        while True:
            try:
                resp = ntplib.NTPClient().request("127.0.0.1", port=port, version=4, timeout=1)
                break
            except ntplib.NTPException:
                if time.monotonic() > deadline:
                    raise
        assert abs(resp.offset) < 0.01
        assert resp.stratum >= 1
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_clock_status_without_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "clock", "status", "--data-dir", str(tmp_path / "none"))
    assert code == 0
    assert "no run has recorded clocks" in out
