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


def source_batch(node: str, first: int, n: int, error_ns: int = 0) -> EncodedBatch:
    ids = np.arange(first, first + n, dtype=np.int64)
    hop = HopColumn(node, ids * 10, ids % 5, error_ns)
    payloads = [{"seq": i, "text": f"r{i}" * (i % 4)} for i in ids.tolist()]
    keys = [f"u{i % 3}" for i in ids.tolist()]
    return EncodedBatch.encode(Batch("s", ids, payloads, keys, None, [hop]),
                               ids.astype(np.uint64))


def test_batches_of_one_path_are_joined_in_order() -> None:
    a1, b1, a2, a3 = (source_batch("p/source/0", 0, 5), source_batch("p/source/1", 100, 3),
                      source_batch("p/source/0", 5, 4), source_batch("p/source/0", 9, 2))
    stale = source_batch("p/source/0", 11, 2, error_ns=7)  # another error bound: apart
    got = EncodedBatch.merged([a1, b1, a2.take(np.array([1, 2, 3], dtype=np.intp)), a3, stale])
    assert [b.record_ids.tolist() for b in got] == [
        [0, 1, 2, 3, 4, 6, 7, 8, 9, 10], [100, 101, 102], [11, 12]]
    joined = got[0]
    parts = [a1, a2.take(np.array([1, 2, 3], dtype=np.intp)), a3]
    assert joined.decode().payloads == [p for b in parts for p in b.decode().payloads]
    assert joined.keys == [k for b in parts for k in b.keys or []]
    assert joined.key_json == [k for b in parts for k in b.key_json or []]
    assert joined.hashes is not None
    assert joined.hashes.tolist() == joined.record_ids.tolist()
    [hop] = joined.hops
    assert hop.node_id == "p/source/0" and hop.error_ns == 0
    assert hop.ts_ns.tolist() == [i * 10 for i in joined.record_ids.tolist()]
    assert hop.logical.tolist() == [i % 5 for i in joined.record_ids.tolist()]
    assert got[1] is b1 and got[2] is stale  # (alone on their paths: as they were)
    assert EncodedBatch.merged([]) == []


def test_joined_batches_stay_within_the_bound() -> None:
    parts = [source_batch("p/source/0", 10 * i, 10) for i in range(7)]
    got = EncodedBatch.merged(parts, max_records=30)
    assert [len(b) for b in got] == [30, 30, 10]  # (a bounded queue holds bounded records)
    assert [i for b in got for i in b.record_ids.tolist()] == list(range(70))
