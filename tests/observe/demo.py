"""A small demo data dir for the observability tests and the browser tests, built once per
test process: a recorded demo stream (clock sync on), two replays on different
configurations, and a tuning job (two evaluation replays) applied, so the scaling audit trail
has a decision."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamprov.adapt.tuning import TuneRequest
from streamprov.app import App, Settings, adaptation_service, replay_engine, tuning_service
from streamprov.replay.request import ReplayRequest
from tests.replay.streams import Recorded, catalog_for_tests, record_stream

_FINISHED = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class Demo:
    recorded: Recorded
    replays: list[dict[str, Any]]
    tuning: dict[str, Any]

    @property
    def data_dir(self) -> Path:
        return self.recorded.data_dir

    def app(self) -> App:
        return App(Settings.resolve(self.data_dir))


_built: dict[Path, Demo] = {}


def build_demo(base: Path) -> Demo:
    """The demo data dir under ``base`` (pytest's base temp dir), built on first use."""
    data_dir = base / "observe-demo" / "data"
    if data_dir in _built:
        return _built[data_dir]
    recorded = record_stream(data_dir)
    app = App(Settings.resolve(data_dir))
    catalog = catalog_for_tests(data_dir)
    engine = replay_engine(app, catalog)
    replays = []
    try:
        for cid in ("one", "two"):
            req = ReplayRequest.parse("demo", recorded.first_ns, recorded.end_ns, cid, 4.0)
            rid = engine.submit(req)["replayId"]
            while (doc := engine.wait(rid, 60))["state"] not in _FINISHED:
                pass
            assert doc["state"] == "completed", doc
            replays.append(doc)
    finally:
        engine.close()
    request = TuneRequest.parse(
        stream_id="demo", start=recorded.first_ns, end=recorded.end_ns, p99_latency_ms=2000,
        budget=2, sample_s=0.3, speed=4.0, apply=True, configuration_id="one", nodes=[1, 2],
        node_types=["tiny"], batch_sizes=[1024])
    service = tuning_service(app, catalog)
    try:
        job = service.run(request)
    finally:
        service.close()
    assert job["state"] == "completed", job
    # decisions as the memory autoscaler records them (through the same public call), so the
    # audit trail has steps over time for one stage besides the tuning job's recommendation
    adaptation = adaptation_service(app, catalog)
    for before, after in ((1, 2), (2, 3), (3, 2)):
        adaptation.record_scaling("demo", {"stage": "parse", "from": before, "to": after,
                                           "trigger": "memory", "figures": {}})
        time.sleep(0.01)
    app.close()
    demo = Demo(recorded, replays, job)
    _built[data_dir] = demo
    return demo
