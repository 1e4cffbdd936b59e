"""PostgreSQL backends (the ``[postgres]`` extra, psycopg 3): many writers, partitioned tables.

Layout, per store (provenance: ``provenance``; stream log: ``stream_log``), in one schema
(``streamprov`` unless the URL says ``?schema=``)::

    provenance                  PARTITION BY LIST (stream_id)
      prov_s<n>                 one stream; PARTITION BY RANGE (origin_ts_ns)
        prov_s<n>_<utc start>   one time partition of ``partition_ns`` (default one hour)
    provenance_streams          catalog: stream -> n, retention watermark
    provenance_meta             schema version, partition width

A window query names one stream and a time range, so the planner prunes to that stream's
partitions in that range (see ``docs/store.md`` for why LIST-per-stream rather than HASH).
Retention drops whole time partitions. The primary key of each leaf, ``(stream_id, replay_id,
origin_ts_ns, origin_logical, origin_node, record_id, branch, hop)``, is both the
idempotency key (a retried batch carries identical rows, hop-0 time included) and the replay
order, so a window is one ordered index scan per partition. A BRIN index on ``record_id``
serves ``chains_for_record``.

Writes: rows are encoded to binary COPY (``pgcopy``), in primary-key order, and copied into
the root table in one transaction. A retried or overlapping batch makes that COPY fail on the
primary key; it is then copied into a temporary table and merged with ``INSERT ... ON CONFLICT
DO NOTHING``, so the common case costs one COPY and duplicates cost a second pass. Time
partitions are created before the COPY, in their own short transaction under an advisory lock
(so racing writers neither fail nor deadlock), together with the next one ahead of the data;
they are made standalone and attached, which does not wait for other writers' COPYs.
Connection loss, server restarts, deadlocks and serialization failures are retried with
backoff for ``retry`` seconds (default 60); because writes are idempotent a retry never
duplicates.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import orjson
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import errors as pgerrors
from psycopg import sql
from psycopg.copy import QueuedLibpqWriter
from psycopg_pool import ConnectionPool

from streamprov.errors import InvalidInput, SchemaVersionError, StoreError
from streamprov.model import Chain, Outcome
from streamprov.store.base import (
    DEFAULT_PARTITION_NS,
    HEAD_COLUMNS,
    LOG_ENTRY_SCHEMA,
    PROVENANCE_SCHEMA,
    STREAM_LOG_SCHEMA,
    WINDOW_HEAD_SCHEMA,
    ChainCursor,
    LogEntry,
    StreamLog,
    StreamSummary,
    bucket_start,
    check_window,
    expired_window,
    join_payloads,
    unknown_stream,
)
from streamprov.store.pgcopy import HEADER, TRAILER, CopyEncoder
from streamprov.store.pgurl import PgTarget, parse_url
from streamprov.store.rows import (
    SELECT_COLUMNS,
    SELECT_NAMES,
    ChainAssembler,
    conform,
)

SCHEMA_VERSION = 1
"""Version of the table layout this code writes and understands."""

COPY_CHUNK_ROWS = 32768
"""Rows encoded per COPY message: encoding the next chunk overlaps the server's work."""

RETENTION_EVERY_S = 60.0

log = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[Any, ...]]
T = TypeVar("T")

_ORDER = "origin_ts_ns, origin_logical, origin_node, record_id, branch"
_ROW_SCHEMA = pa.schema([PROVENANCE_SCHEMA.field(name) for name in SELECT_NAMES])
_HEAD_SCHEMA = pa.schema(
    [WINDOW_HEAD_SCHEMA.field(name) for name in HEAD_COLUMNS.split(", ")])
_LIKE = "INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES"
"""New partitions are made standalone, then attached: ``ATTACH PARTITION`` takes a lock that
lets COPYs into the parent go on, where ``CREATE TABLE ... PARTITION OF`` waits for them all
(and makes every later writer wait behind it)."""
_BOUND_RE = re.compile(r"FROM \('?(-?\d+)'?\) TO \('?(-?\d+)'?\)")


class _StalePartitions(Exception):
    """A cached partition was dropped by another process (retention): reload and retry."""


@dataclass(frozen=True, slots=True)
class _Layout:
    kind: str
    root: str
    prefix: str
    schema: pa.Schema
    ts_column: str
    key: str
    sort_key: tuple[str, ...]
    indexes: tuple[str, ...]


_PROVENANCE = _Layout(
    kind="provenance",
    root="provenance",
    prefix="prov",
    schema=PROVENANCE_SCHEMA,
    ts_column="origin_ts_ns",
    key="stream_id, replay_id, origin_ts_ns, origin_logical, origin_node, record_id, branch, hop",
    sort_key=("origin_ts_ns", "record_id", "branch", "hop"),
    indexes=("USING brin (record_id) WITH (autosummarize = on)",),
)
_STREAM_LOG = _Layout(
    kind="stream-log",
    root="stream_log",
    prefix="log",
    schema=STREAM_LOG_SCHEMA,
    ts_column="ingest_ts_ns",
    key="stream_id, record_id, ingest_ts_ns",
    sort_key=("record_id", "ingest_ts_ns"),
    indexes=(),
)


def _column_sql(field: pa.Field) -> str:
    if field.type == pa.int16():
        kind = "smallint"
    elif field.type == pa.int64():
        kind = "bigint"
    else:
        kind = 'text COLLATE "C"'
    return f"{field.name} {kind}{'' if field.nullable else ' NOT NULL'}"


def _stamp(lo_ns: int) -> str:
    """A partition's name suffix: its UTC start, plus nanoseconds when not whole seconds."""
    seconds, frac = divmod(lo_ns, 1_000_000_000)
    text = time.strftime("%Y%m%dt%H%M%S", time.gmtime(seconds))
    return f"{text}_{frac:09d}" if frac else text


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    first = text.splitlines()[0]
    return first.removeprefix("connection failed: ")


class _PgStore:
    """What both stores share: connection pool, schema, stream catalog, partitions, retries."""

    _layout: _Layout

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        partition_ns: int | None = None,
        retention_ns: int | None = None,
        pool_size: int | None = None,
        retry_s: float | None = None,
    ) -> None:
        """Open (and, unless ``read_only``, initialize) the store at ``url``.

        Keyword arguments override the URL's parameters. ``partition_ns`` only applies when
        the tables are created: an existing store keeps its partition width, and asking for
        another one is an error. Raises ``InvalidInput`` for a malformed URL, ``StoreError``
        naming the URL (password redacted) when the server cannot be reached, and
        ``SchemaVersionError`` when the tables were made by a newer streamprov.
        """
        target = parse_url(url)
        self.url = url
        self.target = target
        self.read_only = read_only
        self.retention_ns = retention_ns if retention_ns is not None else target.retention_ns
        self.retry_s = retry_s if retry_s is not None else target.retry_s
        requested = partition_ns if partition_ns is not None else target.partition_ns
        self._schema = target.schema
        lay = self._layout
        self._root = self._q(lay.root)
        self._streams_table = self._q(f"{lay.root}_streams")
        self._meta = self._q(f"{lay.root}_meta")
        self._encoder = CopyEncoder(lay.schema)
        self._copy_columns = ", ".join(self._encoder.columns)
        self._lock = threading.Lock()
        self._ordinals: dict[str, int] = {}
        self._parts: dict[int, set[int]] = {}
        self._last_retention: float | None = None
        self._empty = False
        try:
            conn = psycopg.connect(target.conninfo, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to PostgreSQL at {target.redacted}: {_reason(exc)}"
            ) from exc
        try:
            with conn:
                self.partition_ns = self._init_schema(conn, requested)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot initialize the {lay.kind} tables at {target.redacted}: {_reason(exc)}"
            ) from exc
        self._pool: ConnectionPool[Conn] = ConnectionPool(
            target.conninfo,
            kwargs={"autocommit": True, "prepare_threshold": None},
            min_size=1,
            max_size=target.pool_size if pool_size is None else pool_size,
            open=False,
            check=ConnectionPool.check_connection,
            name=f"streamprov-{lay.kind}",
            timeout=10.0,
            reconnect_timeout=max(self.retry_s, 1.0),
        )
        self._pool.open(wait=False)

    def _q(self, table: str) -> str:
        return f'"{self._schema}".{table}'

    def _lock_key(self, what: str) -> str:
        return f"streamprov:{self._schema}:{self._layout.root}:{what}"

    # -- schema -----------------------------------------------------------------------------
    def _init_schema(self, conn: Conn, requested_ns: int | None) -> int:
        """Create the tables if missing; check the recorded version; the partition width."""
        meta = self._meta
        exists = conn.execute("SELECT to_regclass(%s)", [meta]).fetchone()
        if self.read_only and (exists is None or exists[0] is None):
            self._empty = True  # nothing written yet: every query answers "empty"
            return requested_ns or DEFAULT_PARTITION_NS
        with conn.transaction():
            if not self.read_only:
                conn.execute(
                    "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                    [self._lock_key("init")],
                )
                has_schema = conn.execute("SELECT to_regnamespace(%s)", [self._schema])
                got = has_schema.fetchone()
                if got is None or got[0] is None:
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self._schema}"')
                conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {meta} (key text PRIMARY KEY, value text NOT NULL)"
                )
            values: dict[str, str] = dict(
                conn.execute(f"SELECT key, value FROM {meta}").fetchall()
            )
            version = int(values.get("schema_version", 0))
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"the {self._layout.kind} tables in schema {self._schema!r} at "
                    f"{self.target.redacted} have schema version {version}, newer than this "
                    f"streamprov understands ({SCHEMA_VERSION}); upgrade streamprov"
                )
            if version == 0 and not self.read_only:
                width = requested_ns or DEFAULT_PARTITION_NS
                self._create_tables(conn, width)
                return width
            width = int(values.get("partition_ns", DEFAULT_PARTITION_NS))
        if requested_ns is not None and requested_ns != width:
            raise InvalidInput(
                f"the {self._layout.kind} tables at {self.target.redacted} were created with "
                f"{width} ns time partitions; they cannot change to {requested_ns} ns",
                field="store_url",
            )
        return width

    def _create_tables(self, conn: Conn, width: int) -> None:
        lay = self._layout
        columns = ", ".join(_column_sql(f) for f in lay.schema)
        conn.execute(
            f"CREATE TABLE {self._streams_table} (stream_id text COLLATE \"C\" PRIMARY KEY, "
            "ordinal integer NOT NULL UNIQUE, created_ns bigint NOT NULL, "
            "expired_before_ns bigint, record_floor bigint NOT NULL DEFAULT 0)"
        )
        conn.execute(
            f"CREATE TABLE {self._root} ({columns}, PRIMARY KEY ({lay.key})) "
            "PARTITION BY LIST (stream_id)"
        )
        for index in lay.indexes:
            conn.execute(f"CREATE INDEX ON {self._root} {index}")
        conn.execute(
            f"INSERT INTO {self._meta} VALUES ('schema_version', %s), ('kind', %s), "
            "('partition_ns', %s)",
            [str(SCHEMA_VERSION), lay.kind, str(width)],
        )

    # -- running statements -----------------------------------------------------------------
    def _run(self, what: str, fn: Callable[[Conn], T], *, retry: bool = True) -> T:
        """``fn`` on a pooled connection; connection-level failures are retried with backoff
        until ``retry_s`` has passed, then (like every database error) become ``StoreError``."""
        if self._empty:
            raise StoreError(f"{what}: no {self._layout.kind} tables at {self.target.redacted}")
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        stale = 0
        while True:
            try:
                wait_s = min(10.0, max(0.1, deadline - time.monotonic()))
                with self._pool.connection(timeout=wait_s) as conn:
                    return fn(conn)
            except _StalePartitions:
                stale += 1
                if stale > 3:
                    raise StoreError(f"{what}: time partitions keep disappearing") from None
            except psycopg.OperationalError as exc:
                if not retry or time.monotonic() + delay > deadline:
                    raise StoreError(
                        f"{what} at {self.target.redacted} failed: {_reason(exc)}"
                    ) from exc
                log.warning("%s at %s: %s; retrying in %.2fs", what, self.target.redacted,
                            _reason(exc), delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
            except psycopg.Error as exc:
                raise StoreError(
                    f"{what} at {self.target.redacted} failed: {_reason(exc)}"
                ) from exc

    def _stream_rows(
        self, what: str, query: str, params: Sequence[Any] | dict[str, Any], chunk_rows: int
    ) -> Iterator[list[tuple[Any, ...]]]:
        """Rows of a query in chunks through a server-side cursor, in bounded memory."""
        try:
            with (
                self._pool.connection() as conn,
                conn.transaction(),
                conn.cursor(name="streamprov_rows") as cur,
            ):
                cur.itersize = chunk_rows
                cur.execute(query, params)
                while rows := cur.fetchmany(chunk_rows):
                    yield rows
        except psycopg.Error as exc:
            raise StoreError(f"{what} at {self.target.redacted} failed: {_reason(exc)}") from exc

    def close(self) -> None:
        if not self._pool.closed:
            self._pool.close(timeout=5.0)

    # -- streams and partitions -------------------------------------------------------------
    def _stream_info(self, conn: Conn, stream_id: str) -> tuple[int, int | None, int] | None:
        """``(ordinal, expired_before_ns, record_floor)`` of a stream, or None."""
        row = conn.execute(
            f"SELECT ordinal, expired_before_ns, record_floor FROM {self._streams_table} "
            "WHERE stream_id = %s",
            [stream_id],
        ).fetchone()
        if row is None:
            return None
        self._ordinals[stream_id] = int(row[0])
        return int(row[0]), None if row[1] is None else int(row[1]), int(row[2])

    def has_stream(self, stream_id: str) -> bool:
        if stream_id in self._ordinals:
            return True
        if self._empty:
            return False
        return self._run("looking up a stream", lambda c: self._stream_info(c, stream_id)) \
            is not None

    def stream_ids(self) -> list[str]:
        if self._empty:
            return []
        rows = self._run(
            "listing streams",
            lambda c: c.execute(
                f"SELECT stream_id FROM {self._streams_table} ORDER BY stream_id"
            ).fetchall(),
        )
        return [r[0] for r in rows]

    def _stream_partition(self, ordinal: int) -> str:
        return self._q(f"{self._layout.prefix}_s{ordinal}")

    def _ensure_stream(self, conn: Conn, stream_id: str) -> int:
        ordinal = self._ordinals.get(stream_id)
        if ordinal is not None:
            return ordinal
        with conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                [self._lock_key("streams")],
            )
            info = self._stream_info(conn, stream_id)
            if info is not None:
                return info[0]
            row = conn.execute(
                f"SELECT coalesce(max(ordinal), 0) + 1 FROM {self._streams_table}"
            ).fetchone()
            ordinal = int(row[0]) if row else 1
            conn.execute(
                f"INSERT INTO {self._streams_table} (stream_id, ordinal, created_ns) "
                "VALUES (%s, %s, %s)",
                [stream_id, ordinal, time.time_ns()],
            )
            part = self._stream_partition(ordinal)
            conn.execute(
                f"CREATE TABLE {part} (LIKE {self._root} {_LIKE}) "
                f"PARTITION BY RANGE ({self._layout.ts_column})"
            )
            conn.execute(
                sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES IN ({})").format(
                    sql.SQL(self._root), sql.SQL(part), sql.Literal(stream_id)
                )
            )
        self._ordinals[stream_id] = ordinal
        return ordinal

    def _partitions(self, conn: Conn, ordinal: int) -> dict[int, tuple[str, int]]:
        """Time partitions of one stream: start -> (qualified name, end)."""
        rows = conn.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            [self._stream_partition(ordinal)],
        ).fetchall()
        out: dict[int, tuple[str, int]] = {}
        for name, bound in rows:
            m = _BOUND_RE.search(bound or "")
            if m:
                out[int(m.group(1))] = (self._q(name), int(m.group(2)))
        return out

    def _ensure_partitions(self, conn: Conn, needs: dict[str, set[int]]) -> None:
        """Create the time partitions (bucket starts) ``needs`` names, plus the next one after
        each stream's newest, unless they exist. Runs outside any data transaction, one short
        transaction per stream under an advisory lock, so racing writers make each once."""
        width = self.partition_ns
        with self._lock:
            for stream_id, starts in needs.items():
                ordinal = self._ensure_stream(conn, stream_id)
                want = set(starts) | {max(starts) + width}
                known = self._parts.get(ordinal)
                if known is None or not want <= known:
                    known = set(self._partitions(conn, ordinal))
                    self._parts[ordinal] = known
                if want <= known:
                    continue
                with conn.transaction():
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        [self._lock_key(f"s{ordinal}")],
                    )
                    known.update(self._partitions(conn, ordinal))  # made by a racing writer?
                    parent = self._stream_partition(ordinal)
                    for lo in sorted(want - known):
                        name = self._q(f"{self._layout.prefix}_s{ordinal}_{_stamp(lo)}")
                        conn.execute(f"CREATE TABLE {name} (LIKE {parent} {_LIKE})")
                        conn.execute(
                            f"ALTER TABLE {parent} ATTACH PARTITION {name} "
                            f"FOR VALUES FROM ({lo}) TO ({lo + width})"
                        )
                known.update(want)

    def _needs(self, rows: pa.Table) -> dict[str, set[int]]:
        """The time partitions (bucket starts) each stream of ``rows`` writes into."""
        width = self.partition_ns
        sids = rows.column("stream_id").combine_chunks()
        if not pa.types.is_dictionary(sids.type):
            sids = pc.dictionary_encode(sids)
        ts = rows.column(self._layout.ts_column).combine_chunks().to_numpy()
        if ts.min() < 0:
            raise InvalidInput(
                f"{self._layout.ts_column} must not be negative", field=self._layout.ts_column
            )
        buckets = ts // width
        codes = sids.indices.to_numpy(zero_copy_only=False)
        names = sids.dictionary.to_pylist()
        out: dict[str, set[int]] = {}
        for code in np.flatnonzero(np.bincount(codes, minlength=len(names))).tolist():
            mine = buckets if len(names) == 1 else buckets[codes == code]
            lo, hi = int(mine.min()), int(mine.max())
            if hi - lo < 1_000_000:  # the usual case: a counting pass, no sort
                present = np.flatnonzero(np.bincount(mine - lo)) + lo
            else:
                present = np.unique(mine)
            out.setdefault(names[code], set()).update(int(b) * width for b in present.tolist())
        return out

    # -- writing ----------------------------------------------------------------------------
    def _insert(self, rows: pa.Table, what: str) -> int:
        """Write rows idempotently; returns how many were new."""
        if self.read_only:
            raise StoreError(f"{what}: the store at {self.target.redacted} is open read-only")
        needs = self._needs(rows)
        encoded = _Encoded(self._encoder, rows, self._key_order(rows))

        def attempt(conn: Conn) -> int:
            self._ensure_partitions(conn, needs)
            try:
                with conn.transaction():
                    return self._copy(conn, self._root, encoded)
            except pgerrors.UniqueViolation:
                pass  # some rows are stored already: merge below
            except pgerrors.CheckViolation as exc:
                self._parts.clear()  # no partition for a row: one was dropped meanwhile
                raise _StalePartitions from exc
            temp = f"_incoming_{self._layout.root}"
            with conn.transaction():
                conn.execute(
                    f"CREATE TEMP TABLE IF NOT EXISTS {temp} (LIKE {self._root}) "
                    "ON COMMIT DELETE ROWS"
                )
                self._copy(conn, temp, encoded)
                cur = conn.execute(
                    f"INSERT INTO {self._root} SELECT * FROM {temp} ON CONFLICT DO NOTHING"
                )
                return max(cur.rowcount, 0)

        added = self._run(what, attempt)
        self._maybe_expire()
        return added

    def _key_order(self, rows: pa.Table) -> np.ndarray[Any, Any] | None:
        """Row positions in (about) primary-key order, or None when already so: the server
        then appends to each index instead of inserting all over it, which doubles its COPY
        rate for rows grouped by hop as the runtime makes them."""
        keys = [rows.column(c).combine_chunks().to_numpy() for c in reversed(self._layout.sort_key)]
        order = np.lexsort(keys)
        if bool(np.all(order[1:] > order[:-1])):
            return None
        return order

    def _copy(self, conn: Conn, table: str, encoded: Iterable[bytes | memoryview]) -> int:
        with conn.cursor() as cur:
            with cur.copy(
                f"COPY {table} ({self._copy_columns}) FROM STDIN (FORMAT BINARY)",
                writer=QueuedLibpqWriter(cur),
            ) as copy:
                copy.write(HEADER)
                for chunk in encoded:
                    copy.write(chunk)
                copy.write(TRAILER)
            return max(cur.rowcount, 0)

    # -- retention --------------------------------------------------------------------------
    def expire(self, older_than_ns: int) -> int:
        """Drop every time partition that ends at or before ``older_than_ns``; returns how
        many of them held data. Each stream remembers where its kept data begins."""
        if self.read_only:
            raise StoreError(f"the store at {self.target.redacted} is open read-only")
        cutoff = bucket_start(older_than_ns, self.partition_ns)

        def drop(conn: Conn) -> int:
            streams = conn.execute(
                f"SELECT stream_id, ordinal FROM {self._streams_table} ORDER BY ordinal"
            ).fetchall()
            dropped = 0
            for stream_id, ordinal in streams:
                old = [(lo, name) for lo, (name, hi) in self._partitions(conn, ordinal).items()
                       if hi <= cutoff]
                if not old:
                    continue
                with conn.transaction():
                    conn.execute(
                        "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                        [self._lock_key(f"s{ordinal}")],
                    )
                    held, floor = 0, 0
                    for _, name in old:
                        top = self._newest_record(conn, name)
                        if top is not None:
                            held += 1
                            floor = max(floor, top + 1)
                        conn.execute(f"DROP TABLE IF EXISTS {name}")
                    if held:
                        conn.execute(
                            f"UPDATE {self._streams_table} SET expired_before_ns = "
                            "greatest(coalesce(expired_before_ns, 0), %s), "
                            "record_floor = greatest(record_floor, %s) WHERE stream_id = %s",
                            [cutoff, floor, stream_id],
                        )
                dropped += held
                known = self._parts.get(ordinal)
                if known is not None:
                    known.difference_update(lo for lo, _ in old)
            return dropped

        return self._run("expiring old partitions", drop)

    def _newest_record(self, conn: Conn, partition: str) -> int | None:
        """Largest record id in a partition (stream log: so ids are never reused after it is
        dropped); for provenance any record id, just to tell whether it holds data."""
        order = "ORDER BY record_id DESC " if self._layout is _STREAM_LOG else ""
        row = conn.execute(
            f"SELECT record_id FROM {partition} {order}LIMIT 1"
        ).fetchone()
        return None if row is None else int(row[0])

    def _maybe_expire(self) -> None:
        """Apply the configured retention, at most once a minute (called after writes)."""
        if self.retention_ns is None:
            return
        now = time.monotonic()
        if self._last_retention is not None and now - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = now
        self.expire(time.time_ns() - self.retention_ns)


class _Encoded:
    """Encoded COPY chunks, produced lazily on the first pass and replayed on later ones
    (the merge path and retries send the same bytes again)."""

    def __init__(
        self, encoder: CopyEncoder, rows: pa.Table, order: np.ndarray[Any, Any] | None
    ) -> None:
        self._pending = encoder.chunks(rows, COPY_CHUNK_ROWS, order)
        self._done: list[bytes | memoryview] = []

    def __iter__(self) -> Iterator[bytes | memoryview]:
        yield from self._done
        for chunk in self._pending:
            self._done.append(chunk)
            yield chunk


class PostgresProvenanceStore(_PgStore):
    """``ProvenanceStore`` in PostgreSQL, partitioned by stream and hop-0 time."""

    _layout = _PROVENANCE

    def write(self, rows: pa.Table) -> int:
        rows = conform(rows, PROVENANCE_SCHEMA, "provenance")
        if rows.num_rows == 0:
            return 0
        return self._insert(rows, "writing provenance")

    def streams(self) -> list[StreamSummary]:
        if self._empty:
            return []
        rows = self._run("listing streams", lambda c: c.execute(
            f"SELECT s.stream_id, coalesce(c.n, 0), c.lo, c.hi FROM {self._streams_table} s "
            "LEFT JOIN (SELECT stream_id, count(*) AS n, min(origin_ts_ns) AS lo, "
            f"max(origin_ts_ns) AS hi FROM {self._root} WHERE hop = 0 AND replay_id = '' "
            "GROUP BY stream_id) c USING (stream_id) ORDER BY s.stream_id"
        ).fetchall())
        return [StreamSummary(sid, 0, int(n), lo, hi) for sid, n, lo, hi in rows]

    def chains_for_record(
        self, stream_id: str, record_id: int, replay_id: str = ""
    ) -> list[Chain]:
        if self._empty:
            return []
        rows = self._run("reading a record's chains", lambda c: c.execute(
            f"SELECT {SELECT_COLUMNS} FROM {self._root} WHERE stream_id = %s "
            "AND record_id = %s AND replay_id = %s ORDER BY branch, hop",
            [stream_id, record_id, replay_id],
        ).fetchall())
        return ChainAssembler().feed_rows(rows)

    def _check_window(self, conn: Conn, stream_id: str, start_ns: int) -> None:
        info = self._stream_info(conn, stream_id)
        if info is None:
            raise unknown_stream(stream_id)
        if info[1] is not None and start_ns < info[1]:
            raise expired_window(stream_id, start_ns, info[1])

    def _window_checked(self, stream_id: str, start_ns: int, end_ns: int) -> None:
        check_window(start_ns, end_ns)
        if self._empty:
            raise unknown_stream(stream_id)
        self._run("reading a window", lambda c: self._check_window(c, stream_id, start_ns))

    def window(
        self,
        stream_id: str,
        start_ns: int,
        end_ns: int,
        *,
        replay_id: str = "",
        after: ChainCursor | None = None,
        limit: int = 1000,
    ) -> list[Chain]:
        check_window(start_ns, end_ns)
        if self._empty:
            raise unknown_stream(stream_id)
        where = (
            "stream_id = %(stream)s AND replay_id = %(replay)s "
            "AND origin_ts_ns >= %(start)s AND origin_ts_ns < %(end)s"
        )
        params: dict[str, Any] = {
            "stream": stream_id, "replay": replay_id, "start": start_ns, "end": end_ns,
        }
        if after is not None:
            where += (
                " AND origin_ts_ns >= %(a_ts)s AND (origin_ts_ns, origin_logical, origin_node,"
                " record_id, branch) > (%(a_ts)s, %(a_lg)s, %(a_node)s, %(a_rid)s, %(a_br)s)"
            )
            params.update(
                a_ts=after.origin_ts_ns, a_lg=after.origin_logical, a_node=after.origin_node,
                a_rid=after.record_id, a_br=after.branch,
            )

        def query(conn: Conn) -> list[Chain]:
            self._check_window(conn, stream_id, start_ns)
            if limit <= 0:
                return []
            heads = conn.execute(
                f"SELECT {_ORDER} FROM {self._root} WHERE {where} AND hop = 0 "
                f"ORDER BY {_ORDER} LIMIT {int(limit)}",
                params,
            ).fetchall()
            if not heads:
                return []
            first, last = heads[0], heads[-1]
            bounds = dict(
                params,
                f_ts=first[0], f_lg=first[1], f_node=first[2], f_rid=first[3], f_br=first[4],
                l_ts=last[0], l_lg=last[1], l_node=last[2], l_rid=last[3], l_br=last[4],
            )
            rows = conn.execute(
                f"SELECT {SELECT_COLUMNS} FROM {self._root} WHERE {where} "
                "AND origin_ts_ns BETWEEN %(f_ts)s AND %(l_ts)s "
                f"AND ({_ORDER}) >= (%(f_ts)s, %(f_lg)s, %(f_node)s, %(f_rid)s, %(f_br)s) "
                f"AND ({_ORDER}) <= (%(l_ts)s, %(l_lg)s, %(l_node)s, %(l_rid)s, %(l_br)s) "
                f"ORDER BY {_ORDER}, hop",
                bounds,
            ).fetchall()
            return ChainAssembler().feed_rows(rows)

        return self._run("reading a window", query)

    def _window_sql(self) -> str:
        return (
            f"SELECT {SELECT_COLUMNS} FROM {self._root} WHERE stream_id = %s AND replay_id = %s "
            f"AND origin_ts_ns >= %s AND origin_ts_ns < %s ORDER BY {_ORDER}, hop"
        )

    def iter_window(
        self,
        stream_id: str,
        start_ns: int,
        end_ns: int,
        *,
        replay_id: str = "",
        chunk_rows: int = 65536,
    ) -> Iterator[list[Chain]]:
        self._window_checked(stream_id, start_ns, end_ns)  # raise now, not when iterated
        chunks = self._stream_rows(
            "reading a window", self._window_sql(), [stream_id, replay_id, start_ns, end_ns],
            max(1, chunk_rows),
        )
        return _assemble_rows(chunks)

    def window_rows(
        self,
        stream_id: str,
        start_ns: int,
        end_ns: int,
        *,
        replay_id: str = "",
        chunk_rows: int = 65536,
    ) -> Iterator[pa.RecordBatch]:
        self._window_checked(stream_id, start_ns, end_ns)
        chunks = self._stream_rows(
            "reading a window", self._window_sql(), [stream_id, replay_id, start_ns, end_ns],
            max(1, chunk_rows),
        )
        return (_record_batch(rows) for rows in chunks)

    def window_heads(
        self,
        stream_id: str,
        start_ns: int,
        end_ns: int,
        *,
        log: StreamLog | None = None,
        replay_id: str = "",
        chunk_rows: int = 65536,
    ) -> Iterator[pa.RecordBatch]:
        """Hop-0 rows with payloads: joined on the server when ``log`` is a PostgreSQL log
        in the same database (same server, database and user), else chunk by chunk."""
        self._window_checked(stream_id, start_ns, end_ns)
        chunk_rows = max(1, chunk_rows)
        params = [stream_id, replay_id, start_ns, end_ns]
        where = ("p.stream_id = %s AND p.replay_id = %s AND p.hop = 0 "
                 "AND p.origin_ts_ns >= %s AND p.origin_ts_ns < %s")
        order = "p." + _ORDER.replace(", ", ", p.")
        if isinstance(log, PostgresStreamLog) and log.target.conninfo == self.target.conninfo:
            query = (
                "SELECT p.record_id, p.branch, p.hops, p.origin_ts_ns, p.outcome, l.key, "
                f"l.payload FROM {self._root} p LEFT JOIN {log._root} l ON p.branch = 0 "
                f"AND l.stream_id = p.stream_id AND l.record_id = p.record_id WHERE {where} "
                f"ORDER BY {order}"
            )
            chunks = self._stream_rows("reading a window", query, params, chunk_rows)
            return (_batch(rows, WINDOW_HEAD_SCHEMA) for rows in chunks)
        query = f"SELECT {HEAD_COLUMNS} FROM {self._root} p WHERE {where} ORDER BY {order}"
        chunks = self._stream_rows("reading a window", query, params, chunk_rows)
        heads = (_batch(rows, _HEAD_SCHEMA) for rows in chunks)
        return join_payloads(heads, log, stream_id)

    def outcome_counts(self, stream_id: str, replay_id: str = "", *,
                       from_record: int = 0) -> dict[Outcome, int]:
        counts = dict.fromkeys(Outcome, 0)
        if self._empty:
            return counts
        rows = self._run("counting outcomes", lambda c: c.execute(
            f"SELECT outcome, count(*) FROM {self._root} WHERE stream_id = %s AND hop = 0 "
            "AND replay_id = %s AND record_id >= %s GROUP BY outcome",
            [stream_id, replay_id, from_record],
        ).fetchall())
        for outcome, n in rows:
            counts[Outcome(outcome)] = int(n)
        return counts

    def record_ids(self, stream_id: str, *, replay_id: str = "",
                   from_record: int = 0) -> npt.NDArray[np.int64]:
        if self._empty:
            return np.empty(0, np.int64)
        rows = self._run("reading record ids", lambda c: c.execute(
            f"SELECT DISTINCT record_id FROM {self._root} WHERE stream_id = %s AND hop = 0 "
            "AND replay_id = %s AND record_id >= %s ORDER BY record_id",
            [stream_id, replay_id, from_record],
        ).fetchall())
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def latencies_ns(self, stream_id: str, replay_id: str = "") -> pa.Array:
        if self._empty:
            return pa.array([], pa.int64())

        def query(conn: Conn) -> bytes:
            with conn.cursor() as cur, cur.copy(
                sql.SQL(
                    "COPY (SELECT ts_ns - origin_ts_ns FROM {} WHERE stream_id = {} "
                    "AND hop = hops - 1 AND replay_id = {}) TO STDOUT (FORMAT BINARY)"
                ).format(sql.SQL(self._root), sql.Literal(stream_id), sql.Literal(replay_id))
            ) as copy:
                return b"".join(bytes(block) for block in copy)

        data = self._run("reading latencies", query)
        body = data[len(HEADER) : -len(TRAILER)]
        tuples = np.frombuffer(body, dtype=np.dtype([("n", ">i2"), ("len", ">i4"), ("v", ">i8")]))
        return pa.array(tuples["v"].astype(np.int64), pa.int64())

    def row_count(self, stream_id: str) -> int:
        if self._empty:
            return 0
        row = self._run("counting rows", lambda c: c.execute(
            f"SELECT count(*) FROM {self._root} WHERE stream_id = %s", [stream_id]
        ).fetchone())
        return int(row[0]) if row else 0


class PostgresStreamLog(_PgStore):
    """``StreamLog`` in PostgreSQL, partitioned by stream and ingest time."""

    _layout = _STREAM_LOG

    def append(self, rows: pa.Table) -> None:
        rows = conform(rows, STREAM_LOG_SCHEMA, "stream log")
        if rows.num_rows:
            self._insert(rows, "appending to the stream log")

    def next_record_id(self, stream_id: str) -> int:
        if self._empty:
            return 0
        row = self._run("reading the next record id", lambda c: c.execute(
            f"SELECT greatest((SELECT max(record_id) + 1 FROM {self._root} WHERE stream_id = %s),"
            f" (SELECT record_floor FROM {self._streams_table} WHERE stream_id = %s), 0)",
            [stream_id, stream_id],
        ).fetchone())
        return int(row[0]) if row else 0

    def count(self, stream_id: str) -> int:
        if self._empty:
            return 0
        row = self._run("counting records", lambda c: c.execute(
            f"SELECT count(*) FROM {self._root} WHERE stream_id = %s", [stream_id]
        ).fetchone())
        return int(row[0]) if row else 0

    def record_ids(self, stream_id: str, *, from_record: int = 0) -> npt.NDArray[np.int64]:
        if self._empty:
            return np.empty(0, np.int64)
        rows = self._run("reading record ids", lambda c: c.execute(
            f"SELECT record_id FROM {self._root} WHERE stream_id = %s AND record_id >= %s "
            "ORDER BY record_id",
            [stream_id, from_record],
        ).fetchall())
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def entries_table(self, stream_id: str, record_ids: Sequence[int]) -> pa.Table:
        if self._empty or not len(record_ids):
            return LOG_ENTRY_SCHEMA.empty_table()
        ids = [int(r) for r in record_ids]
        rows = self._run("reading payloads", lambda c: c.execute(
            f"SELECT record_id, ingest_ts_ns, key, payload FROM {self._root} "
            "WHERE stream_id = %s AND record_id = ANY(%s::bigint[])",
            [stream_id, ids],
        ).fetchall())
        cols = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
        return pa.Table.from_arrays(
            [pa.array(c, type=f.type) for c, f in zip(cols, LOG_ENTRY_SCHEMA, strict=True)],
            schema=LOG_ENTRY_SCHEMA)

    def entries(self, stream_id: str, record_ids: Sequence[int]) -> dict[int, LogEntry]:
        if self._empty or not len(record_ids):
            return {}
        ids = [int(r) for r in record_ids]
        rows = self._run("reading payloads", lambda c: c.execute(
            f"SELECT record_id, ingest_ts_ns, key, payload FROM {self._root} "
            "WHERE stream_id = %s AND record_id = ANY(%s::bigint[])",
            [stream_id, ids],
        ).fetchall())
        return {
            rid: LogEntry(rid, ts, None if key is None else orjson.loads(key), orjson.loads(p))
            for rid, ts, key, p in rows
        }


def _assemble_rows(chunks: Iterable[list[tuple[Any, ...]]]) -> Iterator[list[Chain]]:
    asm = ChainAssembler()
    for rows in chunks:
        chains = asm.feed_rows(rows)
        if chains:
            yield chains


def _record_batch(rows: list[tuple[Any, ...]]) -> pa.RecordBatch:
    return _batch(rows, _ROW_SCHEMA)


def _batch(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.RecordBatch:
    columns = list(zip(*rows, strict=True))
    return pa.RecordBatch.from_arrays(
        [pa.array(col, type=f.type) for col, f in zip(columns, schema, strict=True)],
        schema=schema,
    )


__all__ = ["SCHEMA_VERSION", "PgTarget", "PostgresProvenanceStore", "PostgresStreamLog"]
