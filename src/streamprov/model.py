"""Plain values shared by every layer: records, hops, chains, outcomes, ids and times.

Timestamps are integers in nanoseconds since the Unix epoch (``_ns`` suffix everywhere).
In every JSON form a chain has the specification's shape::

    "provenance": [{"nodeId": "<string>", "timestamp": <int ns>, "logical": 0, "errorNs": 0}, ...]
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from streamprov.errors import InvalidInput

JSONValue = Any
"""A JSON-compatible value (dict, list, str, int, float, bool, None)."""

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""Ids, matched whole (``fullmatch``: a ``$`` would let a trailing newline through)."""


class Outcome(enum.StrEnum):
    """How a record's path ended: at a sink, dropped by a filter, or failed with an error."""

    DELIVERED = "delivered"
    DROPPED = "dropped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Hop:
    """One processing step of a record: which node, and when (HLC stamp)."""

    node_id: str
    timestamp_ns: int
    logical: int = 0
    error_ns: int = 0

    def to_json(self) -> dict[str, JSONValue]:
        return {
            "nodeId": self.node_id,
            "timestamp": self.timestamp_ns,
            "logical": self.logical,
            "errorNs": self.error_ns,
        }


@dataclass(frozen=True, slots=True)
class Chain:
    """A record's complete provenance chain as stored, with how its path ended."""

    stream_id: str
    record_id: int
    hops: tuple[Hop, ...]
    outcome: Outcome
    branch: int = 0
    replay_id: str = ""
    error: str | None = None

    @property
    def origin_ns(self) -> int:
        """Hop-0 timestamp: when the record entered the pipeline."""
        return self.hops[0].timestamp_ns

    @property
    def latency_ns(self) -> int:
        """End-to-end latency: last hop minus hop 0."""
        return self.hops[-1].timestamp_ns - self.hops[0].timestamp_ns

    def to_json(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {
            "streamId": self.stream_id,
            "recordId": self.record_id,
            "outcome": self.outcome.value,
            "provenance": [h.to_json() for h in self.hops],
        }
        if self.branch:
            out["branch"] = self.branch
        if self.replay_id:
            out["replayId"] = self.replay_id
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(slots=True)
class Record:
    """A record as a user sees it: ids, optional key, JSON payload and its provenance so far."""

    stream_id: str
    record_id: int
    payload: JSONValue
    key: JSONValue = None
    provenance: list[Hop] = field(default_factory=list)

    def to_json(self) -> dict[str, JSONValue]:
        out: dict[str, JSONValue] = {
            "streamId": self.stream_id,
            "recordId": self.record_id,
            "payload": self.payload,
            "provenance": [h.to_json() for h in self.provenance],
        }
        if self.key is not None:
            out["key"] = self.key
        return out


def validate_id(value: str, field_name: str) -> str:
    """Check a stream, pipeline or configuration id: 1-128 of ``[A-Za-z0-9._-]``."""
    if not isinstance(value, str) or not _ID_RE.fullmatch(value):
        raise InvalidInput(
            f"{field_name} {value!r} is not a valid id: use 1-128 characters of "
            "letters, digits, '.', '_' or '-', starting with a letter or digit",
            field=field_name,
        )
    return value


_RFC3339_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?"
    r"(Z|z|[+-]\d{2}:\d{2})$"
)


def parse_time_ns(value: str | int, field_name: str = "time") -> int:
    """Parse a time given as int ns since the epoch or RFC 3339 with up to 9 fractional digits.

    Raises ``InvalidInput`` naming ``field_name`` for anything else.
    """
    if isinstance(value, bool):
        raise InvalidInput(f"{field_name}: expected a time, got a boolean", field=field_name)
    if isinstance(value, int):
        if value < 0:
            raise InvalidInput(f"{field_name}: time must not be negative", field=field_name)
        return value
    text = str(value).strip()
    if re.fullmatch(r"\d{1,19}", text):
        return int(text)
    m = _RFC3339_RE.match(text)
    if not m:
        raise InvalidInput(
            f"{field_name}: {value!r} is not a time; give int nanoseconds since the epoch "
            "or RFC 3339 such as 2026-01-31T12:00:00.123456789Z",
            field=field_name,
        )
    year, month, day, hour, minute, second, frac, tz = m.groups()
    try:
        tzpart = "+00:00" if tz in ("Z", "z") else tz
        dt = datetime.fromisoformat(
            f"{year}-{month}-{day}T{hour}:{minute}:{second}{tzpart}"
        )
    except ValueError as exc:
        raise InvalidInput(f"{field_name}: {value!r}: {exc}", field=field_name) from exc
    seconds = int(dt.timestamp())
    frac_ns = int((frac or "").ljust(9, "0")) if frac else 0
    total = seconds * 1_000_000_000 + frac_ns
    if total < 0:
        raise InvalidInput(f"{field_name}: time before 1970 is not supported", field=field_name)
    return total


def format_time_ns(ts_ns: int) -> str:
    """Format ns since the epoch as RFC 3339 UTC with 9 fractional digits."""
    seconds, frac = divmod(ts_ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{base}.{frac:09d}Z"
