"""Store interfaces: the provenance store (chains) and the stream log (payloads).

Both are chosen by URL (see ``streamprov.store.open_provenance_store``). They cut along plain
values: Arrow tables in the canonical schemas below going in, ``Chain`` values and Arrow tables
coming out, never backend rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from streamprov.errors import InvalidInput, NotFound
from streamprov.model import Chain, Outcome, format_time_ns

PROVENANCE_SCHEMA = pa.schema(
    [
        pa.field("stream_id", pa.string(), nullable=False),
        pa.field("record_id", pa.int64(), nullable=False),
        pa.field("branch", pa.int64(), nullable=False),
        pa.field("replay_id", pa.string(), nullable=False),
        pa.field("hop", pa.int16(), nullable=False),
        pa.field("hops", pa.int16(), nullable=False),
        pa.field("node_id", pa.string(), nullable=False),
        pa.field("ts_ns", pa.int64(), nullable=False),
        pa.field("logical", pa.int64(), nullable=False),
        pa.field("error_ns", pa.int64(), nullable=False),
        pa.field("origin_ts_ns", pa.int64(), nullable=False),
        pa.field("origin_logical", pa.int64(), nullable=False),
        pa.field("origin_node", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("error", pa.string(), nullable=True),
    ]
)
"""One row per hop. ``origin_*`` repeat hop 0 on every row so that a window query by hop-0 time
and the replay order (origin ts, logical, node, record id, branch) need no join. ``hops`` is the
chain's length, so a reader can tell a complete chain from a cut one. ``error`` is set on the
last hop of a failed chain only."""

STREAM_LOG_SCHEMA = pa.schema(
    [
        pa.field("stream_id", pa.string(), nullable=False),
        pa.field("record_id", pa.int64(), nullable=False),
        pa.field("ingest_ts_ns", pa.int64(), nullable=False),
        pa.field("key", pa.string(), nullable=True),
        pa.field("payload", pa.string(), nullable=False),
    ]
)
"""One row per accepted record. ``key`` and ``payload`` are JSON text."""

LOG_ENTRY_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.int64(), nullable=False),
        pa.field("ingest_ts_ns", pa.int64(), nullable=False),
        pa.field("key", pa.string(), nullable=True),
        pa.field("payload", pa.string(), nullable=False),
    ]
)
"""Stream-log entries as read back in bulk: key and payload as the JSON text stored."""

WINDOW_HEAD_SCHEMA = pa.schema(
    [
        pa.field("record_id", pa.int64(), nullable=False),
        pa.field("branch", pa.int64(), nullable=False),
        pa.field("hops", pa.int16(), nullable=False),
        pa.field("origin_ts_ns", pa.int64(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("key", pa.string(), nullable=True),
        pa.field("payload", pa.string(), nullable=True),
    ]
)
"""The hop-0 row of each chain of a window, with its record's key and payload JSON text from
the stream log (null on other branches than 0 and when the log no longer has the record)."""

HEAD_COLUMNS = "record_id, branch, hops, origin_ts_ns, outcome"
"""The columns of ``WINDOW_HEAD_SCHEMA`` a provenance store holds (key and payload are the
stream log's)."""

CHAIN_ORDER = ("origin_ts_ns", "origin_logical", "origin_node", "record_id", "branch")
"""The original order of a stream: hop-0 HLC stamp, then node id, then record id and branch."""

DEFAULT_PARTITION_NS = 3_600_000_000_000
"""Width of a time partition (one hour): the unit in which retention drops data."""


def check_window(start_ns: int, end_ns: int) -> None:
    """``InvalidInput`` unless ``start_ns < end_ns`` (the same error as the CLI and API)."""
    if start_ns >= end_ns:
        raise InvalidInput("start must be before end", field="start")


def unknown_stream(stream_id: str) -> NotFound:
    return NotFound(f"unknown stream {stream_id!r}", field="stream")


def expired_window(stream_id: str, start_ns: int, kept_from_ns: int) -> NotFound:
    """The error for a window that begins before the oldest data retention kept."""
    return NotFound(
        f"stream {stream_id!r}: the window starts at {format_time_ns(start_ns)}, but data "
        f"before {format_time_ns(kept_from_ns)} has expired (dropped by retention); "
        "choose a later start",
        field="start",
    )


def bucket_start(ts_ns: int, partition_ns: int) -> int:
    """Start of the time partition holding ``ts_ns``."""
    return ts_ns - ts_ns % partition_ns


@dataclass(frozen=True, slots=True)
class StreamSummary:
    stream_id: str
    records: int
    chains: int
    first_ns: int | None
    last_ns: int | None


@dataclass(frozen=True, slots=True)
class LogEntry:
    record_id: int
    ingest_ts_ns: int
    key: Any
    payload: Any


@dataclass(frozen=True, slots=True)
class ChainCursor:
    """Position after a chain in the original order; opaque to users (see ``encode``)."""

    origin_ts_ns: int
    origin_logical: int
    origin_node: str
    record_id: int
    branch: int

    def as_tuple(self) -> tuple[int, int, str, int, int]:
        return (
            self.origin_ts_ns, self.origin_logical, self.origin_node, self.record_id, self.branch
        )

    @classmethod
    def after(cls, chain: Chain) -> ChainCursor:
        h0 = chain.hops[0]
        return cls(h0.timestamp_ns, h0.logical, h0.node_id, chain.record_id, chain.branch)


class ProvenanceStore(Protocol):
    """Where complete chains live, partitioned by stream and hop-0 time.

    Writes are idempotent on ``(stream_id, record_id, branch, hop, replay_id)``: writing the
    same rows again adds nothing. A write is atomic: after a crash either all its rows are
    there or none. Readers see only committed writes.

    Window queries (``window``, ``iter_window``, ``window_rows``) raise ``InvalidInput``
    (field ``start``) when ``start_ns >= end_ns``, ``NotFound`` (field ``stream``) for a stream
    the store has never seen, and ``NotFound`` (field ``start``) when the window begins before
    the oldest data that retention kept (see ``expire``). Errors of the backend (connection,
    disk) surface as ``StoreError``.
    """

    url: str

    def write(self, rows: pa.Table) -> int:
        """Append rows in ``PROVENANCE_SCHEMA`` (any mix of streams); returns rows new to the
        store."""
        ...

    def streams(self) -> list[StreamSummary]:
        """Every stream with its count of original chains and first/last hop-0 time."""
        ...

    def has_stream(self, stream_id: str) -> bool: ...

    def chains_for_record(
        self, stream_id: str, record_id: int, replay_id: str = ""
    ) -> list[Chain]:
        """Every chain (one per branch) of one record; empty when unknown."""
        ...

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
        """One page of complete chains whose hop 0 lies in ``[start_ns, end_ns)``, in the
        original order, starting after ``after``."""
        ...

    def iter_window(
        self,
        stream_id: str,
        start_ns: int,
        end_ns: int,
        *,
        replay_id: str = "",
        chunk_rows: int = 65536,
    ) -> Iterator[list[Chain]]:
        """All chains of the window in the original order, in chunks, in bounded memory."""
        ...

    def outcome_counts(self, stream_id: str, replay_id: str = "", *,
                       from_record: int = 0) -> dict[Outcome, int]:
        """Chains by outcome (of records with id >= ``from_record``)."""
        ...

    def record_ids(self, stream_id: str, *, replay_id: str = "",
                   from_record: int = 0) -> npt.NDArray[np.int64]:
        """Sorted distinct ids (>= ``from_record``) of the records that have a stored chain:
        what recovery compares with the stream log to find records to re-drive."""
        ...

    def window_rows(
        self,
        stream_id: str,
        start_ns: int,
        end_ns: int,
        *,
        replay_id: str = "",
        chunk_rows: int = 65536,
    ) -> Iterator[pa.RecordBatch]:
        """The window's raw rows (``SELECT_COLUMNS`` of ``streamprov.store.rows``) in the
        original order, chain by chain and hop by hop, as Arrow batches of at most
        ``chunk_rows`` rows."""
        ...

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
        """The hop-0 row of every chain of the window, in the original order, in
        ``WINDOW_HEAD_SCHEMA``, as Arrow batches of at most ``chunk_rows`` rows: what a replay
        injects. With ``log``, each branch-0 row carries its record's key and payload as the
        JSON text stored in ``log`` (null when the log no longer has it); without, both are
        null.

        Where the backend can reach the log's tables (a DuckDB log file attached read-only, a
        PostgreSQL log in the same database) the join runs inside the database; otherwise it
        runs chunk by chunk through ``log.entries_table``. Memory stays bounded by the chunk
        size either way. Raises as ``window_rows``, before the first batch is asked for.
        """
        ...

    def latencies_ns(self, stream_id: str, replay_id: str = "") -> pa.Array:
        """End-to-end latency (last hop minus hop 0) of every chain, int64 ns."""
        ...

    def row_count(self, stream_id: str) -> int:
        """Stored hop rows of the stream (original and replays); 0 when unknown."""
        ...

    def expire(self, older_than_ns: int) -> int:
        """Retention: drop, for every stream, each whole time partition whose hop-0 times all
        lie before ``older_than_ns``; returns how many were dropped.

        Afterwards a window starting before the first kept partition raises ``NotFound``.
        Never drops a partition that holds data at or after ``older_than_ns``.
        """
        ...

    def close(self) -> None: ...


class StreamLog(Protocol):
    """Where accepted records' payloads live, written ahead of processing.

    ``append`` is atomic and idempotent on ``(stream_id, record_id)`` (a retried append of the
    same rows adds nothing).
    """

    url: str

    def append(self, rows: pa.Table) -> None:
        """Append rows in ``STREAM_LOG_SCHEMA``."""
        ...

    def next_record_id(self, stream_id: str) -> int:
        """One past the largest record id of the stream (0 for a new stream)."""
        ...

    def count(self, stream_id: str) -> int: ...

    def record_ids(self, stream_id: str, *, from_record: int = 0) -> npt.NDArray[np.int64]:
        """Sorted ids (>= ``from_record``) of the stream's records in the log."""
        ...

    def entries_table(self, stream_id: str, record_ids: Sequence[int]) -> pa.Table:
        """Entries of the given records that are in the log, in ``LOG_ENTRY_SCHEMA``, in no
        particular order; the JSON text as stored, not parsed (for bulk copies)."""
        ...

    def entries(self, stream_id: str, record_ids: Sequence[int]) -> dict[int, LogEntry]:
        """Payloads of the given records that are in the log (expired ones are absent)."""
        ...

    def expire(self, older_than_ns: int) -> int:
        """Retention by ingest time, as ``ProvenanceStore.expire``; ``next_record_id`` still
        never returns an id that was used before."""
        ...

    def close(self) -> None: ...


def without_payloads(heads: pa.RecordBatch) -> pa.RecordBatch:
    """Hop-0 rows (``HEAD_COLUMNS``) in ``WINDOW_HEAD_SCHEMA``, key and payload null."""
    n = heads.num_rows
    cols = [heads.column(f.name).cast(f.type) for f in WINDOW_HEAD_SCHEMA
            if f.name not in ("key", "payload")]
    return pa.RecordBatch.from_arrays(
        [*cols, pa.nulls(n, pa.string()), pa.nulls(n, pa.string())], schema=WINDOW_HEAD_SCHEMA)


def join_payloads(heads: Iterable[pa.RecordBatch], log: StreamLog | None,
                  stream_id: str) -> Iterator[pa.RecordBatch]:
    """The generic ``window_heads`` join, one chunk at a time (one ``entries_table`` call per
    chunk): for a store that cannot reach the log's tables from inside its database."""
    for batch in heads:
        out = without_payloads(batch)
        first = pc.equal(out.column("branch"), 0)
        if log is None or not pc.any(first).as_py():
            yield out
            continue
        ids = out.column("record_id").filter(first)
        found = log.entries_table(stream_id, ids.to_numpy(zero_copy_only=False))
        pos = pc.index_in(out.column("record_id"), found.column("record_id"))
        pos = pc.if_else(first, pos, pa.scalar(None, pos.type))
        key = found.column("key").take(pos).combine_chunks()
        payload = found.column("payload").take(pos).combine_chunks()
        yield pa.RecordBatch.from_arrays([*out.columns[:5], key, payload],
                                         schema=WINDOW_HEAD_SCHEMA)
