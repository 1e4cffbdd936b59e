"""Replay of a large window in bounded memory: a window 10x larger must not need more memory.

Two windows of the same stream shape are filled through the store protocol
(``bench.replay.fill``: three-hop chains and their payloads), each in a data dir of its own:
a big one (10,000,000 records; 1,000,000 with ``--quick``) and a small one (1,000,000;
100,000). Each is replayed completely, small first, in this process, through
``replay_engine(app, catalog).run(...)`` on the local runner (reconstruction of the window
file, injection by the replay source, draining, measuring the replay's chains, the report).

Pacing: records are 1 us apart when filled and replayed at 1000x (the fastest speed a request
may ask for), so the target rate (10^9 records/s) is far above what the pipeline can take on
2 cores. The source is always late and emits every record already due, a full batch at a time:
the replay runs at the pipeline's own pace, as fast as this machine allows (the pacing lag is
large and expected; it is not what this benchmark measures). A window filled with gaps for a
moderate target would take longer to replay without exercising memory any differently.

Figures, big and small window side by side:

* **driver peak RSS**: this process, sampled every 20 ms on a thread from just before the
  replay is submitted until its report is back (reconstruction, provisioning, injection,
  draining, measuring the chains, the report), also split by the replay's phase. The windows
  are filled in a child process, so the fill's own memory does not count;
* **node peak RSS**: per node process, from the replay report's ``nodes`` (psutil samples of
  the runtime); the largest one counts;
* **reconstruction time** (``reconstructS`` of the report), records replayed (asserted to equal
  the window's size) and the replay's wall time.

**ratio** = (driver peak + largest node peak) of the big window / the same of the small one.
Memory bounded by the window's size would be about 1.0 although the window is 10x larger;
memory that grows with the window would give a ratio towards 10 (a driver and nodes of a few
hundred MB each, some of it fixed: interpreters, DuckDB, Arrow, the runtime). The target, 1.5,
leaves room for chunk sizes, allocator and sampling noise, and fails well before anything
holds the window, or a large fraction of it, in memory.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from pathlib import Path
from typing import Any

import psutil

from streamprov.app import App, Settings, replay_engine
from streamprov.config import Catalog, Configuration
from streamprov.replay import ReplayRequest
from streamprov.runtime import load_pipeline
from streamprov.testing import PASSTHROUGH_PIPELINE as PIPELINE
from streamprov.testing import PASSTHROUGH_STREAM as STREAM
from streamprov.testing import fill_passthrough_window

GAP_NS = 1_000
"""Original gap between records (1 us)."""
SPEED = 1000.0
"""Replay speed: the highest a request may ask for; the target rate is 10^9 records/s."""
T0_NS = 1_700_000_000_000_000_000
BATCH_SIZE = 2048
TARGET = 1.5
MEMORY_LIMIT = "128MB"
"""DuckDB memory limit of the replay's stores (driver and writer node; ``?memory_limit=``)."""
_MB = 1 << 20


def _fill_child(data_dir: str, records: int) -> tuple[int, int]:
    settings = Settings.resolve(Path(data_dir))
    settings.ensure_data_dir()
    return fill_passthrough_window(settings, records, GAP_NS, T0_NS)


def _dir_bytes(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        with contextlib.suppress(OSError):  # (a file DuckDB has just removed)
            total += p.stat().st_size
    return total


def fill_window(data_dir: Path, records: int) -> tuple[int, int]:
    """Fill ``records`` chains in a child process (its memory is not this process's); prints
    a line every 10 s. Returns the window [start, end)."""
    t = time.perf_counter()
    print(f"filling {records:,} records ...", flush=True)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        pending = pool.submit(_fill_child, str(data_dir), records)
        while True:
            try:
                start, end = pending.result(timeout=10)
                break
            except FuturesTimeout:
                print(f"  ... {time.perf_counter() - t:.0f} s, stores "
                      f"{_dir_bytes(data_dir) / _MB:,.0f} MB", flush=True)
    print(f"filled {records:,} records in {time.perf_counter() - t:.1f} s "
          f"({_dir_bytes(data_dir) / _MB:,.0f} MB on disk)", flush=True)
    return start, end


class RssSampler:
    """Peak RSS of this process, overall and by the phase ``phase()`` names at each sample."""

    def __init__(self, phase: Callable[[], str], interval_s: float = 0.02) -> None:
        self.phase = phase
        self.interval_s = interval_s
        self.proc = psutil.Process(os.getpid())
        self.baseline = int(self.proc.memory_info().rss)
        self.peak = self.baseline
        self.by_phase: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def sample(self) -> None:
        rss = int(self.proc.memory_info().rss)
        self.peak = max(self.peak, rss)
        name = self.phase()
        self.by_phase[name] = max(self.by_phase.get(name, 0), rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()


def replay_window(root: Path, label: str, records: int) -> dict[str, Any]:
    """Fill a window of ``records`` in ``root``, replay it completely, return its figures."""
    settings = Settings.resolve(root / "data")
    start, end = fill_window(settings.data_dir, records)
    # the replay's stores, as a user bounding memory opens them: DuckDB keeps the blocks it
    # reads and writes cached up to its memory limit (2 GB by default)
    settings = Settings.resolve(
        root / "data", provenance_url=f"{settings.provenance_url}?memory_limit={MEMORY_LIMIT}",
        stream_log_url=f"{settings.stream_log_url}?memory_limit={MEMORY_LIMIT}")
    app = App(settings)
    app.remember_pipeline(STREAM, load_pipeline(PIPELINE))
    catalog = Catalog.load(None, settings.data_dir, cwd=root)
    catalog.put_configuration("bench", Configuration(nodes=1, node_type="medium",
                                                     batch_size=BATCH_SIZE))
    engine = replay_engine(app, catalog)
    state: dict[str, Any] = {"phase": "submitting", "printed": time.perf_counter()}

    def on_progress(progress: dict[str, Any]) -> None:
        state["phase"] = str(progress.get("phase") or state["phase"])
        now = time.perf_counter()
        if now - state["printed"] >= 10:
            state["printed"] = now
            print(f"  {label}: {state['phase']}, read {progress.get('recordsRead') or 0:,}, "
                  f"injected {progress.get('recordsInjected') or 0:,} of {records:,}, "
                  f"driver RSS {sampler.proc.memory_info().rss / _MB:,.0f} MB", flush=True)

    print(f"replaying {label} window ({records:,} records) at {SPEED:g}x ...", flush=True)
    t = time.perf_counter()
    with RssSampler(lambda: str(state["phase"])) as sampler:
        doc = engine.run(ReplayRequest.parse(STREAM, start, end, "bench", SPEED),
                         on_progress=on_progress)
    wall_s = time.perf_counter() - t
    if doc["state"] != "completed":
        print(f"{label}: replay {doc['state']} after {wall_s:.1f} s: {doc.get('error')}; driver "
              f"peak RSS by phase {sampler.by_phase}", flush=True)
    assert doc["state"] == "completed", doc.get("error")
    report = doc["report"]
    assert report["records"] == records, (report["records"], records)
    assert report["window"]["records"] == records
    nodes = {str(n["role"]): int(n.get("rssBytesMax") or 0) for n in report["nodes"]}
    largest = max(nodes, key=lambda role: nodes[role])
    out: dict[str, Any] = {
        "records": records,
        "driver_peak_mb": round(sampler.peak / _MB, 1),
        "driver_baseline_mb": round(sampler.baseline / _MB, 1),
        "driver_peak_by_phase_mb": {k: round(v / _MB, 1) for k, v in sampler.by_phase.items()},
        "node_peak_mb": {k: round(v / _MB, 1) for k, v in sorted(nodes.items())},
        "largest_node": largest,
        "largest_node_peak_mb": round(nodes[largest] / _MB, 1),
        "peak_mb": round((sampler.peak + nodes[largest]) / _MB, 1),
        "reconstruct_s": report["reconstructS"],
        "replay_wall_s": round(wall_s, 2),
        "records_per_s": round(records / wall_s),
        "pacing_lag_p99_ms": round(report["pacingLagNs"]["p99"] / 1e6, 1),
        "fidelity": report["fidelity"],
    }
    print(f"{label}: {records:,} records replayed in {wall_s:.1f} s "
          f"({out['records_per_s']:,} records/s), reconstruction {out['reconstruct_s']:.2f} s, "
          f"fidelity {out['fidelity']}", flush=True)
    print(f"{label}: driver peak RSS {out['driver_peak_mb']:,.0f} MB (baseline "
          f"{out['driver_baseline_mb']:,.0f} MB; by phase "
          + ", ".join(f"{k} {v:,.0f}" for k, v in out["driver_peak_by_phase_mb"].items())
          + f"); largest node {largest} {out['largest_node_peak_mb']:,.0f} MB; nodes "
          + ", ".join(f"{k} {v:,.0f}" for k, v in out["node_peak_mb"].items()), flush=True)
    return out


def run(quick: bool) -> dict[str, Any]:
    big, small = (1_000_000, 100_000) if quick else (10_000_000, 1_000_000)
    with tempfile.TemporaryDirectory(prefix="replay-window-") as tmp:
        free = psutil.disk_usage(tmp).free
        print(f"free disk for the stores: {free / (1 << 30):,.1f} GB", flush=True)
        # the small window first: whatever it leaves in this process can only raise the big
        # window's figures, never hide their growth
        s = replay_window(Path(tmp) / "small", "small", small)
        b = replay_window(Path(tmp) / "big", "big", big)
    ratio = b["peak_mb"] / s["peak_mb"]
    driver_ratio = b["driver_peak_mb"] / s["driver_peak_mb"]
    node_ratio = b["largest_node_peak_mb"] / s["largest_node_peak_mb"]
    print(f"peak memory (driver + largest node): {b['peak_mb']:,.0f} MB for {big:,} records, "
          f"{s['peak_mb']:,.0f} MB for {small:,}: ratio {ratio:.3f} (target <= {TARGET}); "
          f"driver {driver_ratio:.3f}, largest node {node_ratio:.3f}", flush=True)
    return {"name": "replay_window", "ratio": round(ratio, 3), "target": TARGET,
            "driver_ratio": round(driver_ratio, 3), "largest_node_ratio": round(node_ratio, 3),
            "big": b, "small": s}
