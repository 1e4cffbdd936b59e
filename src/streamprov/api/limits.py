"""How much one request may ask for: records per ingest, bytes per record, length of a replay
window. Every check runs before anything is stored or started, and its error names the field
and the limit (``TooLarge`` is the API's 413; a window too long is a 400).

The limits come from ``[serve]`` in ``streamprov.toml`` (``ServeSection``); the body as a whole
is bounded earlier, by ``errors.BodyLimit``.
"""

from __future__ import annotations

from typing import Any

import orjson

from streamprov.config import ServeSection
from streamprov.errors import InvalidInput, TooLarge


def parse_records(body: bytes, content_type: str, limits: ServeSection) -> list[Any]:
    """The records of an ingest body: JSON (a value or an array of values) or NDJSON (one
    value a line). Errors name the body and the line or the record's index."""
    if "ndjson" in content_type or "jsonl" in content_type:
        return _parse_lines(body, limits)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"body: invalid JSON: {exc}", field="body") from None
    records = doc if isinstance(doc, list) else [doc]
    _check_count(len(records), limits)
    for index, record in enumerate(records):
        _check_size(len(orjson.dumps(record)), f"body[{index}]", limits)
    return records


def _parse_lines(body: bytes, limits: ServeSection) -> list[Any]:
    out: list[Any] = []
    for lineno, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        _check_count(len(out) + 1, limits)
        _check_size(len(line), f"body line {lineno}", limits)
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"body line {lineno}: invalid JSON: {exc}",
                               field="body") from None
    return out


def _check_count(count: int, limits: ServeSection) -> None:
    if count > limits.max_records_per_request:
        raise TooLarge(f"body: more than {limits.max_records_per_request:,} records in one "
                       "request (max_records_per_request); send them in several",
                       field="body")


def _check_size(size: int, where: str, limits: ServeSection) -> None:
    if size > limits.max_record_bytes:
        raise TooLarge(f"{where}: the record has {size:,} bytes, more than the limit of "
                       f"{limits.max_record_bytes:,} bytes per record (max_record_bytes)",
                       field="body")


def check_window(start_ns: int, end_ns: int, limits: ServeSection,
                 field: str = "endTime") -> None:
    """Refuse a replay or tuning window longer than ``max_replay_window_s``."""
    span_s = (end_ns - start_ns) / 1e9
    if span_s > limits.max_replay_window_s:
        raise InvalidInput(
            f"{field}: the window [startTime, endTime) spans {_duration(span_s)}, more than "
            f"the limit of {_duration(limits.max_replay_window_s)} (max_replay_window_s); "
            "replay it in parts", field=field)


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.4g} {unit}"
    return f"{seconds:.4g} s"
