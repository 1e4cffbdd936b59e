"""OpenLineage events of real replays, delivered to a real HTTP server and to a file."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest

from streamprov.app import App, Settings, lineage_emitter, replay_engine
from streamprov.config import Catalog, LineageSection
from streamprov.errors import InvalidInput, PipelineError
from streamprov.observe.lineage import (
    FILE_ENV,
    PRODUCER,
    RUN_ID_NAMESPACE,
    SCHEMA_URL,
    URL_ENV,
    LineageConfig,
    LineageEmitter,
    dataset_namespace,
    read_events,
    run_id_for,
    tuning_event,
)
from streamprov.replay import ReplayEngine, ReplayRequest
from tests.replay.streams import RECORDS, Recorded, catalog_for_tests, record_stream


class _Collector(BaseHTTPRequestHandler):
    events: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        assert self.headers["Content-Type"] == "application/json"
        type(self).events.append(orjson.loads(body))
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    events: list[dict[str, Any]] = []
    handler = type("Handler", (_Collector,), {"events": events})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/api/v1/lineage", events
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    return record_stream(tmp_path_factory.mktemp("lineage") / "data")


@pytest.fixture(autouse=True)
def _no_lineage_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.delenv(FILE_ENV, raising=False)


def _catalog(recorded: Recorded, **lineage: Any) -> Catalog:
    cat = catalog_for_tests(recorded.data_dir)
    cat.lineage = LineageSection(**lineage)
    return cat


def _request(recorded: Recorded, config: str = "one") -> ReplayRequest:
    return ReplayRequest.parse("demo", recorded.first_ns, recorded.end_ns, config, 10.0)


def _replay(app: App, catalog: Catalog, recorded: Recorded) -> dict[str, Any]:
    engine = replay_engine(app, catalog, sample_interval_s=0.1)
    doc = engine.run(_request(recorded))
    assert app.lineage is not None
    assert app.lineage.flush(10)
    return doc


def test_a_replay_posts_start_then_complete_with_its_facets(
        recorded: Recorded, server: tuple[str, list[dict[str, Any]]]) -> None:
    url, events = server
    app = App(Settings.resolve(recorded.data_dir))
    doc = _replay(app, _catalog(recorded, url=url), recorded)
    assert doc["state"] == "completed", doc
    rid = doc["replayId"]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    start, complete = events
    run_id = str(uuid.uuid5(RUN_ID_NAMESPACE, rid))
    assert start["run"]["runId"] == complete["run"]["runId"] == run_id == run_id_for(rid)
    ns = dataset_namespace(recorded.data_dir, app.settings.provenance_url)
    assert ns.startswith("streamprov://") and ns.endswith(recorded.data_dir.as_posix())
    for e in events:
        assert e["schemaURL"] == SCHEMA_URL and e["producer"] == PRODUCER
        assert e["eventTime"].endswith("Z") and len(e["eventTime"]) == len(
            "2024-01-01T00:00:00.000000Z")
        assert e["job"] == {"namespace": "streamprov", "name": "replay.demo",
                            "facets": e["job"]["facets"]}
        assert e["job"]["facets"]["jobType"]["jobType"] == "REPLAY"
        assert e["inputs"] == [{"namespace": ns, "name": "demo", "facets": {}}]
        assert e["outputs"] == [{"namespace": ns, "name": "demo~replay", "facets": {}}]
        facets = e["run"]["facets"]
        for facet in facets.values():
            assert facet["_producer"] == PRODUCER
            assert facet["_schemaURL"].startswith(("http", "urn:"))
        cfg = facets["streamprov_configuration"]
        assert (cfg["id"], cfg["nodeType"], cfg["nodes"], cfg["batchSize"]) == (
            "one", "tiny", 1, 1024)
        window = facets["streamprov_window"]
        assert window["replayId"] == rid and window["streamId"] == "demo"
        assert (window["startNs"], window["endNs"]) == (recorded.first_ns, recorded.end_ns)
        assert window["startTime"] == doc["request"]["startTime"]
        assert window["speed"] == 10.0
    assert "streamprov_report" not in start["run"]["facets"]
    report = complete["run"]["facets"]["streamprov_report"]
    assert report["records"] == RECORDS == doc["report"]["records"]
    assert report["fidelity"] == "match" and report["keptUp"] is doc["report"]["keptUp"]
    assert report["latencyNs"]["p99"] == doc["report"]["latencyNs"]["p99"] > 0
    assert complete["eventTime"] >= start["eventTime"]
    assert app.lineage is not None
    assert app.lineage.stats() == {"emitted": 2, "sent": 2, "failed": 0, "dropped": 0}
    app.close()


def test_a_failed_replay_posts_fail_with_the_error(
        recorded: Recorded, server: tuple[str, list[dict[str, Any]]]) -> None:
    url, events = server
    app = App(Settings.resolve(recorded.data_dir))
    emitter = lineage_emitter(app, _catalog(recorded, url=url))
    assert emitter is not None

    def no_nodes(**_: Any) -> Any:
        raise PipelineError("no node can be provisioned here")

    engine = ReplayEngine(
        data_dir=recorded.data_dir, provenance_url=app.settings.provenance_url,
        stream_log_url=app.settings.stream_log_url, catalog=catalog_for_tests(recorded.data_dir),
        pipeline_for=app.pipeline_for, gate=app.gate, runner_factory=no_nodes,
        on_event=emitter.replay_event)
    doc = engine.run(_request(recorded))
    assert doc["state"] == "failed"
    assert emitter.flush(10)
    [fail] = events  # it never ran: no START
    assert fail["eventType"] == "FAIL"
    assert fail["run"]["runId"] == run_id_for(doc["replayId"])
    error = fail["run"]["facets"]["errorMessage"]
    assert error["message"] == "no node can be provisioned here"
    assert error["programmingLanguage"] == "python"
    app.close()


def test_file_transport_round_trip_from_the_environment(
        recorded: Recorded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "lineage.ndjson"
    monkeypatch.setenv(FILE_ENV, str(path))
    app = App(Settings.resolve(recorded.data_dir))
    doc = _replay(app, catalog_for_tests(recorded.data_dir), recorded)
    app.close()  # delivers what is queued
    events = read_events(path)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert {e["run"]["runId"] for e in events} == {run_id_for(doc["replayId"])}
    assert events[1]["run"]["facets"]["streamprov_report"]["records"] == RECORDS


def test_a_dead_endpoint_does_not_fail_the_replay(recorded: Recorded, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "events.ndjson"
    app = App(Settings.resolve(recorded.data_dir))
    catalog = _catalog(recorded, url=f"http://127.0.0.1:{port}/api/v1/lineage",
                       file=str(path), timeout_s=0.5)
    doc = _replay(app, catalog, recorded)
    assert doc["state"] == "completed"
    assert app.lineage is not None
    assert app.lineage.stats() == {"emitted": 2, "sent": 2, "failed": 2, "dropped": 0}
    assert len(read_events(path)) == 2  # the other transport still got them
    app.close()


def test_config_from_toml_and_env(tmp_path: Path) -> None:
    toml = tmp_path / "streamprov.toml"
    toml.write_text('[lineage]\nurl = "http://marquez:5000/api/v1/lineage"\n'
                    'file = "out.ndjson"\nnamespace = "prod"\n')
    cat = Catalog.load(toml, tmp_path / "data")
    cfg = LineageConfig.resolve(cat.lineage, environ={})
    assert cfg == LineageConfig("http://marquez:5000/api/v1/lineage", Path("out.ndjson"),
                                "prod", 2.0)
    env = LineageConfig.resolve(cat.lineage, environ={URL_ENV: "https://ol.example/api"})
    assert env.url == "https://ol.example/api" and env.file == Path("out.ndjson")
    assert not LineageConfig.resolve(None, environ={}).enabled
    with pytest.raises(InvalidInput) as exc:
        LineageConfig.resolve(LineageSection(url="marquez:5000"), environ={})
    assert exc.value.field == "lineage.url"
    toml.write_text("[lineage]\ntimeout_s = 0\n")
    with pytest.raises(InvalidInput) as exc:
        Catalog.load(toml, tmp_path / "data")
    assert exc.value.field == "lineage.timeout_s"


def test_dataset_namespace_of_postgres_leaves_credentials_out() -> None:
    ns = dataset_namespace(Path("/x"), "postgresql://me:secret@db.local:5433/prov")
    assert ns == "streamprov://db.local:5433/prov"


def _tuning_doc(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "tuneId": "t-20240101T000000-abcdef", "state": state, "startedNs": 1_700_000_000 * 10**9,
        "request": {"streamId": "demo", "startNs": 1, "endNs": 2,
                    "startTime": "1970-01-01T00:00:00.000000001Z",
                    "endTime": "1970-01-01T00:00:00.000000002Z", "replaySpeed": 2.0,
                    "algorithm": "hill-climb", "budget": 6,
                    "slo": {"p99LatencyNs": 250_000_000, "maxErrorRate": 0.0, "keepUp": True},
                    "apply": False, "sampleS": 2.0, "configurationId": "medium"},
        "window": {"startNs": 1, "endNs": 2, "sampleS": 1e-9},
        "space": {"nodes": [1, 4]}, "evaluations": [{"index": 1}, {"index": 2}], **extra}


def test_tuning_job_events_carry_the_job_and_the_best_configuration(tmp_path: Path) -> None:
    path = tmp_path / "t.ndjson"
    emitter = LineageEmitter.from_config(LineageConfig(file=path), dataset_ns="streamprov://h")
    best = {"nodes": 2, "nodeType": "small", "batchSize": 256, "cost": 0.1}
    emitter.tuning_event("pending", _tuning_doc("pending"))
    emitter.tuning_event("running", _tuning_doc("running"))
    emitter.tuning_event("completed", _tuning_doc("completed", best=best, replays=2,
                                                  finishedNs=1_700_000_001 * 10**9))
    emitter.close()
    start, complete = read_events(path)
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    assert start["eventTime"] == "2023-11-14T22:13:20.000000Z"
    assert start["job"]["name"] == "tune.demo"
    job = complete["job"]["facets"]["streamprov_tuning"]
    assert (job["algorithm"], job["budget"], job["slo"]["p99LatencyNs"]) == (
        "hill-climb", 6, 250_000_000)
    result = complete["run"]["facets"]["streamprov_tuningResult"]
    assert result["best"] == best and result["evaluations"] == 2
    assert complete["run"]["runId"] == run_id_for("t-20240101T000000-abcdef")
    fail = tuning_event("failed", _tuning_doc("failed", error={"message": "boom"}),
                        dataset_ns="streamprov://h")
    assert fail is not None and fail["run"]["facets"]["errorMessage"]["message"] == "boom"
    abort = tuning_event("cancelled", _tuning_doc("cancelled"), dataset_ns="streamprov://h")
    assert abort is not None and abort["eventType"] == "ABORT"
