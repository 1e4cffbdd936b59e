"""Rows in and out of the stores: checking incoming tables against the canonical schemas, and
turning provenance rows (``PROVENANCE_SCHEMA``) back into chains; shared by the backends."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import pyarrow as pa

from streamprov.errors import InvalidInput
from streamprov.model import Chain, Hop, Outcome

_COLUMNS = (
    "stream_id", "record_id", "branch", "replay_id", "hop", "hops", "node_id", "ts_ns",
    "logical", "error_ns", "outcome", "error",
)
SELECT_COLUMNS = ", ".join(_COLUMNS)
"""Columns, in order, that ``ChainAssembler`` expects from a query."""
SELECT_NAMES = _COLUMNS


def conform(rows: pa.Table, schema: pa.Schema, what: str) -> pa.Table:
    """``rows`` with exactly ``schema``'s columns in its order, or ``InvalidInput`` naming the
    column that is missing, of the wrong kind or null where it must not be.

    Dictionary-encoded string columns stay dictionary-encoded (the backends read them as
    text); integer columns of another width are cast.
    """
    if isinstance(rows, pa.RecordBatch):
        rows = pa.Table.from_batches([rows])
    missing = [name for name in schema.names if name not in rows.column_names]
    if missing:
        raise InvalidInput(f"{what} rows lack column(s) {', '.join(missing)}", field=missing[0])
    columns: list[pa.ChunkedArray] = []
    for field in schema:
        col = rows.column(field.name)
        t = col.type
        if pa.types.is_dictionary(t) and pa.types.is_string(t.value_type):
            pass
        elif pa.types.is_string(field.type):
            if not (pa.types.is_string(t) or pa.types.is_large_string(t)
                    or pa.types.is_null(t)):
                raise InvalidInput(f"{what} column {field.name} must be text, not {t}",
                                   field=field.name)
            if t != pa.string():
                col = col.cast(pa.string())
        elif t != field.type:
            if not (pa.types.is_integer(t) or pa.types.is_null(t)):
                raise InvalidInput(f"{what} column {field.name} must be an integer, not {t}",
                                   field=field.name)
            try:
                col = col.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise InvalidInput(f"{what} column {field.name}: {exc}",
                                   field=field.name) from exc
        if not field.nullable and col.null_count:
            raise InvalidInput(f"{what} column {field.name} has null values", field=field.name)
        columns.append(col)
    return pa.Table.from_arrays(columns, names=schema.names)


class ChainAssembler:
    """Groups rows ordered by chain then hop into ``Chain`` values.

    Rows may arrive in any number of batches; a chain cut at a batch boundary is carried over.
    """

    def __init__(self) -> None:
        self._hops: list[Hop] = []
        self._head: tuple[Any, ...] | None = None

    def feed(self, table: pa.Table | pa.RecordBatch) -> list[Chain]:
        """Rows as an Arrow table or batch with (at least) the ``SELECT_COLUMNS``."""
        cols = [table.column(name).to_pylist() for name in _COLUMNS]
        return self.feed_rows(zip(*cols, strict=True))

    def feed_rows(self, rows: Iterable[Sequence[Any]]) -> list[Chain]:
        """Rows as tuples in ``SELECT_COLUMNS`` order."""
        out: list[Chain] = []
        for row in rows:
            (stream_id, record_id, branch, replay_id, hop, hops, node_id, ts, logical,
             error_ns, outcome, error) = row
            if hop == 0:
                self._hops = []
                self._head = (stream_id, record_id, branch, replay_id)
            self._hops.append(Hop(node_id, ts, logical, error_ns))
            if hop == hops - 1 and self._head is not None:
                out.append(
                    Chain(
                        self._head[0], self._head[1], tuple(self._hops), Outcome(outcome),
                        self._head[2], self._head[3], error,
                    )
                )
                self._head = None
        return out


def assemble(batches: Iterable[pa.Table | pa.RecordBatch]) -> Iterator[list[Chain]]:
    asm = ChainAssembler()
    for batch in batches:
        chains = asm.feed(batch)
        if chains:
            yield chains
