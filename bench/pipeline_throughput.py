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

from bench._pipelines import handwritten, three_hops
from streamprov.runtime import LocalRunner


def streamprov_run(records: int, root: Path, tag: str, *, provenance: bool = True
                   ) -> tuple[int, float]:
    """Run the three-hop pipeline; returns (records, seconds from all nodes up to drained)."""
    runner = LocalRunner()
    dep = runner.start(three_hops(records, provenance=provenance),
                       provenance_url=f"duckdb://{root / tag / 'prov.duckdb'}",
                       stream_log_url=f"duckdb://{root / tag / 'log.duckdb'}")
    result = dep.wait()
    return result.ingested, result.duration_s


def run(quick: bool) -> dict[str, Any]:
    records = 200_000 if quick else 1_000_000
    rounds = 2 if quick else 3
    base_rates: list[float] = []
    ours_rates: list[float] = []
    handwritten(20_000)  # warm the fork server
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(rounds):
            n, s = handwritten(records)
            base_rates.append(n / s)
            n, s = streamprov_run(records, root, f"r{i}")
            ours_rates.append(n / s)
            print(f"round {i}: handwritten {base_rates[-1]:,.0f} rec/s, "
                  f"streamprov {ours_rates[-1]:,.0f} rec/s", flush=True)
    base = statistics.median(base_rates)
    ours = statistics.median(ours_rates)
    return {"name": "pipeline_throughput", "ratio": round(ours / base, 3), "target": 0.6,
            "streamprov_records_per_s": round(ours), "handwritten_records_per_s": round(base),
            "records": records, "hops": 3}
