"""Finding what a crash left unfinished, from the stores alone.

The stream log is written ahead: a record in it was accepted. A record is finished once a
chain of it is in the provenance store (chains are written whole, in one transaction). So after
any crash, the records to send through again are the logged ones without a chain ("orphans"),
and a resumable source goes on after the records it already had logged.

Both stores are opened here, by the process that restarts the pipeline, only while no node
process holds them (an embedded DuckDB file admits one process at a time).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.ipc as ipc

from streamprov.errors import StoreError
from streamprov.model import Outcome

if TYPE_CHECKING:
    from streamprov.runtime.local import RunResult

REDRIVE_SCHEMA = pa.schema([
    pa.field("record_id", pa.int64(), nullable=False),
    pa.field("ingest_ts_ns", pa.int64(), nullable=False),
    pa.field("key", pa.string()),
    pa.field("payload", pa.string(), nullable=False),
    pa.field("origin_node", pa.string(), nullable=False),
])
"""What the ingest node reads to re-drive records: the stream-log entry and hop 0's node."""

_READ_IDS = 65_536


@dataclass(frozen=True, slots=True)
class Unfinished:
    """A stream's state after a crash, for records with id >= ``from_record``."""

    logged: npt.NDArray[np.int64]
    """Sorted ids of the records in the stream log."""
    orphans: npt.NDArray[np.int64]
    """Sorted ids of logged records without a chain."""


def find_unfinished(stream_log_url: str, provenance_url: str, stream_id: str, *,
                    from_record: int = 0, replay_id: str = "",
                    wait_s: float = 0.0) -> Unfinished:
    """Logged records and those of them that have no chain yet. ``wait_s``: how long to
    keep trying while a store cannot be opened yet (a killed process that held an embedded
    store's file may take a moment to be gone)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return _find_unfinished(stream_log_url, provenance_url, stream_id,
                                    from_record=from_record, replay_id=replay_id)
        except StoreError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.1)


def _find_unfinished(stream_log_url: str, provenance_url: str, stream_id: str, *,
                     from_record: int, replay_id: str) -> Unfinished:
    from streamprov.store import open_provenance_store, open_stream_log

    log = open_stream_log(stream_log_url)
    try:
        logged = log.record_ids(stream_id, from_record=from_record)
    finally:
        log.close()
    store = open_provenance_store(provenance_url)
    try:
        done = store.record_ids(stream_id, replay_id=replay_id, from_record=from_record)
    finally:
        store.close()
    orphans = np.setdiff1d(logged, done, assume_unique=True)
    return Unfinished(logged, orphans)


def logged_per_source(logged: npt.NDArray[np.int64], record_base: int,
                      sources: int) -> tuple[int, ...]:
    """How many records each source instance had in the log: instance ``k`` numbers its
    records ``record_base + seq * sources + k``, and the log holds a prefix of each one's."""
    rel = logged[logged >= record_base] - record_base
    counts = np.bincount(rel % sources, minlength=sources) if len(rel) else np.zeros(
        sources, np.int64)
    return tuple(int(c) for c in counts)


def write_redrive_file(path: Path, stream_log_url: str, stream_id: str,
                       orphans: npt.NDArray[np.int64],
                       origin_node: Callable[[npt.NDArray[np.int64]], list[str]]) -> int:
    """Write the orphans' log entries to ``path`` in the original order (ingest time, then
    id), with hop 0's node from ``origin_node``; returns how many were written."""
    from streamprov.store import open_stream_log

    log = open_stream_log(stream_log_url)
    parts: list[pa.Table] = []
    try:
        for start in range(0, len(orphans), _READ_IDS):
            ids = orphans[start:start + _READ_IDS]
            parts.append(log.entries_table(stream_id, ids.tolist()))
    finally:
        log.close()
    table = (pa.concat_tables(parts) if parts
             else REDRIVE_SCHEMA.remove(4).empty_table())
    table = table.sort_by([("ingest_ts_ns", "ascending"), ("record_id", "ascending")])
    ids = table.column("record_id").to_numpy().astype(np.int64)
    table = table.append_column("origin_node", pa.array(origin_node(ids), pa.string()))
    table = table.cast(REDRIVE_SCHEMA)
    with ipc.new_file(path, REDRIVE_SCHEMA) as writer:
        writer.write_table(table, max_chunksize=4096)
    return int(table.num_rows)


def why_not_restart(*, replay_id: str, log_ingest: bool, source: Any, attempts: int,
                     max_restarts: int) -> str | None:
    """Why a deployment cannot restart after a node died (None: it can). Both runners ask."""
    from streamprov.runtime.sources import resume_reader

    if replay_id or not log_ingest:
        return "a replay is not restarted (run it again)"
    if resume_reader(source) is None:
        return "its source cannot be read again from a position (stdin, say)"
    if attempts >= max_restarts:
        return f"it already restarted {max_restarts} times"
    return None


@dataclass(frozen=True, slots=True)
class NextEpoch:
    """What a restarted deployment starts from."""

    skip: tuple[int, ...]
    """Per source instance: records it already had in the log."""
    redrive: Path | None
    """The re-drive file (None: nothing to re-drive)."""
    orphans: int
    logged_since_base: int
    """Records of this run in the log (what ``ingested()`` counts from)."""


def plan_restart(stream_log_url: str, provenance_url: str, stream_id: str, *,
                 from_record: int, record_base: int, sources: int, redrive_path: Path,
                 origin_node: Callable[[npt.NDArray[np.int64]], list[str]],
                 wait_s: float) -> NextEpoch:
    """After every node of a deployment is gone: where each source resumes, and the records
    to re-drive, written to ``redrive_path`` when there are any."""
    unfinished = find_unfinished(stream_log_url, provenance_url, stream_id,
                                 from_record=from_record, wait_s=wait_s)
    redrive: Path | None = None
    if len(unfinished.orphans):
        write_redrive_file(redrive_path, stream_log_url, stream_id, unfinished.orphans,
                           origin_node)
        redrive = redrive_path
    return NextEpoch(logged_per_source(unfinished.logged, record_base, sources), redrive,
                     len(unfinished.orphans),
                     int(np.count_nonzero(unfinished.logged >= record_base)))


def count_from_stores(result: RunResult, stream_log_url: str, provenance_url: str, *,
                      record_base: int, captured: list[dict[str, Any]] | None) -> None:
    """Fill ``result``'s counts from the stores: after a restart the killed nodes' own
    counts are gone. ``captured``: the outputs a capture sink collected (to count those
    delivered twice), None when the sink cannot tell."""
    from streamprov.store import open_provenance_store, open_stream_log

    log = open_stream_log(stream_log_url)
    try:
        result.ingested = result.recovered + len(
            log.record_ids(result.stream_id, from_record=record_base))
    finally:
        log.close()
    store = open_provenance_store(provenance_url)
    try:
        counts = result.own_outcomes(
            store.outcome_counts(result.stream_id, from_record=result.from_record))
    finally:
        store.close()
    result.delivered = counts[Outcome.DELIVERED]
    result.dropped = counts[Outcome.DROPPED]
    result.failed = counts[Outcome.FAILED]
    result.chains_written = sum(counts.values())
    if captured is not None:
        outputs = {(r["recordId"], r.get("branch", 0)) for r in captured}
        result.duplicated_outputs = len(captured) - len(outputs)
    else:
        result.duplicated_outputs = None


__all__ = [
    "REDRIVE_SCHEMA",
    "NextEpoch",
    "Unfinished",
    "count_from_stores",
    "find_unfinished",
    "logged_per_source",
    "plan_restart",
    "why_not_restart",
    "write_redrive_file",
]
