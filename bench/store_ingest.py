"""``store_ingest``: the DuckDB provenance writer vs a raw DuckDB insert of the same rows.

Side by side in one run: every batch (one stream, 4 hops per record, string columns
dictionary-encoded as the runtime's row builder makes them) goes once through
``DuckDBProvenanceStore.write()`` (schema checks, per-stream table, names as codes,
idempotency anti-join, transaction) and once as a plain ``INSERT INTO t SELECT * FROM batch``
into a table with the canonical columns (``PROVENANCE_SCHEMA``) in a second file opened with
the same settings: what storing the same rows in DuckDB costs without streamprov. Both grow to
a few million rows. Ratio = writer rows/s over raw rows/s; target >= 0.8. (Since schema
version 3 the writer stores a compact form of the rows, which is why it can beat the raw
insert.)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from streamprov.store.base import PROVENANCE_SCHEMA
from streamprov.store.duckdb import DuckDBProvenanceStore, _columns_sql

HOPS = 4
NODES = ("source-0", "parse-1", "enrich-2", "sink-0")


def provenance_batch(
    stream_id: str, first_record: int, records: int, t0_ns: int, gap_ns: int,
    *, hops: int = HOPS, seed: int = 0,
) -> pa.Table:
    """``records`` complete chains of ``hops`` hops, hop 0 every ``gap_ns`` from ``t0_ns``,
    grouped by hop like the runtime's ``ChainRowBuilder`` output (strings dictionary-encoded).
    About one chain in fifty failed (with an error message), one in ten dropped."""
    rng = np.random.default_rng(seed + first_record)
    n = records * hops
    rid = np.arange(first_record, first_record + records, dtype=np.int64)
    origin = t0_ns + np.arange(records, dtype=np.int64) * gap_ns
    steps = rng.integers(20_000, 400_000, size=(hops, records), dtype=np.int64)
    steps[0] = 0
    ts = origin + np.cumsum(steps, axis=0)
    fate = rng.random(records)
    outcome_code = np.where(fate < 0.02, 2, np.where(fate < 0.12, 1, 0)).astype(np.int32)

    def dictionary(codes: np.ndarray[Any, Any], values: list[str]) -> pa.DictionaryArray:
        return pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), values)

    errors: list[str | None] = [None] * n
    last = (hops - 1) * records
    for i in np.flatnonzero(outcome_code == 2).tolist():
        errors[last + i] = f"ValueError: bad amount in record {int(rid[i])}"
    columns = {
        "stream_id": dictionary(np.zeros(n, np.int32), [stream_id]),
        "record_id": pa.array(np.tile(rid, hops)),
        "branch": pa.array(np.zeros(n, np.int64)),
        "replay_id": dictionary(np.zeros(n, np.int32), [""]),
        "hop": pa.array(np.repeat(np.arange(hops, dtype=np.int16), records)),
        "hops": pa.array(np.full(n, hops, np.int16)),
        "node_id": dictionary(np.repeat(np.arange(hops) % len(NODES), records), list(NODES)),
        "ts_ns": pa.array(ts.reshape(-1)),
        "logical": pa.array(np.zeros(n, np.int64)),
        "error_ns": pa.array(np.full(n, 250_000, np.int64)),
        "origin_ts_ns": pa.array(np.tile(origin, hops)),
        "origin_logical": pa.array(np.zeros(n, np.int64)),
        "origin_node": dictionary(np.zeros(n, np.int32), [NODES[0]]),
        "outcome": dictionary(np.tile(outcome_code, hops), ["delivered", "dropped", "failed"]),
        "error": pa.array(errors, pa.string()),
    }
    return pa.Table.from_pydict(columns).select(PROVENANCE_SCHEMA.names)


def run(quick: bool) -> dict[str, Any]:
    batch_records = 64_000  # 256k rows per batch
    batches = 4 if quick else 16  # 1M or 4M rows per side
    streams = ("orders", "clicks")
    gap_ns = 50_000
    writer_s = raw_s = 0.0
    rows_total = 0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = DuckDBProvenanceStore(f"duckdb://{root / 'writer.duckdb'}")
        raw = duckdb.connect(
            str(root / "raw.duckdb"), config={"memory_limit": "2GB", "threads": 1}
        )
        tables = {}
        for i, sid in enumerate(streams):
            tables[sid] = f"raw_{i}"
            raw.execute(f"CREATE TABLE raw_{i} ({_columns_sql(PROVENANCE_SCHEMA)})")
        warm = provenance_batch("warm", 0, 10_000, 0, gap_ns)
        store.write(warm)
        next_id = dict.fromkeys(streams, 0)
        for b in range(batches):
            sid = streams[b % len(streams)]
            first = next_id[sid]
            next_id[sid] += batch_records
            batch = provenance_batch(sid, first, batch_records, 10**18 + first * gap_ns, gap_ns)
            # alternate which side goes first, so neither always meets a warmer cache
            for side in ((0, 1) if b % 2 == 0 else (1, 0)):
                t = time.perf_counter()
                if side == 0:
                    added = store.write(batch)
                    writer_s += time.perf_counter() - t
                    assert added == batch.num_rows, (added, batch.num_rows)
                else:
                    raw.register("_batch", batch)
                    raw.execute(f"INSERT INTO {tables[sid]} SELECT * FROM _batch")
                    raw.unregister("_batch")
                    raw_s += time.perf_counter() - t
            rows_total += batch.num_rows
            print(f"batch {b + 1}/{batches}: writer {rows_total / writer_s:,.0f} rows/s, "
                  f"raw insert {rows_total / raw_s:,.0f} rows/s", flush=True)
        # a retried batch: the writer's idempotency must add nothing
        t = time.perf_counter()
        again = store.write(batch)
        retry_s = time.perf_counter() - t
        stored = sum(store.row_count(s) for s in streams)
        store.close()
        raw.close()
    writer_rate = rows_total / writer_s
    raw_rate = rows_total / raw_s
    return {
        "name": "store_ingest",
        "ratio": round(writer_rate / raw_rate, 3),
        "target": 0.8,
        "writer_rows_per_s": round(writer_rate),
        "raw_rows_per_s": round(raw_rate),
        "rows_per_side": rows_total,
        "batch_rows": batch_records * HOPS,
        "stored_rows": stored,
        "retried_batch_added": again,
        "retried_batch_s": round(retry_s, 3),
    }
