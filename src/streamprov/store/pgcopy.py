"""Arrow tables to PostgreSQL binary ``COPY`` data, vectorized (no Python loop per row).

A binary COPY tuple is a big-endian int16 field count, then per field an int32 length (-1 for
NULL) and the value's bytes: int2/int8 big-endian, text as UTF-8. The encoder puts the integer
columns first (the COPY column list follows ``CopyEncoder.columns``), so that part of every tuple
has one fixed size and is built as one numpy structured array. Text columns become per-row
"pieces" (length prefix plus bytes) that ``binary_join_element_wise`` glues after the fixed
part; a run of low-cardinality text columns (stream, replay, node ids, outcome, the odd error
message) becomes a single piece looked up per row from its few distinct combinations, which
keeps the join narrow. Rows can be emitted in any order (``order``) at the cost of a gather.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
"""Signature, flags and header-extension length that open a binary COPY stream."""
TRAILER = struct.pack(">h", -1)
"""The int16 -1 that ends a binary COPY stream."""

Buffer = bytes | memoryview
Rows = slice | np.ndarray[Any, Any]

_NULL = struct.pack(">i", -1)
_MAX_DICT = 4096
"""Distinct values up to which a text column counts as low-cardinality."""
_MAX_COMBOS = 1 << 20
"""Largest product of cardinalities merged into one lookup piece."""


@dataclass(frozen=True, slots=True)
class _Lookup:
    """Per-row index into a small array of ready-made pieces."""

    values: pa.Array
    codes: np.ndarray[Any, Any]

    def take(self, rows: Rows) -> pa.Array:
        return pc.take(self.values, pa.array(self.codes[rows]))


@dataclass(frozen=True, slots=True)
class _Plain:
    """Length prefixes and bytes of a column with many distinct values."""

    prefix: np.ndarray[Any, Any]
    values: pa.Array

    def take(self, rows: Rows) -> list[pa.Array]:
        prefix = np.ascontiguousarray(self.prefix[rows])
        prefix_arr = pa.FixedSizeBinaryArray.from_buffers(
            pa.binary(4), len(prefix), [None, pa.py_buffer(prefix)]
        ).cast(pa.binary())
        if isinstance(rows, slice):
            values = self.values.slice(rows.start, rows.stop - rows.start)
        else:
            values = pc.take(self.values, pa.array(rows))
        return [prefix_arr, values]


class CopyEncoder:
    """Encodes tables of one schema (int16, int64 and string columns) to binary COPY tuples."""

    def __init__(self, schema: pa.Schema) -> None:
        ints = [f for f in schema if pa.types.is_integer(f.type)]
        texts = [f for f in schema if pa.types.is_string(f.type)]
        if len(ints) + len(texts) != len(schema):
            raise TypeError(f"CopyEncoder handles integer and string columns only: {schema}")
        for f in ints:
            if f.type not in (pa.int16(), pa.int64()):
                raise TypeError(f"column {f.name}: only int16 and int64 are supported")
        self._ints = [(f.name, 2 if f.type == pa.int16() else 8) for f in ints]
        self._texts = [f.name for f in texts]
        self.columns: tuple[str, ...] = tuple(n for n, _ in self._ints) + tuple(self._texts)
        """Column order of the encoded tuples: the COPY statement must list them so."""
        dtype: list[tuple[str, str]] = [("nfields", ">i2")]
        for i, (_, width) in enumerate(self._ints):
            dtype += [(f"len{i}", ">i4"), (f"val{i}", ">i8" if width == 8 else ">i2")]
        self._dtype = np.dtype(dtype)

    def encode(self, table: pa.Table) -> Buffer:
        """All tuples of ``table`` (no header or trailer) in one buffer."""
        return b"".join(bytes(c) for c in self.chunks(table, max(1, table.num_rows)))

    def chunks(
        self, table: pa.Table, rows: int, order: np.ndarray[Any, Any] | None = None
    ) -> Iterator[Buffer]:
        """The tuples of ``table``, ``rows`` at a time, in ``order`` (row positions) if given.

        Integer columns must have no nulls; text columns may be plain or dictionary-encoded
        strings, with nulls."""
        n = table.num_rows
        if n == 0:
            return
        ints = [_numpy(table.column(name)) for name, _ in self._ints]
        pieces = self._text_pieces(table)
        for start in range(0, n, rows):
            stop = min(n, start + rows)
            yield self._encode(ints, pieces, slice(start, stop) if order is None
                               else order[start:stop], stop - start)

    def _encode(
        self, ints: list[np.ndarray[Any, Any]], pieces: list[_Lookup | _Plain], rows: Rows,
        n: int,
    ) -> Buffer:
        fixed = np.empty(n, dtype=self._dtype)
        fixed["nfields"] = len(self.columns)
        for i, (_, width) in enumerate(self._ints):
            fixed[f"len{i}"] = width
            fixed[f"val{i}"] = ints[i][rows]
        if not pieces:
            return fixed.tobytes()
        parts: list[pa.Array] = [
            pa.FixedSizeBinaryArray.from_buffers(
                pa.binary(self._dtype.itemsize), n, [None, pa.py_buffer(fixed)]
            ).cast(pa.binary())
        ]
        for piece in pieces:
            if isinstance(piece, _Lookup):
                parts.append(piece.take(rows))
            else:
                parts += piece.take(rows)
        joined = pc.binary_join_element_wise(*parts, b"")
        offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32)
        begin, end = int(offsets[joined.offset]), int(offsets[joined.offset + n])
        return memoryview(joined.buffers()[2])[begin:end]

    # -- text ------------------------------------------------------------------------------
    def _text_pieces(self, table: pa.Table) -> list[_Lookup | _Plain]:
        out: list[_Lookup | _Plain] = []
        run: list[pa.DictionaryArray] = []
        combos = 1

        def flush() -> None:
            nonlocal run, combos
            if run:
                out.append(_lookup(run))
                run, combos = [], 1

        if any(pa.types.is_dictionary(t) for t in table.schema.types):
            table = table.unify_dictionaries()
        for name in self._texts:
            col = table.column(name).combine_chunks()
            if pa.types.is_dictionary(col.type):
                encoded = col
                if not pa.types.is_string(col.type.value_type):
                    encoded = pa.DictionaryArray.from_arrays(
                        col.indices, col.dictionary.cast(pa.string())
                    )
            else:
                if pa.types.is_large_string(col.type):
                    col = col.cast(pa.string())
                if _looks_distinct(col):
                    flush()
                    out.append(_plain(col))
                    continue
                encoded = pc.dictionary_encode(col)
            if len(encoded.dictionary) > _MAX_DICT:
                flush()
                out.append(_plain(encoded.dictionary.take(encoded.indices)))
                continue
            size = len(encoded.dictionary) + 1  # one more for NULL
            if combos * size > _MAX_COMBOS:
                flush()
            run.append(encoded)
            combos *= size
        flush()
        return out


def _looks_distinct(col: pa.Array) -> bool:
    """Whether a sample says the column is too varied for a dictionary (payloads, messages)."""
    if len(col) <= _MAX_DICT:
        return False
    sample = col.slice(0, 2048)
    return int(pc.count_distinct(sample).as_py()) > 1024


def _numpy(column: pa.ChunkedArray | pa.Array) -> np.ndarray[Any, Any]:
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    out: np.ndarray[Any, Any] = arr.to_numpy(zero_copy_only=False)
    return out


def _text_piece(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode()
    return struct.pack(">i", len(data)) + data


def _plain(col: pa.Array) -> _Plain:
    lengths = pc.binary_length(col).fill_null(-1).to_numpy(zero_copy_only=False)
    return _Plain(lengths.astype(">i4"), col.fill_null("").cast(pa.binary()))


def _lookup(run: list[pa.DictionaryArray]) -> _Lookup:
    """Consecutive low-cardinality columns as one piece: the bytes of every column of the run,
    looked up by the row's combination of dictionary indices."""
    sizes = [len(d.dictionary) + 1 for d in run]
    code = np.zeros(len(run[0]), dtype=np.int64)
    for d, size in zip(run, sizes, strict=True):
        idx = d.indices.fill_null(size - 1).to_numpy(zero_copy_only=False)
        code = code * size + idx
    total = int(np.prod(sizes))
    used = np.flatnonzero(np.bincount(code, minlength=total))
    dicts = [[*d.dictionary.to_pylist(), None] for d in run]
    values: list[bytes] = []
    for c in used.tolist():
        parts: list[bytes] = []
        for options, size in zip(reversed(dicts), reversed(sizes), strict=True):
            c, i = divmod(c, size)
            parts.append(_text_piece(options[i]))
        values.append(b"".join(reversed(parts)))
    remap = np.zeros(total, dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    return _Lookup(pa.array(values, pa.binary()), remap[code])
