"""The Arrow -> binary COPY encoder, checked by decoding its output again."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from streamprov.model import Outcome
from streamprov.store import PROVENANCE_SCHEMA, STREAM_LOG_SCHEMA
from streamprov.store.pgcopy import HEADER, TRAILER, CopyEncoder
from tests.store.chains import chain, log_rows, rows


def decode(data: bytes, schema: pa.Schema, columns: tuple[str, ...]) -> list[dict[str, Any]]:
    """A plain reading of PostgreSQL's binary COPY tuples (no header or trailer)."""
    types = {f.name: f.type for f in schema}
    out: list[dict[str, Any]] = []
    pos = 0
    while pos < len(data):
        (nfields,) = struct.unpack_from(">h", data, pos)
        pos += 2
        assert nfields == len(columns)
        row: dict[str, Any] = {}
        for name in columns:
            (length,) = struct.unpack_from(">i", data, pos)
            pos += 4
            if length < 0:
                row[name] = None
                continue
            raw = data[pos : pos + length]
            pos += length
            if types[name] == pa.int16():
                row[name] = struct.unpack(">h", raw)[0]
            elif types[name] == pa.int64():
                row[name] = struct.unpack(">q", raw)[0]
            else:
                row[name] = raw.decode()
        out.append(row)
    return out


def test_header_and_trailer() -> None:
    assert HEADER == b"PGCOPY\n\xff\r\n\x00" + b"\x00" * 8
    assert TRAILER == b"\xff\xff"


def test_provenance_rows_round_trip_in_any_order() -> None:
    chains = [chain(i, i * 10**9 + 7, outcome=Outcome.FAILED, error="bad ünïcode")
              for i in range(5)]
    chains[2] = chain(2, 5, branch=3, replay_id="r-1", logical=2**40)
    table = rows(chains)
    encoder = CopyEncoder(PROVENANCE_SCHEMA)
    want = table.to_pylist()
    assert decode(bytes(encoder.encode(table)), PROVENANCE_SCHEMA, encoder.columns) == want
    order = np.arange(table.num_rows)[::-1].copy()
    got = b"".join(bytes(c) for c in encoder.chunks(table, 4, order))
    assert decode(got, PROVENANCE_SCHEMA, encoder.columns) == want[::-1]


def test_dictionary_columns_nulls_and_many_distinct_values() -> None:
    n = 9000  # above the dictionary threshold: the error column is encoded plainly
    small = rows([chain(i, i) for i in range(3)])
    big = small.take(pa.array(np.arange(n) % small.num_rows))
    errors = pa.array([f"msg {i}" if i % 2 else None for i in range(n)], pa.string())
    big = big.set_column(big.schema.get_field_index("error"), "error", errors)
    big = big.set_column(0, "stream_id", pc.dictionary_encode(big.column("stream_id")))
    encoder = CopyEncoder(PROVENANCE_SCHEMA)
    got = decode(bytes(encoder.encode(big)), PROVENANCE_SCHEMA, encoder.columns)
    assert got == big.cast(PROVENANCE_SCHEMA).to_pylist()


def test_stream_log_payloads() -> None:
    table = log_rows("s", list(range(5000)))
    encoder = CopyEncoder(STREAM_LOG_SCHEMA)
    assert encoder.columns[:2] == ("record_id", "ingest_ts_ns")
    got = decode(bytes(encoder.encode(table)), STREAM_LOG_SCHEMA, encoder.columns)
    assert got == table.to_pylist()


def test_only_integer_and_text_columns() -> None:
    with pytest.raises(TypeError):
        CopyEncoder(pa.schema([pa.field("x", pa.float64())]))
