"""The Ray runner vs the local runner on the same pipeline, in one run.

Both run source -> map -> sink (three hops, stream log and chains written to DuckDB) over the
same synthetic records; the ratio is Ray's throughput over the local runner's (target >= 0.5
on a 2-core machine, where Ray's own processes compete with the pipeline's). Then, on a
rate-limited Ray deployment, the latency of adding one actor to a stage (create, wait until
ready, reroute producers) and of draining it again (reroute, flush, retire).
Runs alternate (local, ray, ...) so machine noise hits both alike.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._pipelines import bump, three_hops
from streamprov.runtime import LocalRunner, NullSink, Pipeline, SyntheticSource
from streamprov.runtime.ray import ClusterOptions, RayRunner


def _run(runner: Any, records: int, root: Path) -> float:
    dep = runner.start(three_hops(records), provenance_url=f"duckdb://{root / 'prov.duckdb'}",
                       stream_log_url=f"duckdb://{root / 'log.duckdb'}")
    result = dep.wait()
    assert result.delivered == records, result
    return float(result.ingested / result.duration_s)


def _scale_latency(runner: RayRunner, root: Path, steps: int) -> tuple[list[float], list[float]]:
    p = Pipeline("scaling", source=SyntheticSource(records=None, rate=20_000, seed=1),
                 max_parallelism=4)
    p.map("bump", bump).sink(NullSink())
    dep = runner.start(p, provenance_url=f"duckdb://{root / 'prov.duckdb'}",
                       stream_log_url=f"duckdb://{root / 'log.duckdb'}")
    up: list[float] = []
    down: list[float] = []
    try:
        for _ in range(steps):
            time.sleep(0.5)
            up.append(dep.scale("bump", 2).duration_s)
            time.sleep(0.5)
            down.append(dep.scale("bump", 1).duration_s)
    finally:
        dep.stop()
    return up, down


def run(quick: bool) -> dict[str, Any]:
    records = 100_000 if quick else 500_000
    rounds = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="sp-bench-") as tmp:
        root = Path(tmp)
        ray_runner = RayRunner(num_cpus=0.5, cluster=ClusterOptions(
            num_cpus=8, temp_dir=Path("/tmp") / f"sp-ray-{root.name}"))
        local_runner = LocalRunner()
        _run(ray_runner, 5_000, root / "warm-ray")  # starts the cluster
        _run(local_runner, 5_000, root / "warm-local")
        local_rates: list[float] = []
        ray_rates: list[float] = []
        for i in range(rounds):
            local_rates.append(_run(local_runner, records, root / f"local-{i}"))
            ray_rates.append(_run(ray_runner, records, root / f"ray-{i}"))
            print(f"round {i}: local {local_rates[-1]:,.0f} rec/s, ray {ray_rates[-1]:,.0f}")
        up, down = _scale_latency(ray_runner, root / "scale", 1 if quick else 3)
        import ray

        ray.shutdown()
    local = statistics.median(local_rates)
    ray_rate = statistics.median(ray_rates)
    ratio = ray_rate / local
    print(f"ray / local throughput: {ratio:.2f}; scale-up {statistics.median(up):.2f}s, "
          f"drain {statistics.median(down):.2f}s")
    return {
        "name": "ray_runner", "ratio": round(ratio, 3), "target": 0.5,
        "records": records, "localRecordsPerS": round(local), "rayRecordsPerS": round(ray_rate),
        "scaleUpS": round(statistics.median(up), 3), "drainS": round(statistics.median(down), 3),
    }
