"""Chain batches as provenance rows: every chain comes back whole, whatever paths they took."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamprov.model import Chain, Outcome
from streamprov.runtime.batch import ChainBatch, HopColumn
from streamprov.runtime.rows import ChainRowBuilder
from streamprov.store.base import PROVENANCE_SCHEMA
from streamprov.store.rows import ChainAssembler


def chain_batch(first_id: int, n: int, nodes: list[str], outcome: Outcome, *,
                replay: str = "", errors: bool = False, branched: bool = False) -> ChainBatch:
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    hops = [HopColumn(node, 1_000_000 * (k + 1) + ids * 10, ids % 3 + k, error_ns=7 * k)
            for k, node in enumerate(nodes)]
    return ChainBatch("s", ids, hops, outcome,
                      branches=(ids % 2) * 5 if branched else None,
                      errors=[f"boom {i}" for i in ids.tolist()] if errors else None,
                      replay_id=replay)


def as_chains(table: pa.Table) -> list[Chain]:
    plain = pa.table({name: table.column(name).cast(PROVENANCE_SCHEMA.field(name).type)
                      for name in PROVENANCE_SCHEMA.names})
    order = plain.sort_by([("replay_id", "ascending"), ("record_id", "ascending"),
                           ("branch", "ascending"), ("hop", "ascending")])
    return ChainAssembler().feed(order)


def test_chains_of_every_path_come_back_whole() -> None:
    three = ["p/source/0", "p/map/0", "p/sink/0"]
    batches = [
        chain_batch(0, 40, three, Outcome.DELIVERED),
        chain_batch(40, 10, ["p/source/1", "p/map/0", "p/sink/0"], Outcome.DELIVERED),
        chain_batch(50, 30, three, Outcome.DELIVERED, branched=True),  # (same path as the 1st)
        chain_batch(80, 5, ["p/source/0", "p/map/0"], Outcome.FAILED, errors=True),
        chain_batch(85, 6, ["p/source/0"], Outcome.DROPPED),
        chain_batch(0, 12, three, Outcome.DELIVERED, replay="r-1"),
    ]
    builder = ChainRowBuilder()
    for cb in batches:
        builder.add(cb)
    assert builder.chains == 103
    assert builder.rows == sum(len(cb) * len(cb.hops) for cb in batches)

    table = builder.build()

    assert table.num_rows == sum(len(cb) * len(cb.hops) for cb in batches)
    # batches that took one path become rows together: five paths, five chunks
    assert table.column("record_id").num_chunks == 5
    expected = sorted((c for cb in batches for c in cb.chains()),
                      key=lambda c: (c.replay_id, c.record_id, c.branch))
    assert as_chains(table) == expected
    assert {(r["replay_id"], r["record_id"], r["hops"]) for r in table.to_pylist()} == {
        (cb.replay_id, i, len(cb.hops)) for cb in batches for i in cb.record_ids.tolist()}
    hop0 = table.filter(pc.equal(table.column("hop"), 0))
    assert hop0.column("origin_ts_ns").to_pylist() == hop0.column("ts_ns").to_pylist()
    assert hop0.column("origin_logical").to_pylist() == hop0.column("logical").to_pylist()
    # the builder starts over
    assert builder.rows == builder.chains == 0
    assert builder.build().num_rows == 0


def test_a_failure_message_sits_on_the_last_hop_only() -> None:
    builder = ChainRowBuilder()
    builder.add(chain_batch(0, 4, ["p/source/0", "p/map/0"], Outcome.FAILED, errors=True))
    builder.add(chain_batch(4, 3, ["p/source/0", "p/map/0"], Outcome.FAILED, errors=True))
    table = builder.build()
    rows = table.to_pylist()
    assert {r["error"] for r in rows if r["hop"] == 0} == {None}
    assert sorted(r["error"] for r in rows if r["hop"] == 1) == sorted(
        f"boom {i}" for i in range(7))
    for r in rows:
        if r["hop"] == 1:
            assert r["error"] == f"boom {r['record_id']}"
