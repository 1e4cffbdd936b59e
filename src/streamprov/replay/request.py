"""A replay request as a plain, validated value, and the states a replay goes through."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from streamprov.errors import InvalidInput
from streamprov.model import format_time_ns, parse_time_ns, validate_id

MAX_SPEED = 1000.0
"""Faster than this is refused: gaps would shrink below what pacing can resolve."""


class ReplayState(enum.StrEnum):
    PENDING = "pending"
    PROVISIONING = "provisioning"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (ReplayState.COMPLETED, ReplayState.FAILED, ReplayState.CANCELLED)


class OutputSink(enum.StrEnum):
    """Where replayed records go: nowhere (``null``, default) or back to the engine."""

    NULL = "null"
    CAPTURE = "capture"


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """``(stream, [start, end), configuration, speed)``: what to replay, on what, how fast."""

    stream_id: str
    start_ns: int
    end_ns: int
    configuration_id: str
    speed: float = 1.0
    sink: OutputSink = OutputSink.NULL

    @classmethod
    def parse(cls, stream_id: str, start: str | int, end: str | int, configuration_id: str,
              speed: Any, sink: str = "null") -> ReplayRequest:
        """Validate user input; ``InvalidInput`` names the API field that is wrong."""
        validate_id(stream_id, "streamId")
        start_ns = parse_time_ns(start, "startTime")
        end_ns = parse_time_ns(end, "endTime")
        if start_ns >= end_ns:
            raise InvalidInput("startTime must be before endTime", field="startTime")
        validate_id(configuration_id, "configurationId")
        return cls(stream_id, start_ns, end_ns, configuration_id, check_speed(speed),
                   parse_sink(sink))

    def to_json(self) -> dict[str, Any]:
        return {
            "streamId": self.stream_id, "startTime": format_time_ns(self.start_ns),
            "endTime": format_time_ns(self.end_ns), "startNs": self.start_ns,
            "endNs": self.end_ns, "configurationId": self.configuration_id,
            "replaySpeed": self.speed, "sink": self.sink.value,
        }


def check_speed(speed: Any, field: str = "replaySpeed") -> float:
    if isinstance(speed, bool) or not isinstance(speed, int | float | str):
        raise InvalidInput(f"{field} must be a number", field=field)
    try:
        value = float(speed)
    except ValueError:
        raise InvalidInput(f"{field} must be a number, got {speed!r}", field=field) from None
    if math.isnan(value) or math.isinf(value):
        raise InvalidInput(f"{field} must be a finite number", field=field)
    if value <= 0:
        raise InvalidInput(f"{field} must be positive (1.0 is real time)", field=field)
    if value > MAX_SPEED:
        raise InvalidInput(f"{field} {value:g} is more than {MAX_SPEED:g}", field=field)
    return value


def parse_sink(sink: str) -> OutputSink:
    try:
        return OutputSink(sink)
    except ValueError:
        raise InvalidInput(f"sink must be one of {', '.join(s.value for s in OutputSink)}",
                           field="sink") from None
