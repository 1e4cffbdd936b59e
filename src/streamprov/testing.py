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
