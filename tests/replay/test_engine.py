"""Replays end to end on the local runner and embedded DuckDB stores."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from streamprov.app import App, Settings, replay_engine
from streamprov.config import Configuration
from streamprov.errors import InvalidInput, NotFound
from streamprov.model import Outcome
from streamprov.replay import ReplayBusy, ReplayEngine, ReplayRequest
from streamprov.replay.errors import ReplayConflict
from tests.replay.streams import RECORDS, Recorded, catalog_for_tests


def engine_for(recorded: Recorded) -> ReplayEngine:
    app = App(Settings.resolve(recorded.data_dir))
    return replay_engine(app, catalog_for_tests(recorded.data_dir), sample_interval_s=0.1)


def request(recorded: Recorded, config: str = "one", speed: float = 1.0) -> ReplayRequest:
    return ReplayRequest.parse("demo", recorded.first_ns, recorded.end_ns, config, speed)


def replayed_order(recorded: Recorded, replay_id: str) -> list[int]:
    app = App(Settings.resolve(recorded.data_dir))
    with app.provenance() as store:
        return [c.record_id for chunk in store.iter_window("demo", 0, 2**63 - 1,
                                                           replay_id=replay_id)
                for c in chunk if c.branch == 0]


def wait_for(engine: ReplayEngine, replay_id: str, predicate: Any, timeout_s: float = 30.0
             ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc = engine.get(replay_id)
        if predicate(doc):
            return doc
        time.sleep(0.02)
    raise AssertionError(f"replay {replay_id} never got there: {engine.get(replay_id)}")


def test_replay_reproduces_the_original_order_and_outcomes(recorded: Recorded) -> None:
    engine = engine_for(recorded)
    doc = engine.run(request(recorded, speed=10.0))
    assert doc["state"] == "completed", doc
    report = doc["report"]
    rid = doc["replayId"]
    assert report["window"]["records"] == RECORDS
    assert replayed_order(recorded, rid) == recorded.order
    assert report["records"] == RECORDS
    assert report["orderPreserved"] is True
    assert report["fidelity"] == "match"
    assert set(report["perHopLatencyNs"]) == {"parse", "valid", "enrich", "score", "sink"}
    for key in ("p50", "p95", "p99", "max"):
        assert report["latencyNs"][key] > 0
        assert key in report["pacingLagNs"]
    assert report["errors"] == 0
    stage_nodes = [n for n in report["nodes"] if n["kind"] == "stage"]
    assert len(stage_nodes) == 5
    assert all(n["rssBytesMax"] > 0 and 0 < n["memoryUtilization"] < 1 for n in stage_nodes)
    assert [s["action"] for s in report["scalingSteps"]] == ["start"] * 5
    # isolation: the original chains are untouched, the replay's carry its id and node names
    app = App(Settings.resolve(recorded.data_dir))
    with app.provenance() as store:
        assert store.outcome_counts("demo")[Outcome.DELIVERED] + store.outcome_counts("demo")[
            Outcome.DROPPED] == RECORDS
        [chain] = store.chains_for_record("demo", recorded.order[0], rid)
    assert chain.replay_id == rid
    assert all(h.node_id.startswith("demo~replay/") for h in chain.hops)
    with app.stream_log() as log:
        assert log.count("demo") == RECORDS  # nothing appended to the stream log


def test_speed_1_and_10_take_the_expected_time(recorded: Recorded) -> None:
    engine = engine_for(recorded)
    span = recorded.span_s
    slow = engine.run(request(recorded, speed=1.0))["report"]
    fast = engine.run(request(recorded, speed=10.0))["report"]
    assert slow["targetDurationS"] == pytest.approx(span, rel=0.01)
    # paced, never early; the upper bounds only catch a replay that ignores its speed (they
    # leave room for a busy 2-core machine: precise figures are the benchmark's job)
    assert span * 0.9 <= slow["durationS"] <= span * 2 + 3.0
    assert fast["durationS"] <= span / 10 + 3.0
    assert fast["durationS"] < slow["durationS"]
    assert fast["targetThroughput"] == pytest.approx(slow["targetThroughput"] * 10, rel=0.01)


def test_empty_window_completes_with_a_message(recorded: Recorded) -> None:
    engine = engine_for(recorded)
    req = ReplayRequest.parse("demo", recorded.end_ns + 10**9, recorded.end_ns + 2 * 10**9,
                              "one", 1.0)
    doc = engine.run(req)
    assert doc["state"] == "completed"
    assert doc["report"]["records"] == 0
    assert "no records" in doc["report"]["message"]


def test_rejected_requests_store_nothing(recorded: Recorded) -> None:
    engine = engine_for(recorded)
    before = len(engine.history())
    with pytest.raises(NotFound) as exc:
        engine.submit(request(recorded, config="nope"))
    assert exc.value.field == "configurationId"
    with pytest.raises(NotFound) as exc:
        engine.submit(ReplayRequest.parse("nostream", 0, 10, "one", 1.0))
    assert exc.value.field == "streamId"
    engine.catalog.put_configuration(
        "huge", Configuration(nodes=9, node_type="small", batch_size=1024))
    with pytest.raises(InvalidInput) as exc2:
        engine.submit(request(recorded, config="huge"))  # over the pipeline's max_parallelism
    assert exc2.value.field == "nodes"
    assert "max_parallelism" in str(exc2.value)
    assert len(engine.history()) == before


def test_scaling_mid_flight_loses_nothing(recorded: Recorded) -> None:
    engine = engine_for(recorded)
    doc = engine.submit(request(recorded, config="one", speed=0.5))
    rid = doc["replayId"]
    wait_for(engine, rid, lambda d: d["state"] == "running"
             and d["progress"]["recordsInjected"] > 0)
    engine.reconfigure(rid, "two")
    doc = engine.wait(rid, 60)
    assert doc["state"] == "completed", doc
    report = doc["report"]
    scaled = [s for s in report["scalingSteps"] if s["action"] == "scale"]
    assert {(s["stage"], s["from"], s["to"]) for s in scaled} == {
        (s, 1, 2) for s in ("parse", "valid", "enrich", "score", "sink")}
    assert report["configurationId"] == "two"
    assert report["records"] == RECORDS
    assert sorted(replayed_order(recorded, rid)) == sorted(recorded.order)
    assert report["fidelity"] == "match"


def test_cancel_and_concurrency_limit(recorded: Recorded) -> None:
    engine = engine_for(recorded)
    doc = engine.submit(request(recorded, speed=0.2))
    rid = doc["replayId"]
    with pytest.raises(ReplayBusy) as busy:
        engine.submit(request(recorded))
    assert busy.value.retry_after_s >= 1
    wait_for(engine, rid, lambda d: d["state"] == "running")
    engine.cancel(rid)
    doc = engine.wait(rid, 60)
    assert doc["state"] == "cancelled"
    assert doc["report"]["records"] < RECORDS
    assert doc["report"]["fidelity"] == "unknown"
    with pytest.raises(ReplayConflict):
        engine.cancel(rid)


def test_reports_survive_a_restart(recorded: Recorded, tmp_path: Path) -> None:
    engine = engine_for(recorded)
    done = engine.run(request(recorded, speed=10.0))
    again = engine_for(recorded)
    assert again.get(done["replayId"])["report"] == done["report"]
    listed = again.history("demo")
    assert done["replayId"] in [d["replayId"] for d in listed]
    assert again.history("other") == []
