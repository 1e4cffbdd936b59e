"""``reliability``: crashes, a store outage and sustained load, and what each cost.

Scenarios, each on a fresh data dir, each ending with a count against the stores:

* ``node_crash`` (local runner): the demo pipeline while random node processes (stages,
  ingest, writer, sources) are SIGKILLed, one after another, each after the previous restart;
* ``actor_crash`` (Ray runner, not with ``--quick``): the same with Ray actors;
* ``process_crash``: ``streamprov run`` and all its node processes SIGKILLed mid-stream,
  then run again; the second run re-drives what the first left unfinished;
* ``store_outage``: the PostgreSQL provenance store stopped for a few seconds mid-run
  (a throwaway server from the installed binaries, or ``$STREAMPROV_BENCH_PG_URL``'s is not
  stopped: the scenario is skipped then);
* ``load``: sustained NDJSON ingest over HTTP plus replay submissions from a second process
  against a real ``streamprov serve`` (``bench/_load.py``).

For each: records ingested, chains stored, lost (logged records without a chain, plus, for
load, records the API accepted that the stores lack), duplicated outputs, recovery time. The
last line sums ``lost`` and ``duplicated_outputs`` and takes the worst ``recovery_s``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench._load import load_scenario
from streamprov.examples.demo import build
from streamprov.runtime import CaptureSink, LocalRunner
from streamprov.store import open_provenance_store, open_stream_log
from streamprov.testing import kill_nodes


def _urls(root: Path) -> dict[str, str]:
    return {"provenance_url": f"duckdb://{root / 'provenance.duckdb'}",
            "stream_log_url": f"duckdb://{root / 'streams.duckdb'}"}


def _count(provenance_url: str, stream_log_url: str, stream: str) -> dict[str, int]:
    """Logged records, records with a chain, lost (logged without one), extra chains."""
    log = open_stream_log(stream_log_url, read_only=True)
    try:
        logged = set(log.record_ids(stream).tolist())
    finally:
        log.close()
    store = open_provenance_store(provenance_url, read_only=True)
    try:
        paths = Counter((c.record_id, c.branch)
                        for chunk in store.iter_window(stream, 0, 2**63 - 1) for c in chunk)
    finally:
        store.close()
    chained = {rid for rid, _ in paths}
    return {"ingested": len(logged), "chains": len(paths), "lost": len(logged - chained),
            "duplicate_chains": sum(n - 1 for n in paths.values())}


def _killer(dep: Any, kills: int, seed: int) -> threading.Thread:
    t = threading.Thread(target=kill_nodes, args=(dep, kills),
                         kwargs={"seed": seed, "progress": 1000}, daemon=True)
    t.start()
    return t


def node_crash(root: Path, runner: Any, records: int, kills: int) -> dict[str, Any]:
    pipeline = build(records=records, sources=2, rate=4_000).with_sink(CaptureSink())
    dep = runner.start(pipeline, **_urls(root))
    killer = _killer(dep, kills, seed=11)
    result = dep.wait(600)
    killer.join()
    counts = _count(**_urls(root), stream="demo")
    return {**counts, "crashes": len(result.recoveries),
            "redriven": sum(r.redriven for r in result.recoveries),
            "duplicated_outputs": result.duplicated_outputs or 0,
            "recovery_s": max((r.duration_s for r in result.recoveries), default=0.0)}


def process_crash(root: Path) -> dict[str, Any]:
    data = root / "data"
    cmd = [sys.executable, "-m", "streamprov.cli", "run", "streamprov.examples.demo:pipeline",
           "--data-dir", str(data)]
    proc = subprocess.Popen([*cmd, "--records", "5000000"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    wals = [data / "streams.duckdb.wal", data / "provenance.duckdb.wal"]
    deadline = time.monotonic() + 120
    while (not all(w.exists() and w.stat().st_size > 1_000_000 for w in wals)
           and proc.poll() is None and time.monotonic() < deadline):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    urls = {"provenance_url": f"duckdb://{data / 'provenance.duckdb'}",
            "stream_log_url": f"duckdb://{data / 'streams.duckdb'}"}
    before = _count(**urls, stream="demo")
    t0 = time.perf_counter()
    again = subprocess.run([*cmd, "--records", "1000"], capture_output=True, text=True,
                           timeout=600, check=False)
    recovery_s = time.perf_counter() - t0
    if again.returncode != 0:
        raise RuntimeError(again.stderr)
    after = _count(**urls, stream="demo")
    return {"ingested": after["ingested"], "chains": after["chains"],
            "left_unfinished": before["lost"], "lost": after["lost"],
            "duplicate_chains": after["duplicate_chains"], "duplicated_outputs": 0,
            "recovery_s": recovery_s}


def store_outage(root: Path, records: int, down_s: float) -> dict[str, Any] | None:
    try:
        from tests.pg_server import start_server

        server = start_server()
    except Exception as exc:  # no PostgreSQL binaries here
        print(f"  store_outage skipped: {exc}")
        return None
    try:
        url = server.url(retry="500ms")
        stream_log_url = f"duckdb://{root / 'streams.duckdb'}"
        pipeline = build(records=records, sources=1, rate=5_000).with_sink(CaptureSink())
        dep = LocalRunner(batch_size=200, writer_buffer_rows=20_000).start(
            pipeline, provenance_url=url, stream_log_url=stream_log_url)
        marks: dict[str, float] = {}

        def outage() -> None:
            while dep.ingested() < records // 5:
                time.sleep(0.01)
            server.stop("fast")
            marks["in_before"] = dep.ingested()
            time.sleep(down_s)
            marks["in_during"] = dep.ingested()
            server.start()

        t = threading.Thread(target=outage, daemon=True)
        t.start()
        result = dep.wait(600)
        t.join()
        writer = next(n for n in result.nodes if n["role"] == "writer")
        counts = _count(url, stream_log_url, "demo")
        back = [w for w in result.warnings if "back after" in w]
        return {**counts, "duplicated_outputs": 0, "down_s": down_s,
                "records_in_while_down": int(marks["in_during"] - marks["in_before"]),
                "held_back": writer.get("heldBack", 0), "store_back": back[-1] if back else "",
                "recovery_s": 0.0}
    finally:
        server.cleanup()


def run(quick: bool) -> dict[str, Any]:
    scenarios: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="sp-bench-rel-") as tmp:
        root = Path(tmp)
        print("node_crash: local runner, random SIGKILLs of node processes")
        scenarios["node_crash"] = node_crash(root / "node", LocalRunner(batch_size=256),
                                             20_000 if quick else 100_000, 3 if quick else 8)
        if not quick:
            from streamprov.runtime.ray import ClusterOptions, RayRunner

            print("actor_crash: Ray runner, random SIGKILLs of actor processes")
            ray_runner = RayRunner(num_cpus=0.5, batch_size=256, cluster=ClusterOptions(
                num_cpus=8, temp_dir=Path("/tmp") / f"sp-ray-{root.name}"))
            scenarios["actor_crash"] = node_crash(root / "actor", ray_runner, 60_000, 3)
        print("process_crash: streamprov run SIGKILLed with its node processes, then rerun")
        scenarios["process_crash"] = process_crash(root / "process")
        print("store_outage: the PostgreSQL provenance store stopped mid-run")
        outage = store_outage(root / "outage", 30_000 if quick else 100_000,
                              3.0 if quick else 10.0)
        if outage is not None:
            scenarios["store_outage"] = outage
        print("load: NDJSON ingest over HTTP + replay submissions from a second process")
        scenarios["load"] = load_scenario(root / "load", 10.0 if quick else 60.0)
    for name, figures in scenarios.items():
        shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in figures.items())
        print(f"  {name}: {shown}")
    return {
        "lost": int(sum(int(s.get("lost", 0)) for s in scenarios.values())),
        "duplicated_outputs": int(sum(int(s.get("duplicated_outputs", 0))
                                      for s in scenarios.values())),
        "recovery_s": round(max(float(s.get("recovery_s", 0.0))
                                for s in scenarios.values()), 3),
        "load_errors": int(scenarios["load"].get("errors", 0)),
        "scenarios": scenarios,
    }
