from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from streamprov.clock.hlc import HybridLogicalClock
from streamprov.model import Outcome
from streamprov.runtime.batch import Batch, HopColumn
from streamprov.runtime.node import NodeProcessor
from streamprov.runtime.pipeline import Stage, StageKind
from streamprov.runtime.sinks import CaptureSink, NullSink


class FixedClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def now_ns(self) -> int:
        return self.now

    def error_bound_ns(self) -> int:
        return 7


def batch(n: int, prev_ts: int = 1_000) -> Batch:
    hop = HopColumn("p/source/0", np.full(n, prev_ts, dtype=np.int64),
                    np.arange(n, dtype=np.int64))
    return Batch("s", np.arange(n, dtype=np.int64), [{"v": i} for i in range(n)], hops=[hop])


def node(kind: StageKind, fn: Any = None, clock_ns: int = 5_000, **kw: Any) -> NodeProcessor:
    return NodeProcessor(Stage("st", kind, fn, **kw), 1, "p/st/0",
                         HybridLogicalClock(FixedClock(clock_ns)))


def double(p: dict[str, int]) -> dict[str, int]:
    if p["v"] == 3:
        raise KeyError("three")
    return {"v": p["v"] * 2}


def test_map_fails_only_the_raising_record() -> None:
    res = node(StageKind.MAP, double).process(batch(5))
    assert res.out is not None
    assert res.out.payloads == [{"v": 0}, {"v": 2}, {"v": 4}, {"v": 8}]
    assert res.out.record_ids.tolist() == [0, 1, 2, 4]
    [failed] = res.ended
    assert failed.outcome is Outcome.FAILED
    assert failed.record_ids.tolist() == [3]
    assert failed.errors == ["KeyError: 'three'"]
    assert [h.node_id for h in failed.hops] == ["p/source/0", "p/st/0"]


def test_stamps_after_previous_hop_even_when_clock_is_behind() -> None:
    res = node(StageKind.MAP, dict, clock_ns=10).process(batch(3, prev_ts=1_000))
    assert res.out is not None
    hop = res.out.hops[-1]
    assert (hop.ts_ns > 1_000).all()
    # the bound covers the clock's own error plus how far the stamp ran ahead of it
    assert hop.error_ns == 7 + (1_001 - 10)


def test_per_node_stamps_strictly_increase() -> None:
    n = node(StageKind.MAP, dict, clock_ns=5_000)
    stamps: list[tuple[int, int]] = []
    for _ in range(3):
        res = n.process(batch(4))
        assert res.out is not None
        h = res.out.hops[-1]
        stamps += list(zip(h.ts_ns.tolist(), h.logical.tolist(), strict=True))
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)


def odd(p: dict[str, int]) -> bool:
    return p["v"] % 2 == 1


def test_filter_drops_with_chain() -> None:
    res = node(StageKind.FILTER, odd).process(batch(4))
    assert res.out is not None
    assert res.out.record_ids.tolist() == [1, 3]
    [dropped] = res.ended
    assert dropped.outcome is Outcome.DROPPED
    assert dropped.record_ids.tolist() == [0, 2]


def repeat(p: dict[str, int]) -> list[dict[str, int]]:
    return [p] * p["v"]


def test_flat_map_branches_and_drops() -> None:
    res = node(StageKind.FLAT_MAP, repeat).process(batch(3))
    assert res.out is not None
    assert res.out.record_ids.tolist() == [1, 2, 2]
    assert res.out.branches is not None
    br = res.out.branches.tolist()
    assert br[0] == 0 and br[1] == 0 and br[2] != 0
    assert [e.outcome for e in res.ended] == [Outcome.DROPPED]


def add_col(b: pa.RecordBatch) -> pa.RecordBatch:
    return b.append_column("w", pa.array([1] * b.num_rows))


def shrink(b: pa.RecordBatch) -> pa.RecordBatch:
    return b.slice(0, 1)


def test_batch_operator_and_its_failure() -> None:
    res = node(StageKind.BATCH, add_col).process(batch(2))
    assert res.out is not None
    assert res.out.payloads == [{"v": 0, "w": 1}, {"v": 1, "w": 1}]
    res = node(StageKind.BATCH, shrink).process(batch(2))
    assert res.out is None
    [failed] = res.ended
    assert failed.errors is not None and "returned 1 rows for 2" in failed.errors[0]


def test_sink_delivers_and_builds_spec_shaped_records() -> None:
    captured: list[Any] = []

    class Q:
        def put(self, items: Any) -> None:
            captured.extend(items)

    sink = CaptureSink()
    proc = NodeProcessor(Stage("sink", StageKind.SINK, sink=sink), 1, "p/sink/0",
                         HybridLogicalClock(FixedClock(9_000)), sink_writer=sink.open(0, Q()))
    res = proc.process(batch(2))
    assert [e.outcome for e in res.ended] == [Outcome.DELIVERED]
    assert captured[0]["provenance"][0] == {"nodeId": "p/source/0", "timestamp": 1000,
                                            "logical": 0, "errorNs": 0}
    assert captured[0]["provenance"][1]["nodeId"] == "p/sink/0"


def test_provenance_off_stamps_nothing() -> None:
    proc = NodeProcessor(Stage("sink", StageKind.SINK, sink=NullSink()), 1, "p/sink/0",
                         HybridLogicalClock(), provenance=False,
                         sink_writer=NullSink().open(0, None))
    res = proc.process(batch(2))
    assert res.ended == []
    assert proc.stats.delivered == 2


@pytest.mark.parametrize("kind", [StageKind.MAP, StageKind.FILTER])
def test_empty_batch_is_harmless(kind: StageKind) -> None:
    res = node(kind, odd if kind is StageKind.FILTER else double).process(batch(0))
    assert res.ended == []
