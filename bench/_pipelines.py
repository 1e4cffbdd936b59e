"""Pipelines and baselines shared by the runtime benchmarks (module-level, so picklable)."""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import Any

from streamprov.runtime import NullSink, Pipeline, SyntheticSource


def bump(payload: dict[str, Any]) -> dict[str, Any]:
    payload["amount"] = payload["amount"] + 1.0
    return payload


def three_hops(records: int, *, provenance: bool = True) -> Pipeline:
    """source -> map -> sink: three hops per record."""
    p = Pipeline("bench", source=SyntheticSource(records=records, keys=1000, seed=1),
                 sources=1, provenance=provenance)
    return p.map("bump", bump).sink(NullSink())


# -- the hand-written baseline: the same dataflow with bare multiprocessing -------------------
def _gen(q_out: Any, records: int, batch: int) -> None:
    source = SyntheticSource(records=records, keys=1000, seed=1)
    for chunk in source.read(0, 1, batch):
        q_out.put(chunk.payloads)
    q_out.put(None)


def _map(q_in: Any, q_out: Any) -> None:
    while (items := q_in.get()) is not None:
        q_out.put([bump(p) for p in items])
    q_out.put(None)


def _sink(q_in: Any, done: Any) -> None:
    n = 0
    while (items := q_in.get()) is not None:
        n += len(items)
    done.put(n)


def handwritten(records: int, batch: int = 1024, queue_batches: int = 8) -> tuple[int, float]:
    """Run generator -> map -> sink as three processes; returns (records, seconds)."""
    ctx = mp.get_context("forkserver")
    q1, q2, done = ctx.Queue(queue_batches), ctx.Queue(queue_batches), ctx.Queue()
    procs = [ctx.Process(target=_sink, args=(q2, done)), ctx.Process(target=_map, args=(q1, q2))]
    for p in procs:
        p.start()
    gen = ctx.Process(target=_gen, args=(q1, records, batch))
    t0 = time.perf_counter()
    gen.start()
    n = done.get()
    elapsed = time.perf_counter() - t0
    for p in [gen, *procs]:
        p.join()
    return int(n), elapsed
