"""Deviation triggers: they fire on injected slowdowns (live and after a replay) and stay
quiet on noise within the thresholds."""

from __future__ import annotations

import random
import time
from functools import partial
from pathlib import Path

import pytest

from streamprov.adapt.audit import trigger_log
from streamprov.adapt.expectation import Expectation
from streamprov.adapt.live import LatencyProbeSink, LiveMonitor, LiveObserver
from streamprov.adapt.service import AdaptationService
from streamprov.adapt.trigger import DeviationTrigger, Observation, Thresholds, deviations
from streamprov.app import App, Settings, replay_engine
from streamprov.config import Catalog
from streamprov.errors import InvalidInput
from streamprov.replay.request import ReplayRequest
from streamprov.runtime import LocalRunner, Pipeline, SyntheticSource, load_pipeline
from tests.adapt.pipelines import SLOW_ENV, slow

EXPECTED = Expectation("s", "c", 1000.0, 1000.0, 20_000_000, 0.0, "observed", 5)


def test_noise_within_thresholds_never_fires(tmp_path: Path) -> None:
    rng = random.Random(1)
    fired = []
    trig = DeviationTrigger(trigger_log(tmp_path), Thresholds(latency=0.5, throughput=0.2,
                                                             error_rate=0.01, sustain=2))
    for _ in range(500):
        obs = Observation(int(20e6 * rng.uniform(0.6, 1.45)), 1000 * rng.uniform(0.82, 1.2),
                          rng.uniform(0, 0.009))
        assert deviations(EXPECTED, obs, trig.thresholds) == []
        fired.append(trig.check(EXPECTED, obs, source="live", sustained=True))
    assert fired == [None] * 500
    assert trig.log.read() == []


def test_a_single_noisy_window_does_not_fire_a_sustained_deviation_does(
        tmp_path: Path) -> None:
    trig = DeviationTrigger(trigger_log(tmp_path), Thresholds(sustain=2),
                            on_fire=lambda e: "t-cycle")
    spike = Observation(90_000_000, 1000.0, 0.0)
    calm = Observation(21_000_000, 1000.0, 0.0)
    assert trig.check(EXPECTED, spike, source="live", sustained=True) is None
    assert trig.check(EXPECTED, calm, source="live", sustained=True) is None
    assert trig.check(EXPECTED, spike, source="live", sustained=True) is None
    event = trig.check(EXPECTED, spike, source="live", sustained=True)
    assert event is not None and event["cycle"] == "t-cycle"
    assert "p99 latency 90.0 ms" in event["reasons"][0]
    assert event["observed"]["p99LatencyNs"] == 90_000_000
    assert event["expected"]["p99LatencyNs"] == 20_000_000
    slow_tput = Observation(20_000_000, 500.0, 0.05)
    event = trig.check(EXPECTED, slow_tput, source="replay")
    assert event is not None and len(event["reasons"]) == 2
    assert [e["source"] for e in trig.log.read()] == ["replay", "live"]


def test_threshold_errors_name_the_field() -> None:
    with pytest.raises(InvalidInput) as exc:
        Thresholds(latency=-1)
    assert exc.value.field == "latency"


def test_live_trigger_fires_on_an_injected_slowdown_and_not_before(tmp_path: Path) -> None:
    flag = tmp_path / "slow"
    pipeline = (Pipeline("slowable", source=SyntheticSource(records=None, rate=300.0, seed=9))
                .map("slow", partial(slow, str(flag))).sink(LatencyProbeSink()))
    dep = LocalRunner(batch_size=16).start(
        pipeline, provenance_url=f"duckdb://{tmp_path / 'provenance.duckdb'}",
        stream_log_url=f"duckdb://{tmp_path / 'streams.duckdb'}")
    trig = DeviationTrigger(trigger_log(tmp_path), Thresholds(sustain=2))
    monitor = LiveMonitor(LiveObserver(dep), trig, "slowable", "one")
    try:
        for _ in range(8):  # 3 windows calibrate, 5 compare: normal operation
            time.sleep(0.5)
            monitor.step()
        assert monitor.expected is not None and monitor.fired == []
        flag.touch()  # 4 ms a record: 250 records/s against 300 arriving
        for _ in range(8):
            time.sleep(0.5)
            if monitor.step() is not None:
                break
    finally:
        flag.unlink(missing_ok=True)
        dep.stop()
    assert len(monitor.fired) == 1
    event = monitor.fired[0]
    assert event["source"] == "live" and "p99 latency" in event["reasons"][0]
    assert trig.log.read()[0]["observed"]["p99LatencyNs"] > \
        event["expected"]["p99LatencyNs"] * 1.5


def test_replay_trigger_fires_on_a_slowdown_and_not_on_a_normal_rerun(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = tmp_path / "slow"
    monkeypatch.setenv(SLOW_ENV, str(flag))
    data_dir = tmp_path / "data"
    app = App(Settings.resolve(data_dir, batch_size=16))
    pipeline = load_pipeline("tests.adapt.pipelines:slowable_recorded")
    app.run(pipeline)
    with app.provenance() as store:
        s = next(x for x in store.streams() if x.stream_id == "slowable")
    assert s.first_ns is not None and s.last_ns is not None
    catalog = Catalog.load(None, data_dir, cwd=Path("/nonexistent"))
    engine = replay_engine(app, catalog)
    # wide thresholds: a rerun on a busy 2-core machine may well be 2x slower; the injected
    # slowdown (12 ms per record, a quarter of the arrival rate) is far beyond them
    adaptation = AdaptationService(data_dir, catalog,
                                   thresholds=Thresholds(latency=3.0, throughput=0.6))
    req = ReplayRequest("slowable", s.first_ns, s.last_ns + 1, "small", 1.0)
    first = engine.run(req)
    assert adaptation.after_replay(first) is None  # nothing expected yet: learns
    assert adaptation.after_replay(engine.run(req)) is None  # a normal rerun: within
    flag.touch()
    slowed = engine.run(req)
    event = adaptation.after_replay(slowed)
    assert event is not None, slowed["report"]["latencyNs"]
    assert event["source"] == "replay" and event["replayId"] == slowed["replayId"]
    assert any("p99 latency" in r for r in event["reasons"])
    assert adaptation.trigger_events("slowable")[0]["replayId"] == slowed["replayId"]
    assert adaptation.after_replay(slowed) is None  # each replay is checked once
    exp = adaptation.expectations("slowable")
    assert any(e["configurationId"] == "small" and e["basis"] == "observed" for e in exp)
