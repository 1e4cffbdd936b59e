"""streamprov's local runner vs a hand-written multiprocessing pipeline of the same dataflow.

Both move the same synthetic records through source -> map -> sink (three hops) in 1k-record
batches over bounded queues; streamprov additionally writes the stream log and the chains.
Runs alternate (baseline, streamprov, ...) so machine noise hits both alike.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench._pipelines import Run, cpu_us_per_record, handwritten, streamprov_run


def run(quick: bool) -> dict[str, Any]:
    records = 200_000 if quick else 1_000_000
    rounds = 2 if quick else 5
    base_runs: list[Run] = []
    ours_runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        # warm up; streamprov first, as its runner starts the fork server with the modules
        # every node imports already loaded (the baseline's processes need them too)
        streamprov_run(20_000, root, "warm")
        handwritten(20_000)
        for i in range(rounds):
            base_runs.append(handwritten(records))
            ours_runs.append(streamprov_run(records, root, f"r{i}"))
            print(f"round {i}: handwritten {base_runs[-1].rate:,.0f} rec/s, "
                  f"streamprov {ours_runs[-1].rate:,.0f} rec/s", flush=True)
    base = statistics.median(r.rate for r in base_runs)
    ours = statistics.median(r.rate for r in ours_runs)
    cpu = {"handwritten": cpu_us_per_record(base_runs), "streamprov": cpu_us_per_record(ours_runs)}
    for who, by_role in cpu.items():
        print(f"CPU µs per record, {who}: "
              + ", ".join(f"{role} {us:.2f}" for role, us in by_role.items()), flush=True)
    return {"name": "pipeline_throughput", "ratio": round(ours / base, 3), "target": 0.6,
            "streamprov_records_per_s": round(ours), "handwritten_records_per_s": round(base),
            "records": records, "hops": 3, "cpu_us_per_record": cpu}
