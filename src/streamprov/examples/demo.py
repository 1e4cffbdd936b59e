"""The demo pipeline: card payments from several ingest sources, validated, enriched, scored.

``source`` (K instances) -> ``parse`` (map, 2) -> ``valid`` (filter) -> ``enrich`` (map keyed
by user, 2) -> ``score`` (Arrow batch operator) -> ``sink``: five hops per delivered record.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from streamprov.runtime import NullSink, Pipeline, SyntheticSource

_TIERS = ("bronze", "silver", "gold")


def parse(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "cents": round(payload["amount"] * 100)}


def valid(payload: dict[str, Any]) -> bool:
    """Tiny payments are noise: about 2% of records are dropped here."""
    return bool(payload["cents"] >= 200)


def user_key(payload: dict[str, Any]) -> Any:
    return payload["user"]


def enrich(payload: dict[str, Any]) -> dict[str, Any]:
    user = payload["user"]
    return {**payload, "tier": _TIERS[int(user[1:]) % 3]}


def score(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Vectorized risk score: amount scaled by tier."""
    weight = pc.if_else(pc.equal(batch.column("tier"), "gold"), 0.5, 1.0)
    risk = pc.round(pc.multiply(batch.column("amount"), weight), 2)
    return batch.append_column("risk", risk)


def build(records: int | None = 20_000, sources: int = 2, rate: float | None = 8_000.0,
          seed: int = 7, true_time: bool = False) -> Pipeline:
    """The demo pipeline over ``records`` synthetic payments from ``sources`` sources, each
    emitting ``rate`` records/s (None: as fast as it can, which measures queueing, not
    processing)."""
    # with true times (checking clock skew) records leave every 2 ms, so records of different
    # sources lie close enough together in time for skew to reorder them
    source = SyntheticSource(records=records, rate=rate, keys=500, seed=seed, true_time=true_time,
                             batch_span_s=0.002 if true_time else 0.05)
    p = Pipeline("demo", source=source,
                 sources=sources, description="card payments: parse, validate, enrich, score",
                 ref="streamprov.examples.demo:pipeline")
    return (
        p.map("parse", parse, parallelism=2)
        .filter("valid", valid)
        .map("enrich", enrich, parallelism=2, key=user_key)
        .batch("score", score)
        .sink(NullSink())
    )


pipeline = build()
