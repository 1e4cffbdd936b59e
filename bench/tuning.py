"""Tuning: how few replays the searches need, and how fast the memory autoscaler settles.

* **hill_climb_eval_fraction / genetic_eval_fraction**: evaluations each search needed until it
  had found a configuration meeting the SLO within 5 % of the cost of the exhaustive grid's best,
  over the grid's evaluation count (target <= 0.25; CherryPick reports up to 75 % search-cost
  savings). Every evaluation is a real replay (local runner, DuckDB) of a sample of a recorded
  window: the grid replays every configuration once; hill climbing (from the most expensive
  configuration, several restart seeds) and the genetic search (optuna NSGA-II with the
  population size the API uses, several seeds)
  are then run against those same measurements, so the three compare on identical figures
  and the benchmark does not pay for every replay three times. Means over the seeds.
* **autoscale_steps**: scaling decisions the memory autoscaler took to settle after a step
  change in load (state of a windowed stage growing from nothing to ~100 MiB), and after the
  step back (target <= 3; DS2 needed at most 3 on Nexmark); the larger of the two.

The pipeline under test: source -> work -> sink, ``work`` sleeps ``PER_RECORD_S`` per record
(a node handles ~1,100 records/s), the window is replayed at ``RATE`` records/s, so the
cheapest configuration that keeps up needs several nodes of the cheapest type.
"""

from __future__ import annotations

import mmap
import statistics
import tempfile
import time
from collections import deque
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from streamprov.adapt.autoscaler import MemoryAutoscaler, MemoryPolicy, PsutilMemorySampler
from streamprov.adapt.evaluate import ReplayEvaluator
from streamprov.adapt.search import GridSearch, make_search, search
from streamprov.adapt.slo import Evaluation, Slo
from streamprov.adapt.space import Candidate, SearchSpace
from streamprov.app import App, Settings
from streamprov.config import Catalog
from streamprov.runtime import LocalRunner, NullSink, Pipeline, SyntheticSource, load_pipeline

PER_RECORD_S = 0.0008
RATE = 2500.0
SLO = Slo(p99_latency_ns=150_000_000)
SEEDS = (0, 1, 2, 3, 4)
MIB = 1 << 20


# -- pipelines (module level: their functions run in node processes) ------------------------------
def work(p: dict[str, Any]) -> dict[str, Any]:
    time.sleep(PER_RECORD_S)
    return p


def pipeline() -> Pipeline:
    return (Pipeline("tuning", source=SyntheticSource(records=int(RATE * 2), rate=RATE, seed=3))
            .map("work", work).sink(NullSink()))


_ONES = memoryview(b"\x01" * (1 << 20))
_STATE: deque[tuple[float, mmap.mmap]] = deque()
_CONTROL: dict[str, float] = {"checked": 0.0, "size": 0.0}


def hold(control: str, p: dict[str, Any]) -> dict[str, Any]:
    """Keeps ``size`` bytes (from the control file) per record for 1 s: windowed state."""
    now = time.monotonic()
    if now - _CONTROL["checked"] > 0.05:
        try:
            _CONTROL["size"] = float(Path(control).read_text() or 0)
        except (OSError, ValueError):
            _CONTROL["size"] = 0.0
        _CONTROL["checked"] = now
    while _STATE and _STATE[0][0] < now - 1.0:
        _STATE.popleft()[1].close()
    size = min(int(_CONTROL["size"]), len(_ONES))
    if size > 0:
        m = mmap.mmap(-1, size)
        m.write(_ONES[:size])
        _STATE.append((now, m))
    return p


# -- the searches ---------------------------------------------------------------------------------
@dataclass
class Measured:
    """The grid's real measurements, served again to the other searches."""

    known: dict[Candidate, Evaluation]

    def evaluate(self, candidate: Candidate) -> Evaluation:
        return self.known[candidate]


def _space(catalog: Catalog, quick: bool) -> SearchSpace:
    if quick:
        return SearchSpace.generate(catalog, nodes=(1, 4), node_types=["small", "medium"],
                                    batch_sizes=[64, 256], stages=2)
    return SearchSpace.generate(catalog, nodes=(1, 5), node_types=["small", "medium", "large"],
                                batch_sizes=[64, 256, 1024], stages=2)


def searches(quick: bool) -> dict[str, Any]:
    data_dir = Path(tempfile.mkdtemp(prefix="streamprov-bench-tuning-")) / "data"
    app = App(Settings.resolve(data_dir, batch_size=64))
    app.run(load_pipeline("bench.tuning:pipeline"))
    with app.provenance() as store:
        s = next(x for x in store.streams() if x.stream_id == "tuning")
    assert s.first_ns is not None
    catalog = Catalog.load(None, data_dir, cwd=Path("/nonexistent"))
    space = _space(catalog, quick)
    sample_s = 0.6 if quick else 1.0
    st = app.settings
    evaluator = ReplayEvaluator.create(
        job_dir=data_dir / "tuning" / "bench", catalog=catalog, space=space,
        provenance_url=st.provenance_url, stream_log_url=st.stream_log_url,
        pipeline_for=app.pipeline_for, gate=app.gate, queue_batches=st.queue_batches,
        slo=SLO, stream_id="tuning", start_ns=s.first_ns,
        end_ns=s.first_ns + int(sample_s * 1e9), repeats=1)
    t = time.perf_counter()
    grid = search(GridSearch(space), space, evaluator, budget=space.size)
    grid_s = time.perf_counter() - t
    if grid.best is None:
        raise SystemExit("no configuration met the SLO: the benchmark has no optimum")
    target = grid.best.cost
    measured = Measured({e.candidate: e for e in grid.evaluations})
    start = max(space, key=lambda c: (space.cost(c), c.batch_size))
    fractions: dict[str, list[float]] = {"hill-climb": [], "genetic": []}
    for seed in SEEDS:
        for algo in (make_search("hill-climb", space, seed=seed),
                     make_search("genetic", space, seed=seed)):
            result = search(algo, space, measured, budget=space.size, start=start)
            needed = result.evaluations_to_reach(target) or space.size
            fractions[algo.name].append(needed / space.size)
    print(f"grid: {space.size} configurations replayed in {grid_s:.1f} s "
          f"({evaluator.replays} replays); best {grid.best.candidate.id} at "
          f"{target:.3f}/h, p99 {grid.best.p99_latency_ns / 1e6:.1f} ms")
    for e in grid.evaluations:
        print(f"  {e.candidate.id:26s} cost {e.cost:6.3f} p99 {e.p99_latency_ns / 1e6:8.1f} ms "
              f"{e.throughput:7.0f}/s kept up {e.kept_up!s:5s} SLO {e.slo_met}")
    for name, fr in fractions.items():
        print(f"{name}: evaluations to within 5% of the grid's best, as a fraction of the "
              f"grid: {', '.join(f'{x:.2f}' for x in fr)} (mean {statistics.mean(fr):.3f})")
    return {"grid_evaluations": space.size, "grid_best": grid.best.candidate.id,
            "grid_best_cost": round(target, 6), "grid_s": round(grid_s, 1),
            "replays": evaluator.replays,
            "hill_climb_eval_fraction": round(statistics.mean(fractions["hill-climb"]), 4),
            "genetic_eval_fraction": round(statistics.mean(fractions["genetic"]), 4)}


# -- the autoscaler -------------------------------------------------------------------------------
def autoscale(quick: bool) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="streamprov-bench-autoscale-"))
    control = root / "bytes-per-record"
    control.write_text("0")
    p = (Pipeline("stateful", source=SyntheticSource(records=None, rate=400.0, seed=5))
         .map("hold", partial(hold, str(control))).sink(NullSink()))
    dep = LocalRunner(batch_size=32).start(
        p, provenance_url=f"duckdb://{root / 'provenance.duckdb'}",
        stream_log_url=f"duckdb://{root / 'streams.duckdb'}")
    cooldown_s = 1.5
    scaler = MemoryAutoscaler(dep, PsutilMemorySampler(dep.pids), "hold", 200 * MIB,
                              MemoryPolicy(high=0.6, low=0.3, sustain=3,
                                           cooldown_s=cooldown_s, max_nodes=8))
    settle_s = 4.0 if quick else 8.0

    def phase() -> tuple[int, float]:
        """Decisions until none came for ``settle_s``, and the time of the last one."""
        before = len(scaler.decisions)
        t0 = last = time.monotonic()
        while time.monotonic() - last < settle_s + cooldown_s:
            if scaler.step() is not None:
                last = time.monotonic()
            time.sleep(0.2)
        return len(scaler.decisions) - before, last - t0

    try:
        time.sleep(1.0)
        control.write_text(str(256 * 1024))  # step up: ~100 MiB of state on one node
        up, up_s = phase()
        counts_up = dep.parallelism()["hold"]
        control.write_text("0")  # step down
        down, down_s = phase()
    finally:
        dep.stop()
    print(f"autoscaler: {up} decision(s) after the step up (to {counts_up} nodes, last at "
          f"{up_s:.1f} s), {down} after the step down (last at {down_s:.1f} s): "
          + "; ".join(f"{d['from']}->{d['to']}" for d in scaler.decisions))
    return {"autoscale_steps": max(up, down), "autoscale_steps_up": up,
            "autoscale_steps_down": down, "autoscale_nodes_after_step": counts_up}


def run(quick: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": "tuning"}
    out.update(searches(quick))
    out.update(autoscale(quick))
    return out
