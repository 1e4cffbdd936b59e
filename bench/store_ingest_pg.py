"""``store_ingest_pg``: the PostgreSQL provenance writer vs a raw binary COPY of the same rows.

Side by side in one run, into two schemas of one server with the same partitioned layout
(4 streams x 25 one-minute time partitions = 100 partitions each): every batch (one stream,
64k chains of 4 hops = 256k rows, strings dictionary-encoded as the runtime builds them) goes
once through ``PostgresProvenanceStore.write()`` (schema checks, partition creation ahead of
the data, Arrow -> binary COPY encoding, COPY through the pool, commit) and once as a raw
``COPY ... FROM STDIN (FORMAT BINARY)`` of bytes encoded before the clock starts, into
partitions created before the clock starts. Ratio = writer rows/s over raw rows/s; target 0.8.

Then, at the stored size (10M rows; 1M with ``--quick``): latency of a one-minute window
query for one stream (first page of 1000 chains, and the whole window streamed), a record
lookup, and the ``EXPLAIN`` that shows the planner touching only that stream's partitions in
that range.

Uses ``$STREAMPROV_BENCH_PG_URL`` when set, else a throwaway server from the installed
PostgreSQL binaries (see ``tests/pg_server.py``).
"""

from __future__ import annotations

import os
import re
import statistics
import time
from typing import Any

import psycopg

from bench.store_ingest import HOPS, provenance_batch
from streamprov.store.base import PROVENANCE_SCHEMA
from streamprov.store.pgcopy import HEADER, TRAILER, CopyEncoder
from streamprov.store.postgres import COPY_CHUNK_ROWS, PostgresProvenanceStore

STREAMS = ("orders", "clicks", "payments", "sessions")
MINUTE_NS = 60_000_000_000
SPAN_NS = 25 * MINUTE_NS
T0_NS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


def _server_url() -> tuple[str, Any]:
    url = os.environ.get("STREAMPROV_BENCH_PG_URL")
    if url:
        return url, None
    from tests.pg_server import start_server

    server = start_server()
    return server.dsn, server


def _with_params(url: str, **params: str) -> str:
    sep = "&" if "?" in url else "?"
    return url + sep + "&".join(f"{k}={v}" for k, v in params.items())


def _drop_schemas(url: str, *schemas: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run(quick: bool) -> dict[str, Any]:
    total_rows = 1_000_000 if quick else 10_000_000
    batch_records = 64_000
    batches = max(len(STREAMS), round(total_rows / (batch_records * HOPS)))
    per_stream = batches // len(STREAMS) * batch_records
    gap_ns = SPAN_NS // per_stream
    url, server = _server_url()
    schemas = ("bench_writer", "bench_raw", "bench_raw_sorted")
    try:
        _drop_schemas(url, *schemas)
        stores = [
            PostgresProvenanceStore(_with_params(url, schema=schema, partition="1m"))
            for schema in schemas
        ]
        result = _ingest(stores, url, batches, batch_records, gap_ns)
        result.update(_queries(stores[0], url))
        for store in stores:
            store.close()
        _drop_schemas(url, *schemas)
    finally:
        if server is not None:
            server.cleanup()
    return result


def _ingest(
    stores: list[PostgresProvenanceStore], url: str, batches: int, batch_records: int,
    gap_ns: int,
) -> dict[str, Any]:
    """Per batch, three sides in rotating order: the writer; a raw COPY of the rows as given
    (grouped by hop, as the runtime's builder makes them); a raw COPY of the same rows sorted
    in primary-key order (the best case for the server)."""
    writer = stores[0]
    encoder = CopyEncoder(PROVENANCE_SCHEMA)
    columns = ", ".join(encoder.columns)
    next_id = dict.fromkeys(STREAMS, 0)
    spent = [0.0, 0.0, 0.0]
    rows_total = 0
    writer.write(provenance_batch("warm", 0, 1000, T0_NS, gap_ns))
    with psycopg.connect(url, autocommit=True) as raw:
        for b in range(batches):
            sid = STREAMS[b % len(STREAMS)]
            first = next_id[sid]
            next_id[sid] += batch_records
            batch = provenance_batch(sid, first, batch_records, T0_NS + first * gap_ns, gap_ns,
                                     seed=b)
            # the baselines' work outside the clock: encoding, sorting, partitions
            order = writer._key_order(batch)
            bodies = [
                [HEADER, *encoder.chunks(batch, COPY_CHUNK_ROWS), TRAILER],
                [HEADER, *encoder.chunks(batch, COPY_CHUNK_ROWS, order), TRAILER],
            ]
            for store in stores[1:]:
                with store._pool.connection() as conn:
                    store._ensure_partitions(conn, store._needs(batch))
            for k in range(3):
                side = (b + k) % 3
                t = time.perf_counter()
                if side == 0:
                    added = writer.write(batch)
                    assert added == batch.num_rows, (added, batch.num_rows)
                else:
                    schema = stores[side].target.schema
                    with raw.transaction(), raw.cursor() as cur, cur.copy(
                        f"COPY {schema}.provenance ({columns}) FROM STDIN (FORMAT BINARY)"
                    ) as copy:
                        for chunk in bodies[side - 1]:
                            copy.write(chunk)
                spent[side] += time.perf_counter() - t
            rows_total += batch.num_rows
            rates = [rows_total / s for s in spent]
            print(f"batch {b + 1}/{batches} ({sid}): writer {rates[0]:,.0f} rows/s, raw COPY "
                  f"{rates[1]:,.0f} rows/s, raw COPY of sorted rows {rates[2]:,.0f} rows/s",
                  flush=True)
        t = time.perf_counter()
        again = writer.write(batch)  # a retried batch goes through the merge path
        retry_s = time.perf_counter() - t
        partitions = raw.execute(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'bench_writer' AND c.relkind = 'r'"
        ).fetchone()
    writer_rate, raw_rate, sorted_rate = (rows_total / s for s in spent)
    return {
        "name": "store_ingest_pg",
        "ratio": round(writer_rate / max(raw_rate, sorted_rate), 3),
        "target": 0.8,
        "ratio_vs_raw_copy_as_given": round(writer_rate / raw_rate, 3),
        "ratio_vs_raw_copy_sorted": round(writer_rate / sorted_rate, 3),
        "writer_rows_per_s": round(writer_rate),
        "raw_copy_rows_per_s": round(raw_rate),
        "raw_copy_sorted_rows_per_s": round(sorted_rate),
        "rows_per_side": rows_total,
        "batch_rows": batch_records * HOPS,
        "time_partitions": int(partitions[0]) if partitions else 0,
        "retried_batch_added": again,
        "retried_batch_s": round(retry_s, 3),
    }


def _queries(store: PostgresProvenanceStore, url: str) -> dict[str, Any]:
    sid = STREAMS[1]
    start = T0_NS + 12 * MINUTE_NS
    end = start + MINUTE_NS
    page_ms: list[float] = []
    for _ in range(7):
        t = time.perf_counter()
        page = store.window(sid, start, end, limit=1000)
        page_ms.append((time.perf_counter() - t) * 1000)
    assert len(page) == 1000
    t = time.perf_counter()
    chains = sum(len(c) for c in store.iter_window(sid, start, end))
    full_s = time.perf_counter() - t
    lookup_cold = _lookups(store, sid, page)
    with psycopg.connect(url, autocommit=True) as conn:
        # what autovacuum does a minute or so after the writes: statistics, BRIN summaries
        conn.execute("VACUUM ANALYZE bench_writer.provenance")
        lookup_warm = _lookups(store, sid, page)
        plan = [r[0] for r in conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
            "SELECT * FROM bench_writer.provenance WHERE stream_id = %s AND replay_id = '' "
            "AND origin_ts_ns >= %s AND origin_ts_ns < %s "
            "ORDER BY origin_ts_ns, origin_logical, origin_node, record_id, branch, hop "
            "LIMIT 4000",
            [sid, start, end],
        ).fetchall()]
    touched = sorted(set(re.findall(r"prov_s\d+_\w+", "\n".join(plan))))
    print("EXPLAIN of a one-minute window of one stream:\n  " + "\n  ".join(plan), flush=True)
    return {
        "stored_rows": sum(store.row_count(s) for s in STREAMS),
        "window_page_ms_p50": round(statistics.median(page_ms), 2),
        "window_full_chains": chains,
        "window_full_s": round(full_s, 3),
        "window_full_chains_per_s": round(chains / full_s),
        "record_lookup_ms_p50_fresh": lookup_cold,
        "record_lookup_ms_p50_after_vacuum_analyze": lookup_warm,
        "explain_partitions_touched": touched,
    }


def _lookups(store: PostgresProvenanceStore, sid: str, page: list[Any]) -> float:
    """Median milliseconds of ``chains_for_record`` for a few records of the page."""
    took: list[float] = []
    for i in range(5):
        t = time.perf_counter()
        found = store.chains_for_record(sid, page[i * 100].record_id)
        took.append((time.perf_counter() - t) * 1000)
        assert found
    return round(statistics.median(took), 2)
