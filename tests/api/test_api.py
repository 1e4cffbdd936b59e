"""The HTTP API through its ASGI app (httpx), and once through a real uvicorn server."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from streamprov.api import create_app
from streamprov.app import App, Settings, replay_engine
from tests.replay.streams import RECORDS, Recorded, catalog_for_tests

Call = Callable[[httpx.AsyncClient], Awaitable[Any]]


def build(recorded: Recorded, **served: str) -> FastAPI:
    app = App(Settings.resolve(recorded.data_dir))
    catalog = catalog_for_tests(recorded.data_dir)
    return create_app(app, catalog, replay_engine(app, catalog), served=served)


def through_asgi(api: FastAPI, fn: Call) -> Any:
    async def main() -> Any:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await fn(client)

    return asyncio.run(main())


async def poll(client: httpx.AsyncClient, location: str, timeout_s: float = 60.0
               ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        doc: dict[str, Any] = (await client.get(location)).json()
        if doc["state"] in ("completed", "failed", "cancelled"):
            return doc
        await asyncio.sleep(0.05)
    raise AssertionError(f"{location} did not finish")


def body(recorded: Recorded, **changes: Any) -> dict[str, Any]:
    doc = {"streamId": "demo", "startTime": recorded.first_ns, "endTime": recorded.end_ns,
           "configurationId": "one", "replaySpeed": 10.0}
    doc.update(changes)
    return doc


def test_replay_lifecycle(api_recorded: Recorded) -> None:
    api = build(api_recorded)

    async def go(client: httpx.AsyncClient) -> None:
        res = await client.post("/replay", json=body(api_recorded))
        assert res.status_code == 202, res.text
        rid = res.json()["replayId"]
        assert res.headers["location"] == f"/replay/{rid}"
        busy = await client.post("/replay", json=body(api_recorded))
        assert busy.status_code == 429
        assert int(busy.headers["retry-after"]) >= 1
        assert busy.json()["error"]["field"] == "streamId"
        doc = await poll(client, res.headers["location"])
        assert doc["state"] == "completed"
        report = doc["report"]
        for key in ("records", "durationS", "targetThroughput", "achievedThroughput",
                    "latencyNs", "perHopLatencyNs", "pacingLagNs", "nodes", "scalingSteps",
                    "errors", "fidelity"):
            assert key in report
        assert report["records"] == RECORDS
        listed = (await client.get("/replays", params={"streamId": "demo"})).json()
        assert rid in [r["replayId"] for r in listed["replays"]]
        gone = await client.delete(f"/replay/{rid}")
        assert gone.status_code == 409
        # the replay's chains, by the replay's own times
        page = (await client.get("/streams/demo/provenance",
                                 params={"replayId": rid, "limit": 5})).json()
        assert page["count"] == 5
        assert page["chains"][0]["replayId"] == rid
        missing = await client.get("/replay/r-does-not-exist")
        assert missing.status_code == 404
        assert missing.json()["error"]["field"] == "replayId"

    through_asgi(api, go)


@pytest.mark.parametrize(("changes", "status", "field"), [
    ({"startTime": 5, "endTime": 5}, 400, "startTime"),
    ({"startTime": "yesterday"}, 400, "startTime"),
    ({"endTime": "2026-13-01T00:00:00Z"}, 400, "endTime"),
    ({"replaySpeed": 0}, 400, "replaySpeed"),
    ({"replaySpeed": -1.5}, 400, "replaySpeed"),
    ({"replaySpeed": 1001}, 400, "replaySpeed"),
    ({"replaySpeed": "fast"}, 422, "replaySpeed"),
    ({"configurationId": "nope"}, 404, "configurationId"),
    ({"streamId": "unknown"}, 404, "streamId"),
    ({"streamId": "bad id!"}, 400, "streamId"),
    ({"surprise": 1}, 422, "surprise"),
    ({"streamId": None}, 422, "streamId"),
])
def test_bad_replay_requests_name_the_field(api_recorded: Recorded, changes: dict[str, Any],
                                            status: int, field: str) -> None:
    api = build(api_recorded)

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, int]:
        before = len((await client.get("/replays")).json()["replays"])
        res = await client.post("/replay", json=body(api_recorded, **changes))
        after = len((await client.get("/replays")).json()["replays"])
        return res, after - before

    res, added = through_asgi(api, go)
    assert res.status_code == status, res.text
    assert res.json()["error"]["field"] == field
    assert "Traceback" not in res.text
    assert added == 0


def test_nan_speed_malformed_and_oversized_bodies(api_recorded: Recorded) -> None:
    api = build(api_recorded)

    async def go(client: httpx.AsyncClient) -> None:
        raw = (b'{"streamId": "demo", "startTime": 0, "endTime": 10, '
               b'"configurationId": "one", "replaySpeed": NaN}')
        res = await client.post("/replay", content=raw,
                                headers={"content-type": "application/json"})
        assert res.status_code in (400, 422)
        assert res.json()["error"]["field"] in ("replaySpeed", "body")
        res = await client.post("/replay", content=b"{not json",
                                headers={"content-type": "application/json"})
        assert res.status_code == 422
        assert res.json()["error"]["field"] == "body"
        res = await client.post("/replay", content=b"x" * (17 * 1024 * 1024),
                                headers={"content-type": "application/json"})
        assert res.status_code == 413
        assert res.json()["error"]["field"] == "body"

    through_asgi(api, go)


def test_streams_provenance_and_pagination(api_recorded: Recorded) -> None:
    api = build(api_recorded)

    async def go(client: httpx.AsyncClient) -> None:
        assert (await client.get("/healthz")).json()["status"] == "ok"
        [stream] = (await client.get("/streams")).json()
        assert stream["streamId"] == "demo" and stream["records"] == RECORDS
        rid = api_recorded.order[3]
        doc = (await client.get(f"/streams/demo/records/{rid}/provenance")).json()
        assert doc["recordId"] == rid
        assert all(set(h) >= {"nodeId", "timestamp"} for h in doc["provenance"])
        res = await client.get("/streams/demo/records/99999999/provenance")
        assert res.status_code == 404 and res.json()["error"]["field"] == "recordId"
        res = await client.get("/streams/demo/records/abc/provenance")
        assert res.status_code == 400 and res.json()["error"]["field"] == "recordId"
        res = await client.get("/streams/nope/provenance")
        assert res.status_code == 404 and res.json()["error"]["field"] == "streamId"
        # every chain of the window, page by page, in the original order (past 1000 rows)
        seen: list[int] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"start": api_recorded.first_ns,
                                      "end": api_recorded.end_ns, "limit": 500}
            if cursor:
                params["cursor"] = cursor
            page = (await client.get("/streams/demo/provenance", params=params)).json()
            seen += [c["recordId"] for c in page["chains"] if not c.get("branch")]
            cursor = page["nextCursor"]
            if cursor is None:
                break
        assert seen == api_recorded.order
        for params, field in (({"cursor": "garbage"}, "cursor"), ({"limit": 0}, "limit"),
                              ({"start": 10, "end": 5}, "start"), ({"end": "soon"}, "end")):
            res = await client.get("/streams/demo/provenance", params=params)
            assert res.status_code == 400, (params, res.text)
            assert res.json()["error"]["field"] == field

    through_asgi(api, go)


def test_configurations(api_recorded: Recorded) -> None:
    api = build(api_recorded)

    async def go(client: httpx.AsyncClient) -> None:
        cat = (await client.get("/configurations")).json()
        assert {"small", "medium", "large", "wide"} <= set(cat["configurations"])
        assert cat["nodeTypes"]["small"]["memoryBytes"] > 0
        new = {"nodes": {"parse": 3}, "nodeType": "small", "batchSize": 512}
        res = await client.put("/configurations/custom", json=new)
        assert res.status_code == 201, res.text
        res = await client.put("/configurations/custom", json=new)
        assert res.status_code == 200
        got = (await client.get("/configurations/custom")).json()
        assert got["nodes"] == {"parse": 3} and got["batchSize"] == 512
        for bad, field in (({**new, "batchSize": 0}, "batchSize"),
                           ({**new, "nodeType": "gpu"}, "nodeType"),
                           ({**new, "nodes": 0}, "nodes")):
            res = await client.put("/configurations/bad", json=bad)
            assert res.status_code in (400, 422), res.text
            assert res.json()["error"]["field"] == field
        res = await client.get("/configurations/unknown")
        assert res.status_code == 404

    through_asgi(api, go)
    # edits persist in the data dir: a new app over it sees them
    assert "custom" in catalog_for_tests(api_recorded.data_dir).configurations()


def test_openapi_documents_every_schema(api_recorded: Recorded) -> None:
    api = build(api_recorded)
    doc = api.openapi()
    paths = doc["paths"]
    for path in ("/replay", "/replay/{replayId}", "/replays", "/streams",
                 "/streams/{streamId}/provenance",
                 "/streams/{streamId}/records/{recordId}/provenance",
                 "/streams/{streamId}/records", "/configurations",
                 "/configurations/{configurationId}", "/healthz"):
        assert path in paths, path
    schemas = doc["components"]["schemas"]
    assert {"ReplayBody", "ReplayOut", "ErrorBody", "ChainOut"} <= set(schemas)
    assert "replaySpeed" in schemas["ReplayBody"]["properties"]


def test_ingest_into_a_served_pipeline(tmp_path: Any) -> None:
    rec = Recorded(tmp_path / "data", 0, 1, [])
    api = build(rec, payments="streamprov.examples.passthrough:pipeline")

    async def go(client: httpx.AsyncClient) -> None:
        res = await client.post("/streams/payments/records",
                                content=b'{"a": 1}\n{"a": 2}\n\n{"a": 3}\n',
                                headers={"content-type": "application/x-ndjson"})
        assert res.status_code == 200, res.text
        assert res.json()["records"] == 3 and res.json()["delivered"] == 3
        res = await client.post("/streams/payments/records", json=[{"a": 4}, {"a": 5}])
        assert res.json()["records"] == 2
        res = await client.post("/streams/payments/records", content=b'{"a": 1}\n{oops',
                                headers={"content-type": "application/x-ndjson"})
        assert res.status_code == 400 and "line 2" in res.json()["error"]["message"]
        res = await client.post("/streams/other/records", json={"a": 1})
        assert res.status_code == 404 and res.json()["error"]["field"] == "streamId"
        [stream] = (await client.get("/streams")).json()
        assert stream["streamId"] == "payments" and stream["records"] == 5

    through_asgi(api, go)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_real_uvicorn_server(api_recorded: Recorded) -> None:
    api = build(api_recorded)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        with httpx.Client(base_url=base, timeout=30) as client:
            assert client.get("/healthz").status_code == 200
            res = client.post("/replay", json=body(api_recorded))
            assert res.status_code == 202, res.text
            location = res.headers["location"]
            while (doc := client.get(location).json())["state"] not in (
                    "completed", "failed", "cancelled"):
                assert time.monotonic() < deadline + 60
                time.sleep(0.1)
            assert doc["state"] == "completed", doc
            assert doc["report"]["records"] == RECORDS
            assert client.get("/openapi.json").json()["info"]["title"] == "streamprov"
    finally:
        server.should_exit = True
        thread.join(30)


def test_clock_shows_the_served_timestamp_service_and_last_run(tmp_path: Any) -> None:
    from streamprov.examples.demo import build as build_demo

    app = App(Settings.resolve(tmp_path / "d"))
    try:
        app.run(build_demo(records=500, sources=2, rate=None))
        catalog = catalog_for_tests(tmp_path / "d")
        api = create_app(app, catalog, replay_engine(app, catalog))

        async def go(client: httpx.AsyncClient) -> dict[str, Any]:
            res = await client.get("/clock")
            assert res.status_code == 200, res.text
            return dict(res.json())

        doc = through_asgi(api, go)
    finally:
        app.close()
    assert doc["maxSkewNs"] == 1_000_000 and doc["policy"] == "flag"
    assert {r["role"] for r in doc["replicas"]} >= {"leader"}
    assert len(doc["replicas"]) == 3
    nodes = {n["nodeId"]: n for n in doc["nodes"]}
    assert "demo/source/0" in nodes and nodes["demo/source/0"]["withinTolerance"]
