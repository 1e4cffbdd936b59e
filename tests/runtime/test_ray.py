"""What only the Ray runner does: columnar transport, its cluster checks, faults, replays on
Ray. The pipeline suite itself runs on both runners from ``test_local.py``."""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamprov.errors import PipelineError
from streamprov.runtime import CaptureSink, Pipeline, SyntheticSource
from streamprov.runtime.batch import Batch, HopColumn
from streamprov.testing import ScriptedSource, identity
from tests.runtime.conftest import RunnerFactory
from tests.runtime.test_local import assert_complete, urls


def test_wire_batch_round_trips_columns_payloads_and_branches() -> None:
    from streamprov.runtime.ray_wire import WireBatch

    hops = [HopColumn("p/source/0", np.array([5, 6], np.int64), np.array([0, 1], np.int64)),
            HopColumn("p/a/1@ab", np.array([7, 8], np.int64), np.array([0, 0], np.int64), 9)]
    batch = Batch("s", np.array([1, 2], np.int64), [{"x": 1}, {"y": [1.5, None]}], ["k", "j"],
                  np.array([0, 77], np.int64), hops, "r-1")
    wire = WireBatch.of(batch)
    assert wire.pickled is None and wire.blob is not None  # plain JSON travels as one blob
    back = wire.batch()
    assert back.payloads == batch.payloads and back.keys == ["k", "j"]
    assert back.branches is not None and back.branches.tolist() == [0, 77]
    assert [(h.node_id, h.ts_ns.tolist(), h.logical.tolist(), h.error_ns) for h in back.hops] \
        == [("p/source/0", [5, 6], [0, 1], 0), ("p/a/1@ab", [7, 8], [0, 0], 9)]
    assert back.replay_id == "r-1"
    # anything JSON would not give back unchanged travels pickled
    odd = Batch("s", np.array([1], np.int64), [{"when": dt.datetime(2026, 1, 1), 3: "x"}])
    wire = WireBatch.of(odd)
    assert wire.pickled is not None
    assert wire.batch().payloads == odd.payloads


def test_missing_ray_says_which_extra_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from streamprov.runtime.ray import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(PipelineError) as info:
        import_ray()
    assert str(info.value) == "the Ray runner needs the ray extra: pip install 'streamprov[ray]'"


def small(name: str, records: int | None = 2_000, rate: float | None = 2_000.0) -> Pipeline:
    p = Pipeline(name, source=SyntheticSource(records=records, rate=rate, seed=2),
                 max_parallelism=4)
    return p.map("a", identity).sink(CaptureSink())


def test_more_than_the_cluster_can_ever_hold_fails_fast(tmp_path: Path,
                                                        ray_cluster: Any) -> None:
    from streamprov.runtime.ray import RayRunner

    started = time.monotonic()
    with pytest.raises(PipelineError, match="largest Ray node has 8"):
        RayRunner(num_cpus=64, cluster=ray_cluster).start(small("huge"), **urls(tmp_path))
    with pytest.raises(PipelineError, match=r"2 nodes x 5 CPUs = 10 CPUs.*has 8"):
        RayRunner(num_cpus=5, cluster=ray_cluster).start(small("wide"), **urls(tmp_path))
    assert time.monotonic() - started < 5  # checked before any actor exists


def test_node_ids_name_the_ray_node_and_chains_are_complete(tmp_path: Path,
                                                            ray_runner: RunnerFactory) -> None:
    import ray

    p = small("ids")
    dep = ray_runner(batch_size=200).start(p, **urls(tmp_path))
    result = dep.wait(60)
    chains = assert_complete(tmp_path, "ids", result, 3)
    here = ray.get_runtime_context().get_node_id()[:8]
    assert {h.node_id for c in chains for h in c.hops} == {
        f"ids/source/0@{here}", f"ids/a/0@{here}", f"ids/sink/0@{here}"}
    assert len(dep.captured) == 2_000
    assert {n["role"] for n in result.nodes} == {"source-0", "ingest", "a-0", "sink-0",
                                                 "writer"}


def test_killed_actor_is_replaced_while_nobody_waits(tmp_path: Path,
                                                     ray_runner: RunnerFactory) -> None:
    import ray

    dep = ray_runner(batch_size=50).start(small("kill", records=None), **urls(tmp_path))
    deadline = time.monotonic() + 30
    while dep.ingested() < 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    ray.kill(dep.node_actor("a", 0), no_restart=True)
    deadline = time.monotonic() + 60
    while not dep.recoveries and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.node for r in dep.recoveries] == ["kill/a/0"]
    mark = dep.ingested()
    while dep.ingested() < mark + 500 and time.monotonic() < deadline:
        time.sleep(0.05)
    result = dep.stop()
    assert result.ingested > mark
    assert_complete(tmp_path, "kill", result, 3)
    assert dep.pids() == {}


def test_killed_actor_fails_the_deployment_when_its_source_cannot_resume(
    tmp_path: Path, ray_runner: RunnerFactory
) -> None:
    import ray

    p = Pipeline("once", source=ScriptedSource(tuple({"i": i} for i in range(200_000))))
    p.map("a", identity).sink(CaptureSink())
    dep = ray_runner(batch_size=50).start(p, **urls(tmp_path))
    ray.kill(dep.node_actor("a", 0), no_restart=True)
    with pytest.raises(PipelineError, match=r"once/a/0 died.*not restarting"):
        dep.wait(60)
    assert dep.pids() == {}


def test_replay_provisions_its_configuration_on_ray(
    tmp_path: Path, ray_cluster: Any
) -> None:
    """The replay engine on the Ray runner: same order, same outcomes, chains under the
    replay's id."""
    from streamprov.app import App, Settings, replay_engine
    from streamprov.replay import ReplayRequest
    from streamprov.runtime.ray import RayRunner
    from tests.replay.streams import RECORDS, catalog_for_tests, record_stream

    recorded = record_stream(tmp_path / "data")

    def ray_runner(*, batch_size: int, queue_batches: int, node_type: Any = None) -> RayRunner:
        return RayRunner(batch_size=batch_size, queue_batches=queue_batches, num_cpus=0.5,
                         cluster=ray_cluster)

    app = App(Settings.resolve(recorded.data_dir))
    engine = replay_engine(app, catalog_for_tests(recorded.data_dir), sample_interval_s=0.1)
    engine.runner_factory = ray_runner  # the shared test cluster, not one of the app's own
    req = ReplayRequest.parse("demo", recorded.first_ns, recorded.end_ns, "one", 10.0)
    doc = engine.run(req)
    assert doc["state"] == "completed", doc
    report = doc["report"]
    assert report["records"] == RECORDS
    assert report["fidelity"] == "match" and report["orderPreserved"] is True
    assert set(report["perHopLatencyNs"]) == {"parse", "valid", "enrich", "score", "sink"}
    with app.provenance() as store:
        [chain] = store.chains_for_record("demo", recorded.order[0], doc["replayId"])
    assert all(h.node_id.startswith("demo~replay/") and "@" in h.node_id for h in chain.hops)
