"""Replay: reconstruction throughput against a raw ordered window query, pacing error at 1x
and 10x, and the latency of ``POST /replay``.

* **ratio**: records/s of reconstruction (window rows in the original order, joined with their
  payloads from the stream log, written to the replay's Arrow file) over records/s of the raw
  ordered window query alone (``window_rows``: every hop row of the window, in order), on the
  same store in the same run (target >= 0.7). Reconstruction needs only each chain's hop-0
  row, so ``ratio_vs_heads_query`` also compares it with the raw ordered query of those rows
  alone (``window_heads`` without a log): the cost of the payload join and the file write;
* **pacing_p99_ms_1x / _10x**: p99 of actual minus scheduled emit time over a full replay
  (local runner, DuckDB) of records originally 1 ms apart (target <= 1 ms);
  ``pacing_error_p99_ms_*`` the p99 of its absolute value (records batched with an earlier
  one leave up to the source's 1 ms quantum early);
* **post_replay_ms**: median time to the 202 of ``POST /replay`` (ASGI, in process).

The stores are filled directly through the store protocol (rows of a three-hop pipeline), so
the benchmark measures the replay, not ingest.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from streamprov.app import App, Settings, replay_engine
from streamprov.config import Catalog, Configuration
from streamprov.replay import ReplayRequest
from streamprov.replay.reconstruct import reconstruct
from streamprov.runtime import load_pipeline
from streamprov.store import (
    open_provenance_store,
    open_stream_log,
)
from streamprov.testing import (
    PASSTHROUGH_NODES,
    PASSTHROUGH_PIPELINE,
    PASSTHROUGH_STREAM,
    fill_passthrough_window,
)

STREAM = PASSTHROUGH_STREAM
PIPELINE = PASSTHROUGH_PIPELINE
NODES = PASSTHROUGH_NODES


def reconstruction_ratio(root: Path, records: int, rounds: int) -> dict[str, Any]:
    settings = Settings.resolve(root / "recon")
    settings.ensure_data_dir()
    start, end = fill_passthrough_window(settings, records, 1_000, 1_700_000_000_000_000_000)
    raw_s: list[float] = []
    heads_s: list[float] = []
    rec_s: list[float] = []
    for i in range(rounds):
        store = open_provenance_store(settings.provenance_url, read_only=True)
        log = open_stream_log(settings.stream_log_url, read_only=True)
        try:
            t = time.perf_counter()
            rows = sum(b.num_rows for b in store.window_rows(STREAM, start, end,
                                                             chunk_rows=262_144))
            raw_s.append(time.perf_counter() - t)
            assert rows == records * len(NODES)
            t = time.perf_counter()
            heads = sum(b.num_rows for b in store.window_heads(STREAM, start, end,
                                                               chunk_rows=131_072))
            heads_s.append(time.perf_counter() - t)
            assert heads == records
            t = time.perf_counter()
            out = reconstruct(store, log, STREAM, start, end, root / f"w{i}.arrow")
            rec_s.append(time.perf_counter() - t)
            assert out.records == records
        finally:
            store.close()
            log.close()
        print(f"round {i}: raw window query {records / raw_s[-1]:,.0f} records/s, "
              f"raw hop-0 query {records / heads_s[-1]:,.0f} records/s, "
              f"reconstruction {records / rec_s[-1]:,.0f} records/s "
              f"(ratio {raw_s[-1] / rec_s[-1]:.3f})", flush=True)
    raw, heads_t, rec = (statistics.median(raw_s), statistics.median(heads_s),
                         statistics.median(rec_s))
    return {"ratio": round(raw / rec, 3), "ratio_vs_heads_query": round(heads_t / rec, 3),
            "ratio_rounds": [round(a / b, 3) for a, b in zip(raw_s, rec_s, strict=True)],
            "reconstruct_records_per_s": round(records / rec),
            "raw_window_records_per_s": round(records / raw),
            "raw_heads_records_per_s": round(records / heads_t), "records": records}


def pacing(root: Path, records: int) -> dict[str, Any]:
    settings = Settings.resolve(root / "pace")
    settings.ensure_data_dir()
    start, end = fill_passthrough_window(settings, records, 1_000_000,
                                         time.time_ns() - 3_600_000_000_000)
    app = App(settings)
    app.remember_pipeline(STREAM, load_pipeline(PIPELINE))
    catalog = Catalog.load(None, settings.data_dir, cwd=root)
    catalog.put_configuration("bench", Configuration(nodes=1, node_type="medium",
                                                     batch_size=1024))
    engine = replay_engine(app, catalog)
    out: dict[str, Any] = {"pacing_records": records}
    for speed in (1.0, 10.0):
        doc = engine.run(ReplayRequest.parse(STREAM, start, end, "bench", speed))
        r = doc["report"]
        lag = r["pacingLagNs"]
        tag = f"{speed:g}x"
        out[f"pacing_p99_ms_{tag}"] = round(lag["p99"] / 1e6, 3)
        out[f"pacing_p50_ms_{tag}"] = round(lag["p50"] / 1e6, 3)
        out[f"pacing_max_ms_{tag}"] = round(lag["max"] / 1e6, 3)
        out[f"pacing_error_p99_ms_{tag}"] = round(r["pacingErrorNs"]["p99"] / 1e6, 3)
        out[f"duration_s_{tag}"] = r["durationS"]
        out[f"target_duration_s_{tag}"] = r["targetDurationS"]
        print(f"pacing at {tag}: p50 {lag['p50'] / 1e6:.3f} ms, p99 {lag['p99'] / 1e6:.3f} ms, "
              f"max {lag['max'] / 1e6:.3f} ms; |error| p99 "
              f"{r['pacingErrorNs']['p99'] / 1e6:.3f} ms; duration {r['durationS']:.3f} s of "
              f"{r['targetDurationS']:.3f} s", flush=True)
    out["post_replay_ms"] = post_latency(app, catalog, start, min(end, start + 20_000_000))
    return out


def post_latency(app: App, catalog: Catalog, start: int, end: int, rounds: int = 5) -> float:
    import httpx

    from streamprov.api import create_app

    api = create_app(app, catalog, replay_engine(app, catalog))
    body = {"streamId": STREAM, "startTime": start, "endTime": end,
            "configurationId": "bench", "replaySpeed": 10.0}

    async def main() -> list[float]:
        took: list[float] = []
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://b") as client:
            for _ in range(rounds):
                t = time.perf_counter()
                res = await client.post("/replay", json=body)
                took.append(time.perf_counter() - t)
                assert res.status_code == 202, res.text
                while (await client.get(res.headers["location"])).json()["state"] not in (
                        "completed", "failed", "cancelled"):
                    await asyncio.sleep(0.05)
        return took

    took = asyncio.run(main())
    ms = statistics.median(took) * 1000
    print(f"POST /replay: median {ms:.1f} ms to 202 over {rounds} requests", flush=True)
    return round(ms, 2)


def run(quick: bool) -> dict[str, Any]:
    records = 200_000 if quick else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        result = {"name": "replay", "target_ratio": 0.7, "target_pacing_p99_ms": 1.0}
        result.update(reconstruction_ratio(root, records, 2 if quick else 3))
        result.update(pacing(root, 2_000 if quick else 10_000))
    return result
