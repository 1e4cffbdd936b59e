"""Chains as OpenTelemetry traces: one trace per record, one span per hop with parent links,
node ids as resources; in-memory, through an OTLP/JSON file, over OTLP/HTTP, and from the
CLI; traceparent of records ingested over HTTP."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from opentelemetry.util.types import AttributeValue

from streamprov.api import create_app
from streamprov.app import App, Settings, replay_engine
from streamprov.cli import main
from streamprov.errors import InvalidInput
from streamprov.model import Chain, Hop, Outcome
from streamprov.observe.traces import (
    JsonFileSpanExporter,
    export_chains,
    export_window,
    otlp_exporter,
    parse_traceparent,
    read_trace_file,
    trace_id_for,
)
from tests.observe.demo import Demo
from tests.replay.streams import catalog_for_tests

T0 = 1_800_000_000_000_000_000


def chain(record: int, nodes: list[str], *, branch: int = 0, outcome: Outcome =
          Outcome.DELIVERED, error: str | None = None, step_ns: int = 1000) -> Chain:
    hops = tuple(Hop(n, T0 + record * 10**6 + i * step_ns, logical=i, error_ns=100 * i)
                 for i, n in enumerate(nodes))
    return Chain("s", record, hops, outcome, branch=branch, error=error)


def attrs(span: ReadableSpan) -> Mapping[str, AttributeValue]:
    """A finished span's attributes (the SDK always sets them; the API type allows None)."""
    assert span.attributes is not None
    return span.attributes


def node_id_of(span: ReadableSpan) -> str:
    """The ``streamprov.node_id`` resource attribute of a span."""
    node_id = span.resource.attributes["streamprov.node_id"]
    assert isinstance(node_id, str)
    return node_id


def test_one_trace_per_record_one_span_per_hop_with_parent_links() -> None:
    exporter = InMemorySpanExporter()
    chains = [chain(1, ["p/source/0", "p/parse/0", "p/sink/0"]),
              chain(2, ["p/source/1", "p/parse/1"], outcome=Outcome.FAILED, error="boom")]
    summary = export_chains(chains, exporter)
    assert (summary.chains, summary.traces, summary.spans) == (2, 2, 5)
    spans = exporter.get_finished_spans()
    by_trace: dict[int, list[Any]] = {}
    for s in spans:
        by_trace.setdefault(s.context.trace_id, []).append(s)
    assert set(by_trace) == {trace_id_for("s", 1), trace_id_for("s", 2)}
    first = by_trace[trace_id_for("s", 1)]
    assert [s.name for s in first] == ["source", "parse", "sink"]
    assert first[0].parent is None
    assert first[1].parent.span_id == first[0].context.span_id
    assert first[2].parent.span_id == first[1].context.span_id
    # hop 0 spans the whole journey; hop i from hop i-1's stamp to its own
    hops = chains[0].hops
    assert (first[0].start_time, first[0].end_time) == (hops[0].timestamp_ns,
                                                         hops[2].timestamp_ns)
    assert (first[2].start_time, first[2].end_time) == (hops[1].timestamp_ns,
                                                         hops[2].timestamp_ns)
    assert first[1].resource.attributes["service.instance.id"] == "p/parse/0"
    assert first[1].resource.attributes["streamprov.node_id"] == "p/parse/0"
    assert first[2].attributes["streamprov.clock.error_ns"] == 200
    assert first[2].attributes["streamprov.clock.logical"] == 2
    assert first[2].attributes["streamprov.outcome"] == "delivered"
    failed = by_trace[trace_id_for("s", 2)][-1]
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["streamprov.error"] == "boom"


def test_branches_share_the_spans_before_the_split() -> None:
    exporter = InMemorySpanExporter()
    main_chain = chain(7, ["p/source/0", "p/split/0", "p/sink/0"])
    other = Chain("s", 7, (*main_chain.hops[:2], Hop("p/sink/1", main_chain.hops[2]
                                                      .timestamp_ns + 5)), Outcome.DELIVERED,
                  branch=99)
    summary = export_chains([main_chain, other], exporter)
    assert (summary.traces, summary.spans) == (1, 4)
    spans = exporter.get_finished_spans()
    split = next(s for s in spans if s.name == "split")
    sinks = [s for s in spans if s.name == "sink"]
    assert len(sinks) == 2 and all(
        s.parent is not None and s.parent.span_id == split.context.span_id for s in sinks)


def test_file_round_trip(tmp_path: Path) -> None:
    chains = [chain(r, ["p/source/0", "p/parse/0", "p/sink/0"]) for r in range(5)]
    memory = InMemorySpanExporter()
    export_chains(chains, memory)
    path = tmp_path / "traces.json"
    exporter = JsonFileSpanExporter(path)
    summary = export_chains(chains, exporter, batch_spans=4)
    exporter.shutdown()
    assert summary.batches == 4  # 15 spans in batches of 4: four lines
    assert len(path.read_bytes().splitlines()) == 4
    spans = read_trace_file(path)
    expected = {(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}",
                 f"{s.parent.span_id:016x}" if s.parent else None, s.name, s.start_time,
                 s.end_time) for s in memory.get_finished_spans()}
    assert {(s.trace_id, s.span_id, s.parent_span_id, s.name, s.start_ns, s.end_ns)
            for s in spans} == expected
    parse = next(s for s in spans if s.name == "parse")
    assert parse.resource["service.instance.id"] == "p/parse/0"
    assert parse.attributes["streamprov.clock.error_ns"] == 100
    assert parse.attributes["streamprov.record_id"] in range(5)


def test_demo_window_exports_every_hop(demo: Demo) -> None:
    app = demo.app()
    with app.provenance() as store:
        chains = [c for chunk in store.iter_window("demo", 0, 2**63 - 1) for c in chunk]
    exporter = InMemorySpanExporter()
    summary = export_window(app, "demo", 0, 2**63 - 1, exporter)
    assert summary.chains == len(chains)
    assert summary.traces == len({c.record_id for c in chains})
    assert summary.spans == len(exporter.get_finished_spans())
    assert all(c.branch == 0 for c in chains)  # no flat_map: no shared spans
    assert summary.spans == sum(len(c.hops) for c in chains)
    rid = demo.replays[0]["replayId"]
    with app.provenance() as store:
        n_replayed = sum(len(chunk) for chunk in store.iter_window("demo", 0, 2**63 - 1,
                                                                   replay_id=rid))
    replayed = InMemorySpanExporter()
    s2 = export_window(app, "demo", 0, 2**63 - 1, replayed, replay_id=rid)
    assert s2.chains == n_replayed > 0
    assert all(attrs(s)["streamprov.replay_id"] == rid
               for s in replayed.get_finished_spans())
    assert all("~replay" in node_id_of(s)
               for s in replayed.get_finished_spans())


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[ExportTraceServiceRequest]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()
        self.wfile.write(b"")

    def log_message(self, *args: Any) -> None:
        pass


def test_otlp_http_to_a_collector() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Collector.received = []
    try:
        exporter = otlp_exporter(f"http://127.0.0.1:{server.server_port}")
        summary = export_chains([chain(r, ["p/source/0", "p/sink/0"]) for r in range(3)],
                                exporter)
        exporter.shutdown()
    finally:
        server.shutdown()
        server.server_close()
    spans = [s for req in _Collector.received for rs in req.resource_spans
             for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) == summary.spans == 6
    nodes = {a.value.string_value for req in _Collector.received for rs in req.resource_spans
             for a in rs.resource.attributes if a.key == "streamprov.node_id"}
    assert nodes == {"p/source/0", "p/sink/0"}


def test_otlp_url_is_checked() -> None:
    with pytest.raises(InvalidInput) as exc:
        otlp_exporter("ftp://x")
    assert exc.value.field == "otlp"


def test_traceparent_parsing() -> None:
    ctx = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    assert ctx.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736 and ctx.is_remote
    for bad in ("00-0000000000000000000000000000000-00f067aa0ba902b7-01", "garbage",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"):
        with pytest.raises(InvalidInput) as exc:
            parse_traceparent(bad)
        assert exc.value.field == "traceparent"


def test_cli_export_to_file_and_errors(demo: Demo, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    with pytest.raises(SystemExit) as exc:
        main(["provenance", "export", "demo", "--start", "0", "--end", "now", "--file",
              str(out), "--data-dir", str(demo.data_dir)])
    assert exc.value.code == 0
    spans = read_trace_file(out)
    assert len({s.trace_id for s in spans}) == 1200
    assert "exported" in capsys.readouterr().out
    for args, field in ((["--file", str(out), "--otlp", "http://x:4318"], "--otlp"),
                        ([], "--otlp"), (["--file", str(tmp_path / "no" / "x.json")], "--file")):
        with pytest.raises(SystemExit) as exc:
            main(["provenance", "export", "demo", "--start", "0", "--end", "now", *args,
                  "--data-dir", str(demo.data_dir)])
        assert exc.value.code == 2
        assert field in capsys.readouterr().err


def test_http_ingest_with_traceparent_joins_the_client_trace(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    app = App(Settings.resolve(data_dir))
    catalog = catalog_for_tests(data_dir)
    api = create_app(app, catalog, replay_engine(app, catalog),
                     served={"tp": "streamprov.examples.passthrough:pipeline"})
    parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            bad = await client.post("/streams/tp/records", json=[{"a": 1}],
                                    headers={"traceparent": "nope"})
            ok = await client.post("/streams/tp/records", json=[{"a": 1}, {"a": 2}],
                                   headers={"traceparent": parent})
            return [bad, ok]

    bad, ok = asyncio.run(go())
    assert bad.status_code == 400 and bad.json()["error"]["field"] == "traceparent"
    assert ok.status_code == 200, ok.text
    assert ok.json()["traceparent"] == parent
    exporter = InMemorySpanExporter()
    export_window(app, "tp", 0, 2**63 - 1, exporter)
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if attrs(s)["streamprov.hop"] == 0]
    assert len(roots) == 2
    assert all(s.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736 for s in spans)
    assert all(s.parent is not None and s.parent.span_id == 0x00F067AA0BA902B7 for s in roots)
    app.close()
