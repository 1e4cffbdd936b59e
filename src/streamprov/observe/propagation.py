"""W3C trace context for records ingested over HTTP: ``POST /streams/{s}/records`` with a
``traceparent`` header puts the ingested records' provenance traces under the client's span.

The stores' schemas have no column for it (and need none: one header covers a whole ingest), so
the association is kept beside them, in ``observe/traceparents.jsonl`` in the data dir: one line
``{streamId, firstRecordId, lastRecordId, traceparent}`` per ingest. The record ids of an ingest
are the stream log's new ids (the served pipeline has one source, so they are consecutive); if
another ingest of the same stream interleaved (the count does not match), the association is
not recorded rather than guessed, and the answer says so.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from opentelemetry.trace import SpanContext

from streamprov.errors import StoreError, StreamprovError
from streamprov.observe.traces import format_traceparent, parse_traceparent

if TYPE_CHECKING:
    from streamprov.app import App, RunSummary
    from streamprov.runtime import Pipeline


@dataclass(slots=True)
class TraceparentLog:
    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def for_app(cls, application: App) -> TraceparentLog:
        return cls(application.settings.data_dir / "observe" / "traceparents.jsonl")

    def append(self, stream_id: str, first: int, last: int, ctx: SpanContext) -> None:
        line = orjson.dumps({"streamId": stream_id, "firstRecordId": first,
                             "lastRecordId": last, "traceparent": format_traceparent(ctx)})
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "ab") as fh:
                    fh.write(line + b"\n")
            except OSError as exc:
                raise StoreError(f"cannot append to {self.path}: {exc}") from exc

    def parents(self, stream_id: str) -> dict[int, SpanContext]:
        """Record id -> the client span it was ingested under, for one stream."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}
        out: dict[int, SpanContext] = {}
        for line in raw.splitlines():
            try:
                doc = orjson.loads(line)
                if doc["streamId"] != stream_id:
                    continue
                ctx = parse_traceparent(doc["traceparent"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            except StreamprovError:  # a malformed traceparent in a hand-edited line
                continue
            for rid in range(int(doc["firstRecordId"]), int(doc["lastRecordId"]) + 1):
                out[rid] = ctx
        return out


def ingest_traced(application: App, stream_id: str, pipeline: Pipeline, payloads: list[Any],
                  key_field: str | None, traceparent: SpanContext | None
                  ) -> tuple[RunSummary, dict[str, Any]]:
    """``ingest_records``, and with a ``traceparent`` the association of the new record ids
    with it. Returns the summary and what to add to the answer."""
    from streamprov.app import ingest_records

    if traceparent is None:
        return ingest_records(application, stream_id, pipeline, payloads, key_field), {}
    before = _next_id(application, stream_id)
    summary = ingest_records(application, stream_id, pipeline, payloads, key_field)
    after = _next_id(application, stream_id)
    n = summary.result.ingested
    extra: dict[str, Any] = {"traceparent": format_traceparent(traceparent)}
    if n and after - before == n:
        TraceparentLog.for_app(application).append(stream_id, before, after - 1, traceparent)
        extra["traced"] = {"firstRecordId": before, "lastRecordId": after - 1}
    else:
        extra["traced"] = None
        extra["traceNote"] = ("another ingest of this stream interleaved; the records were not "
                              "associated with the traceparent")
    return summary, extra


def _next_id(application: App, stream_id: str) -> int:
    application.settings.ensure_data_dir()
    with application.stream_log(read_only=False) as log:
        return log.next_record_id(stream_id)


__all__ = ["TraceparentLog", "ingest_traced", "parse_traceparent"]
