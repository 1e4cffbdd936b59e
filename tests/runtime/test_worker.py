"""Routing between node processes, without processes: inboxes are lists here."""

from __future__ import annotations

from typing import Any

import numpy as np

from streamprov.hashring import hash_ints
from streamprov.runtime.batch import Batch, EncodedBatch
from streamprov.runtime.worker import DATA, Router


class Inbox:
    def __init__(self) -> None:
        self.messages: list[tuple[Any, ...]] = []

    def put(self, msg: tuple[Any, ...]) -> None:
        self.messages.append(msg)


def test_records_reach_the_first_stage_without_routing_hashes_or_json_keys() -> None:
    n = 500
    ids = np.arange(n, dtype=np.int64)
    keys = [f"u{i % 7}" for i in range(n)]
    payloads = [{"seq": i} for i in range(n)]
    eb = EncodedBatch.encode(Batch("s", ids, payloads, keys), hash_ints(ids))
    for members in [(0,), (0, 1, 2)]:
        inboxes = [Inbox() for _ in range(3)]
        Router(None, 0, inboxes, members, token=9).send(eb)
        got = [m[1] for box in inboxes for m in box.messages]
        assert all(m[0] == DATA for box in inboxes for m in box.messages)
        assert all(b.hashes is None and b.key_json is None for b in got)
        assert sorted(i for b in got for i in b.record_ids.tolist()) == list(range(n))
        assert sorted((p["seq"], k) for b in got for p, k in
                      zip(b.decode().payloads, b.keys or [], strict=True)) == [
            (i, f"u{i % 7}") for i in range(n)]
        assert sum(1 for box in inboxes if box.messages) == len(members)
