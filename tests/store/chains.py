"""Building chains and their rows for the store tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson
import pyarrow as pa

from streamprov.model import Chain, Hop, Outcome
from streamprov.store import PROVENANCE_SCHEMA, STREAM_LOG_SCHEMA

SECOND = 1_000_000_000
NODES = ("src-0", "map-1", "sink-0")


def chain(
    record_id: int,
    origin_ns: int,
    *,
    stream_id: str = "s1",
    hops: int = 3,
    outcome: Outcome = Outcome.DELIVERED,
    branch: int = 0,
    replay_id: str = "",
    logical: int = 0,
    origin_node: str = NODES[0],
    step_ns: int = 1_000,
    error: str | None = None,
) -> Chain:
    """A chain of ``hops`` hops, hop 0 at ``origin_ns`` on ``origin_node``."""
    path = [origin_node, *NODES[1:]]
    nodes = [path[i % len(path)] if i < len(path) else f"n-{i}" for i in range(hops)]
    return Chain(
        stream_id=stream_id,
        record_id=record_id,
        hops=tuple(
            Hop(nodes[i], origin_ns + i * step_ns, logical + i if i == 0 else i, 10 * i)
            for i in range(hops)
        ),
        outcome=outcome,
        branch=branch,
        replay_id=replay_id,
        error=error if outcome is Outcome.FAILED else None,
    )


def rows(chains: Iterable[Chain]) -> pa.Table:
    """Chains as ``PROVENANCE_SCHEMA`` rows, one per hop."""
    out: dict[str, list[object]] = {name: [] for name in PROVENANCE_SCHEMA.names}
    for c in chains:
        h0 = c.hops[0]
        for i, hop in enumerate(c.hops):
            values = {
                "stream_id": c.stream_id, "record_id": c.record_id, "branch": c.branch,
                "replay_id": c.replay_id, "hop": i, "hops": len(c.hops), "node_id": hop.node_id,
                "ts_ns": hop.timestamp_ns, "logical": hop.logical, "error_ns": hop.error_ns,
                "origin_ts_ns": h0.timestamp_ns, "origin_logical": h0.logical,
                "origin_node": h0.node_id, "outcome": c.outcome.value,
                "error": c.error if i == len(c.hops) - 1 else None,
            }
            for name, value in values.items():
                out[name].append(value)
    return pa.table(out, schema=PROVENANCE_SCHEMA)


def in_order(chains: Iterable[Chain]) -> list[Chain]:
    """Chains in the original order (hop-0 stamp, node, record id, branch)."""
    return sorted(
        chains,
        key=lambda c: (c.hops[0].timestamp_ns, c.hops[0].logical, c.hops[0].node_id.encode(),
                       c.record_id, c.branch),
    )


def log_rows(
    stream_id: str, record_ids: Sequence[int], *, ingest_ns: Sequence[int] | None = None
) -> pa.Table:
    """Stream-log rows with JSON payloads ``{"n": id}`` (keys on even ids only)."""
    ts = list(ingest_ns) if ingest_ns is not None else [r * SECOND for r in record_ids]
    return pa.table(
        {
            "stream_id": [stream_id] * len(record_ids),
            "record_id": list(record_ids),
            "ingest_ts_ns": ts,
            "key": [orjson.dumps(f"k{r}").decode() if r % 2 == 0 else None for r in record_ids],
            "payload": [orjson.dumps({"n": r}).decode() for r in record_ids],
        },
        schema=STREAM_LOG_SCHEMA,
    )
