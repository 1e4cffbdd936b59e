"""The expected-performance model: learned from reports, a capacity model for the unseen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamprov.adapt as adapt
from streamprov.adapt.expectation import ExpectationModel
from streamprov.config import Configuration, NodeType

SMALL = NodeType(cpus=1, memory_bytes=1 << 30, cost_per_hour=0.05)
ONE = Configuration(nodes=1, node_type="small", batch_size=256)
FOUR = Configuration(nodes=4, node_type="small", batch_size=256)


def report(rid: str, cid: str, *, target: float, achieved: float, p99_ms: float,
           kept_up: bool, nodes: int = 2, errors: int = 0) -> dict[str, Any]:
    return {"replayId": rid, "streamId": "s", "configurationId": cid, "records": 1000,
            "targetThroughput": target, "achievedThroughput": achieved,
            "latencyNs": {"p99": int(p99_ms * 1e6)}, "errors": errors, "keptUp": kept_up,
            "nodes": [{"kind": "stage"}] * nodes + [{"kind": "infrastructure"}]}


def test_learns_smoothed_figures_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "exp.json"
    model = ExpectationModel(path)
    model.learn(report("r1", "one", target=1000, achieved=1000, p99_ms=20, kept_up=True))
    model.learn(report("r2", "one", target=1000, achieved=1000, p99_ms=30, kept_up=True))
    model.learn(report("r2", "one", target=1000, achieved=1000, p99_ms=90, kept_up=True))
    exp = ExpectationModel(path).expect("s", "one", ONE, SMALL, 1000.0)
    assert exp is not None and exp.basis == "observed" and exp.samples == 2
    assert exp.p99_latency_ns == int(0.7 * 20e6 + 0.3 * 30e6)  # r2 counted once
    assert exp.throughput == 1000.0
    assert ExpectationModel(path).seen("r2")


def test_capacity_model_for_a_configuration_never_run() -> None:
    model = ExpectationModel()
    assert model.expect("s", "four", FOUR, SMALL, 1000.0) is None
    # one node (two stage processes) saturated at 600/s: 300/s per core
    model.learn(report("r1", "one", target=1000, achieved=600, p99_ms=400, kept_up=False))
    model.learn(report("r2", "two", target=500, achieved=500, p99_ms=10, kept_up=True))
    exp = model.expect("s", "four", FOUR, SMALL, 1000.0)
    assert exp is not None and exp.basis == "model"
    assert exp.throughput == 1000.0  # 4 nodes x 300/s = 1,200/s of capacity
    assert exp.p99_latency_ns is not None and exp.p99_latency_ns > 10e6
    slow = model.expect("s", "one", ONE, SMALL, 1000.0)
    assert slow is not None and slow.basis == "observed" and slow.throughput == 600.0


def test_the_package_exports_what_it_lists() -> None:
    for name in adapt.__all__:
        assert hasattr(adapt, name), name
