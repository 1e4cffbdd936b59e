"""Crash recovery on the local runner: node processes killed with SIGKILL at random moments,
real processes and real DuckDB files; and the recovery helpers against the stores."""

from __future__ import annotations

import os
import signal
import threading
from collections import Counter
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyarrow.ipc as ipc
import pytest

from streamprov.errors import PipelineError
from streamprov.examples.demo import build
from streamprov.model import Outcome
from streamprov.runtime import CaptureSink, LocalRunner, Pipeline
from streamprov.runtime.local import Deployment as LocalDeployment
from streamprov.runtime.recovery import find_unfinished, logged_per_source, write_redrive_file
from streamprov.store import open_provenance_store, open_stream_log
from streamprov.testing import ScriptedSource, identity, kill_nodes
from tests.runtime.conftest import RunnerFactory
from tests.runtime.test_local import all_chains, logged_ids, urls
from tests.store.chains import chain, log_rows, rows


def test_random_kills_lose_nothing_and_count_duplicates(
    tmp_path: Path, runner: RunnerFactory
) -> None:
    records = 16_000
    pipeline = build(records=records, sources=2, rate=2_500, seed=7).with_sink(CaptureSink())
    dep = runner(batch_size=200).start(pipeline, **urls(tmp_path))
    killed: list[str] = []
    kills = 4 if isinstance(dep, LocalDeployment) else 2
    killer = threading.Thread(target=kill_nodes, args=(dep, kills),
                              kwargs={"seed": 3, "killed": killed})
    killer.start()
    result = dep.wait(300)
    killer.join()

    assert len(killed) >= kills - 1, killed
    assert len(result.recoveries) == len(killed)
    if isinstance(dep, LocalDeployment):
        assert [r.node for r in result.recoveries] == killed
    # the sources resumed exactly where the log ended: every id once, none skipped
    assert logged_ids(tmp_path, "demo") == set(range(records))
    assert result.ingested == records
    chains = all_chains(tmp_path, "demo")
    per_path = Counter((c.record_id, c.branch) for c in chains)
    assert max(per_path.values()) == 1, "exactly one chain per record and path"
    assert {c.record_id for c in chains} == set(range(records))
    hops = pipeline.hops_per_record()
    for c in chains:
        ts = [h.timestamp_ns for h in c.hops]
        assert all(a < b for a, b in pairwise(ts)), c
        if c.outcome is Outcome.DELIVERED:
            assert len(c.hops) == hops
    outcomes = Counter(c.outcome for c in chains)
    assert result.delivered == outcomes[Outcome.DELIVERED]
    assert result.delivered + result.dropped + result.failed == records
    # outputs at least once, and the duplicates are counted exactly
    out = Counter(r["recordId"] for r in dep.captured)
    delivered = {c.record_id for c in chains if c.outcome is Outcome.DELIVERED}
    assert set(out) == delivered
    assert result.duplicated_outputs == sum(n - 1 for n in out.values())
    # the payloads are the ones a run without crashes produces (the sources resumed exactly)
    seqs: dict[int, set[int]] = {0: set(), 1: set()}
    for r in dep.captured:
        seqs[r["payload"]["source"]].add(r["payload"]["seq"])
    log = open_stream_log(urls(tmp_path)["stream_log_url"], read_only=True)
    try:
        entries = log.entries("demo", list(range(records)))
    finally:
        log.close()
    assert sorted((e.payload["source"], e.payload["seq"]) for e in entries.values()) == sorted(
        [(0, i) for i in range(records // 2)] + [(1, i) for i in range(records // 2)])


def test_a_source_that_cannot_resume_fails_clearly(tmp_path: Path) -> None:
    p = Pipeline("once", source=ScriptedSource(tuple({"i": i} for i in range(50_000))))
    p.map("a", identity).sink(CaptureSink())
    dep = LocalRunner(batch_size=100).start(p, **urls(tmp_path))
    os.kill(dep.pids()["a-0"], signal.SIGKILL)
    with pytest.raises(PipelineError, match=r"a-0.*not restarting: its source cannot be read"):
        dep.wait(60)


# -- the helpers, against the stores ---------------------------------------------------------
def test_logged_per_source_counts_each_instances_prefix() -> None:
    logged = np.array([100, 101, 102, 104, 106, 103], dtype=np.int64)
    assert logged_per_source(logged, 100, 3) == (3, 2, 1)
    assert logged_per_source(np.array([5, 7], dtype=np.int64), 10, 2) == (0, 0)


def test_unfinished_records_are_the_logged_ones_without_a_chain(tmp_path: Path) -> None:
    u = urls(tmp_path)
    log = open_stream_log(u["stream_log_url"])
    log.append(log_rows("s1", [0, 1, 2, 3, 4], ingest_ns=[50, 40, 30, 20, 10]))
    log.close()
    store = open_provenance_store(u["provenance_url"])
    store.write(rows([chain(1, 40), chain(3, 20, outcome=Outcome.DROPPED, hops=2)]))
    store.close()
    got = find_unfinished(u["stream_log_url"], u["provenance_url"], "s1")
    assert got.logged.tolist() == [0, 1, 2, 3, 4]
    assert got.orphans.tolist() == [0, 2, 4]
    assert find_unfinished(u["stream_log_url"], u["provenance_url"], "s1",
                           from_record=3).orphans.tolist() == [4]

    path = tmp_path / "redrive.arrow"
    n = write_redrive_file(path, u["stream_log_url"], "s1", got.orphans,
                           lambda ids: [f"src/{i % 2}" for i in ids.tolist()])
    assert n == 3
    with ipc.open_file(path) as f:
        table = f.read_all()
    # in the original order (ingest time), payloads as logged, hop 0's node
    assert table.column("record_id").to_pylist() == [4, 2, 0]
    assert table.column("ingest_ts_ns").to_pylist() == [10, 30, 50]
    assert table.column("payload").to_pylist() == ['{"n":4}', '{"n":2}', '{"n":0}']
    assert table.column("origin_node").to_pylist() == ["src/0", "src/0", "src/0"]
