"""Fakes and fixtures for tests of streamprov and of pipelines built on it.

Everything here is picklable and defined at module level, so it works in worker processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from streamprov.runtime.sources import SourceChunk


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
