"""Fakes and fixtures for tests of streamprov and of pipelines built on it.

Everything here is picklable and defined at module level, so it works in worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from streamprov.runtime.sources import SourceChunk

if TYPE_CHECKING:
    from streamprov.app import Settings


@dataclass(frozen=True, slots=True)
class ScriptedSource:
    """Yields the given payloads (split among instances round-robin), then ends."""

    payloads: tuple[Any, ...]
    keys: tuple[Any, ...] | None = None

    @property
    def max_instances(self) -> int | None:
        return None

    def read(self, index: int, count: int, batch_size: int) -> Iterator[SourceChunk]:
        mine = list(range(index, len(self.payloads), count))
        for start in range(0, len(mine), batch_size):
            part = mine[start : start + batch_size]
            yield SourceChunk([self.payloads[i] for i in part],
                              None if self.keys is None else [self.keys[i] for i in part])


def fail_on_odd_seq(payload: dict[str, Any]) -> dict[str, Any]:
    """A map that raises for every record whose ``seq`` is odd and a multiple of 7."""
    if payload["seq"] % 14 == 7:
        raise ValueError(f"cannot handle seq {payload['seq']}")
    return payload


def identity(payload: Any) -> Any:
    return payload


def explode(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """0, 1 or 2 outputs per record depending on ``seq % 3``."""
    return [dict(payload, part=k) for k in range(payload["seq"] % 3)]


def user_key(payload: dict[str, Any]) -> Any:
    return payload["user"]


def kill_nodes(deployment: Any, kills: int, *, seed: int = 0, progress: int = 500,
               killed: list[str] | None = None) -> list[str]:
    """Fault injection: SIGKILL a random node process of ``deployment`` ``kills`` times, each
    once ``progress`` more records were ingested after the previous restart, at a random
    moment within 0.3 s. Returns (and appends to ``killed``) the roles killed, in order."""
    import os
    import random
    import signal
    import time

    rng = random.Random(seed)
    done = killed if killed is not None else []
    for k in range(kills):
        mark = deployment.ingested()
        deadline = time.monotonic() + 60
        while deployment.ingested() < mark + progress and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        pids = deployment.pids()
        if not pids or deployment.finished:
            break
        role = rng.choice(sorted(pids))
        try:
            os.kill(pids[role], signal.SIGKILL)
        except ProcessLookupError:
            continue
        done.append(role)
        deadline = time.monotonic() + 60
        while (len(deployment.recoveries) <= k and time.monotonic() < deadline
               and not deployment.finished):
            time.sleep(0.02)
    return done


PASSTHROUGH_STREAM = "bench"
PASSTHROUGH_PIPELINE = "streamprov.examples.passthrough:pipeline"
PASSTHROUGH_NODES = ("passthrough/source/0", "passthrough/pass/0", "passthrough/sink/0")


def fill_passthrough_window(settings: Settings, records: int, gap_ns: int, t0_ns: int, *,
                            chunk: int = 200_000) -> tuple[int, int]:
    """Write ``records`` complete chains of the passthrough example (three hops, stream
    ``PASSTHROUGH_STREAM``), hop 0 ``gap_ns`` apart from ``t0_ns``, and their payloads, straight
    through the store protocol: a window to replay without running a pipeline first. Returns
    the window [first, last + 1)."""
    import numpy as np
    import orjson
    import pyarrow as pa

    from streamprov.store import (
        PROVENANCE_SCHEMA,
        STREAM_LOG_SCHEMA,
        open_provenance_store,
        open_stream_log,
    )

    stream, nodes = PASSTHROUGH_STREAM, PASSTHROUGH_NODES
    store = open_provenance_store(settings.provenance_url)
    log = open_stream_log(settings.stream_log_url)
    try:
        for lo in range(0, records, chunk):
            n = min(chunk, records - lo)
            rid = np.arange(lo, lo + n, dtype=np.int64)
            ts0 = t0_ns + rid * gap_ns
            hops = len(nodes)
            payloads = [orjson.dumps({"user": f"u{i % 1000}", "amount": i % 97, "seq": i}
                                     ).decode() for i in range(lo, lo + n)]
            log.append(pa.table({
                "stream_id": pa.array([stream] * n), "record_id": rid, "ingest_ts_ns": ts0,
                "key": pa.array([f'"u{i % 1000}"' for i in range(lo, lo + n)]),
                "payload": pa.array(payloads)}, schema=STREAM_LOG_SCHEMA))
            cols: dict[str, Any] = {
                "stream_id": pa.array([stream] * (n * hops)),
                "record_id": np.tile(rid, hops), "branch": np.zeros(n * hops, np.int64),
                "replay_id": pa.array([""] * (n * hops)),
                "hop": np.repeat(np.arange(hops, dtype=np.int16), n),
                "hops": np.full(n * hops, hops, np.int16),
                "node_id": pa.array(np.repeat(np.array(nodes), n).tolist()),
                "ts_ns": np.concatenate([ts0 + h * 50_000 for h in range(hops)]),
                "logical": np.zeros(n * hops, np.int64), "error_ns": np.zeros(n * hops, np.int64),
                "origin_ts_ns": np.tile(ts0, hops), "origin_logical": np.zeros(n * hops, np.int64),
                "origin_node": pa.array([nodes[0]] * (n * hops)),
                "outcome": pa.array(["delivered"] * (n * hops)),
                "error": pa.nulls(n * hops, pa.string()),
            }
            store.write(pa.table(cols, schema=PROVENANCE_SCHEMA))
    finally:
        store.close()
        log.close()
    return t0_ns, t0_ns + (records - 1) * gap_ns + 1
