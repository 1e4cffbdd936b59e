"""Sustained load on a real ``streamprov serve``: NDJSON ingest from this process and replay
submissions from a second one, then a count of what the API accepted against what the stores
hold.

``load_scenario(data_dir, seconds)`` starts ``streamprov serve`` (uvicorn, in a subprocess, on
a free loopback port, with an API token) over ``data_dir``, serving one stream (``load``, the
passthrough pipeline). For ``seconds`` it keeps ``INGEST_CLIENTS`` clients posting batches of
``BATCH`` records and one client in another process submitting replays of the stream's window
(one runs at a time with embedded stores; the other submissions get 429 and count as
``throttled``, not as errors). An ingest refused with 503 (the stores are busy with a replay)
is retried after a pause and counts as ``busy``. At the end, ``lost`` is the number of records
the API answered for (200) that the stream log or the provenance store does not hold.

Returns ``{"requests", "requests_per_s", "p99_ms", "errors", "ingested", "lost", "throttled",
"busy", "replays"}``; latencies are of every request, ingest and replay submission alike.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

STREAM = "load"
PIPELINE = "streamprov.examples.passthrough:pipeline"
BATCH = 200
INGEST_CLIENTS = 2
REPLAY_PAUSE_S = 0.25
TIMEOUT_S = 60.0
START_TIMEOUT_S = 60.0


def load_scenario(data_dir: Path, seconds: float) -> dict[str, float | int]:
    data_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    token_file = data_dir / "api-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    config = data_dir / "serve.toml"
    config.write_text(f'[serve]\npipelines = {{ {STREAM} = "{PIPELINE}" }}\n')
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "STREAMPROV_API_TOKEN"}
    log = data_dir / "serve.log"
    with log.open("wb") as log_fh:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamprov.cli", "serve", "--port", str(port),
             "--data-dir", str(data_dir), "--config-file", str(config),
             "--api-token-file", str(token_file)],
            env=env, stdout=log_fh, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        _wait_ready(base, server, log)
        return _drive(base, headers, seconds)
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _drive(base: str, headers: dict[str, str], seconds: float) -> dict[str, float | int]:
    tally = _Tally()
    with httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT_S) as client:
        before = _held(client)  # a data dir used before may hold records of the stream
        _ingest_batch(client, tally, 0)  # the stream exists before the first replay
        first_ns = _first_ns(client)
        results: Queue[dict[str, Any]] = mp.get_context("spawn").Queue()
        replayer = mp.get_context("spawn").Process(
            target=_submit_replays, args=(base, headers, first_ns, seconds, results))
        t0 = time.perf_counter()
        replayer.start()
        deadline = time.monotonic() + seconds
        clients = [threading.Thread(target=_ingest_until, args=(base, headers, deadline, tally,
                                                                i + 1))
                   for i in range(INGEST_CLIENTS)]
        for t in clients:
            t.start()
        for t in clients:
            t.join()
        replays = results.get(timeout=seconds + TIMEOUT_S)
        replayer.join(TIMEOUT_S)
        elapsed = time.perf_counter() - t0
        held = _held(client)
    latencies = np.asarray(tally.latencies_ms + replays["latencies_ms"])
    requests = len(latencies)
    return {
        "requests": requests,
        "requests_per_s": requests / elapsed if elapsed > 0 else 0.0,
        "p99_ms": float(np.percentile(latencies, 99)) if requests else 0.0,
        "errors": tally.errors + replays["errors"],
        "ingested": tally.accepted,
        "lost": max(0, tally.accepted - min(h - b for h, b in zip(held, before, strict=True))),
        "throttled": replays["throttled"],
        "busy": tally.busy,
        "replays": replays["accepted"],
    }


class _Tally:
    """What the ingest clients saw (shared by their threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies_ms: list[float] = []
        self.accepted = 0
        self.errors = 0
        self.busy = 0


def _ingest_until(base: str, headers: dict[str, str], deadline: float, tally: _Tally,
                  client_no: int) -> None:
    with httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT_S) as client:
        batch = 0
        while time.monotonic() < deadline:
            batch += 1
            _ingest_batch(client, tally, client_no * 1_000_000 + batch)


def _ingest_batch(client: httpx.Client, tally: _Tally, batch: int) -> None:
    """Post one batch until it is answered (a 503 is retried: nothing was stored)."""
    body = b"".join(orjson.dumps({"batch": batch, "i": i, "amount": i * 0.5}) + b"\n"
                    for i in range(BATCH))
    while True:
        t0 = time.perf_counter()
        try:
            res = client.post(f"/streams/{STREAM}/records", content=body,
                              headers={"content-type": "application/x-ndjson"})
        except httpx.HTTPError:
            with tally.lock:
                tally.errors += 1
            return
        ms = (time.perf_counter() - t0) * 1e3
        with tally.lock:
            tally.latencies_ms.append(ms)
            if res.status_code == 200:
                tally.accepted += int(res.json()["records"])
                return
            if res.status_code != 503:
                tally.errors += 1
                return
            tally.busy += 1
        time.sleep(min(float(res.headers.get("retry-after", "1")), 0.2))


def _submit_replays(base: str, headers: dict[str, str], first_ns: int, seconds: float,
                    results: Queue[dict[str, Any]]) -> None:
    """In its own process: replay the stream's window so far, fast, until ``seconds`` pass."""
    out: dict[str, Any] = {"latencies_ms": [], "accepted": 0, "throttled": 0, "errors": 0}
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, headers=headers, timeout=TIMEOUT_S) as client:
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            try:
                res = client.post("/replay", json={
                    "streamId": STREAM, "startTime": first_ns, "endTime": time.time_ns(),
                    "configurationId": "small", "replaySpeed": 1000.0})
            except httpx.HTTPError:
                out["errors"] += 1
                continue
            out["latencies_ms"].append((time.perf_counter() - t0) * 1e3)
            if res.status_code == 202:
                out["accepted"] += 1
            elif res.status_code in (429, 503):
                out["throttled"] += 1
            else:
                out["errors"] += 1
            time.sleep(REPLAY_PAUSE_S)
    results.put(out)


def _first_ns(client: httpx.Client) -> int:
    for stream in _get(client, "/streams"):
        if stream["streamId"] == STREAM and stream["firstNs"] is not None:
            return int(stream["firstNs"])
    raise RuntimeError(f"stream {STREAM!r} has no records after the first ingest")


def _held(client: httpx.Client) -> tuple[int, int]:
    """(records in the stream log, original chains in the provenance store) of the stream,
    once no replay holds the stores."""
    for stream in _get(client, "/streams"):
        if stream["streamId"] == STREAM:
            return int(stream["records"]), int(stream["chains"])
    return 0, 0


def _get(client: httpx.Client, path: str) -> Any:
    """GET ``path``, waiting out 503 (a replay holding the embedded stores)."""
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        res = client.get(path)
        if res.status_code != 503 or time.monotonic() > deadline:
            res.raise_for_status()
            return res.json()
        time.sleep(0.2)


def _wait_ready(base: str, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(base_url=base, timeout=5.0) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"streamprov serve exited: {log.read_text().strip()}")
            try:
                if client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    raise RuntimeError(f"streamprov serve did not answer within {START_TIMEOUT_S:g} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
