"""Reconstruction: a window of a stream rebuilt in its original order into an Arrow IPC file.

The hop-0 rows of the window's chains are read from the provenance store in the original
order (hop-0 HLC timestamp, logical counter, node id, record id; ``CHAIN_ORDER``), chunk by
chunk, joined with their payloads from the stream log (``ProvenanceStore.window_heads``:
inside the database where the store can reach the log's tables, else chunk by chunk). Each
chunk is appended to the file and dropped, so memory stays bounded whatever the window's
size. The file, not the stores, is what the replay's source reads: a DuckDB file admits one
process at a time, and the deployment's writer process needs the provenance store while the
replay runs.

Which records are replayed: one per original record (branch 0 of its chains; the branches a
``flat_map`` made are re-made by the replay). Records that failed at the source (unreadable
input, never processed) and records whose payload retention has already dropped are not
replayed; both are counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from streamprov.replay.fidelity import Digest
from streamprov.store import ProvenanceStore, StreamLog

WINDOW_FILE_SCHEMA = pa.schema([
    pa.field("record_id", pa.int64(), nullable=False),
    pa.field("origin_ts_ns", pa.int64(), nullable=False),
    pa.field("key", pa.string()),
    pa.field("payload", pa.string(), nullable=False),
])
"""One row per record to inject, in the original order. ``key``/``payload`` are JSON text."""

FILE_BATCH_ROWS = 4096
"""Rows per IPC record batch: the unit the replay source decodes ahead of its due time."""


@dataclass(slots=True)
class WindowFile:
    """What reconstruction produced: the file and what it holds."""

    path: Path
    records: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    chains: int = 0
    skipped_failed_at_source: int = 0
    missing_payloads: int = 0
    digest: Digest = field(default_factory=Digest)
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def span_ns(self) -> int:
        if self.first_ns is None or self.last_ns is None:
            return 0
        return self.last_ns - self.first_ns


def reconstruct(store: ProvenanceStore, log: StreamLog, stream_id: str, start_ns: int,
                end_ns: int, path: Path, *, chunk_rows: int = 131_072,
                on_progress: Callable[[int], None] | None = None,
                cancelled: Callable[[], bool] | None = None) -> WindowFile:
    """Write the window ``[start_ns, end_ns)`` of ``stream_id`` to ``path`` (Arrow IPC file).

    Raises what the store's window query raises (bad window, unknown stream, expired start).
    The file is complete when this returns; on an exception it may be partial (the caller
    deletes it).
    """
    out = WindowFile(path)
    heads_iter = store.window_heads(stream_id, start_ns, end_ns, log=log, chunk_rows=chunk_rows)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, WINDOW_FILE_SCHEMA) as w:
        for heads in heads_iter:
            if cancelled is not None and cancelled():
                break
            branch = heads.column("branch").to_numpy(zero_copy_only=False)
            hops = heads.column("hops").to_numpy(zero_copy_only=False)
            outcome = heads.column("outcome")
            is_failed = pc.equal(outcome, "failed").to_numpy(zero_copy_only=False)
            source_failed = (hops == 1) & is_failed
            keep = ~source_failed
            kept_outcomes = outcome.filter(pa.array(keep))
            for item in pc.value_counts(kept_outcomes).to_pylist():
                name = str(item["values"])
                out.outcomes[name] = out.outcomes.get(name, 0) + int(item["counts"])
            rid = heads.column("record_id").to_numpy(zero_copy_only=False)
            out.skipped_failed_at_source += int(source_failed.sum())
            out.chains += int(keep.sum())
            # (when payloads are missing, fidelity is "unknown" whatever the digest says)
            out.digest.add(rid[keep], branch[keep], kept_outcomes)
            inject = keep & (branch == 0)
            have = pc.is_valid(heads.column("payload")).to_numpy(zero_copy_only=False)
            out.missing_payloads += int((inject & ~have).sum())
            inject &= have
            if not inject.any():
                continue
            # the stored JSON text goes straight into the file: no parsing, no re-encoding
            rows = pa.RecordBatch.from_arrays(
                [heads.column("record_id"), heads.column("origin_ts_ns"), heads.column("key"),
                 heads.column("payload")], names=WINDOW_FILE_SCHEMA.names)
            if not inject.all():
                rows = rows.filter(pa.array(inject))
            table = pa.Table.from_batches([rows]).cast(WINDOW_FILE_SCHEMA)
            for part in table.to_batches(max_chunksize=FILE_BATCH_ROWS):
                w.write_batch(part)
            its = rows.column("origin_ts_ns")
            if out.first_ns is None:
                out.first_ns = int(its[0].as_py())
            out.last_ns = int(its[-1].as_py())
            out.records += rows.num_rows
            if on_progress is not None:
                on_progress(out.records)
    return out
