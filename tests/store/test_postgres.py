"""What only the PostgreSQL backend has: URLs, partitions, many writers, server faults."""

from __future__ import annotations

import logging
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from streamprov.errors import InvalidInput, StoreError
from streamprov.store import open_provenance_store, open_stream_log
from streamprov.store.pgurl import parse_url, redact
from tests.pg_server import ExternalServer, PgServer
from tests.store.chains import SECOND, chain, log_rows, rows

REPO = Path(__file__).resolve().parents[2]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _catalog(url: str, query: str, *params: object) -> list[tuple[object, ...]]:
    import psycopg

    with psycopg.connect(parse_url(url).conninfo, autocommit=True) as conn:
        return conn.execute(query, params).fetchall()


# -- URLs --------------------------------------------------------------------------------------
def test_url_options_are_split_from_libpq_ones() -> None:
    target = parse_url(
        "postgresql://ann:pw@db.example:6543/prov?schema=team_a&partition=15m"
        "&retention=7d&pool=8&retry=5s&sslmode=disable"
    )
    assert target.schema == "team_a"
    assert target.partition_ns == 15 * 60 * SECOND
    assert target.retention_ns == 7 * 86400 * SECOND
    assert target.pool_size == 8
    assert target.retry_s == 5.0
    assert "sslmode=disable" in target.conninfo and "schema" not in target.conninfo
    assert "connect_timeout=" in target.conninfo
    assert target.redacted == "postgresql://ann:***@db.example:6543/prov"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("postgresql://ann:pw@h:port/db", "port"),
        ("postgresql://ann:pw@h:99999/db", "port"),
        ("postgresql://ann:pw@h/a/b", "one database name"),
        ("postgresql://ann:pw@h/db?schema=Bad-Name", "schema"),
        ("postgresql://ann:pw@h/db?partition=soon", "duration"),
        ("postgresql://ann:pw@h/db?retention=0d", "duration"),
        ("postgresql://ann:pw@h/db?pool=0", "pool"),
        ("postgresql://ann:pw@h/db?bogus=1", "bogus"),
        ("postgresql://ann:pw@h/db?=x", "query"),
    ],
)
def test_malformed_urls_are_clear_errors(url: str, says: str) -> None:
    with pytest.raises(InvalidInput) as err:
        open_provenance_store(url)
    assert says in str(err.value)
    assert "pw" not in str(err.value).replace("postgresql", "")
    assert err.value.field == "store_url"


def test_passwords_are_redacted() -> None:
    assert redact("postgresql://u:secret@h:5/d") == "postgresql://u:***@h:5/d"
    assert redact("postgresql://h/d?password=secret&x=1") == "postgresql://h/d?password=***&x=1"
    assert redact("postgresql://u@h/d") == "postgresql://u@h/d"


def test_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(StoreError) as err:
        open_provenance_store("mysql://u:secret@h/db")
    assert "postgresql://" in str(err.value) and "secret" not in str(err.value)


def test_unreachable_server_is_one_clear_error_naming_the_url() -> None:
    port = _closed_port()
    started = time.monotonic()
    with pytest.raises(StoreError) as err:
        open_provenance_store(f"postgresql://bob:s3cret@127.0.0.1:{port}/prov")
    message = str(err.value)
    assert f"postgresql://bob:***@127.0.0.1:{port}/prov" in message
    assert "s3cret" not in message
    assert "cannot connect" in message
    assert time.monotonic() - started < 10
    with pytest.raises(StoreError):
        open_stream_log(f"postgres://bob@127.0.0.1:{port}/prov")


# -- layout ------------------------------------------------------------------------------------
def test_both_stores_share_a_schema_in_separate_tables(pg_url: str) -> None:
    store = open_provenance_store(pg_url)
    log = open_stream_log(pg_url)
    try:
        schema = parse_url(pg_url).schema
        names = {r[0] for r in _catalog(
            pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = %s", schema)}
        assert {"provenance_meta", "provenance_streams", "stream_log_meta",
                "stream_log_streams"} <= names
        partitioned = {r[0] for r in _catalog(
            pg_url, "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c "
            "ON c.oid = p.partrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s", schema)}
        assert partitioned == {"provenance", "stream_log"}
    finally:
        store.close()
        log.close()


def test_window_touches_only_the_streams_partitions_in_range(pg_url: str) -> None:
    store = open_provenance_store(pg_url, partition_ns=SECOND)
    try:
        for sid in ("a", "b", "c"):
            store.write(rows([chain(i, i * SECOND // 2, stream_id=sid) for i in range(10)]))
        schema = parse_url(pg_url).schema
        plan = "\n".join(str(r[0]) for r in _catalog(
            pg_url,
            f'EXPLAIN SELECT * FROM "{schema}".provenance WHERE stream_id = %s '
            "AND replay_id = '' AND origin_ts_ns >= %s AND origin_ts_ns < %s "
            "ORDER BY origin_ts_ns, origin_logical, origin_node, record_id, branch, hop",
            "b", 2 * SECOND, 3 * SECOND + SECOND // 2,
        ))
        scanned = set(re.findall(r" on (prov_s\d+_\w+)", plan))
        assert scanned == {"prov_s2_19700101t000002", "prov_s2_19700101t000003"}, plan
        # partitions are made ahead of the data: 0..4 s hold data, 5 s is ready
        leaves = {r[0] for r in _catalog(
            pg_url,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s "
            "AND c.relkind = 'r' AND c.relname LIKE 'prov\\_s2\\_%%'", schema)}
        assert leaves == {f"prov_s2_19700101t00000{k}" for k in range(6)}
    finally:
        store.close()


def test_partition_width_is_fixed_when_the_tables_are_made(pg_url: str) -> None:
    open_provenance_store(pg_url, partition_ns=SECOND).close()
    with pytest.raises(InvalidInput) as err:
        open_provenance_store(pg_url, partition_ns=60 * SECOND)
    assert "cannot change" in str(err.value)
    open_provenance_store(pg_url).close()  # not asking for a width: the stored one holds


def test_read_only_store_refuses_writes(pg_url: str) -> None:
    open_provenance_store(pg_url).close()
    reader = open_provenance_store(pg_url, read_only=True)
    try:
        with pytest.raises(StoreError):
            reader.write(rows([chain(0, SECOND)]))
    finally:
        reader.close()


def test_a_partition_dropped_by_another_process_is_made_again(pg_url: str) -> None:
    writer = open_provenance_store(pg_url, partition_ns=SECOND)
    janitor = open_provenance_store(pg_url, partition_ns=SECOND)
    try:
        writer.write(rows([chain(i, i * SECOND) for i in range(3)]))
        assert janitor.expire(2 * SECOND) == 2  # the writer still believes [0, 2 s) exists
        assert writer.write(rows([chain(10, SECOND // 2)])) == 3  # late data, old partition
        assert writer.chains_for_record("s1", 10)[0].origin_ns == SECOND // 2
    finally:
        writer.close()
        janitor.close()


# -- many writers ------------------------------------------------------------------------------
_WRITER = """
import sys
from streamprov.store import open_provenance_store
from tests.store.chains import chain, rows

url, first, last = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = open_provenance_store(url, partition_ns=10**9)
added = 0
for start in range(first, last, 250):
    batch = [chain(i, i * 10**7, stream_id="race") for i in range(start, min(last, start + 250))]
    added += store.write(rows(batch))
store.close()
print(added)
"""


def test_many_writer_processes_store_every_chain_once(pg_url: str) -> None:
    ranges = [(0, 2000), (1000, 3000), (0, 3000), (2000, 4000)]  # overlapping, new stream
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, pg_url, str(a), str(b)], cwd=REPO,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for a, b in ranges
    ]
    added = 0
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        added += int(out.strip())
    assert added == 4000 * 3  # each row was new to exactly one writer
    store = open_provenance_store(pg_url)
    try:
        assert store.row_count("race") == 4000 * 3
        got = [c for ch in store.iter_window("race", 0, 100 * SECOND) for c in ch]
        assert [c.record_id for c in got] == list(range(4000))
    finally:
        store.close()


# -- faults ------------------------------------------------------------------------------------
def _own_server(server: PgServer | ExternalServer) -> PgServer:
    if not isinstance(server, PgServer):
        pytest.skip("needs a server this test session started (not STREAMPROV_TEST_PG_URL)")
    return server


def test_writes_survive_a_server_restart_mid_burst(
    postgres_server: PgServer | ExternalServer, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    server = _own_server(postgres_server)
    store = open_provenance_store(pg_url, partition_ns=SECOND)
    log = open_stream_log(pg_url, partition_ns=SECOND)
    go = threading.Event()
    failures: list[BaseException] = []

    def crash_and_restart() -> None:
        go.wait(30)
        try:
            server.restart("immediate", down_s=0.5)  # a crash: no shutdown checkpoint
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=crash_and_restart)
    thread.start()
    caplog.set_level(logging.WARNING, logger="streamprov.store.postgres")
    try:
        total = 0
        b = 0
        after = 0
        # write on until the crash and restart are over and five more batches went through,
        # so the burst surely spans the outage whatever the machine's speed
        while after < 5 and b < 2_000:
            if b == 5:
                go.set()
            batch = [chain(i, i * 10**7) for i in range(b * 200, (b + 1) * 200)]
            total += store.write(rows(batch))
            ids = range(b * 200, (b + 1) * 200)
            log.append(log_rows("s1", ids, ingest_ns=[i * 10**7 for i in ids]))
            time.sleep(0.02)
            b += 1
            if b > 5 and not thread.is_alive():
                after += 1
        thread.join(60)
        assert not failures, failures
        assert total == b * 200 * 3
        assert store.write(rows(batch)) == 0  # and once more, for good measure
        assert store.row_count("s1") == b * 200 * 3
        assert log.count("s1") == b * 200
    finally:
        go.set()
        thread.join(60)
        store.close()
        log.close()


def test_writer_gives_up_clearly_when_the_server_stays_down(
    postgres_server: PgServer | ExternalServer, pg_url: str
) -> None:
    server = _own_server(postgres_server)
    url = pg_url.replace("postgresql://", "postgresql://postgres:hunter2@", 1).replace(
        "postgres:hunter2@postgres@", "postgres:hunter2@"
    )
    store = open_provenance_store(url + "&retry=1s", partition_ns=SECOND)
    try:
        store.write(rows([chain(0, SECOND)]))
        server.stop("fast")
        try:
            started = time.monotonic()
            with pytest.raises(StoreError) as err:
                store.write(rows([chain(1, SECOND)]))
            assert time.monotonic() - started < 30
            assert "postgres:***@127.0.0.1" in str(err.value)
            assert "hunter2" not in str(err.value)
        finally:
            server.start()
        assert store.write(rows([chain(1, SECOND)])) == 3  # and it recovers
    finally:
        store.close()
