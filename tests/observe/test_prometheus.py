"""Prometheus metrics: names, label sets and values, from plain documents and from a demo data
dir, and over HTTP at GET /metrics."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamprov.api import create_app
from streamprov.app import App, Settings, replay_engine
from streamprov.errors import StoreError
from streamprov.observe.prometheus import exposition, registry_for, stage_counts
from streamprov.observe.sources import Sources, live_queues
from streamprov.runtime import LocalRunner, Pipeline, SyntheticSource
from tests.observe.demo import Demo
from tests.replay.streams import catalog_for_tests

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(sources: Sources) -> tuple[Samples, dict[str, str]]:
    """Samples by name, and the type of each family."""
    text = exposition(registry_for(sources)).decode()
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for s in family.samples:
            samples.setdefault(s.name, []).append((dict(s.labels), s.value))
    return samples, types


def label_sets(samples: Samples, name: str) -> set[frozenset[str]]:
    return {frozenset(labels) for labels, _ in samples[name]}


def value(samples: Samples, name: str, **labels: str) -> float:
    hits = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x
                                                          for k, x in labels.items())]
    assert len(hits) == 1, (name, labels, samples.get(name))
    return hits[0]


NODES: list[dict[str, Any]] = [
    {"node": "p/source/0", "role": "source-0", "recordsOut": 10},
    {"node": "p/parse/0", "role": "parse-0", "recordsIn": 6, "recordsOut": 5, "failed": 1},
    {"node": "p/parse/1", "role": "parse-1", "recordsIn": 4, "recordsOut": 3, "dropped": 1},
    {"node": "p/sink/0", "role": "sink-0", "recordsIn": 8, "recordsOut": 0, "delivered": 8},
    {"node": "writer", "role": "writer", "rowsWritten": 40, "chains": 10},
]
SUMMARY = {"count": 8, "p50": 1_000_000, "p95": 2_000_000, "p99": 3_000_000, "max": 4_000_000}


def fake_sources() -> Sources:
    replay = {"replayId": "r-1", "state": "completed", "createdNs": 2,
              "request": {"streamId": "p", "configurationId": "small"},
              "progress": {"phase": "done", "fraction": 1.0},
              "report": {"configurationId": "small", "latencyNs": SUMMARY,
                         "perHopLatencyNs": {"parse": SUMMARY}, "pacingLagNs": SUMMARY,
                         "achievedThroughput": 900.0, "targetThroughput": 1000.0,
                         "keptUp": True, "nodes": NODES, "durationS": 2.0}}
    running = {"replayId": "r-2", "state": "running", "createdNs": 3,
               "request": {"streamId": "p", "configurationId": "large"},
               "progress": {"phase": "injecting", "fraction": 0.25, "recordsInjected": 25}}
    job = {"tuneId": "t-1", "state": "running", "request": {"streamId": "p", "budget": 4},
           "evaluations": [{"index": 1}]}
    events = [{"timeNs": 5_000_000_000, "streamId": "p", "stage": "parse", "from": 1, "to": 2,
               "trigger": "memory", "applied": "live"},
              {"timeNs": 4_000_000_000, "streamId": "p", "stage": None, "from": None,
               "to": {"nodes": 2}, "trigger": "tune t-1", "applied": "recorded"}]
    clock = {"nodes": [{"nodeId": "p/parse/0", "offsetNs": -1500, "errorNs": 250_000,
                        "withinTolerance": True, "violations": 2, "stampsOutOfTolerance": 7},
                       {"nodeId": "p/sink/0", "offsetNs": None, "errorNs": 0,
                        "withinTolerance": False, "violations": 0}],
             "maxSkewNs": 1_000_000}
    run = {"streamId": "p", "replayId": "", "timeNs": 1, "durationS": 4.0, "nodes": NODES}
    return Sources(replays=lambda: [running, replay], tuning_jobs=lambda: [job],
                   scaling_events=lambda: events, clock_status=lambda: clock,
                   runs=lambda: [run], streams=lambda: [{"streamId": "p", "records": 10,
                                                         "chains": 10}])


def test_stage_counts_sum_instances_by_stage() -> None:
    counts = stage_counts(NODES)
    assert counts["parse"] == {"recordsIn": 10, "recordsOut": 8, "delivered": 0, "dropped": 1,
                               "failed": 1}
    assert "writer" not in counts
    assert counts["sink"]["delivered"] == 8


def test_metric_names_labels_and_values() -> None:
    s, types = scrape(fake_sources())
    stage = frozenset({"stream_id", "replay_id", "stage"})
    assert label_sets(s, "streamprov_stage_records_in_total") == {stage}
    assert label_sets(s, "streamprov_stage_records_out_total") == {stage}
    assert label_sets(s, "streamprov_stage_records_ended_total") == {stage | {"outcome"}}
    assert types["streamprov_stage_records_in"] == "counter"
    # the original run (replay_id "") and the finished replay, per stage
    assert value(s, "streamprov_stage_records_in_total", replay_id="", stage="parse") == 10
    assert value(s, "streamprov_stage_records_in_total", replay_id="r-1", stage="sink") == 8
    assert value(s, "streamprov_stage_records_ended_total", replay_id="", stage="parse",
                 outcome="failed") == 1
    assert value(s, "streamprov_provenance_rows_written_total", replay_id="") == 40
    assert value(s, "streamprov_provenance_write_rate_rows_per_second", replay_id="") == 10.0
    # latency quantiles in seconds (quantile 1 is the maximum)
    lat = frozenset({"stream_id", "replay_id", "configuration_id", "quantile"})
    assert label_sets(s, "streamprov_replay_latency_seconds") == {lat}
    assert value(s, "streamprov_replay_latency_seconds", quantile="0.99") == 0.003
    assert value(s, "streamprov_replay_latency_seconds", quantile="1") == 0.004
    assert value(s, "streamprov_replay_hop_latency_seconds", stage="parse",
                 quantile="0.5") == 0.001
    assert value(s, "streamprov_replay_pacing_lag_seconds", quantile="0.95") == 0.002
    assert value(s, "streamprov_replay_throughput_records_per_second", kind="achieved") == 900
    assert value(s, "streamprov_replay_kept_up", replay_id="r-1") == 1
    # progress: replays by state, the running one's fraction; tuning evaluations of budget
    assert value(s, "streamprov_replays", state="running") == 1
    assert value(s, "streamprov_replay_progress_ratio", replay_id="r-2",
                 phase="injecting") == 0.25
    assert value(s, "streamprov_replay_records_injected", replay_id="r-2") == 25
    assert value(s, "streamprov_tuning_jobs", state="running") == 1
    assert value(s, "streamprov_tuning_evaluations", tune_id="t-1", state="running") == 1
    assert value(s, "streamprov_tuning_budget", tune_id="t-1") == 4
    assert value(s, "streamprov_tuning_progress_ratio", tune_id="t-1") == 0.25
    # scaling decisions: counted by stream, stage, trigger kind, applied
    assert label_sets(s, "streamprov_scaling_events_total") == {
        frozenset({"stream_id", "stage", "trigger", "applied"})}
    assert value(s, "streamprov_scaling_events_total", stage="parse", trigger="memory",
                 applied="live") == 1
    assert value(s, "streamprov_scaling_events_total", stage="all", trigger="tune") == 1
    assert value(s, "streamprov_scaling_last_event_timestamp_seconds", stream_id="p") == 5.0
    # clocks per node
    assert value(s, "streamprov_clock_offset_seconds", node_id="p/parse/0") == -1.5e-6
    assert [lab["node_id"] for lab, _ in s["streamprov_clock_offset_seconds"]] == ["p/parse/0"]
    assert value(s, "streamprov_clock_error_bound_seconds", node_id="p/parse/0") == 0.00025
    assert value(s, "streamprov_clock_within_tolerance", node_id="p/sink/0") == 0
    assert value(s, "streamprov_clock_skew_violations_total", node_id="p/parse/0") == 2
    assert value(s, "streamprov_clock_stamps_out_of_tolerance_total", node_id="p/parse/0") == 7
    assert value(s, "streamprov_clock_max_skew_seconds") == 0.001
    assert value(s, "streamprov_stream_records", stream_id="p") == 10
    assert all(v == 0 for _, v in s["streamprov_scrape_errors"])


def test_a_source_that_cannot_be_read_is_reported_not_fatal() -> None:
    def busy() -> list[dict[str, Any]]:
        raise StoreError("held by a replay")

    s, _ = scrape(Sources(streams=busy, clock_status=fake_sources().clock_status))
    assert value(s, "streamprov_scrape_errors", source="streams") == 1
    assert value(s, "streamprov_scrape_errors", source="clock") == 0
    assert "streamprov_stream_records" not in s
    assert "streamprov_clock_error_bound_seconds" in s


def test_metrics_endpoint_over_demo_data(demo: Demo) -> None:
    app = App(Settings.resolve(demo.data_dir))
    catalog = catalog_for_tests(demo.data_dir)
    api = create_app(app, catalog, replay_engine(app, catalog))

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/metrics")

    res = asyncio.run(get())
    assert res.status_code == 200
    assert res.headers["content-type"].startswith("text/plain; version=0.0.4")
    s: Samples = {}
    for family in text_string_to_metric_families(res.text):
        for sample in family.samples:
            s.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    # the demo run's stages, and each replay's
    run_in = {lab["stage"]: v for lab, v in s["streamprov_stage_records_in_total"]
              if lab["replay_id"] == ""}
    assert {"parse", "valid", "enrich", "score", "sink"} <= set(run_in)
    for doc in demo.replays:
        rid = doc["replayId"]
        assert value(s, "streamprov_stage_records_in_total", replay_id=rid,
                     stage="parse") == doc["report"]["records"]
        p99 = value(s, "streamprov_replay_latency_seconds", replay_id=rid, quantile="0.99")
        assert p99 == pytest.approx(doc["report"]["latencyNs"]["p99"] / 1e9)
        # the same latencies as a real histogram: cumulative buckets, count, sum
        buckets = [(float(lab["le"]), v)
                   for lab, v in s["streamprov_replay_latency_distribution_seconds_bucket"]
                   if lab["replay_id"] == rid]
        assert buckets == sorted(buckets) and buckets[-1][0] == float("inf")
        assert [v for _, v in buckets] == sorted(v for _, v in buckets)
        count = value(s, "streamprov_replay_latency_distribution_seconds_count", replay_id=rid)
        assert buckets[-1][1] == count == doc["report"]["latencyNs"]["count"]
        total = value(s, "streamprov_replay_latency_distribution_seconds_sum", replay_id=rid)
        mean = total / count
        assert doc["report"]["latencyNs"]["p50"] / 1e9 / 3 < mean
        assert mean <= doc["report"]["latencyNs"]["max"] / 1e9
    assert value(s, "streamprov_replays", state="completed") >= 2
    assert value(s, "streamprov_tuning_jobs", state="completed") == 1
    assert value(s, "streamprov_scaling_events_total", stage="parse", trigger="memory",
                 applied="live") == 3
    nodes = {lab["node_id"] for lab, _ in s["streamprov_clock_error_bound_seconds"]}
    assert "demo/parse/0" in nodes
    assert value(s, "streamprov_stream_records", stream_id="demo") == 1200
    assert all(v == 0 for _, v in s["streamprov_scrape_errors"])


def test_live_queue_depths_and_writer_backlog() -> None:
    live = [{"streamId": "p", "replayId": "r-2",
             "queues": {"ingest": 3, "parse-0": 2, "parse-1": 0, "writer": 5}},
            {"streamId": "q", "replayId": "", "queues": {"ingest": 0, "sink-0": 1}}]
    s, types = scrape(Sources(live=lambda: live))
    assert types["streamprov_queue_depth_batches"] == "gauge"
    assert label_sets(s, "streamprov_queue_depth_batches") == {
        frozenset({"stream_id", "replay_id", "queue"})}
    assert value(s, "streamprov_queue_depth_batches", replay_id="r-2", queue="parse-0") == 2
    assert value(s, "streamprov_queue_depth_batches", stream_id="q", queue="sink-0") == 1
    assert label_sets(s, "streamprov_provenance_backlog_batches") == {
        frozenset({"stream_id", "replay_id"})}
    # a deployment whose writer inbox is not reported has no backlog sample
    assert [lab for lab, _ in s["streamprov_provenance_backlog_batches"]] == [
        {"stream_id": "p", "replay_id": "r-2"}]
    assert value(s, "streamprov_provenance_backlog_batches", stream_id="p") == 5
    assert value(s, "streamprov_scrape_errors", source="live") == 0


def slow(payload: Any) -> Any:
    time.sleep(0.01)
    return payload


class _NoDepths:
    stream_id, replay_id = "ray", ""


def test_a_backpressured_local_deployment_reports_its_queues(tmp_path: Path) -> None:
    p = Pipeline("backed", source=SyntheticSource(records=None), max_parallelism=2)
    p.map("slow", slow, parallelism=2).sink()
    dep = LocalRunner(batch_size=10, queue_batches=2).start(
        p, provenance_url=f"duckdb://{tmp_path / 'provenance.duckdb'}",
        stream_log_url=f"duckdb://{tmp_path / 'streams.duckdb'}")
    sources = Sources(live=lambda: live_queues([dep, _NoDepths()]))  # type: ignore[list-item]
    try:
        # the slow stage takes ~10 batches/s per instance: its inboxes fill up to their bound
        deadline = time.monotonic() + 60
        while True:
            s, _ = scrape(sources)
            waiting = sum(v for lab, v in s.get("streamprov_queue_depth_batches", [])
                          if lab["queue"].startswith("slow-"))
            if waiting > 0:
                break
            assert time.monotonic() < deadline, s.get("streamprov_queue_depth_batches")
            time.sleep(0.05)
        depths = dep.queue_depths()
    finally:
        dep.stop()
    assert set(depths) == {"ingest", "slow-0", "slow-1", "sink-0", "writer"}
    assert all(n >= 0 for n in depths.values())
    stages = {lab["queue"] for lab, _ in s["streamprov_queue_depth_batches"]}
    assert stages == set(depths)
    assert {lab["stream_id"] for lab, _ in s["streamprov_queue_depth_batches"]} == {"backed"}
    assert value(s, "streamprov_provenance_backlog_batches", stream_id="backed",
                 replay_id="") >= 0
