"""Complete chains (``ChainBatch``) as provenance rows (``PROVENANCE_SCHEMA``), vectorized.

Chain batches whose chains took the same path (stream, replay, nodes, outcome: a handful per
flush, one per way through the pipeline) are gathered, and ``build`` turns each path into one
Arrow record batch of hop rows, grouped by hop. Turning every 1k-chain batch into rows on its
own cost a fixed overhead per batch, here and in the store's reading of every chunk; per path
it is paid a few times per flush. String columns are dictionary-encoded against one dictionary
per column shared by every chunk, so the table also combines cheaply where a backend wants one
array per column.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from streamprov.runtime.batch import ChainBatch
from streamprov.store.base import PROVENANCE_SCHEMA

_STRINGS = ("stream_id", "replay_id", "node_id", "origin_node", "outcome")
_BUILT_SCHEMA = pa.schema([
    pa.field(f.name, pa.dictionary(pa.int32(), pa.string()), nullable=f.nullable)
    if f.name in _STRINGS else f for f in PROVENANCE_SCHEMA
])
"""``PROVENANCE_SCHEMA`` with the string columns dictionary-encoded, as ``build`` makes it."""


_Path = tuple[str, str, str, tuple[str, ...], tuple[int, ...]]
"""What chains must share to become rows together: stream, replay, outcome, node ids, error
bounds."""


class ChainRowBuilder:
    """Accumulates chain batches; ``build`` returns them as one table, hop rows grouped."""

    def __init__(self) -> None:
        self._paths: dict[_Path, list[ChainBatch]] = {}
        self.rows = 0
        self.chains = 0

    def add(self, cb: ChainBatch) -> None:
        path = (cb.stream_id, cb.replay_id, cb.outcome.value,
                tuple(h.node_id for h in cb.hops), tuple(h.error_ns for h in cb.hops))
        batches = self._paths.get(path)
        if batches is None:
            self._paths[path] = [cb]
        else:
            batches.append(cb)
        self.rows += len(cb) * len(cb.hops)
        self.chains += len(cb)

    def build(self) -> pa.Table:
        """Everything added so far as a table in ``PROVENANCE_SCHEMA`` column order (string
        columns dictionary-encoded), one chunk per path; the builder is empty afterwards."""
        values: dict[str, dict[str, int]] = {name: {} for name in _STRINGS}

        def code(column: str, value: str) -> int:
            return values[column].setdefault(value, len(values[column]))

        parts = []
        for (stream_id, replay_id, outcome, nodes, errors_ns), batches in self._paths.items():
            codes = {
                "stream_id": code("stream_id", stream_id),
                "replay_id": code("replay_id", replay_id),
                "origin_node": code("origin_node", nodes[0]),
                "outcome": code("outcome", outcome),
            }
            node_codes = np.array([code("node_id", x) for x in nodes], dtype=np.int32)
            parts.append((codes, node_codes, errors_ns, batches))
        dicts = {name: pa.array(list(values[name]), pa.string()) for name in _STRINGS}
        chunks = [_path_rows(codes, node_codes, errors_ns, batches, dicts)
                  for codes, node_codes, errors_ns, batches in parts]
        table = pa.Table.from_batches(chunks, schema=_BUILT_SCHEMA)
        self.__init__()  # type: ignore[misc]
        return table


def _path_rows(codes: dict[str, int], node_codes: npt.NDArray[np.int32],
               errors_ns: tuple[int, ...], batches: list[ChainBatch],
               dicts: dict[str, pa.Array]) -> pa.RecordBatch:
    """The hop rows of chain batches that took one path, grouped by hop."""
    h = len(node_codes)
    record_ids = np.concatenate([cb.record_ids for cb in batches])
    n = len(record_ids)
    total = n * h
    branches = np.concatenate([cb.branches if cb.branches is not None
                               else np.zeros(len(cb), dtype=np.int64) for cb in batches])
    ts = [np.concatenate([cb.hops[k].ts_ns for cb in batches]) for k in range(h)]
    logical = [np.concatenate([cb.hops[k].logical for cb in batches]) for k in range(h)]
    ints = {
        "record_id": np.tile(record_ids, h),
        "branch": np.tile(branches, h),
        "hop": np.repeat(np.arange(h, dtype=np.int16), n),
        "hops": np.full(total, h, dtype=np.int16),
        "ts_ns": np.concatenate(ts),
        "logical": np.concatenate(logical),
        "error_ns": np.repeat(np.array(errors_ns, dtype=np.int64), n),
        "origin_ts_ns": np.tile(ts[0], h),
        "origin_logical": np.tile(logical[0], h),
    }
    if all(cb.errors is None for cb in batches):
        error = pa.nulls(total, pa.string())
    else:  # the message goes on the row of the hop where the record failed (the last)
        messages: list[str | None] = [None] * (total - n)
        for cb in batches:
            messages.extend(cb.errors if cb.errors is not None else [None] * len(cb))
        error = pa.array(messages, pa.string())
    columns = []
    for f in PROVENANCE_SCHEMA:
        if f.name in codes:
            indices = np.full(total, codes[f.name], dtype=np.int32)
            columns.append(pa.DictionaryArray.from_arrays(indices, dicts[f.name]))
        elif f.name == "node_id":
            columns.append(pa.DictionaryArray.from_arrays(np.repeat(node_codes, n),
                                                          dicts["node_id"]))
        elif f.name == "error":
            columns.append(error)
        else:
            columns.append(pa.array(ints[f.name], type=f.type))
    return pa.RecordBatch.from_arrays(columns, schema=_BUILT_SCHEMA)


def chain_rows(cb: ChainBatch) -> pa.Table:
    """One chain batch as rows."""
    builder = ChainRowBuilder()
    builder.add(cb)
    return builder.build()
