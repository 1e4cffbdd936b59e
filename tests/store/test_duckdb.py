"""What only the DuckDB backend has: files, upgrades from older files, no Arrow copy warning."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from streamprov.errors import StoreError
from streamprov.model import Outcome
from streamprov.store import PROVENANCE_SCHEMA, open_provenance_store, open_stream_log
from streamprov.store.duckdb import SCHEMA_VERSION
from tests.store.chains import SECOND, chain, in_order, log_rows, rows


def _make_version_1(path: Path) -> None:
    """A file as the first release wrote it: catalog without retention columns."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE streamprov_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute(
            "CREATE TABLE streamprov_streams (stream_id VARCHAR PRIMARY KEY, "
            "ordinal INTEGER NOT NULL, created_ns BIGINT NOT NULL)"
        )
        con.execute("INSERT INTO streamprov_meta VALUES ('schema_version', '1'), "
                    "('kind', 'stream-log')")
        con.execute("CREATE TABLE log_1 (stream_id VARCHAR NOT NULL, record_id BIGINT NOT NULL, "
                    "ingest_ts_ns BIGINT NOT NULL, key VARCHAR, payload VARCHAR NOT NULL)")
        con.execute("INSERT INTO streamprov_streams VALUES ('s1', 1, 0)")
        con.execute("INSERT INTO log_1 VALUES ('s1', 0, 0, NULL, '{\"n\": 0}')")


def test_version_1_files_are_read_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "streams.duckdb"
    _make_version_1(path)
    reader = open_stream_log(f"duckdb://{path}", read_only=True)
    assert reader.next_record_id("s1") == 1
    assert reader.entries("s1", [0])[0].payload == {"n": 0}
    reader.close()
    log = open_stream_log(f"duckdb://{path}", partition_ns=SECOND)
    log.append(log_rows("s1", [1, 2]))
    assert log.expire(2 * SECOND) == 2
    assert log.next_record_id("s1") == 3
    log.close()
    with duckdb.connect(str(path)) as con:
        row = con.execute("SELECT value FROM streamprov_meta WHERE key = 'schema_version'")
        assert row.fetchone() == (str(SCHEMA_VERSION),)


def _make_version_2_provenance(path: Path, table: pa.Table) -> None:
    """A provenance file as version 2 wrote it: one plain table of canonical rows per stream."""
    columns = ", ".join(
        f"{f.name} {'VARCHAR' if pa.types.is_string(f.type) else 'BIGINT'}"
        f"{'' if f.nullable else ' NOT NULL'}" for f in PROVENANCE_SCHEMA)
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE streamprov_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
        con.execute("CREATE TABLE streamprov_streams (stream_id VARCHAR PRIMARY KEY, "
                    "ordinal INTEGER NOT NULL, created_ns BIGINT NOT NULL, "
                    "expired_before_ns BIGINT, record_floor BIGINT NOT NULL DEFAULT 0)")
        con.execute("INSERT INTO streamprov_meta VALUES ('schema_version', '2'), "
                    "('kind', 'provenance')")
        con.execute("INSERT INTO streamprov_streams VALUES ('s1', 1, 0, NULL, 0)")
        con.execute(f"CREATE TABLE prov_1 ({columns})")
        con.register("incoming", table)
        con.execute("INSERT INTO prov_1 SELECT * FROM incoming")


def test_version_2_provenance_is_read_and_upgraded_to_compact_tables(tmp_path: Path) -> None:
    path = tmp_path / "provenance.duckdb"
    original = [chain(i, i * SECOND) for i in range(5)] + [
        chain(5, 5 * SECOND, outcome=Outcome.FAILED, error="boom", hops=2),
        chain(0, 9 * SECOND, replay_id="r-1", origin_node="replay-src")]
    _make_version_2_provenance(path, rows(original))
    reader = open_provenance_store(f"duckdb://{path}", read_only=True)
    as_v2 = reader.window("s1", 0, 10 * SECOND)
    reader.close()
    assert as_v2 == in_order(c for c in original if not c.replay_id)

    store = open_provenance_store(f"duckdb://{path}")
    assert store.window("s1", 0, 10 * SECOND) == as_v2
    assert store.window("s1", 0, 10 * SECOND, replay_id="r-1") == [original[-1]]
    assert store.write(rows(original)) == 0  # every row is already there, codes and all
    assert store.write(rows([chain(6, 6 * SECOND, origin_node="new-node")])) == 3
    assert [c.record_id for c in store.window("s1", 0, 10 * SECOND)] == [0, 1, 2, 3, 4, 5, 6]
    assert store.chains_for_record("s1", 5)[0].error == "boom"
    store.close()
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT value FROM streamprov_meta WHERE key = 'schema_version'"
                           ).fetchone() == (str(SCHEMA_VERSION),)
        kinds = dict(con.execute("SELECT table_name, table_type FROM information_schema.tables "
                                 "WHERE table_name LIKE 'prov%'").fetchall())
        assert kinds == {"prov_1": "VIEW", "provc_1": "BASE TABLE"}
        assert con.execute("SELECT count(*) FROM provc_1").fetchone() == (3 * 6 + 2 + 3,)


def test_a_failed_write_forgets_the_tables_and_codes_it_made(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_provenance_store(f"duckdb://{tmp_path / 'p.duckdb'}")
    store.write(rows([chain(0, SECOND)]))
    fresh = rows([chain(0, SECOND, stream_id="s2", origin_node="only-in-a-failed-write")])
    encode = store._encode  # type: ignore[attr-defined]
    calls: list[int] = []

    def failing(*args: Any) -> Any:  # the write fails once the new codes were stored
        calls.append(1)
        if len(calls) == 4:
            raise duckdb.IOException("simulated: the disk went away")
        return encode(*args)

    with monkeypatch.context() as m:
        m.setattr(store, "_encode", failing)
        with pytest.raises(StoreError):
            store.write(fresh)
    assert not store.has_stream("s2")
    assert store.write(fresh) == 3
    store.close()
    store = open_provenance_store(f"duckdb://{tmp_path / 'p.duckdb'}", read_only=True)
    assert store.chains_for_record("s2", 0)[0].hops[0].node_id == "only-in-a-failed-write"
    assert store.chains_for_record("s1", 0)[0].hops[0].node_id == "src-0"
    store.close()


def test_reads_make_no_arrow_copy_warning(tmp_path: Path) -> None:
    store = open_provenance_store(f"duckdb://{tmp_path / 'p.duckdb'}")
    store.write(rows([chain(i, i * SECOND) for i in range(3)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(store.window("s1", 0, 10 * SECOND)) == 3
        assert len(list(store.iter_window("s1", 0, 10 * SECOND))) == 1
        assert len(store.chains_for_record("s1", 1)) == 1
        assert len(store.latencies_ns("s1")) == 3
    store.close()


def test_bare_paths_open_duckdb(tmp_path: Path) -> None:
    store = open_provenance_store(str(tmp_path / "bare.duckdb"))
    assert store.write(rows([chain(0, SECOND)])) == 3
    store.close()
    assert (tmp_path / "bare.duckdb").exists()


def test_ordered_reads_sorted_slice_by_slice_keep_the_window_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import streamprov.store.duckdb as duck

    # 60 chains, hop-0 times with many ties (broken by logical counter, node, record id)
    chains = [chain(i, (i // 4) * SECOND, logical=(7 * i) % 3,
                    origin_node=f"src-{i % 2}") for i in range(60)]
    store = open_provenance_store(f"duckdb://{tmp_path / 'p.duckdb'}")
    store.write(rows(chains))
    whole = store.window("s1", 0, 100 * SECOND, limit=1000)
    heads = pa.Table.from_batches(list(store.window_heads("s1", 0, 100 * SECOND)))
    monkeypatch.setattr(duck, "SLICE_ROWS", 7)
    assert len(store._slices("prov_1", "replay_id = ?", [""],  # type: ignore[attr-defined]
                             0, 100 * SECOND)) > 5
    sliced = [c for part in store.iter_window("s1", 0, 100 * SECOND, chunk_rows=5)
              for c in part]
    assert sliced == whole == in_order(chains)
    again = pa.Table.from_batches(list(store.window_heads("s1", 0, 100 * SECOND, chunk_rows=3)))
    assert again.equals(heads)
    store.close()


def test_the_url_sets_the_memory_limit_and_names_what_is_wrong(tmp_path: Path) -> None:
    url = f"duckdb://{tmp_path / 'p.duckdb'}"
    store = open_provenance_store(f"{url}?memory_limit=64MB")
    assert store.path == tmp_path / "p.duckdb"  # type: ignore[attr-defined]
    got = store._con.execute(  # type: ignore[attr-defined]
        "SELECT current_setting('memory_limit')").fetchone()
    assert got is not None and "MiB" in got[0] and float(got[0].split()[0]) < 64
    store.close()
    with pytest.raises(StoreError, match="memory_limit 'lots'"):
        open_provenance_store(f"{url}?memory_limit=lots")
    with pytest.raises(StoreError, match="unknown option 'cores'"):
        open_stream_log(f"{url}?cores=8")
    with pytest.raises(StoreError, match="threads in the duckdb URL"):
        open_stream_log(f"{url}?threads=none")


def test_writers_use_one_thread_readers_two_unless_the_url_says(tmp_path: Path) -> None:
    url = f"duckdb://{tmp_path / 'p.duckdb'}"

    def threads(store: object) -> int:
        got = store._con.execute(  # type: ignore[attr-defined]
            "SELECT current_setting('threads')").fetchone()
        assert got is not None
        return int(got[0])

    writer = open_provenance_store(url)
    assert threads(writer) == 1
    writer.close()
    reader = open_provenance_store(url, read_only=True)
    assert threads(reader) == 2
    reader.close()
    writer = open_provenance_store(f"{url}?threads=3")
    assert threads(writer) == 3
    writer.close()


def test_the_url_can_store_uncompressed(tmp_path: Path) -> None:
    chains = [chain(i, (i + 1) * SECOND) for i in range(3000)]

    def compressions(url: str) -> set[str]:
        store = open_provenance_store(url)
        store.write(rows(chains))
        store._con.execute("CHECKPOINT")  # type: ignore[attr-defined]
        got = {r[0] for r in store._con.execute(  # type: ignore[attr-defined]
            "SELECT DISTINCT compression FROM pragma_storage_info('provc_1') "
            "WHERE segment_type <> 'VALIDITY'").fetchall()}
        store.close()
        reader = open_provenance_store(url, read_only=True)
        assert [c for part in reader.iter_window("s1", 0, 2**62) for c in part] == chains
        reader.close()
        return got

    plain = {"Uncompressed", "Constant"}  # (a column of one value stays one value)
    assert compressions(f"duckdb://{tmp_path / 'a.duckdb'}?compression=none") <= plain
    assert compressions(f"duckdb://{tmp_path / 'b.duckdb'}") - plain
    with pytest.raises(StoreError, match="compression in the duckdb URL must be one of"):
        open_stream_log(f"duckdb://{tmp_path / 'c.duckdb'}?compression=zstd")


def test_appends_above_the_stored_ids_skip_the_check_and_still_add_nothing_twice(
        tmp_path: Path) -> None:
    url = f"duckdb://{tmp_path / 'streams.duckdb'}"
    log = open_stream_log(url)
    log.append(log_rows("s1", range(0, 10)))
    log.append(log_rows("s1", range(10, 20)))  # above every stored id: a plain insert
    log.close()
    log = open_stream_log(url)  # a new connection learns the stored maximum from the file
    log.append(log_rows("s1", range(15, 25)))  # overlaps: only 20-24 are new
    log.append(log_rows("s1", range(25, 30)))
    assert log.count("s1") == 30
    assert log.record_ids("s1").tolist() == list(range(30))
    log.close()
