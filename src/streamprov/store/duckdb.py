"""Embedded DuckDB backends: one file for the provenance store, another for the stream log.

Layout: one table per stream (``prov_<n>`` / ``log_<n>``, named in a catalog table), so a query
for one stream never reads another's rows. In the provenance file ``prov_<n>`` is a view with
the canonical columns over a compact table ``provc_<n>``: no stream id (the table is the
stream's), and node ids, replay ids and outcomes as integer codes named in
``streamprov_names``. DuckDB stores integers for about half what it costs to store the same
few strings on every hop row, and the writer is the one process that stores every hop.

Within a stream, rows are appended in roughly hop-0 time order, and DuckDB's per-row-group
min/max (zone maps) on ``origin_ts_ns`` skip the row groups outside a window; every window
query states its time bounds so they can.

A DuckDB file has a single writer process; readers in other processes must wait until it is
closed. Idempotency comes from an anti-join against the existing rows of the batch's record-id
range (cheap: that range is a handful of recent row groups) rather than a primary-key index,
which costs DuckDB several times more per insert.

Retention (``expire``) deletes whole time buckets of ``partition_ns`` (the unit in which the
PostgreSQL backend partitions) and records, per stream, where the kept data begins, so that a
window reaching before it fails clearly instead of coming back silently short. Queries that
return Arrow run through ``con.sql`` (the relation hands its result over without the extra
copy that a DB-API result makes).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from streamprov.errors import SchemaVersionError, StoreError
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
from streamprov.store.rows import (
    SELECT_COLUMNS,
    ChainAssembler,
    assemble,
    conform,
)

SCHEMA_VERSION = 3
"""1: catalog and per-stream tables. 2: the catalog records where retention cut each stream
(``expired_before_ns``) and the stream log's record-id floor after expiry (``record_floor``).
3: provenance rows in compact tables behind views (``streamprov_names``; the stream log is
unchanged). Older files are upgraded in place when opened for writing; opened read-only they
are read as they are (the views have the columns the version 2 tables had)."""

RETENTION_EVERY_S = 60.0
"""How often writes apply a configured retention."""

_ORDER = "origin_ts_ns, origin_logical, origin_node, record_id, branch"
SLICE_ROWS = 131_072
"""Rows sorted at a time by an ordered window read (see ``_ordered``): about 12 MB of DuckDB
memory, whatever the window's size."""
T = TypeVar("T")


DEFAULT_MEMORY_LIMIT = "2GB"
_URL_OPTIONS = ("memory_limit", "threads", "compression")
_COMPRESSION = {"auto": "auto", "none": "uncompressed"}
"""The URL's ``compression`` and DuckDB's ``force_compression`` for it."""


def path_from_url(url: str) -> Path:
    """``duckdb:///abs/file.duckdb`` or ``duckdb://rel/file.duckdb`` (or a bare path), with
    optional ``?memory_limit=512MB&threads=4&compression=none``."""
    return _parse_url(url)[0]


def _parse_url(url: str) -> tuple[Path, dict[str, str]]:
    from urllib.parse import parse_qsl

    if url.startswith("duckdb://"):
        url = url[len("duckdb://") :]
    url, _, query = url.partition("?")
    if not url:
        raise StoreError("duckdb URL names no file: use duckdb:///path/to/file.duckdb")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(_URL_OPTIONS))
    if unknown:
        raise StoreError(f"unknown option {unknown[0]!r} in the duckdb URL "
                         f"(known: {', '.join(_URL_OPTIONS)})")
    return Path(url), options


def _compression(text: str | None) -> str:
    if text is None:
        return "auto"
    if text not in _COMPRESSION:
        raise StoreError(f"compression in the duckdb URL must be one of "
                         f"{', '.join(_COMPRESSION)}, not {text!r}")
    return _COMPRESSION[text]


def _threads(text: str | None, default: int) -> int:
    if text is None:
        return default
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 256:
        raise StoreError(f"threads in the duckdb URL must be a whole number from 1 to 256, "
                         f"not {text!r}")
    return n


class _DuckDBFile:
    """A DuckDB file with a schema version and a catalog of per-stream tables."""

    _prefix = ""
    _kind = ""
    _ts_column = ""

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        memory_limit: str | None = None,
        partition_ns: int | None = None,
        retention_ns: int | None = None,
    ) -> None:
        """``partition_ns``: the time bucket that retention drops whole (default one hour).
        ``retention_ns``: when set, writes drop data older than that, once a minute at most.
        ``memory_limit`` (else the URL's ``memory_limit``, else 2 GB): what DuckDB may hold,
        its cache of the file's blocks included; work beyond it spills to a temporary file.
        The URL's ``threads``: DuckDB's worker threads, by default 1 when writing (the
        ingest node and the writer append in a pipeline whose other processes want the
        cores: a second thread cost the three-hop benchmark 15 % of its CPU and gained
        nothing) and 2 when reading (a window's sort runs in parallel). The URL's
        ``compression``: ``auto`` (DuckDB's choice per column, the default) or ``none``, which
        stores what this connection writes uncompressed: for three-hop chains about 45 % less
        of DuckDB's CPU per row and about 7x the file size.
        """
        self.url = url
        self.path, options = _parse_url(url)
        memory_limit = memory_limit or options.get("memory_limit") or DEFAULT_MEMORY_LIMIT
        threads = _threads(options.get("threads"), 2 if read_only else 1)
        compression = _compression(options.get("compression"))
        self.read_only = read_only
        self.partition_ns = int(partition_ns or DEFAULT_PARTITION_NS)
        self.retention_ns = retention_ns
        self._last_retention: float | None = None
        self._lock = threading.Lock()
        self._tables: dict[str, str] = {}
        self._max_ids: dict[str, int] = {}
        self._version = SCHEMA_VERSION
        self._con: duckdb.DuckDBPyConnection | None
        if read_only and not self.path.exists():
            self._con = None  # nothing written yet: every query answers "empty"
            return
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con = duckdb.connect(
                str(self.path),
                read_only=read_only,
                config={"memory_limit": memory_limit, "threads": threads,
                        **({} if compression == "auto" else {"force_compression": compression})},
            )
        except duckdb.Error as exc:
            if "memory" in str(exc).lower():
                raise StoreError(f"memory_limit {memory_limit!r} for {self.path}: "
                                 f"{str(exc).splitlines()[0]}") from exc
            raise StoreError(_explain(self.path, exc)) from exc
        try:
            self._init_schema()
        except BaseException:
            self.close()
            raise

    # -- schema -------------------------------------------------------------------------
    def _init_schema(self) -> None:
        con = self._require()
        tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        if "streamprov_meta" in tables:
            row = con.execute(
                "SELECT value FROM streamprov_meta WHERE key = 'schema_version'"
            ).fetchone()
            self._version = int(row[0]) if row else 0
            if self._version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"{self.path} has schema version {self._version}, newer than this "
                    f"streamprov understands ({SCHEMA_VERSION}); upgrade streamprov"
                )
            if self._version < SCHEMA_VERSION and not self.read_only:
                self._upgrade(con)
        elif not self.read_only:
            con.execute("BEGIN")
            con.execute("CREATE TABLE streamprov_meta (key VARCHAR PRIMARY KEY, value VARCHAR)")
            con.execute(
                "CREATE TABLE streamprov_streams (stream_id VARCHAR PRIMARY KEY, "
                "ordinal INTEGER NOT NULL, created_ns BIGINT NOT NULL, "
                "expired_before_ns BIGINT, record_floor BIGINT NOT NULL DEFAULT 0)"
            )
            con.execute(
                "INSERT INTO streamprov_meta VALUES ('schema_version', ?), ('kind', ?)",
                [str(SCHEMA_VERSION), self._kind],
            )
            self._create_extra(con)
            con.execute("COMMIT")
        if "streamprov_streams" in tables or not self.read_only:
            self._load_catalog(con)

    def _load_catalog(self, con: duckdb.DuckDBPyConnection) -> None:
        """What the file's catalog says, as kept in memory (again after a failed write: it
        may have added what its rollback took away)."""
        self._tables = {
            sid: f"{self._prefix}{ordinal}" for sid, ordinal in
            con.execute("SELECT stream_id, ordinal FROM streamprov_streams").fetchall()
        }

    def _upgrade(self, con: duckdb.DuckDBPyConnection) -> None:
        """Bring an older file to ``SCHEMA_VERSION`` in one transaction."""
        con.execute("BEGIN")
        try:
            if self._version < 2:
                con.execute("ALTER TABLE streamprov_streams ADD COLUMN expired_before_ns BIGINT")
                con.execute(
                    "ALTER TABLE streamprov_streams ADD COLUMN record_floor BIGINT DEFAULT 0")
            if self._version < 3:
                self._upgrade_to_3(con)
            con.execute(
                "UPDATE streamprov_meta SET value = ? WHERE key = 'schema_version'",
                [str(SCHEMA_VERSION)],
            )
            con.execute("COMMIT")
        except duckdb.Error as exc:
            _rollback(con)
            raise StoreError(f"upgrading {self.path} to schema version {SCHEMA_VERSION}: "
                             f"{str(exc).splitlines()[0]}") from exc
        self._version = SCHEMA_VERSION

    def _create_extra(self, con: duckdb.DuckDBPyConnection) -> None:
        """Tables of this kind of file beyond the catalog (in the creating transaction)."""

    def _upgrade_to_3(self, con: duckdb.DuckDBPyConnection) -> None:
        """This kind of file's part of the upgrade to version 3."""

    def _physical(self, table: str) -> str:
        """The table that stores the rows ``table`` reads (itself unless it is a view)."""
        return table

    def _require(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreError(f"{self.path} is not open")
        return self._con

    def _table(self, stream_id: str) -> str | None:
        return self._tables.get(stream_id)

    def _ensure_table(self, con: duckdb.DuckDBPyConnection, stream_id: str) -> str:
        table = self._tables.get(stream_id)
        if table is not None:
            return table
        row = con.execute("SELECT coalesce(max(ordinal), 0) + 1 FROM streamprov_streams").fetchone()
        ordinal = int(row[0]) if row else 1
        table = f"{self._prefix}{ordinal}"
        for statement in self._create_sql(table, stream_id):
            con.execute(statement)
        con.execute(
            "INSERT INTO streamprov_streams (stream_id, ordinal, created_ns) VALUES (?, ?, ?)",
            [stream_id, ordinal, time.time_ns()],
        )
        self._tables[stream_id] = table
        return table

    def _create_sql(self, table: str, stream_id: str) -> list[str]:
        raise NotImplementedError

    def _catalog_value(self, stream_id: str, column: str) -> int | None:
        """A retention column of the stream's catalog row (None before schema version 2)."""
        if self._con is None or self._version < 2:
            return None
        row = self._con.execute(
            f"SELECT {column} FROM streamprov_streams WHERE stream_id = ?", [stream_id]
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def stream_ids(self) -> list[str]:
        return sorted(self._tables)

    def has_stream(self, stream_id: str) -> bool:
        return stream_id in self._tables

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _write_tx(self, fn: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """Run ``fn(con)`` in one transaction; roll back on any error."""
        con = self._require()
        with self._lock:
            try:
                con.execute("BEGIN")
                result = fn(con)
                con.execute("COMMIT")
                return result
            except duckdb.Error as exc:
                self._undo(con)
                raise StoreError(_write_failure(self.path, exc)) from exc
            except BaseException:
                self._undo(con)
                raise

    def _stored_max(self, con: duckdb.DuckDBPyConnection, table: str) -> int:
        """The largest record id ``table`` holds (-1 when empty), read once and then kept up
        to date by this connection's writes (a DuckDB file has one writer process)."""
        known = self._max_ids.get(table)
        if known is None:
            rows = con.execute(f"SELECT coalesce(max(record_id), -1) FROM {table}").fetchall()
            known = self._max_ids[table] = int(rows[0][0]) if rows else -1
        return known

    def _undo(self, con: duckdb.DuckDBPyConnection) -> None:
        self._max_ids.clear()  # (what the rolled-back transaction added is not there)
        _rollback(con)
        with contextlib.suppress(duckdb.Error):
            self._load_catalog(con)

    def _insert_new(self, rows: pa.Table, key: str,
                    stored_form: Callable[[duckdb.DuckDBPyConnection, pa.Table], pa.Table]
                    | None = None) -> int:
        """Insert the rows whose ``key`` columns are not stored yet, stream by stream, in one
        transaction; returns how many were new. ``stored_form`` turns a stream's rows into
        the columns its stored table has (``key`` names those columns)."""
        streams = pc.unique(rows.column("stream_id")).cast(pa.string()).to_pylist()

        def insert(con: duckdb.DuckDBPyConnection) -> int:
            added = 0
            for sid in streams:
                part = rows if len(streams) == 1 else rows.filter(
                    pc.equal(rows["stream_id"].cast(pa.string()), sid)
                )
                table = self._physical(self._ensure_table(con, sid))
                lo, hi = (int(x.as_py()) for x in pc.min_max(part.column("record_id")).values())
                if stored_form is not None:
                    part = stored_form(con, part)
                # rows of record ids above every stored one cannot be there yet: no anti-join
                # (a fifth of a stream-log append's cost)
                fresh = lo > self._stored_max(con, table)
                con.register("_incoming", part)
                try:
                    res = con.execute(
                        f"INSERT INTO {table} SELECT * FROM _incoming" if fresh else
                        f"INSERT INTO {table} SELECT n.* FROM _incoming n ANTI JOIN "
                        f"(SELECT {key} FROM {table} WHERE record_id BETWEEN $lo AND $hi) e "
                        f"USING ({key})",
                        None if fresh else {"lo": lo, "hi": hi},
                    ).fetchone()
                finally:
                    con.unregister("_incoming")
                self._max_ids[table] = max(self._max_ids[table], hi)
                added += int(res[0]) if res else 0
            return added

        added = self._write_tx(insert)
        self._maybe_expire()
        return added

    # -- retention ------------------------------------------------------------------------
    def expire(self, older_than_ns: int) -> int:
        """Delete every whole ``partition_ns`` bucket before ``older_than_ns``, stream by
        stream; returns how many (stream, bucket) pairs held data and are gone."""
        if self.read_only:
            raise StoreError(f"{self.path} is open read-only; cannot expire data")
        cutoff = bucket_start(older_than_ns, self.partition_ns)
        ts = self._ts_column

        def delete(con: duckdb.DuckDBPyConnection) -> int:
            dropped = 0
            for sid, table in sorted(self._tables.items()):
                row = con.execute(
                    f"SELECT count(DISTINCT {ts} // $p), max(record_id) FROM {table} "
                    f"WHERE {ts} < $cut",
                    {"p": self.partition_ns, "cut": cutoff},
                ).fetchone()
                if not row or not row[0]:
                    continue
                dropped += int(row[0])
                con.execute(f"DELETE FROM {self._physical(table)} WHERE {ts} < ?", [cutoff])
                con.execute(
                    "UPDATE streamprov_streams SET "
                    "expired_before_ns = greatest(coalesce(expired_before_ns, 0), $cut), "
                    "record_floor = greatest(coalesce(record_floor, 0), $floor) "
                    "WHERE stream_id = $sid",
                    {"cut": cutoff, "floor": int(row[1]) + 1, "sid": sid},
                )
            return dropped

        return self._write_tx(delete)

    def _maybe_expire(self) -> None:
        """Apply the configured retention, at most once a minute (called after writes)."""
        if self.retention_ns is None:
            return
        now = time.monotonic()
        if self._last_retention is not None and now - self._last_retention < RETENTION_EVERY_S:
            return
        self._last_retention = now
        self.expire(time.time_ns() - self.retention_ns)


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    """Roll back what is open (a failed COMMIT has already ended the transaction: the error
    that matters is the one that made it fail, not the rollback's)."""
    with contextlib.suppress(duckdb.Error):
        con.execute("ROLLBACK")


def _write_failure(path: Path, exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "no space left" in text.lower() or "disk full" in text.lower():
        return (f"the disk holding {path} is full ({text}); nothing of this write was kept; "
                "free space or move the data dir, then run again")
    return f"writing {path}: {text}"


def _explain(path: Path, exc: Exception) -> str:
    text = str(exc)
    if "lock" in text.lower():
        return f"{path} is in use by another streamprov process; wait for it to finish"
    return f"cannot open {path}: {text.splitlines()[0]}"


def _arrow_type_sql(t: pa.DataType) -> str:
    if pa.types.is_int16(t):
        return "SMALLINT"
    if pa.types.is_int32(t):
        return "INTEGER"
    if pa.types.is_int64(t):
        return "BIGINT"
    return "VARCHAR"


def _columns_sql(schema: pa.Schema) -> str:
    return ", ".join(
        f"{f.name} {_arrow_type_sql(f.type)}{'' if f.nullable else ' NOT NULL'}" for f in schema
    )


_CODED = {"replay_code": "replay_id", "node_code": "node_id",
          "origin_node_code": "origin_node", "outcome_code": "outcome"}
"""Columns of the compact table that hold ``streamprov_names`` codes, and what they encode."""

_CODE_OF = {name: code for code, name in _CODED.items()}

_COMPACT_SCHEMA = pa.schema([
    pa.field(_CODE_OF[f.name], pa.int32(), nullable=False) if f.name in _CODE_OF else f
    for f in PROVENANCE_SCHEMA if f.name != "stream_id"
])
"""``PROVENANCE_SCHEMA`` as stored in the provenance file's compact tables."""


def _translating(schema: pa.Schema, lookup: dict[str, str], *, to_codes: bool
                 ) -> tuple[list[str], list[str]]:
    """Select-list items for ``schema``'s columns read from ``p``, and the joins on
    ``streamprov_names`` that turn each column ``lookup`` names into ``p``'s column it maps
    to: a name into its code (``to_codes``) or a code into its name."""
    want, have = ("code", "name") if to_codes else ("name", "code")
    items: list[str] = []
    joins: list[str] = []
    for i, field in enumerate(schema):
        source = lookup.get(field.name)
        if source is None:
            items.append(f"p.{field.name}")
        else:
            items.append(f"n{i}.{want} AS {field.name}")
            joins.append(f"JOIN streamprov_names n{i} ON n{i}.{have} = p.{source}")
    return items, joins


def _view_sql(view: str, physical: str, stream_id: str) -> str:
    """The view that reads a compact table with the canonical columns."""
    schema = PROVENANCE_SCHEMA.remove(PROVENANCE_SCHEMA.get_field_index("stream_id"))
    items, joins = _translating(schema, _CODE_OF, to_codes=False)
    literal = "'" + stream_id.replace("'", "''") + "' AS stream_id"  # (the first column)
    return (f"CREATE VIEW {view} AS SELECT {', '.join([literal, *items])} FROM {physical} p "
            + " ".join(joins))


def _compacting_sql(table: str, physical: str) -> str:
    """Copies a version 2 table's canonical rows into a compact table, names as codes (the
    inverse of ``_view_sql``), in hop-0 time order."""
    items, joins = _translating(_COMPACT_SCHEMA, _CODED, to_codes=True)
    return (f"INSERT INTO {physical} SELECT {', '.join(items)} FROM {table} p "
            f"{' '.join(joins)} ORDER BY p.origin_ts_ns, p.record_id, p.hop")


class DuckDBProvenanceStore(_DuckDBFile):
    """``ProvenanceStore`` in a DuckDB file."""

    _prefix = "prov_"
    _kind = "provenance"
    _ts_column = "origin_ts_ns"

    def __init__(self, url: str, **kwargs: Any) -> None:
        self._codes: dict[str, int] = {}
        super().__init__(url, **kwargs)

    def _load_catalog(self, con: duckdb.DuckDBPyConnection) -> None:
        super()._load_catalog(con)
        self._codes = dict(con.execute("SELECT name, code FROM streamprov_names").fetchall()
                           ) if self._version >= 3 else {}

    def _create_sql(self, table: str, stream_id: str) -> list[str]:
        return [f"CREATE TABLE {self._physical(table)} ({_columns_sql(_COMPACT_SCHEMA)})",
                _view_sql(table, self._physical(table), stream_id)]

    def _create_extra(self, con: duckdb.DuckDBPyConnection) -> None:
        con.execute("CREATE TABLE streamprov_names (code INTEGER PRIMARY KEY, "
                    "name VARCHAR NOT NULL UNIQUE)")

    def _upgrade_to_3(self, con: duckdb.DuckDBPyConnection) -> None:
        """Version 2 tables become compact tables behind views, rows in the same order."""
        self._create_extra(con)
        streams = con.execute("SELECT stream_id, ordinal FROM streamprov_streams").fetchall()
        for sid, ordinal in streams:
            table = f"{self._prefix}{ordinal}"
            con.execute(f"INSERT INTO streamprov_names SELECT (SELECT coalesce(max(code), -1) "
                        "FROM streamprov_names) + row_number() OVER (), name FROM ("
                        f"SELECT DISTINCT unnest([{', '.join(_CODED.values())}]) "
                        f"AS name FROM {table}) WHERE name NOT IN "
                        "(SELECT name FROM streamprov_names)")
            physical = self._compact_name(table)
            con.execute(f"CREATE TABLE {physical} ({_columns_sql(_COMPACT_SCHEMA)})")
            con.execute(_compacting_sql(table, physical))
            con.execute(f"DROP TABLE {table}")
            con.execute(_view_sql(table, physical, sid))

    def _physical(self, table: str) -> str:
        return self._compact_name(table) if self._version >= 3 else table

    def _compact_name(self, table: str) -> str:
        return table.replace(self._prefix, "provc_", 1)

    def write(self, rows: pa.Table) -> int:
        rows = conform(rows, PROVENANCE_SCHEMA, "provenance")
        if rows.num_rows == 0:
            return 0
        new: dict[str, int] = {}

        def compact(con: duckdb.DuckDBPyConnection, part: pa.Table) -> pa.Table:
            columns = []
            for field in _COMPACT_SCHEMA:
                source = _CODED.get(field.name)
                if source is None:
                    columns.append(part.column(field.name))
                else:
                    columns.append(self._encode(con, part.column(source), new))
            return pa.Table.from_arrays(columns, schema=_COMPACT_SCHEMA)

        added = self._insert_new(rows, "record_id, branch, hop, replay_code", compact)
        self._codes.update(new)  # (a failed write reloads the codes the file has instead)
        return added

    def _encode(self, con: duckdb.DuckDBPyConnection, column: pa.ChunkedArray,
                new: dict[str, int]) -> pa.ChunkedArray:
        """A string column as the ``streamprov_names`` codes of its values, chunk by chunk
        (the builder's chunks share one small dictionary: it is mapped once)."""
        out = []
        mapped: tuple[pa.Array, npt.NDArray[np.int32]] | None = None
        for chunk in column.chunks:
            if not pa.types.is_dictionary(chunk.type):
                chunk = pc.dictionary_encode(chunk)
            if mapped is None or not mapped[0].equals(chunk.dictionary):
                names = chunk.dictionary.cast(pa.string()).to_pylist()
                mapped = (chunk.dictionary, np.array(
                    [self._code(con, name, new) for name in names], dtype=np.int32))
            indices = chunk.indices.to_numpy(zero_copy_only=False)
            out.append(pa.array(mapped[1][indices], pa.int32()))
        return pa.chunked_array(out, pa.int32())

    def _code(self, con: duckdb.DuckDBPyConnection, name: str, new: dict[str, int]) -> int:
        code = self._codes.get(name, new.get(name))
        if code is None:
            found = con.execute("SELECT code FROM streamprov_names WHERE name = ?",
                                [name]).fetchall()
            if not found:
                found = con.execute("INSERT INTO streamprov_names SELECT coalesce(max(code), "
                                    "-1) + 1, ? FROM streamprov_names RETURNING code",
                                    [name]).fetchall()
            code = new[name] = int(found[0][0])
        return code

    def streams(self) -> list[StreamSummary]:
        out = []
        for sid in self.stream_ids():
            row = self._require().execute(
                f"SELECT count(*), min(origin_ts_ns), max(origin_ts_ns) FROM {self._tables[sid]} "
                "WHERE hop = 0 AND replay_id = ''"
            ).fetchone()
            assert row is not None
            out.append(StreamSummary(sid, 0, int(row[0]), row[1], row[2]))
        return out

    def chains_for_record(
        self, stream_id: str, record_id: int, replay_id: str = ""
    ) -> list[Chain]:
        table = self._table(stream_id)
        if table is None:
            return []
        con = self._require().cursor()
        try:
            res = con.sql(
                f"SELECT {SELECT_COLUMNS} FROM {table} WHERE record_id = ? AND replay_id = ? "
                "ORDER BY branch, hop",
                params=[record_id, replay_id],
            ).to_arrow_table()
        finally:
            con.close()
        return ChainAssembler().feed(res)

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
        table = self._window_table(stream_id, start_ns, end_ns)
        if limit <= 0:
            return []
        con = self._require().cursor()
        try:
            where = "replay_id = $replay AND origin_ts_ns >= $start AND origin_ts_ns < $end"
            params: dict[str, Any] = {"replay": replay_id, "start": start_ns, "end": end_ns}
            if after is not None:
                where += (
                    " AND origin_ts_ns >= $a_ts AND (origin_ts_ns, origin_logical, origin_node,"
                    " record_id, branch) > ($a_ts, $a_lg, $a_node, $a_rid, $a_br)"
                )
                params.update(
                    a_ts=after.origin_ts_ns, a_lg=after.origin_logical, a_node=after.origin_node,
                    a_rid=after.record_id, a_br=after.branch,
                )
            heads = con.execute(
                f"SELECT {_ORDER} FROM {table} WHERE {where} AND hop = 0 "
                f"ORDER BY {_ORDER} LIMIT {int(limit)}",
                params,
            ).fetchall()
            if not heads:
                return []
            first, last = heads[0], heads[-1]
            params.update(
                f_ts=first[0], f_lg=first[1], f_node=first[2], f_rid=first[3], f_br=first[4],
                l_ts=last[0], l_lg=last[1], l_node=last[2], l_rid=last[3], l_br=last[4],
            )
            res = con.sql(
                f"SELECT {SELECT_COLUMNS} FROM {table} WHERE {where} "
                "AND origin_ts_ns BETWEEN $f_ts AND $l_ts "
                f"AND ({_ORDER}) >= ($f_ts, $f_lg, $f_node, $f_rid, $f_br) "
                f"AND ({_ORDER}) <= ($l_ts, $l_lg, $l_node, $l_rid, $l_br) "
                f"ORDER BY {_ORDER}, hop",
                params=params,
            ).to_arrow_table()
            return ChainAssembler().feed(res)
        finally:
            con.close()

    def iter_window(
        self,
        stream_id: str,
        start_ns: int,
        end_ns: int,
        *,
        replay_id: str = "",
        chunk_rows: int = 65536,
    ) -> Iterator[list[Chain]]:
        rows = self.window_rows(
            stream_id, start_ns, end_ns, replay_id=replay_id, chunk_rows=chunk_rows
        )
        return assemble(rows)

    def window_rows(
        self,
        stream_id: str,
        start_ns: int,
        end_ns: int,
        *,
        replay_id: str = "",
        chunk_rows: int = 65536,
    ) -> Iterator[pa.RecordBatch]:
        """The window's raw rows in the original order, as Arrow batches."""
        table = self._window_table(stream_id, start_ns, end_ns)  # raise now, not when iterated
        return self._window_rows(table, start_ns, end_ns, replay_id, max(1, chunk_rows))

    def _window_rows(
        self, table: str, start_ns: int, end_ns: int, replay_id: str, chunk_rows: int
    ) -> Iterator[pa.RecordBatch]:
        return self._ordered(table, SELECT_COLUMNS, "replay_id = ?", [replay_id],
                             f"{_ORDER}, hop", start_ns, end_ns, chunk_rows)

    def _ordered(self, table: str, columns: str, where: str, params: list[Any], order: str,
                 start_ns: int, end_ns: int, chunk_rows: int) -> Iterator[pa.RecordBatch]:
        """The rows of ``table`` matching ``where`` with hop-0 time in [start, end), ordered
        by ``order`` (which begins with ``origin_ts_ns``), in batches of ``chunk_rows``.

        A window is sorted one time slice at a time, not as a whole: DuckDB holds the rows of
        a sort in memory (about 100 bytes per row, up to its memory limit), so one sort of a
        10M-record window would take a gigabyte. Slices of about ``SLICE_ROWS`` rows come
        from one pass of approximate quantiles over the window's hop-0 times; as every order
        begins with that time, slice after slice is the window's order exactly."""
        for lo, hi in self._slices(table, where, params, start_ns, end_ns):
            yield from self._batches(
                f"SELECT {columns} FROM {table} WHERE {where} "
                f"AND origin_ts_ns >= ? AND origin_ts_ns < ? ORDER BY {order}",
                [*params, lo, hi], chunk_rows)

    def _slices(self, table: str, where: str, params: list[Any], start_ns: int,
                end_ns: int) -> list[tuple[int, int]]:
        """[lo, hi) ranges of hop-0 time covering [start, end), about ``SLICE_ROWS`` rows
        matching ``where`` each."""
        con = self._require().cursor()
        try:
            bounds = f"{where} AND origin_ts_ns >= ? AND origin_ts_ns < ?"
            got = con.execute(f"SELECT count(*) FROM {table} WHERE {bounds}",
                              [*params, start_ns, end_ns]).fetchone()
            rows = int(got[0]) if got else 0
            if rows <= SLICE_ROWS:
                return [(start_ns, end_ns)]
            parts = -(-rows // SLICE_ROWS)
            qs = ", ".join(f"{i / parts:.6f}" for i in range(1, parts))
            got = con.execute(
                f"SELECT approx_quantile(origin_ts_ns, [{qs}]) FROM {table} WHERE {bounds}",
                [*params, start_ns, end_ns]).fetchone()
        finally:
            con.close()
        cuts = sorted({int(x) for x in (got[0] if got and got[0] else [])
                       if start_ns < int(x) < end_ns})
        edges = [start_ns, *cuts, end_ns]
        return list(itertools.pairwise(edges))

    def _batches(self, query: str, params: list[Any],
                 chunk_rows: int) -> Iterator[pa.RecordBatch]:
        """A query's non-empty result batches of at most ``chunk_rows`` rows, on a cursor of
        its own (closed when the iteration ends)."""
        con = self._require().cursor()
        try:
            for batch in con.sql(query, params=params).to_arrow_reader(chunk_rows):
                if batch.num_rows:
                    yield batch
        finally:
            con.close()

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
        """Hop-0 rows with payloads. A ``DuckDBStreamLog`` opened read-only (so no process can
        be writing it) is attached to this connection read-only for the query, and each chunk
        of ordered hop-0 rows is joined with the log inside DuckDB; any other log is joined
        chunk by chunk through its ``entries_table`` (``join_payloads``)."""
        table = self._window_table(stream_id, start_ns, end_ns)  # raise now, not when iterated
        chunk_rows = max(1, chunk_rows)
        if (isinstance(log, DuckDBStreamLog) and log.read_only and log._con is not None
                and log.path.resolve() != self.path.resolve()):
            return self._joined_heads(table, log, stream_id, start_ns, end_ns, replay_id,
                                      chunk_rows)
        return join_payloads(
            self._heads(table, start_ns, end_ns, replay_id, chunk_rows), log, stream_id)

    def _heads(
        self, table: str, start_ns: int, end_ns: int, replay_id: str, chunk_rows: int
    ) -> Iterator[pa.RecordBatch]:
        return self._ordered(table, HEAD_COLUMNS, "replay_id = ? AND hop = 0", [replay_id],
                             _ORDER, start_ns, end_ns, chunk_rows)

    def _joined_heads(
        self, table: str, log: DuckDBStreamLog, stream_id: str, start_ns: int, end_ns: int,
        replay_id: str, chunk_rows: int,
    ) -> Iterator[pa.RecordBatch]:
        log_table = log._table(stream_id)
        if log_table is None:  # nothing logged for the stream: every payload is missing
            yield from join_payloads(
                self._heads(table, start_ns, end_ns, replay_id, chunk_rows), None, stream_id)
            return
        con = self._require().cursor()
        alias = f"streamprov_log_{secrets.token_hex(4)}"
        try:
            try:
                path = str(log.path.resolve()).replace("'", "''")
                con.execute(f"ATTACH '{path}' AS {alias} (READ_ONLY)").fetchall()
            except duckdb.Error:  # (another database of that name, a lock): join outside
                yield from join_payloads(
                    self._heads(table, start_ns, end_ns, replay_id, chunk_rows), log, stream_id)
                return
            # One join per chunk of ordered hop-0 rows, not one join of the whole window: the
            # sort then carries no payloads and each join is bounded by the chunk, so memory
            # stays within DuckDB's limit whatever the window's size. The chunk's record-id
            # range lets the log's zone maps skip the rest of the stream.
            for heads in self._heads(table, start_ns, end_ns, replay_id, chunk_rows):
                n = heads.num_rows
                lo, hi = pc.min_max(heads.column("record_id")).values()
                wanted = pa.table({"record_id": heads.column("record_id"),
                                   "branch": heads.column("branch"),
                                   "pos": pa.array(np.arange(n, dtype=np.int64))})
                con.register("_heads", wanted)
                try:
                    found = con.sql(
                        f"SELECT h.pos, l.key, l.payload FROM _heads h JOIN "
                        f"(SELECT record_id, key, payload FROM {alias}.{log_table} "
                        " WHERE record_id BETWEEN $lo AND $hi) l "
                        "ON l.record_id = h.record_id WHERE h.branch = 0",
                        params={"lo": lo.as_py(), "hi": hi.as_py()},
                    ).to_arrow_table()
                finally:
                    con.unregister("_heads")
                # the join's rows come in no particular order: put each at its head's place
                at = np.full(n, -1, dtype=np.int64)
                at[found.column("pos").to_numpy()] = np.arange(found.num_rows, dtype=np.int64)
                take = pa.array(at, mask=at < 0)
                yield pa.RecordBatch.from_arrays(
                    [heads.column(f.name).cast(f.type) for f in list(WINDOW_HEAD_SCHEMA)[:5]]
                    + [found.column("key").take(take).combine_chunks().cast(pa.string()),
                       found.column("payload").take(take).combine_chunks().cast(pa.string())],
                    schema=WINDOW_HEAD_SCHEMA)
        finally:
            with contextlib.suppress(duckdb.Error):
                con.execute(f"DETACH DATABASE IF EXISTS {alias}").fetchall()
            con.close()

    def _window_table(self, stream_id: str, start_ns: int, end_ns: int) -> str:
        """The stream's table, after the checks every backend makes for a window."""
        check_window(start_ns, end_ns)
        table = self._table(stream_id)
        if table is None:
            raise unknown_stream(stream_id)
        kept_from = self._catalog_value(stream_id, "expired_before_ns")
        if kept_from is not None and start_ns < kept_from:
            raise expired_window(stream_id, start_ns, kept_from)
        return table

    def outcome_counts(self, stream_id: str, replay_id: str = "", *,
                       from_record: int = 0) -> dict[Outcome, int]:
        counts = dict.fromkeys(Outcome, 0)
        table = self._table(stream_id)
        if table is None:
            return counts
        for outcome, n in self._require().execute(
            f"SELECT outcome, count(*) FROM {table} WHERE hop = 0 AND replay_id = ? "
            "AND record_id >= ? GROUP BY outcome",
            [replay_id, from_record],
        ).fetchall():
            counts[Outcome(outcome)] = int(n)
        return counts

    def record_ids(self, stream_id: str, *, replay_id: str = "",
                   from_record: int = 0) -> npt.NDArray[np.int64]:
        table = self._table(stream_id)
        if table is None:
            return np.empty(0, np.int64)
        got = self._require().execute(
            f"SELECT DISTINCT record_id FROM {table} WHERE hop = 0 AND replay_id = ? "
            "AND record_id >= ? ORDER BY record_id",
            [replay_id, from_record],
        ).fetchnumpy()["record_id"]
        return np.asarray(got, dtype=np.int64)

    def latencies_ns(self, stream_id: str, replay_id: str = "") -> pa.Array:
        table = self._table(stream_id)
        if table is None:
            return pa.array([], pa.int64())
        con = self._require().cursor()
        try:
            res = con.sql(
                f"SELECT ts_ns - origin_ts_ns AS latency_ns FROM {table} "
                "WHERE hop = hops - 1 AND replay_id = ?",
                params=[replay_id],
            ).to_arrow_table()
        finally:
            con.close()
        return res.column(0).combine_chunks()

    def row_count(self, stream_id: str) -> int:
        table = self._table(stream_id)
        if table is None:
            return 0
        row = self._require().execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0


class DuckDBStreamLog(_DuckDBFile):
    """``StreamLog`` in a DuckDB file (a different file from the provenance store)."""

    _prefix = "log_"
    _kind = "stream-log"
    _ts_column = "ingest_ts_ns"

    def _create_sql(self, table: str, stream_id: str) -> list[str]:
        return [f"CREATE TABLE {table} ({_columns_sql(STREAM_LOG_SCHEMA)})"]

    def append(self, rows: pa.Table) -> None:
        rows = conform(rows, STREAM_LOG_SCHEMA, "stream log")
        if rows.num_rows == 0:
            return
        self._insert_new(rows, "record_id")

    def next_record_id(self, stream_id: str) -> int:
        table = self._table(stream_id)
        if table is None:
            return 0
        row = self._require().execute(f"SELECT coalesce(max(record_id) + 1, 0) FROM {table}")
        got = row.fetchone()
        stored = int(got[0]) if got else 0
        return max(stored, self._catalog_value(stream_id, "record_floor") or 0)

    def count(self, stream_id: str) -> int:
        table = self._table(stream_id)
        if table is None:
            return 0
        row = self._require().execute(f"SELECT count(*) FROM {table}").fetchone()
        return int(row[0]) if row else 0

    def record_ids(self, stream_id: str, *, from_record: int = 0) -> npt.NDArray[np.int64]:
        table = self._table(stream_id)
        if table is None:
            return np.empty(0, np.int64)
        got = self._require().execute(
            f"SELECT record_id FROM {table} WHERE record_id >= ? ORDER BY record_id",
            [from_record],
        ).fetchnumpy()["record_id"]
        return np.asarray(got, dtype=np.int64)

    def entries_table(self, stream_id: str, record_ids: Sequence[int]) -> pa.Table:
        table = self._table(stream_id)
        if table is None or not len(record_ids):
            return LOG_ENTRY_SCHEMA.empty_table()
        con = self._require().cursor()
        try:
            ids = pa.table({"record_id": pa.array(record_ids, pa.int64())})
            con.register("_wanted", ids)
            return con.sql(
                f"SELECT l.record_id, l.ingest_ts_ns, l.key, l.payload FROM {table} l "
                "SEMI JOIN _wanted w USING (record_id)"
            ).to_arrow_table().cast(LOG_ENTRY_SCHEMA)
        finally:
            con.close()

    def entries(self, stream_id: str, record_ids: Sequence[int]) -> dict[int, LogEntry]:
        table = self._table(stream_id)
        if table is None or not len(record_ids):
            return {}
        con = self._require().cursor()
        try:
            ids = pa.table({"record_id": pa.array(list(record_ids), pa.int64())})
            con.register("_wanted", ids)
            res = con.execute(
                f"SELECT l.record_id, l.ingest_ts_ns, l.key, l.payload FROM {table} l "
                "SEMI JOIN _wanted w USING (record_id)"
            ).fetchall()
        finally:
            con.close()
        return {
            rid: LogEntry(rid, ts, None if key is None else orjson.loads(key), orjson.loads(p))
            for rid, ts, key, p in res
        }


def ensure_writable_dir(path: Path) -> None:
    """Create ``path`` as a directory or explain in one line why it cannot be used."""
    if path.exists() and not path.is_dir():
        raise StoreError(f"data dir {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create data dir {path}: {exc.strerror}") from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise StoreError(f"data dir {path} is not writable")
