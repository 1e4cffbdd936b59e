"""What only the DuckDB backend has: files, upgrades from older files, no Arrow copy warning."""

from __future__ import annotations

import warnings
from pathlib import Path

import duckdb

from streamprov.store import open_provenance_store, open_stream_log
from streamprov.store.duckdb import SCHEMA_VERSION
from tests.store.chains import SECOND, chain, log_rows, rows


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
