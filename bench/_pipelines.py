"""Pipelines and baselines shared by the runtime benchmarks (module-level, so picklable)."""

from __future__ import annotations

import multiprocessing as mp
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamprov.runtime import LocalRunner, NullSink, Pipeline, SyntheticSource


def bump(payload: dict[str, Any]) -> dict[str, Any]:
    payload["amount"] = payload["amount"] + 1.0
    return payload


def three_hops(records: int, *, provenance: bool = True) -> Pipeline:
    """source -> map -> sink: three hops per record."""
    p = Pipeline("bench", source=SyntheticSource(records=records, keys=1000, seed=1),
                 sources=1, provenance=provenance)
    return p.map("bump", bump).sink(NullSink())


# -- the hand-written baseline: the same dataflow with bare multiprocessing -------------------
# (each process reports the CPU it used from when it was ready to go, as streamprov's do)
def _gen(q_out: Any, records: int, batch: int, cpu: Any) -> None:
    start = time.process_time()
    source = SyntheticSource(records=records, keys=1000, seed=1)
    for chunk in source.read(0, 1, batch):
        q_out.put(chunk.payloads)
    q_out.put(None)
    cpu.put(("source", time.process_time() - start))


def _map(q_in: Any, q_out: Any, cpu: Any) -> None:
    start = time.process_time()
    while (items := q_in.get()) is not None:
        q_out.put([bump(p) for p in items])
    q_out.put(None)
    cpu.put(("map", time.process_time() - start))


def _sink(q_in: Any, done: Any, cpu: Any) -> None:
    start = time.process_time()
    n = 0
    while (items := q_in.get()) is not None:
        n += len(items)
    done.put(n)
    cpu.put(("sink", time.process_time() - start))


@dataclass(frozen=True, slots=True)
class Run:
    """One measured run: records through, seconds, and CPU seconds by process role."""

    records: int
    seconds: float
    cpu_s: dict[str, float]

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def handwritten(records: int, batch: int = 1024, queue_batches: int = 8) -> Run:
    """Run generator -> map -> sink as three processes."""
    ctx = mp.get_context("forkserver")
    q1, q2, done, cpu = ctx.Queue(queue_batches), ctx.Queue(queue_batches), ctx.Queue(), \
        ctx.Queue()
    procs = [ctx.Process(target=_sink, args=(q2, done, cpu)),
             ctx.Process(target=_map, args=(q1, q2, cpu))]
    for p in procs:
        p.start()
    gen = ctx.Process(target=_gen, args=(q1, records, batch, cpu))
    t0 = time.perf_counter()
    gen.start()
    n = done.get()
    elapsed = time.perf_counter() - t0
    for p in [gen, *procs]:
        p.join()
    return Run(int(n), elapsed, dict(cpu.get() for _ in range(3)))


def streamprov_run(records: int, root: Path, tag: str, *, provenance: bool = True,
                   provenance_options: str = "") -> Run:
    """The three-hop pipeline on the local runner, stores in ``root / tag`` (the provenance
    store's URL ending in ``provenance_options``); seconds from all nodes up to drained (every
    chain stored)."""
    runner = LocalRunner()
    dep = runner.start(three_hops(records, provenance=provenance),
                       provenance_url=f"duckdb://{root / tag / 'prov.duckdb'}{provenance_options}",
                       stream_log_url=f"duckdb://{root / tag / 'log.duckdb'}")
    result = dep.wait()
    return Run(result.ingested, result.duration_s, result.cpu_s_by_role())


def cpu_us_per_record(runs: list[Run]) -> dict[str, float]:
    """Mean CPU microseconds per record by process role over ``runs`` (from when each process
    was ready: start-up is not counted), and their total. On a 2-core machine, throughput is
    at most 2 cores over the total."""
    roles = sorted({r for run in runs for r in run.cpu_s})
    out = {role: round(statistics.mean(run.cpu_s.get(role, 0.0) / run.records * 1e6
                                       for run in runs), 2) for role in roles}
    out["total"] = round(sum(out.values()), 2)
    return out
