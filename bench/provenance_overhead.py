"""The same pipeline with provenance on vs off, alternating runs in one process."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.pipeline_throughput import streamprov_run


def run(quick: bool) -> dict[str, Any]:
    records = 200_000 if quick else 1_000_000
    rounds = 2 if quick else 3
    on: list[float] = []
    off: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        streamprov_run(20_000, root, "warm")
        for i in range(rounds):
            n, s = streamprov_run(records, root, f"off{i}", provenance=False)
            off.append(n / s)
            n, s = streamprov_run(records, root, f"on{i}", provenance=True)
            on.append(n / s)
            print(f"round {i}: provenance off {off[-1]:,.0f} rec/s, on {on[-1]:,.0f} rec/s",
                  flush=True)
    ratio = statistics.median(on) / statistics.median(off)
    return {"name": "provenance_overhead", "ratio": round(ratio, 3), "target": 0.9,
            "on_records_per_s": round(statistics.median(on)),
            "off_records_per_s": round(statistics.median(off)), "records": records}
