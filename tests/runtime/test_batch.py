"""Records on their way in: payloads as one JSON blob, parsed back exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest

from streamprov.runtime.batch import Batch, EncodedBatch, HopColumn

PAYLOADS: list[Any] = [
    {"user": "u1", "amount": 12.5, "seq": 0},
    {"text": 'commas, "quotes", [brackets] and {braces}', "nested": {"a": [1, [2, {}]]}},
    "a bare string",
    17,
    -1.5e-300,
    None,
    [],
    {"unicode": "żółw \u2603 \U0001f600", "escaped": "\\n\n\t"},
    True,
    {"big": 2**63 - 1},
]


def encoded(payloads: list[Any]) -> EncodedBatch:
    n = len(payloads)
    ids = np.arange(n, dtype=np.int64)
    hop = HopColumn("p/source/0", np.full(n, 5, dtype=np.int64), np.arange(n, dtype=np.int64))
    return EncodedBatch.encode(Batch("s", ids, payloads, None, None, [hop]))


def test_payloads_come_back_exactly() -> None:
    eb = encoded(PAYLOADS)
    assert eb.decode().payloads == PAYLOADS
    assert eb.take(np.array([9, 1, 3], dtype=np.intp)).decode().payloads == [
        PAYLOADS[9], PAYLOADS[1], PAYLOADS[3]]
    assert encoded([]).decode().payloads == []
    assert encoded([{"only": 1}]).decode().payloads == [{"only": 1}]


def test_a_record_that_is_not_one_json_value_fails_as_it_would_alone() -> None:
    eb = encoded([{"a": 1}, {"b": 2}])
    for bad in (b'{"a": 1}1, 2', b'{"a": 1}'):  # two values in one record; an empty record
        eb.blob = bad
        eb.offsets = np.array([0, 8, len(bad)], dtype=np.int64)
        with pytest.raises(orjson.JSONDecodeError):
            eb.decode()


def test_a_lean_batch_keeps_what_the_first_stage_reads() -> None:
    n = len(PAYLOADS)
    ids = np.arange(n, dtype=np.int64)
    keys = [f"k{i}" for i in range(n)]
    eb = EncodedBatch.encode(Batch("s", ids, PAYLOADS, keys), np.arange(n, dtype=np.uint64))
    lean = eb.lean()
    assert lean.hashes is None and lean.key_json is None
    assert lean.keys == keys and lean.blob == eb.blob
    assert lean.decode() == eb.decode()
    assert lean.lean() is lean
