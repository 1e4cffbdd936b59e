"""Complete chains (``ChainBatch``) as provenance rows (``PROVENANCE_SCHEMA``), vectorized.

Each chain batch becomes one Arrow record batch as it arrives (its hop rows grouped by hop),
and ``build`` returns them as one chunked table without concatenating them: a flush of a
million rows would otherwise allocate (and fault in) a hundred megabytes of fresh memory for
a copy the stores do not need. String columns are dictionary-encoded against one dictionary
per column shared by every chunk (a handful of node ids, outcomes and stream ids per flush),
so the table also combines cheaply where a backend wants one array per column.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from streamprov.runtime.batch import ChainBatch
from streamprov.store.base import PROVENANCE_SCHEMA

_STRINGS = ("stream_id", "replay_id", "node_id", "origin_node", "outcome")
_INTS = tuple(f.name for f in PROVENANCE_SCHEMA if f.name not in _STRINGS and f.name != "error")
_BUILT_SCHEMA = pa.schema([
    pa.field(f.name, pa.dictionary(pa.int32(), pa.string()), nullable=f.nullable)
    if f.name in _STRINGS else f for f in PROVENANCE_SCHEMA
])
"""``PROVENANCE_SCHEMA`` with the string columns dictionary-encoded, as ``build`` makes it."""


class ChainRowBuilder:
    """Accumulates chain batches; ``build`` returns them as one table, hop rows grouped."""

    def __init__(self) -> None:
        self._batches: list[tuple[dict[str, npt.NDArray[np.int32]], list[pa.Array],
                                  pa.Array]] = []
        self._dicts: dict[str, dict[str, int]] = {name: {} for name in _STRINGS}
        self.rows = 0
        self.chains = 0

    def _code(self, column: str, value: str) -> int:
        d = self._dicts[column]
        code = d.get(value)
        if code is None:
            code = d[value] = len(d)
        return code

    def _const(self, column: str, value: str, n: int) -> npt.NDArray[np.int32]:
        return np.full(n, self._code(column, value), dtype=np.int32)

    def add(self, cb: ChainBatch) -> None:
        n = len(cb)
        hops = cb.hops
        h = len(hops)
        total = n * h
        node_codes = np.array([self._code("node_id", x.node_id) for x in hops], dtype=np.int32)
        codes = {
            "stream_id": self._const("stream_id", cb.stream_id, total),
            "replay_id": self._const("replay_id", cb.replay_id, total),
            "node_id": np.repeat(node_codes, n),
            "origin_node": self._const("origin_node", hops[0].node_id, total),
            "outcome": self._const("outcome", cb.outcome.value, total),
        }
        branches = cb.branches if cb.branches is not None else np.zeros(n, dtype=np.int64)
        ints = {
            "record_id": np.tile(cb.record_ids, h),
            "branch": np.tile(branches, h),
            "hop": np.repeat(np.arange(h, dtype=np.int16), n),
            "hops": np.full(total, h, dtype=np.int16),
            "ts_ns": np.concatenate([x.ts_ns for x in hops]),
            "logical": np.concatenate([x.logical for x in hops]),
            "error_ns": np.repeat(np.array([x.error_ns for x in hops], dtype=np.int64), n),
            "origin_ts_ns": np.tile(hops[0].ts_ns, h),
            "origin_logical": np.tile(hops[0].logical, h),
        }
        arrays = [pa.array(ints[name], type=PROVENANCE_SCHEMA.field(name).type)
                  for name in _INTS]
        if cb.errors is None:
            error = pa.nulls(total, pa.string())
        else:  # the message goes on the row of the hop where the record failed (the last)
            error = pa.array([None] * (total - n) + list(cb.errors), pa.string())
        self._batches.append((codes, arrays, error))
        self.rows += total
        self.chains += n

    def build(self) -> pa.Table:
        """Everything added so far as a table in ``PROVENANCE_SCHEMA`` column order (string
        columns dictionary-encoded), one chunk per chain batch; the builder is empty
        afterwards."""
        dicts = {name: pa.array(list(self._dicts[name]), pa.string()) for name in _STRINGS}
        batches = []
        for codes, arrays, error in self._batches:
            by_name = dict(zip(_INTS, arrays, strict=True))
            columns = [
                pa.DictionaryArray.from_arrays(codes[name], dicts[name]) if name in codes
                else error if name == "error" else by_name[name]
                for name in PROVENANCE_SCHEMA.names
            ]
            batches.append(pa.RecordBatch.from_arrays(columns, schema=_BUILT_SCHEMA))
        table = pa.Table.from_batches(batches, schema=_BUILT_SCHEMA)
        self.__init__()  # type: ignore[misc]
        return table


def chain_rows(cb: ChainBatch) -> pa.Table:
    """One chain batch as rows."""
    builder = ChainRowBuilder()
    builder.add(cb)
    return builder.build()
