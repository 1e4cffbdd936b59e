"""End to end on the local runner: real processes, real DuckDB files.

Tests taking the ``runner`` fixture (tests/runtime/conftest.py) run on both runners: local
processes and Ray actors on a local Ray cluster.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any, TypedDict

import pytest

from streamprov.errors import InvalidInput, PipelineError
from streamprov.examples.demo import build
from streamprov.model import Chain, Outcome
from streamprov.runtime import (
    CaptureSink,
    JsonLinesSink,
    JsonLinesSource,
    LocalRunner,
    Pipeline,
    RunResult,
    SyntheticSource,
)
from streamprov.store import open_provenance_store, open_stream_log
from streamprov.testing import ScriptedSource, explode, fail_on_odd_seq, identity, user_key

RunnerFactory = Any


def base_node(node_id: str) -> str:
    """A node id without the Ray runner's ``@<ray node>`` suffix (same on both runners)."""
    return node_id.partition("@")[0]


class StoreUrls(TypedDict):
    """The store arguments of a runner's ``start``."""

    provenance_url: str
    stream_log_url: str


def urls(root: Path) -> StoreUrls:
    return {"provenance_url": f"duckdb://{root / 'provenance.duckdb'}",
            "stream_log_url": f"duckdb://{root / 'streams.duckdb'}"}


def all_chains(root: Path, stream: str) -> list[Chain]:
    store = open_provenance_store(urls(root)["provenance_url"], read_only=True)
    try:
        return [c for chunk in store.iter_window(stream, 0, 2**63 - 1) for c in chunk]
    finally:
        store.close()


def logged_ids(root: Path, stream: str) -> set[int]:
    log = open_stream_log(urls(root)["stream_log_url"], read_only=True)
    try:
        return set(log.record_ids(stream).tolist())
    finally:
        log.close()


def assert_complete(root: Path, stream: str, result: RunResult, hops: int) -> list[Chain]:
    chains = all_chains(root, stream)
    ids = Counter(c.record_id for c in chains)
    assert set(ids) == logged_ids(root, stream), "every logged record has a chain"
    assert max(ids.values()) == 1, "exactly one chain per record"
    for c in chains:
        ts = [h.timestamp_ns for h in c.hops]
        assert all(a < b for a, b in pairwise(ts)), c
        if c.outcome is Outcome.DELIVERED:
            assert len(c.hops) == hops
    outcomes = Counter(c.outcome for c in chains)
    assert outcomes[Outcome.DELIVERED] == result.delivered
    assert outcomes[Outcome.DROPPED] == result.dropped
    assert outcomes[Outcome.FAILED] == result.failed
    assert result.delivered + result.dropped + result.failed == result.ingested
    return chains


def test_demo_pipeline_every_record_has_one_complete_chain(
    tmp_path: Path, runner: RunnerFactory
) -> None:
    pipeline = build(records=6_000, sources=3).with_sink(CaptureSink())
    dep = runner(batch_size=256).start(pipeline, **urls(tmp_path))
    result = dep.wait(120)
    assert result.ingested == 6_000
    assert result.dropped > 0
    chains = assert_complete(tmp_path, "demo", result, pipeline.hops_per_record())
    assert len(dep.captured) == result.delivered
    sources = {base_node(c.hops[0].node_id) for c in chains}
    assert sources == {"demo/source/0", "demo/source/1", "demo/source/2"}
    # enrich is keyed by user: one user's records all pass the same enrich instance
    by_user: dict[str, set[str]] = {}
    for rec in dep.captured:
        by_user.setdefault(rec["payload"]["user"], set()).add(
            base_node(rec["provenance"][3]["nodeId"]))
    assert all(len(nodes) == 1 for nodes in by_user.values())
    assert {n for nodes in by_user.values() for n in nodes} == {"demo/enrich/0",
                                                                 "demo/enrich/1"}


def test_same_seed_same_outputs(tmp_path: Path) -> None:
    outputs = []
    for run in range(2):
        pipeline = build(records=2_000, sources=2, seed=11).with_sink(CaptureSink())
        dep = LocalRunner(batch_size=100).start(pipeline, **urls(tmp_path / str(run)))
        dep.wait(120)
        outputs.append(sorted((r["recordId"], r["payload"]["risk"]) for r in dep.captured))
    assert outputs[0] == outputs[1]
    assert len(outputs[0]) > 1_900


def test_every_node_reports_its_cpu_with_and_without_start_up(tmp_path: Path) -> None:
    pipeline = build(records=2_000, sources=2).with_sink(CaptureSink())
    result = LocalRunner(batch_size=100).start(pipeline, **urls(tmp_path)).wait(120)
    roles = {n["role"] for n in result.nodes}
    assert {"ingest", "writer", "source-0", "source-1"} <= roles
    for node in result.nodes:
        # (what the benchmarks' per-process CPU figures are made of)
        assert 0 < node["cpuRunS"] < node["cpuS"], node
    by_role = result.cpu_s_by_role()
    assert list(by_role) and set(by_role) == {"source", "ingest", "writer",
                                              *(st.name for st in pipeline.stages)}
    assert sum(by_role.values()) == pytest.approx(sum(n["cpuRunS"] for n in result.nodes))


def test_operator_errors_fail_records_and_pipeline_goes_on(
    tmp_path: Path, runner: RunnerFactory
) -> None:
    p = Pipeline("errs", source=SyntheticSource(records=1_400, seed=3))
    p.map("fragile", fail_on_odd_seq).sink(CaptureSink())
    result = runner(batch_size=64).start(p, **urls(tmp_path)).wait(60)
    assert result.failed == 100
    chains = assert_complete(tmp_path, "errs", result, 3)
    failed = [c for c in chains if c.outcome is Outcome.FAILED]
    assert all(c.error and c.error.startswith("ValueError: cannot handle seq") for c in failed)
    assert all(base_node(c.hops[-1].node_id) == "errs/fragile/0" for c in failed)


def test_flat_map_branches_each_get_a_chain(tmp_path: Path, runner: RunnerFactory) -> None:
    p = Pipeline("fan", source=SyntheticSource(records=300, seed=1))
    p.flat_map("explode", explode, parallelism=2).map("same", identity).sink(CaptureSink())
    dep = runner(batch_size=50).start(p, **urls(tmp_path))
    dep.wait(60)
    chains = all_chains(tmp_path, "fan")
    delivered = [c for c in chains if c.outcome is Outcome.DELIVERED]
    assert len(delivered) == len(dep.captured) == 300  # 0 + 1 + 2 outputs per 3 records
    assert len({(c.record_id, c.branch) for c in delivered}) == 300
    assert sum(c.outcome is Outcome.DROPPED for c in chains) == 100


def test_jsonl_source_malformed_lines_fail_with_line_numbers(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text('{"user": "a", "seq": 1}\nnot json\n\n{"user": "b", "seq": 2}\n{"broken": \n')
    out = tmp_path / "out.jsonl"
    p = Pipeline("lines", source=JsonLinesSource(str(src), key_field="user"))
    p.map("same", identity).sink(JsonLinesSink(out))
    result = LocalRunner().start(p, **urls(tmp_path / "d")).wait(60)
    assert (result.ingested, result.delivered, result.failed) == (4, 2, 2)
    chains = all_chains(tmp_path / "d", "lines")
    errors = sorted(c.error or "" for c in chains if c.outcome is Outcome.FAILED)
    assert errors[0].startswith("line 2: invalid JSON")
    assert errors[1].startswith("line 5: invalid JSON")
    lines = out.read_text().splitlines()
    assert len(lines) == 2
    assert not (tmp_path / "out.jsonl.partial").exists()


def run_scaling(tmp_path: Path, steps: list[tuple[str, int]],
                runner: RunnerFactory = LocalRunner) -> tuple[RunResult, Any]:
    """An endless source, scaled at progress milestones, not at times: ``GAP`` records flow
    after each step has taken effect (however long starting actors takes on a loaded
    machine) and before the next one; then the deployment is stopped and drained."""
    gap = 1_500
    p = Pipeline("scale", source=SyntheticSource(records=None, rate=2_000, seed=5),
                 sources=2, max_parallelism=4)
    p.map("a", identity, parallelism=1, key=user_key).map("b", identity).sink(CaptureSink())
    dep = runner(batch_size=100).start(p, **urls(tmp_path))

    def flow() -> None:
        mark = dep.ingested()
        deadline = time.monotonic() + 120
        while dep.ingested() < mark + gap and time.monotonic() < deadline:
            time.sleep(0.02)

    for stage, n in steps:
        flow()
        dep.scale(stage, n)
    flow()
    result = dep.stop(120)
    return result, dep


def test_scaling_up_and_down_mid_run_loses_and_duplicates_nothing(
    tmp_path: Path, runner: RunnerFactory
) -> None:
    result, dep = run_scaling(tmp_path, [("a", 3), ("b", 2), ("a", 1), ("b", 1), ("a", 2)],
                              runner)
    assert [(s.stage, s.before, s.after) for s in result.scaling] == [
        ("a", 1, 3), ("b", 1, 2), ("a", 3, 1), ("b", 2, 1), ("a", 1, 2)]
    ids = Counter(r["recordId"] for r in dep.captured)
    assert result.ingested >= 6 * 1_500
    assert len(ids) == result.ingested and max(ids.values()) == 1
    chains = assert_complete(tmp_path, "scale", result, 4)
    used = {base_node(c.hops[1].node_id) for c in chains}
    assert {"scale/a/0", "scale/a/1", "scale/a/2"} <= used


def test_scale_rejects_bad_counts(tmp_path: Path, runner: RunnerFactory) -> None:
    p = Pipeline("bad", source=SyntheticSource(records=2_000, rate=4_000), max_parallelism=2)
    p.map("a", identity).sink(JsonLinesSink(tmp_path / "o.jsonl"))
    with runner().start(p, **urls(tmp_path)) as dep:
        with pytest.raises(InvalidInput, match=r"1\.\.2"):
            dep.scale("a", 3)
        with pytest.raises(InvalidInput, match="cannot scale out"):
            dep.scale("sink", 2)
        dep.stop()


def test_stop_drains_what_was_ingested(tmp_path: Path, runner: RunnerFactory) -> None:
    p = Pipeline("endless", source=SyntheticSource(records=None, rate=5_000))
    p.map("a", identity).sink(CaptureSink())
    dep = runner(batch_size=50).start(p, **urls(tmp_path))
    time.sleep(0.5)
    result = dep.stop()
    assert result.ingested > 0
    assert len(dep.captured) == result.delivered == result.ingested
    assert_complete(tmp_path, "endless", result, 3)


def boom(payload: Any) -> Any:
    raise SystemExit(3)  # not an Exception: kills the node process


def test_dead_node_fails_the_deployment_clearly(tmp_path: Path, runner: RunnerFactory) -> None:
    p = Pipeline("dies", source=ScriptedSource(tuple({"i": i} for i in range(10))))
    p.map("boom", boom).sink()
    with pytest.raises(PipelineError, match="boom"):  # at start-up or later, as it happens
        runner().start(p, **urls(tmp_path)).wait(60)


def test_lambdas_are_refused_with_advice(tmp_path: Path) -> None:
    p = Pipeline("lam", source=ScriptedSource(({"i": 1},)))
    p.map("l", lambda x: x).sink()
    with pytest.raises(PipelineError, match="module level"):
        LocalRunner().start(p, **urls(tmp_path))


def test_backpressure_bounds_the_queues(tmp_path: Path, runner: RunnerFactory) -> None:
    """A slow sink holds the source back instead of letting queues grow."""
    p = Pipeline("slow", source=SyntheticSource(records=None), max_parallelism=1)
    p.map("slow", slow).sink()
    dep = runner(batch_size=10, queue_batches=2).start(p, **urls(tmp_path))
    time.sleep(1.0)
    seen = dep.ingested()
    result = dep.stop()
    # the slow stage handles ~10 batches/s; without backpressure the source would be ahead by
    # hundreds of thousands of records
    assert seen < 2_000
    assert result.delivered == result.ingested


def slow(payload: Any) -> Any:
    time.sleep(0.01)
    return payload


_ = threading
