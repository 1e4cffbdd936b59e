"""Complete chains (``ChainBatch``) as provenance rows (``PROVENANCE_SCHEMA``), vectorized.

String columns are built dictionary-encoded (a handful of distinct node ids, outcomes and
stream ids per flush): building a million-row table then costs a few numpy concatenations.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from streamprov.runtime.batch import ChainBatch
from streamprov.store.base import PROVENANCE_SCHEMA

_STRINGS = ("stream_id", "replay_id", "node_id", "origin_node", "outcome")


class ChainRowBuilder:
    """Accumulates chain batches; ``build`` returns them as one table, hop rows grouped."""

    def __init__(self) -> None:
        self._parts: dict[str, list[npt.NDArray[np.int64] | npt.NDArray[np.int32]
                                    | npt.NDArray[np.int16]]] = {
            name: [] for name in PROVENANCE_SCHEMA.names if name != "error"
        }
        self._dicts: dict[str, dict[str, int]] = {name: {} for name in _STRINGS}
        self._errors: list[tuple[int, list[str]]] = []
        self.rows = 0
        self.chains = 0

    def _code(self, column: str, value: str) -> int:
        d = self._dicts[column]
        code = d.get(value)
        if code is None:
            code = d[value] = len(d)
        return code

    def _const(self, column: str, value: str, n: int) -> None:
        self._parts[column].append(np.full(n, self._code(column, value), dtype=np.int32))

    def add(self, cb: ChainBatch) -> None:
        n = len(cb)
        hops = cb.hops
        h = len(hops)
        total = n * h
        parts = self._parts
        self._const("stream_id", cb.stream_id, total)
        self._const("replay_id", cb.replay_id, total)
        self._const("origin_node", hops[0].node_id, total)
        self._const("outcome", cb.outcome.value, total)
        node_codes = np.array([self._code("node_id", x.node_id) for x in hops], dtype=np.int32)
        parts["node_id"].append(np.repeat(node_codes, n))
        parts["record_id"].append(np.tile(cb.record_ids, h))
        branches = cb.branches if cb.branches is not None else np.zeros(n, dtype=np.int64)
        parts["branch"].append(np.tile(branches, h))
        parts["hop"].append(np.repeat(np.arange(h, dtype=np.int16), n))
        parts["hops"].append(np.full(total, h, dtype=np.int16))
        parts["ts_ns"].append(np.concatenate([x.ts_ns for x in hops]))
        parts["logical"].append(np.concatenate([x.logical for x in hops]))
        parts["error_ns"].append(
            np.repeat(np.array([x.error_ns for x in hops], dtype=np.int64), n))
        parts["origin_ts_ns"].append(np.tile(hops[0].ts_ns, h))
        parts["origin_logical"].append(np.tile(hops[0].logical, h))
        if cb.errors is not None:
            self._errors.append((self.rows + total - n, cb.errors))
        self.rows += total
        self.chains += n

    def build(self) -> pa.Table:
        """Everything added so far as a table in ``PROVENANCE_SCHEMA`` column order (string
        columns dictionary-encoded); the builder is empty afterwards."""
        columns: list[pa.Array] = []
        for field in PROVENANCE_SCHEMA:
            name = field.name
            if name == "error":
                columns.append(self._error_column())
                continue
            values = np.concatenate(self._parts[name]) if self._parts[name] else np.array(
                [], dtype=np.int64)
            if name in _STRINGS:
                columns.append(pa.DictionaryArray.from_arrays(
                    values.astype(np.int32, copy=False), list(self._dicts[name])))
            else:
                columns.append(pa.array(values, type=field.type))
        table = pa.Table.from_arrays(columns, names=PROVENANCE_SCHEMA.names)
        self.__init__()  # type: ignore[misc]
        return table

    def _error_column(self) -> pa.Array:
        if not self._errors:
            return pa.nulls(self.rows, pa.string())
        values: list[str | None] = [None] * self.rows
        for start, errors in self._errors:
            values[start : start + len(errors)] = errors
        return pa.array(values, pa.string())


def chain_rows(cb: ChainBatch) -> pa.Table:
    """One chain batch as rows."""
    builder = ChainRowBuilder()
    builder.add(cb)
    return builder.build()
