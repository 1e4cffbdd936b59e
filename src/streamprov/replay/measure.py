"""Measurements from a replay's own chains: latency end to end and per hop, outcomes, digests.

Reads the replay's rows (``replay_id``) in window order as Arrow batches and folds them into
histograms chunk by chunk, vectorized, so a replay of millions of records is measured in
bounded memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamprov.metrics.histogram import LatencyHistogram
from streamprov.replay.fidelity import Digest
from streamprov.store import ProvenanceStore


def stage_of(node_id: str) -> str:
    """``pipeline~replay/parse/1`` -> ``parse``."""
    parts = node_id.split("/")
    return parts[1] if len(parts) >= 3 else node_id


@dataclass(slots=True)
class ChainMetrics:
    chains: int = 0
    end_to_end: LatencyHistogram = field(default_factory=LatencyHistogram)
    per_stage: dict[str, LatencyHistogram] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)
    digest: Digest = field(default_factory=Digest)
    first_ns: int | None = None
    last_ns: int | None = None
    """Earliest hop-0 time and latest last-hop time of the chains."""

    @property
    def span_ns(self) -> int:
        if self.first_ns is None or self.last_ns is None:
            return 0
        return self.last_ns - self.first_ns


def measure(store: ProvenanceStore, stream_id: str, replay_id: str, start_ns: int,
            end_ns: int, *, chunk_rows: int = 262_144) -> ChainMetrics:
    """Fold the chains of ``replay_id`` whose hop 0 lies in ``[start_ns, end_ns)``."""
    m = ChainMetrics()
    carry_ts: int | None = None
    carry_origin: int | None = None
    for batch in store.window_rows(stream_id, start_ns, end_ns, replay_id=replay_id,
                                   chunk_rows=chunk_rows):
        _fold(m, batch, carry_ts, carry_origin)
        ts_all = batch.column("ts_ns").to_numpy(zero_copy_only=False)
        hop_all = batch.column("hop").to_numpy(zero_copy_only=False)
        carry_ts = int(ts_all[-1])
        zero = np.flatnonzero(hop_all == 0)
        carry_origin = int(ts_all[zero[-1]]) if len(zero) else carry_origin
    return m


def _fold(m: ChainMetrics, batch: pa.RecordBatch, carry_ts: int | None,
          carry_origin: int | None) -> None:
    ts = batch.column("ts_ns").to_numpy(zero_copy_only=False).astype(np.int64)
    hop = batch.column("hop").to_numpy(zero_copy_only=False).astype(np.int64)
    hops = batch.column("hops").to_numpy(zero_copy_only=False).astype(np.int64)
    n = len(ts)
    # per hop: this hop minus the previous one of the same chain (rows are chain by chain)
    prev = np.empty(n, dtype=np.int64)
    prev[1:] = ts[:-1]
    prev[0] = carry_ts if carry_ts is not None else ts[0]
    later = hop > 0
    if later.any():
        encoded = pc.dictionary_encode(batch.column("node_id")).combine_chunks() \
            if isinstance(batch.column("node_id"), pa.ChunkedArray) \
            else pc.dictionary_encode(batch.column("node_id"))
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        names = [stage_of(str(x)) for x in encoded.dictionary.to_pylist()]
        stage_codes = np.array([sorted(set(names)).index(s) for s in names], dtype=np.int64)
        stages = sorted(set(names))
        per_row_stage = stage_codes[codes]
        diffs = ts - prev
        for k, stage in enumerate(stages):
            mask = later & (per_row_stage == k)
            if mask.any():
                m.per_stage.setdefault(stage, LatencyHistogram()).record(diffs[mask])
    # end to end: last hop minus hop 0 of the same chain
    idx = np.where(hop == 0, np.arange(n), -1)
    idx = np.maximum.accumulate(idx)
    origin = np.where(idx >= 0, ts[np.maximum(idx, 0)],
                      carry_origin if carry_origin is not None else ts[0])
    last = hop == hops - 1
    if last.any():
        m.end_to_end.record(ts[last] - origin[last])
        end = int(ts[last].max())
        m.last_ns = end if m.last_ns is None else max(m.last_ns, end)
    heads = hop == 0
    if heads.any():
        rid = batch.column("record_id").to_numpy(zero_copy_only=False).astype(np.int64)[heads]
        br = batch.column("branch").to_numpy(zero_copy_only=False).astype(np.int64)[heads]
        outcome = batch.column("outcome").filter(pa.array(heads)).to_pylist()
        m.digest.add(rid, br, outcome)
        for o in outcome:
            m.outcomes[o] = m.outcomes.get(o, 0) + 1
        m.chains += int(heads.sum())
        first = int(ts[heads].min())
        m.first_ns = first if m.first_ns is None else min(m.first_ns, first)
