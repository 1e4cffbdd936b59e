"""The store conformance suite: every test runs against DuckDB and PostgreSQL alike."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from streamprov.errors import InvalidInput, NotFound, SchemaVersionError, StoreError
from streamprov.model import Chain, Outcome
from streamprov.store import ChainCursor, ProvenanceStore, StreamLog, StreamSummary
from tests.store.chains import SECOND, chain, in_order, log_rows, rows
from tests.store.conftest import Stores


def _page_through(
    store: ProvenanceStore, stream: str, start: int, end: int, limit: int
) -> list[Chain]:
    out: list[Chain] = []
    cursor: ChainCursor | None = None
    while True:
        page = store.window(stream, start, end, after=cursor, limit=limit)
        if not page:
            return out
        assert len(page) <= limit
        out += page
        cursor = ChainCursor.after(page[-1])


# -- writing and reading back ---------------------------------------------------------------
def test_write_and_read_back(stores: Stores) -> None:
    store = stores.provenance()
    chains = [
        chain(0, 10 * SECOND),
        chain(1, 11 * SECOND, outcome=Outcome.DROPPED, hops=2),
        chain(2, 12 * SECOND, outcome=Outcome.FAILED, error="ValueError: déjà vu"),
        chain(2, 12 * SECOND, branch=1, hops=4),
    ]
    assert store.write(rows(chains)) == 12
    assert store.has_stream("s1")
    assert not store.has_stream("nope")
    assert store.chains_for_record("s1", 0) == [chains[0]]
    assert store.chains_for_record("s1", 2) == [chains[2], chains[3]]
    assert store.window("s1", 0, 100 * SECOND) == chains
    assert store.row_count("s1") == 12
    assert store.outcome_counts("s1") == {
        Outcome.DELIVERED: 2, Outcome.DROPPED: 1, Outcome.FAILED: 1,
    }
    assert sorted(store.latencies_ns("s1").to_pylist()) == [1000, 2000, 2000, 3000]
    assert store.streams() == [StreamSummary("s1", 0, 4, 10 * SECOND, 12 * SECOND)]


def test_data_survives_reopen_and_read_only(stores: Stores) -> None:
    chains = [chain(i, i * SECOND) for i in range(5)]
    store = stores.provenance()
    store.write(rows(chains))
    store.close()
    reader = stores.provenance(read_only=True)
    assert reader.window("s1", 0, 10 * SECOND) == chains
    assert [s.stream_id for s in reader.streams()] == ["s1"]


def test_read_only_store_that_was_never_written_is_empty(stores: Stores) -> None:
    store = stores.provenance(read_only=True)
    assert store.streams() == []
    assert not store.has_stream("s1")
    assert store.chains_for_record("s1", 0) == []
    assert store.outcome_counts("s1") == dict.fromkeys(Outcome, 0)
    assert len(store.latencies_ns("s1")) == 0
    with pytest.raises(NotFound):
        store.window("s1", 0, 1)


def test_many_streams_in_one_batch_stay_apart(stores: Stores) -> None:
    store = stores.provenance()
    a = [chain(i, i * SECOND, stream_id="a") for i in range(4)]
    b = [chain(i, i * SECOND + 1, stream_id="b", hops=2) for i in range(3)]
    assert store.write(rows([*a, *b])) == 4 * 3 + 3 * 2
    assert store.window("a", 0, 100 * SECOND) == a
    assert store.window("b", 0, 100 * SECOND) == b
    assert [s.stream_id for s in store.streams()] == ["a", "b"]
    assert store.chains_for_record("b", 1) == [b[1]]


def test_dictionary_encoded_input_as_the_runtime_builds_it(stores: Stores) -> None:
    store = stores.provenance()
    chains = [chain(i, i * SECOND, outcome=Outcome.FAILED, error=f"e{i}") for i in range(6)]
    table = rows(chains)
    for name in ("stream_id", "replay_id", "node_id", "origin_node", "outcome"):
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, name, pc.dictionary_encode(table.column(name)))
    assert store.write(table) == 18
    assert store.window("s1", 0, 100 * SECOND) == chains


def test_replays_are_kept_apart_from_the_original(stores: Stores) -> None:
    store = stores.provenance()
    original = [chain(i, i * SECOND) for i in range(3)]
    replayed = [chain(i, 50 * SECOND + i, replay_id="r1", hops=2) for i in range(3)]
    store.write(rows(original + replayed))
    assert store.window("s1", 0, 100 * SECOND) == original
    assert store.window("s1", 0, 100 * SECOND, replay_id="r1") == replayed
    assert store.chains_for_record("s1", 1, "r1") == [replayed[1]]
    assert store.outcome_counts("s1", "r1")[Outcome.DELIVERED] == 3
    assert store.streams()[0].chains == 3


# -- idempotency ------------------------------------------------------------------------------
def test_writing_the_same_rows_again_adds_nothing(stores: Stores) -> None:
    store = stores.provenance()
    chains = [chain(i, i * SECOND // 10) for i in range(100)]
    assert store.write(rows(chains)) == 300
    assert store.write(rows(chains)) == 0
    more = [chain(i, i * SECOND // 10) for i in range(90, 120)]  # 10 old, 20 new
    assert store.write(rows(more)) == 60
    assert store.row_count("s1") == 360
    assert store.window("s1", 0, 100 * SECOND, limit=1000) == in_order(
        [chain(i, i * SECOND // 10) for i in range(120)]
    )


def test_empty_write_is_a_no_op(stores: Stores) -> None:
    store = stores.provenance()
    assert store.write(rows([])) == 0
    assert store.streams() == []


def test_malformed_rows_are_refused_naming_the_column(stores: Stores) -> None:
    store = stores.provenance()
    table = rows([chain(0, 0)])
    with pytest.raises(InvalidInput) as missing:
        store.write(table.drop_columns(["origin_node"]))
    assert missing.value.field == "origin_node"
    nulls = table.set_column(1, "record_id", pa.array([None, None, None], pa.int64()))
    with pytest.raises(InvalidInput) as null:
        store.write(nulls)
    assert null.value.field == "record_id"
    assert store.streams() == []


# -- windows -----------------------------------------------------------------------------------
def test_window_across_partition_boundaries(stores: Stores) -> None:
    store = stores.provenance()  # one-second partitions
    chains = [chain(i, i * SECOND // 4) for i in range(40)]  # 10 s, 4 chains per partition
    for part in range(0, 40, 7):  # several writes, each spanning partitions
        store.write(rows(chains[part : part + 7]))
    start, end = 2 * SECOND + SECOND // 2, 7 * SECOND + SECOND // 4
    want = [c for c in chains if start <= c.origin_ns < end]
    assert store.window("s1", start, end, limit=1000) == want
    assert _page_through(store, "s1", start, end, limit=3) == want
    streamed = [c for chunk in store.iter_window("s1", start, end, chunk_rows=5) for c in chunk]
    assert streamed == want
    # bounds are half open, exactly on partition edges too
    edge = store.window("s1", 3 * SECOND, 4 * SECOND)
    assert [c.record_id for c in edge] == [12, 13, 14, 15]


def test_original_order_breaks_ties_by_logical_node_record_and_branch(stores: Stores) -> None:
    store = stores.provenance()
    t = 5 * SECOND
    chains = [
        chain(9, t, logical=1, origin_node="a"),
        chain(8, t, logical=0, origin_node="b"),
        chain(7, t, logical=0, origin_node="a"),
        chain(3, t, logical=0, origin_node="a", branch=1),
        chain(3, t, logical=0, origin_node="a", branch=0),
        chain(1, t, logical=0, origin_node="B"),  # byte order: "B" < "a" < "b"
        chain(0, t + 1),
        chain(5, t - 1),
    ]
    store.write(rows(chains))
    want = in_order(chains)
    assert [(c.record_id, c.branch) for c in want] == [
        (5, 0), (1, 0), (3, 0), (3, 1), (7, 0), (8, 0), (9, 0), (0, 0),
    ]
    assert store.window("s1", 0, 10 * SECOND) == want
    assert _page_through(store, "s1", 0, 10 * SECOND, limit=2) == want
    assert [c for ch in store.iter_window("s1", 0, 10 * SECOND, chunk_rows=4) for c in ch] == want


def test_empty_windows(stores: Stores) -> None:
    store = stores.provenance()
    store.write(rows([chain(i, i * SECOND) for i in range(3)]))
    assert store.window("s1", 50 * SECOND, 60 * SECOND) == []
    assert list(store.iter_window("s1", 50 * SECOND, 60 * SECOND)) == []
    assert list(store.window_rows("s1", 50 * SECOND, 60 * SECOND)) == []
    assert store.window("s1", 0, 10 * SECOND, replay_id="never") == []
    assert store.window("s1", 0, 10 * SECOND, limit=0) == []
    assert store.chains_for_record("s1", 99) == []
    assert store.outcome_counts("other") == dict.fromkeys(Outcome, 0)
    assert len(store.latencies_ns("other")) == 0
    assert store.row_count("other") == 0


@pytest.mark.parametrize("call", ["window", "iter_window", "window_rows", "window_heads"])
def test_window_errors_are_the_same_everywhere(stores: Stores, call: str) -> None:
    store = stores.provenance()
    store.write(rows([chain(0, SECOND)]))
    query = getattr(store, call)
    with pytest.raises(InvalidInput) as bad_range:
        query("s1", 5 * SECOND, 5 * SECOND)
    assert bad_range.value.field == "start"
    assert str(bad_range.value) == "start must be before end"
    with pytest.raises(InvalidInput):
        query("s1", 6 * SECOND, 5 * SECOND)
    with pytest.raises(NotFound) as unknown:
        query("nope", 0, 5 * SECOND)
    assert unknown.value.field == "stream"
    assert str(unknown.value) == "unknown stream 'nope'"


def test_huge_window_is_streamed_in_chunks(stores: Stores) -> None:
    store = stores.provenance()
    n = 20_000
    chains = [chain(i, i * 1_000_000) for i in range(n)]  # 20 s, 20 partitions, 60k rows
    for part in range(0, n, 5_000):
        store.write(rows(chains[part : part + 5_000]))
    sizes: list[int] = []
    seen = 0
    for chunk in store.iter_window("s1", 0, 100 * SECOND, chunk_rows=3_000):
        sizes.append(len(chunk))
        assert chunk == chains[seen : seen + len(chunk)]
        seen += len(chunk)
    assert seen == n
    assert len(sizes) >= 20
    assert max(sizes) <= 1_001  # 3000 rows: at most one chain carried over from before
    batches = list(store.window_rows("s1", 0, 100 * SECOND, chunk_rows=3_000))
    assert sum(b.num_rows for b in batches) == 3 * n
    assert max(b.num_rows for b in batches) <= 3_000
    assert batches[0].column("record_id")[:3].to_pylist() == [0, 0, 0]
    assert batches[0].column("hop")[:3].to_pylist() == [0, 1, 2]


# -- retention ---------------------------------------------------------------------------------
def test_retention_drops_whole_partitions_and_says_so(stores: Stores) -> None:
    store = stores.provenance()  # one-second partitions
    chains = [chain(i, i * SECOND + SECOND // 2) for i in range(6)]  # one per partition
    store.write(rows(chains))
    assert store.expire(2 * SECOND + SECOND // 3) == 2  # [0, 1 s) and [1, 2 s); not [2, 3 s)
    assert store.window("s1", 2 * SECOND, 10 * SECOND) == chains[2:]
    assert store.chains_for_record("s1", 1) == []
    assert store.row_count("s1") == 12
    with pytest.raises(NotFound) as expired:
        store.window("s1", SECOND, 10 * SECOND)
    assert expired.value.field == "start"
    assert "expired" in str(expired.value)
    with pytest.raises(NotFound):
        list(store.iter_window("s1", 0, 10 * SECOND))
    assert store.expire(2 * SECOND) == 0  # nothing more to drop
    assert store.expire(4 * SECOND) == 2
    assert store.window("s1", 4 * SECOND, 10 * SECOND) == chains[4:]


def test_retention_configured_on_the_store_applies_on_write(stores: Stores) -> None:
    store = stores.provenance(retention_ns=3600 * SECOND)
    old = [chain(i, i * SECOND) for i in range(3)]  # 1970: far older than an hour
    store.write(rows(old))
    assert store.row_count("s1") == 0
    with pytest.raises(NotFound):
        store.window("s1", 0, 10 * SECOND)


def test_stream_log_retention_never_reuses_record_ids(stores: Stores) -> None:
    log = stores.stream_log()
    log.append(log_rows("s1", range(10)))  # ingest at 0..9 s
    assert log.next_record_id("s1") == 10
    assert log.expire(100 * SECOND) == 10
    assert log.count("s1") == 0
    assert log.entries("s1", [1, 2]) == {}
    assert log.next_record_id("s1") == 10


# -- stream log --------------------------------------------------------------------------------
def test_stream_log_append_and_read(stores: Stores) -> None:
    log = stores.stream_log()
    assert log.next_record_id("s1") == 0
    log.append(log_rows("s1", range(5)))
    log.append(log_rows("s1", range(3, 8)))  # 3, 4 are already there
    log.append(log_rows("s2", [0]))
    assert log.count("s1") == 8
    assert log.next_record_id("s1") == 8
    assert log.next_record_id("s2") == 1
    got = log.entries("s1", [0, 1, 7, 99])
    assert sorted(got) == [0, 1, 7]
    assert got[0].key == "k0" and got[0].payload == {"n": 0}
    assert got[1].key is None and got[7].ingest_ts_ns == 7 * SECOND
    assert log.entries("s1", []) == {}
    assert log.entries("unknown", [1]) == {}


def test_stream_log_and_provenance_live_side_by_side(stores: Stores) -> None:
    store = stores.provenance()
    log = stores.stream_log()
    store.write(rows([chain(0, SECOND)]))
    log.append(log_rows("s1", [0]))
    assert log.count("s1") == 1
    assert store.row_count("s1") == 3


# -- schema versions ---------------------------------------------------------------------------
def test_a_newer_schema_on_disk_is_a_clear_error(stores: Stores) -> None:
    store = stores.provenance()
    store.write(rows([chain(0, SECOND)]))
    store.close()
    _set_schema_version(stores, 999)
    with pytest.raises(SchemaVersionError) as err:
        stores.provenance()
    assert "999" in str(err.value) and "upgrade streamprov" in str(err.value)
    assert isinstance(err.value, StoreError)


def test_initialization_is_idempotent(stores: Stores) -> None:
    first = stores.provenance()
    first.write(rows([chain(0, SECOND)]))
    first.close()
    again = stores.provenance()
    assert again.row_count("s1") == 3
    assert again.write(rows([chain(1, 2 * SECOND)])) == 3


def _set_schema_version(stores: Stores, version: int) -> None:
    if stores.backend == "duckdb":
        import duckdb

        path = stores.url("provenance").removeprefix("duckdb://")
        with duckdb.connect(path) as con:
            con.execute(
                "UPDATE streamprov_meta SET value = ? WHERE key = 'schema_version'",
                [str(version)],
            )
    else:
        import psycopg

        from streamprov.store.pgurl import parse_url

        target = parse_url(stores.base_url)
        with psycopg.connect(target.conninfo, autocommit=True) as conn:
            conn.execute(
                f'UPDATE "{target.schema}".provenance_meta SET value = %s '
                "WHERE key = 'schema_version'",
                [str(version)],
            )


def test_entries_table_returns_stored_json_text(stores: Stores) -> None:
    """Bulk reads hand back the JSON text as stored, for copies that need no parsing."""
    from streamprov.store import STREAM_LOG_SCHEMA

    log = stores.stream_log()
    table = pa.Table.from_pylist(
        [{"stream_id": "bulk", "record_id": i, "ingest_ts_ns": 1_000 + i,
          "key": None if i % 2 else f'"k{i}"', "payload": f'{{"i":{i}}}'} for i in range(5)],
        schema=STREAM_LOG_SCHEMA)
    log.append(table)
    got = log.entries_table("bulk", [4, 1, 99])
    by_id = {r["record_id"]: r for r in got.to_pylist()}
    assert set(by_id) == {1, 4}
    assert by_id[4]["payload"] == '{"i":4}' and by_id[4]["key"] == '"k4"'
    assert by_id[1]["key"] is None
    assert log.entries_table("nope", [1]).num_rows == 0


# -- what recovery compares ---------------------------------------------------------------------
def test_record_ids_with_chains_and_in_the_log(stores: Stores) -> None:
    store = stores.provenance()
    log = stores.stream_log()
    log.append(log_rows("s1", [5, 1, 3, 2, 8]))
    store.write(rows([chain(1, SECOND), chain(3, 3 * SECOND), chain(3, 3 * SECOND, branch=1),
                      chain(8, 8 * SECOND, outcome=Outcome.DROPPED, hops=2),
                      chain(9, 9 * SECOND, replay_id="r1")]))
    assert log.record_ids("s1").tolist() == [1, 2, 3, 5, 8]
    assert log.record_ids("s1", from_record=3).tolist() == [3, 5, 8]
    assert log.record_ids("unknown").tolist() == []
    assert store.record_ids("s1").tolist() == [1, 3, 8]
    assert store.record_ids("s1", from_record=2).tolist() == [3, 8]
    assert store.record_ids("s1", replay_id="r1").tolist() == [9]
    assert store.record_ids("unknown").tolist() == []
    assert store.outcome_counts("s1", from_record=4) == {
        Outcome.DELIVERED: 0, Outcome.DROPPED: 1, Outcome.FAILED: 0,
    }


# -- hop-0 rows with payloads: what a replay injects ----------------------------------------------
class _ElsewhereLog:
    """A stream log the provenance store cannot reach from inside its database (as one on
    another server would be): ``window_heads`` must join it chunk by chunk."""

    def __init__(self, log: StreamLog) -> None:
        self.log = log

    def entries_table(self, stream_id: str, record_ids: Sequence[int]) -> pa.Table:
        return self.log.entries_table(stream_id, record_ids)


def _heads_fixture(stores: Stores) -> tuple[ProvenanceStore, StreamLog, list[Chain]]:
    store = stores.provenance()
    t = 5 * SECOND
    chains = [
        chain(9, t, logical=1, origin_node="a"),
        chain(8, t, logical=0, origin_node="b", outcome=Outcome.DROPPED, hops=2),
        chain(7, t, logical=0, origin_node="a"),
        chain(3, t, logical=0, origin_node="a", branch=1),
        chain(3, t, logical=0, origin_node="a", branch=0),
        chain(1, t, logical=0, origin_node="B"),
        chain(4, t + 1, outcome=Outcome.FAILED, hops=1, error="bad input"),
        *[chain(i, i * SECOND // 4) for i in range(10, 40)],  # across partitions
        chain(50, 2 * SECOND, replay_id="r1"),  # a replay's chain: not in the original window
    ]
    store.write(rows(chains))
    writer = stores.stream_log()
    writer.append(log_rows("s1", [r for r in range(40) if r != 7]))  # 7's payload expired
    writer.close()
    return store, stores.stream_log(read_only=True), in_order(
        c for c in chains if not c.replay_id)


def _check_heads(batches: list[pa.RecordBatch], want: list[Chain]) -> None:
    from streamprov.store.base import WINDOW_HEAD_SCHEMA

    assert all(b.schema == WINDOW_HEAD_SCHEMA for b in batches)
    got = pa.Table.from_batches(batches, WINDOW_HEAD_SCHEMA).to_pylist()
    assert [(r["record_id"], r["branch"]) for r in got] == [(c.record_id, c.branch) for c in want]
    for row, c in zip(got, want, strict=True):
        assert row["origin_ts_ns"] == c.hops[0].timestamp_ns
        assert (row["hops"], row["outcome"]) == (len(c.hops), c.outcome.value)
        if c.branch == 0 and c.record_id != 7:
            assert row["payload"] == f'{{"n":{c.record_id}}}'
            assert row["key"] == (f'"k{c.record_id}"' if c.record_id % 2 == 0 else None)
        else:  # other branches carry no payload; nor does a record the log no longer has
            assert row["payload"] is None and row["key"] is None


@pytest.mark.parametrize("where", ["same database", "elsewhere"])
def test_window_heads_join_payloads_in_the_original_order(stores: Stores, where: str) -> None:
    store, log, want = _heads_fixture(stores)
    joined: Any = log if where == "same database" else _ElsewhereLog(log)
    batches = list(store.window_heads("s1", 0, 100 * SECOND, log=joined, chunk_rows=7))
    assert max(b.num_rows for b in batches) <= 7
    _check_heads(batches, want)
    part = list(store.window_heads("s1", 5 * SECOND, 5 * SECOND + 1, log=joined))
    _check_heads(part, [c for c in want if c.hops[0].timestamp_ns == 5 * SECOND])


def test_window_heads_without_a_log_or_with_nothing_logged(stores: Stores) -> None:
    store, log, want = _heads_fixture(stores)
    bare = list(store.window_heads("s1", 0, 100 * SECOND))
    assert [r["record_id"] for b in bare for r in b.to_pylist()] == [c.record_id for c in want]
    assert all(b.column("payload").null_count == b.num_rows for b in bare)
    store.write(rows([chain(1, SECOND, stream_id="s2")]))
    (only,) = list(store.window_heads("s2", 0, 10 * SECOND, log=log))
    assert only.to_pylist()[0]["record_id"] == 1 and only.column("payload").null_count == 1
    assert list(store.window_heads("s1", 90 * SECOND, 100 * SECOND, log=log)) == []
