"""The same pipeline with provenance on vs off, alternating runs in one process.

Also measured, not the ratio: provenance on with its DuckDB store uncompressed
(``?compression=none``: cheaper to write, about 7x larger), as ``ratio_uncompressed_store``."""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench._pipelines import Run, cpu_us_per_record, streamprov_run


def run(quick: bool) -> dict[str, Any]:
    records = 200_000 if quick else 1_000_000
    rounds = 2 if quick else 5
    on: list[Run] = []
    off: list[Run] = []
    plain: list[Run] = []  # provenance on, its store uncompressed (?compression=none)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        streamprov_run(20_000, root, "warm")
        for i in range(rounds):
            off.append(streamprov_run(records, root, f"off{i}", provenance=False))
            on.append(streamprov_run(records, root, f"on{i}", provenance=True))
            plain.append(streamprov_run(records, root, f"plain{i}", provenance=True,
                                        provenance_options="?compression=none"))
            print(f"round {i}: provenance off {off[-1].rate:,.0f} rec/s, "
                  f"on {on[-1].rate:,.0f} rec/s, on uncompressed {plain[-1].rate:,.0f} rec/s",
                  flush=True)
    on_rate = statistics.median(r.rate for r in on)
    off_rate = statistics.median(r.rate for r in off)
    plain_rate = statistics.median(r.rate for r in plain)
    cpu = {"off": cpu_us_per_record(off), "on": cpu_us_per_record(on),
           "on_uncompressed_store": cpu_us_per_record(plain)}
    # what provenance adds, process by process: the budget a 0.9 ratio leaves is a ninth of
    # the total with provenance off (the machine's two cores are the limit)
    added = {role: round(cpu["on"].get(role, 0.0) - cpu["off"].get(role, 0.0), 2)
             for role in cpu["on"]}
    for label, by_role in [*cpu.items(), ("added by provenance", added)]:
        print(f"CPU µs per record, {label}: "
              + ", ".join(f"{role} {us:.2f}" for role, us in by_role.items()), flush=True)
    return {"name": "provenance_overhead", "ratio": round(on_rate / off_rate, 3),
            "target": 0.9, "on_records_per_s": round(on_rate),
            "off_records_per_s": round(off_rate), "records": records,
            "ratio_uncompressed_store": round(plain_rate / off_rate, 3),
            "cpu_us_per_record": {**cpu, "added": added,
                                  "budget_for_target": round(cpu["off"]["total"] / 9, 2)}}
