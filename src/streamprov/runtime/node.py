"""What a processing node does to a batch: apply its operator, stamp its hop, split outcomes.

``NodeProcessor`` is pure computation (no queues, no processes) so it is tested directly;
``streamprov.runtime.worker`` runs it inside a node process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamprov.clock.hlc import HybridLogicalClock
from streamprov.model import Outcome
from streamprov.runtime.batch import Batch, ChainBatch, HopColumn
from streamprov.runtime.pipeline import Stage, StageKind
from streamprov.runtime.sinks import SinkWriter

_ERROR_CHARS = 500


def error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def branch_of(parent: int, stage_index: int, k: int) -> int:
    """Branch id of the k-th output (k >= 1) of a flat_map for a record on ``parent``."""
    digest = hashlib.blake2b(
        f"{parent}/{stage_index}/{k}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFFFFFFFFFF


@dataclass(slots=True)
class NodeStats:
    records_in: int = 0
    records_out: int = 0
    delivered: int = 0
    dropped: int = 0
    failed: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "recordsIn": self.records_in, "recordsOut": self.records_out,
            "delivered": self.delivered, "dropped": self.dropped, "failed": self.failed,
            "batches": self.batches,
        }


@dataclass(slots=True)
class Processed:
    """Result of one batch: what goes on, and chains that ended here."""

    out: Batch | None
    ended: list[ChainBatch] = field(default_factory=list)


def records_json(batch: Batch) -> list[dict[str, Any]]:
    """Records in their JSON form, provenance in the specification's shape."""
    hops = [(h.node_id, h.ts_ns.tolist(), h.logical.tolist(), h.error_ns) for h in batch.hops]
    out = []
    for i, (rid, payload) in enumerate(zip(batch.record_ids.tolist(), batch.payloads,
                                           strict=True)):
        rec: dict[str, Any] = {
            "streamId": batch.stream_id,
            "recordId": rid,
            "payload": payload,
            "provenance": [
                {"nodeId": node, "timestamp": ts[i], "logical": lg[i], "errorNs": err}
                for node, ts, lg, err in hops
            ],
        }
        if batch.keys is not None:
            rec["key"] = batch.keys[i]
        if batch.branches is not None and batch.branches[i]:
            rec["branch"] = int(batch.branches[i])
        if batch.replay_id:
            rec["replayId"] = batch.replay_id
        out.append(rec)
    return out


class NodeProcessor:
    """Runs one stage's operator on batches for the node ``node_id``.

    Per record, an operator exception fails that record (``failed`` with the error text) and
    the others go on; a ``batch`` operator or a sink failing fails the whole batch. Records are
    stamped after the operator ran, so a hop's timestamp is when the record left the node.
    """

    def __init__(
        self,
        stage: Stage,
        stage_index: int,
        node_id: str,
        clock: HybridLogicalClock,
        *,
        provenance: bool = True,
        next_key: Callable[[Any], Any] | None = None,
        sink_writer: SinkWriter | None = None,
    ) -> None:
        self.stage = stage
        self.stage_index = stage_index
        self.node_id = node_id
        self.clock = clock
        self.provenance = provenance
        self.next_key = next_key
        self.sink_writer = sink_writer
        self.stats = NodeStats()

    def _stamp(self, batch: Batch) -> Batch:
        if not self.provenance:
            return batch
        n = len(batch)
        ts, logical = self.clock.stamp(n, batch.last_ts())
        hop = HopColumn(self.node_id, np.full(n, ts, dtype=np.int64), logical,
                        self.clock.error_bound_ns())
        return Batch(batch.stream_id, batch.record_ids, batch.payloads, batch.keys,
                     batch.branches, [*batch.hops, hop], batch.replay_id)

    def process(self, batch: Batch) -> Processed:
        st = self.stats
        st.batches += 1
        st.records_in += len(batch)
        kind = self.stage.kind
        if kind is StageKind.MAP:
            result = self._map(batch)
        elif kind is StageKind.FILTER:
            result = self._filter(batch)
        elif kind is StageKind.FLAT_MAP:
            result = self._flat_map(batch)
        elif kind is StageKind.BATCH:
            result = self._batch(batch)
        else:
            return self._sink(batch)
        if result.out is not None and self.next_key is not None:
            result = self._keyed(result)
        if result.out is not None:
            st.records_out += len(result.out)
        return result

    # -- outcomes -----------------------------------------------------------------------
    def _end(self, result: Processed, stamped: Batch, idx: list[int], outcome: Outcome,
             errors: list[str] | None = None) -> None:
        if not idx:
            return
        if outcome is Outcome.FAILED:
            self.stats.failed += len(idx)
        elif outcome is Outcome.DROPPED:
            self.stats.dropped += len(idx)
        else:
            self.stats.delivered += len(idx)
        if self.provenance:
            every = len(idx) == len(stamped)  # (idx is ascending: all of them, in order)
            result.ended.append(ChainBatch.of(
                stamped, outcome, errors, None if every else np.asarray(idx, dtype=np.intp)))

    def _split(self, stamped: Batch, outs: list[Any], failed: dict[int, str],
               dropped: list[int]) -> Processed:
        result = Processed(None)
        n = len(stamped)
        if failed:
            self._end(result, stamped, sorted(failed), Outcome.FAILED,
                      [failed[i] for i in sorted(failed)])
        self._end(result, stamped, dropped, Outcome.DROPPED)
        if len(failed) + len(dropped) == 0:
            result.out = Batch(stamped.stream_id, stamped.record_ids, outs, stamped.keys,
                               stamped.branches, stamped.hops, stamped.replay_id)
        elif len(failed) + len(dropped) < n:
            gone = set(failed).union(dropped)
            keep = [i for i in range(n) if i not in gone]
            result.out = stamped.take(np.asarray(keep, dtype=np.intp), [outs[i] for i in keep])
        return result

    def _apply_each(self, batch: Batch) -> tuple[list[Any], dict[int, str]]:
        fn = self.stage.fn
        assert fn is not None
        try:
            return [fn(p) for p in batch.payloads], {}
        except Exception:
            pass  # slow path: find which records fail
        outs: list[Any] = []
        failed: dict[int, str] = {}
        for i, p in enumerate(batch.payloads):
            try:
                outs.append(fn(p))
            except Exception as exc:
                outs.append(None)
                failed[i] = error_text(exc)
        return outs, failed

    def _map(self, batch: Batch) -> Processed:
        outs, failed = self._apply_each(batch)
        return self._split(self._stamp(batch), outs, failed, [])

    def _filter(self, batch: Batch) -> Processed:
        keep, failed = self._apply_each(batch)
        dropped = [i for i, k in enumerate(keep) if not k and i not in failed]
        return self._split(self._stamp(batch), batch.payloads, failed, dropped)

    def _flat_map(self, batch: Batch) -> Processed:
        outs, failed = self._apply_each(batch)
        stamped = self._stamp(batch)
        result = Processed(None)
        idx: list[int] = []
        payloads: list[Any] = []
        branches: list[int] = []
        parents = (stamped.branches.tolist() if stamped.branches is not None
                   else [0] * len(stamped))
        dropped: list[int] = []
        for i, out in enumerate(outs):
            if i in failed:
                continue
            try:
                items = list(out)
            except Exception as exc:
                failed[i] = error_text(exc)
                continue
            if not items:
                dropped.append(i)
            for k, item in enumerate(items):
                idx.append(i)
                payloads.append(item)
                branches.append(parents[i] if k == 0 else
                                branch_of(parents[i], self.stage_index, k))
        if failed:
            self._end(result, stamped, sorted(failed), Outcome.FAILED,
                      [failed[i] for i in sorted(failed)])
        self._end(result, stamped, dropped, Outcome.DROPPED)
        if idx:
            out_batch = stamped.take(np.asarray(idx, dtype=np.intp), payloads)
            if any(branches):
                out_batch.branches = np.asarray(branches, dtype=np.int64)
            result.out = out_batch
        return result

    def _batch(self, batch: Batch) -> Processed:
        import pyarrow as pa

        fn = self.stage.fn
        assert fn is not None
        n = len(batch)
        try:
            table = pa.RecordBatch.from_pylist(batch.payloads)
            res = fn(table)
            if not isinstance(res, pa.RecordBatch | pa.Table):
                raise TypeError(f"batch operator returned {type(res).__name__}, "
                                "expected a pyarrow.RecordBatch")
            if res.num_rows != n:
                raise ValueError(f"batch operator returned {res.num_rows} rows for {n}")
            outs = res.to_pylist()
        except Exception as exc:
            text = error_text(exc)
            return self._split(self._stamp(batch), batch.payloads, dict.fromkeys(range(n), text),
                               [])
        return self._split(self._stamp(batch), outs, {}, [])

    def _sink(self, batch: Batch) -> Processed:
        stamped = self._stamp(batch)
        result = Processed(None)
        everyone = list(range(len(stamped)))
        writer = self.sink_writer
        assert writer is not None
        sink = self.stage.sink
        try:
            writer.write(records_json(stamped) if sink is not None and sink.wants_records
                         else [])
        except Exception as exc:
            text = error_text(exc)
            self._end(result, stamped, everyone, Outcome.FAILED, [text] * len(everyone))
            return result
        self._end(result, stamped, everyone, Outcome.DELIVERED)
        return result

    def _keyed(self, result: Processed) -> Processed:
        out = result.out
        assert out is not None
        assert self.next_key is not None
        kf = self.next_key
        try:
            out.keys = [kf(p) for p in out.payloads]
            return result
        except Exception:
            pass
        keys: list[Any] = []
        failed: dict[int, str] = {}
        for i, p in enumerate(out.payloads):
            try:
                keys.append(kf(p))
            except Exception as exc:
                keys.append(None)
                failed[i] = "key of next stage: " + error_text(exc)
        out.keys = keys
        rest = self._split(out, out.payloads, failed, [])
        rest.ended = result.ended + rest.ended
        return rest
