"""Provenance chains as OpenTelemetry traces: one trace per record, one span per hop.

Shape of a record's trace:

* the **trace id** is derived from ``(streamId, recordId, replayId)`` (stable: exporting the same
  window twice gives the same ids, so a collector deduplicates), unless the record was ingested
  over HTTP with a ``traceparent`` header: then the record's trace is the client's trace and
  its hop-0 span is a child of the client's span;
* **hop 0** (the source) is the root span, from hop 0's timestamp to the chain's last one:
  the record's whole journey;
* **hop i > 0** is a child of hop i-1's span, from hop i-1's timestamp to hop i's: the time
  the per-hop latency of a replay report measures, attributed to the node that stamped hop i;
* every span's **resource** is its node (``service.instance.id`` and ``streamprov.node_id``),
  so tracing tools group spans by node; the clock's error bound and the HLC logical counter are
  span attributes (``streamprov.clock.error_ns``, ``streamprov.clock.logical``); the last hop of
  a chain carries the outcome, and a failed chain's last span has status ERROR and the error;
* the branches of a ``flat_map`` are further chains of the same record: they share the hops
  before the split, so the shared spans are emitted once (span ids derive from the trace, the
  hop index, the node and the timestamp) and the trace forks there.

Exports go to any ``SpanExporter``: OTLP over HTTP (``otlp_exporter``), a JSON file in the
OTLP/JSON encoding (``JsonFileSpanExporter``, one ``ExportTraceServiceRequest`` per line, as the
OpenTelemetry Collector's file exporter writes), or the SDK's in-memory exporter in tests.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from streamprov.errors import InvalidInput, StoreError
from streamprov.model import Chain, Outcome

if TYPE_CHECKING:
    from streamprov.app import App

SCOPE = InstrumentationScope("streamprov.provenance", "0.1.0")
BATCH_SPANS = 2048
"""Spans handed to the exporter per call (one OTLP request, one line of a JSON file)."""

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")


def _digest(*parts: object, size: int) -> int:
    h = hashlib.blake2b("\x00".join(str(p) for p in parts).encode(), digest_size=size)
    return int.from_bytes(h.digest(), "big") or 1  # 0 is the invalid id


def trace_id_for(stream_id: str, record_id: int, replay_id: str = "") -> int:
    """The 128-bit trace id of a record's provenance (stable across exports)."""
    return _digest("streamprov", stream_id, record_id, replay_id, size=16)


def parse_traceparent(value: str, field: str = "traceparent") -> SpanContext:
    """A W3C ``traceparent`` header as a remote span context; ``InvalidInput`` naming
    ``field`` when it is malformed (version ff, all-zero ids)."""
    m = _TRACEPARENT.match(value.strip().lower())
    if not m or m.group(1) == "ff" or set(m.group(2)) == {"0"} or set(m.group(3)) == {"0"}:
        raise InvalidInput(f"{field}: {value!r} is not a W3C traceparent "
                           "(00-<32 hex trace id>-<16 hex span id>-<2 hex flags>)", field=field)
    return SpanContext(int(m.group(2), 16), int(m.group(3), 16), is_remote=True,
                       trace_flags=TraceFlags(int(m.group(4), 16)))


def format_traceparent(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _stage(node_id: str) -> str:
    parts = node_id.split("/")
    return parts[1] if len(parts) >= 3 else node_id


class _Resources:
    """One ``Resource`` per node id (built once per export)."""

    def __init__(self) -> None:
        self._by_node: dict[str, Resource] = {}

    def get(self, node_id: str) -> Resource:
        r = self._by_node.get(node_id)
        if r is None:
            pipeline = node_id.split("/", 1)[0].split("~", 1)[0]
            r = Resource.create({"service.name": f"streamprov/{pipeline}",
                                 "service.instance.id": node_id,
                                 "streamprov.node_id": node_id,
                                 "streamprov.stage": _stage(node_id)})
            self._by_node[node_id] = r
        return r


def chain_spans(chain: Chain, *, parent: SpanContext | None = None,
                resources: _Resources | None = None) -> list[ReadableSpan]:
    """The spans of one chain, hop 0 first (see the module docstring for their shape)."""
    resources = resources or _Resources()
    trace_id = parent.trace_id if parent is not None else trace_id_for(
        chain.stream_id, chain.record_id, chain.replay_id)
    flags = TraceFlags(TraceFlags.SAMPLED)
    spans: list[ReadableSpan] = []
    prev_ctx = parent
    hops = chain.hops
    last = len(hops) - 1
    for i, hop in enumerate(hops):
        ctx = SpanContext(trace_id, _digest(trace_id, i, hop.node_id, hop.timestamp_ns, size=8),
                          is_remote=False, trace_flags=flags)
        start = hops[i - 1].timestamp_ns if i else hop.timestamp_ns
        end = hop.timestamp_ns if i else hops[-1].timestamp_ns
        attrs: dict[str, Any] = {
            "streamprov.stream_id": chain.stream_id, "streamprov.record_id": chain.record_id,
            "streamprov.hop": i, "streamprov.node_id": hop.node_id,
            "streamprov.timestamp_ns": hop.timestamp_ns,
            "streamprov.clock.error_ns": hop.error_ns, "streamprov.clock.logical": hop.logical,
        }
        if chain.branch:
            attrs["streamprov.branch"] = chain.branch
        if chain.replay_id:
            attrs["streamprov.replay_id"] = chain.replay_id
        status = Status(StatusCode.UNSET)
        if i == last:
            attrs["streamprov.outcome"] = chain.outcome.value
            if chain.outcome is Outcome.FAILED:
                status = Status(StatusCode.ERROR, chain.error or "failed")
                if chain.error:
                    attrs["streamprov.error"] = chain.error
        spans.append(ReadableSpan(
            name=_stage(hop.node_id), context=ctx, parent=prev_ctx,
            resource=resources.get(hop.node_id), attributes=attrs,
            kind=SpanKind.CONSUMER if i else SpanKind.PRODUCER, status=status,
            start_time=start, end_time=end, instrumentation_scope=SCOPE))
        prev_ctx = ctx
    return spans


def chains_spans(chains: Iterable[Chain],
                 parents: Mapping[int, SpanContext] | None = None) -> Iterator[ReadableSpan]:
    """Spans of many chains, each shared hop of a record's branches once. ``parents`` maps
    record ids to the client span they were ingested under (``traceparent``)."""
    resources = _Resources()
    seen: set[tuple[int, int]] = set()
    current: tuple[str, int, str] | None = None
    for chain in chains:
        key = (chain.stream_id, chain.record_id, chain.replay_id)
        if key != current:
            seen.clear()
            current = key
        parent = parents.get(chain.record_id) if parents else None
        for span in chain_spans(chain, parent=parent, resources=resources):
            ctx = span.get_span_context()
            assert ctx is not None
            ident = (ctx.trace_id, ctx.span_id)
            if ident not in seen:
                seen.add(ident)
                yield span


@dataclass(frozen=True, slots=True)
class ExportSummary:
    chains: int
    traces: int
    spans: int
    batches: int


def export_chains(chains: Iterable[Chain], exporter: SpanExporter, *,
                  parents: Mapping[int, SpanContext] | None = None,
                  batch_spans: int = BATCH_SPANS) -> ExportSummary:
    """Export the chains' spans in batches; ``StoreError`` when the exporter fails a batch."""
    n_chains = 0
    traces: set[int] = set()
    spans = 0
    batches = 0
    batch: list[ReadableSpan] = []

    def flush() -> None:
        nonlocal batches
        if not batch:
            return
        if exporter.export(batch) is not SpanExportResult.SUCCESS:
            raise StoreError(f"the span exporter refused a batch of {len(batch)} spans "
                             "(see the log for the collector's answer)")
        batches += 1
        batch.clear()

    def each() -> Iterator[Chain]:
        nonlocal n_chains
        for c in chains:
            n_chains += 1
            yield c

    for span in chains_spans(each(), parents):
        ctx = span.get_span_context()
        assert ctx is not None
        traces.add(ctx.trace_id)
        batch.append(span)
        spans += 1
        if len(batch) >= batch_spans:
            flush()
    flush()
    return ExportSummary(n_chains, len(traces), spans, batches)


def export_window(application: App, stream_id: str, start_ns: int, end_ns: int,
                  exporter: SpanExporter, *, replay_id: str = "",
                  batch_spans: int = BATCH_SPANS) -> ExportSummary:
    """Export every chain of the window ``[start_ns, end_ns)`` (by hop-0 time) of a stream, or
    of one of its replays, in the original order. Records ingested with a ``traceparent``
    join their client's trace (see ``streamprov.observe.propagation``)."""
    from streamprov.app import check_window
    from streamprov.observe.propagation import TraceparentLog

    check_window(start_ns, end_ns)
    parents = {} if replay_id else TraceparentLog.for_app(application).parents(stream_id)
    with application.provenance() as store:
        application.require_stream(store, stream_id)

        def chains() -> Iterator[Chain]:
            for chunk in store.iter_window(stream_id, start_ns, end_ns, replay_id=replay_id):
                yield from chunk

        return export_chains(chains(), exporter, parents=parents, batch_spans=batch_spans)


# -- OTLP/JSON ---------------------------------------------------------------------------------
def _any_value(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, Sequence) and not isinstance(v, str | bytes):
        return {"arrayValue": {"values": [_any_value(x) for x in v]}}
    return {"stringValue": str(v)}


def _attributes(attrs: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [{"key": k, "value": _any_value(v)} for k, v in (attrs or {}).items()]


_KIND = {SpanKind.INTERNAL: 1, SpanKind.SERVER: 2, SpanKind.CLIENT: 3, SpanKind.PRODUCER: 4,
         SpanKind.CONSUMER: 5}
_STATUS = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}


def otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """An OTLP/JSON ``ExportTraceServiceRequest`` of the spans (ids as hex, int64 as strings),
    grouped by resource and scope as the OTLP protobuf encoding groups them."""
    by_resource: dict[int, tuple[Resource, dict[str, tuple[InstrumentationScope, list[Any]]]]]
    by_resource = {}
    for s in spans:
        res = s.resource
        scope = s.instrumentation_scope or SCOPE
        entry = by_resource.setdefault(id(res), (res, {}))
        scoped = entry[1].setdefault(f"{scope.name}\x00{scope.version}", (scope, []))
        ctx = s.get_span_context()
        assert ctx is not None
        span: dict[str, Any] = {
            "traceId": f"{ctx.trace_id:032x}", "spanId": f"{ctx.span_id:016x}",
            "name": s.name, "kind": _KIND.get(s.kind, 1),
            "startTimeUnixNano": str(s.start_time), "endTimeUnixNano": str(s.end_time),
            "attributes": _attributes(s.attributes), "flags": int(ctx.trace_flags),
            "status": {"code": _STATUS[s.status.status_code]},
        }
        if s.status.description:
            span["status"]["message"] = s.status.description
        if s.parent is not None:
            span["parentSpanId"] = f"{s.parent.span_id:016x}"
        scoped[1].append(span)
    return {"resourceSpans": [
        {"resource": {"attributes": _attributes(res.attributes)},
         "scopeSpans": [{"scope": {"name": sc.name, "version": sc.version or ""},
                         "spans": items} for sc, items in scopes.values()]}
        for res, scopes in by_resource.values()
    ]}


class JsonFileSpanExporter(SpanExporter):
    """Writes each export as one line of OTLP/JSON (``ExportTraceServiceRequest``) to a file,
    the format of the OpenTelemetry Collector's file exporter and ``otlpjsonfile`` receiver."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self._fh: IO[bytes] | None = open(self.path, "wb")  # noqa: SIM115 (closed by shutdown)
        except OSError as exc:
            raise InvalidInput(f"--file: cannot write {self.path}: {exc.strerror}",
                               field="file") from None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self._lock:
            if self._fh is None:
                return SpanExportResult.FAILURE
            self._fh.write(orjson.dumps(otlp_json(spans)) + b"\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        with self._lock:
            if self._fh is not None:
                self._fh.flush()
        return True


def otlp_exporter(endpoint: str, *, timeout_s: float = 10.0) -> SpanExporter:
    """OTLP over HTTP (protobuf) to a collector: ``endpoint`` is the full traces URL
    (``http://collector:4318/v1/traces``); a bare ``http://host:port`` gets ``/v1/traces``."""
    from urllib.parse import urlsplit

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidInput(f"--otlp: {endpoint!r} is not an http(s) URL of an OTLP collector",
                           field="otlp")
    if parts.path in ("", "/"):
        endpoint = endpoint.rstrip("/") + "/v1/traces"
    return OTLPSpanExporter(endpoint=endpoint, timeout=timeout_s)


@dataclass(frozen=True, slots=True)
class FileSpan:
    """A span read back from an OTLP/JSON file, flattened with its resource attributes."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    status_code: int


def _value(v: dict[str, Any]) -> Any:
    if "intValue" in v:
        return int(v["intValue"])
    if "arrayValue" in v:
        return [_value(x) for x in v["arrayValue"].get("values", [])]
    for key in ("stringValue", "boolValue", "doubleValue"):
        if key in v:
            return v[key]
    return None


def read_trace_file(path: str | Path) -> list[FileSpan]:
    """Every span of an OTLP/JSON file (one ``ExportTraceServiceRequest`` per line)."""
    out: list[FileSpan] = []
    for lineno, line in enumerate(Path(path).read_bytes().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(f"{path} line {lineno}: not JSON: {exc}", field="file") from None
        for rs in doc.get("resourceSpans", []):
            res = {a["key"]: _value(a["value"])
                   for a in rs.get("resource", {}).get("attributes", [])}
            for ss in rs.get("scopeSpans", []):
                for s in ss.get("spans", []):
                    out.append(FileSpan(
                        s["traceId"], s["spanId"], s.get("parentSpanId") or None, s["name"],
                        int(s["startTimeUnixNano"]), int(s["endTimeUnixNano"]),
                        {a["key"]: _value(a["value"]) for a in s.get("attributes", [])},
                        res, int(s.get("status", {}).get("code", 0))))
    return out
