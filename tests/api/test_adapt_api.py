"""The adaptation routes: tuning jobs, the scaling audit trail, triggers, expectations."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.test_api import build, poll, through_asgi
from tests.replay.streams import Recorded


def tune_body(recorded: Recorded, **changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "streamId": "demo", "startTime": recorded.first_ns, "endTime": recorded.end_ns,
        "slo": {"p99LatencyMs": 60000, "keepUp": False}, "algorithm": "hill-climb", "budget": 2,
        "sampleS": 0.3, "replaySpeed": 4.0, "configurationId": "one", "nodes": [1, 2],
        "nodeTypes": ["small"], "batchSizes": [256], "apply": True}
    doc.update(changes)
    return doc


def test_tune_job_lifecycle_and_the_audit_trail(api_recorded: Recorded) -> None:
    api = build(api_recorded)

    async def go(client: httpx.AsyncClient) -> None:
        r = await client.post("/tune", json=tune_body(api_recorded))
        assert r.status_code == 202, r.text
        location = r.headers["location"]
        assert location == r.json()["location"] and r.json()["tuneId"].startswith("t-")
        busy = await client.post("/tune", json=tune_body(api_recorded))
        assert busy.status_code == 429 and busy.headers["retry-after"]
        assert busy.json()["error"]["field"] == "streamId"
        doc = await poll(client, location, timeout_s=90)
        assert doc["state"] == "completed", doc.get("error")
        assert 1 <= len(doc["evaluations"]) <= 2
        first = doc["evaluations"][0]
        for key in ("configuration", "cost", "p99LatencyNs", "throughput", "sloMet",
                    "replayIds"):
            assert key in first
        assert first["configuration"]["nodeType"] == "small"
        assert doc["best"] is not None and doc["best"]["sloMet"]
        assert doc["improvement"]["bestCost"] <= doc["improvement"]["startCost"]
        events = (await client.get("/scaling/events", params={"streamId": "demo"})).json()
        assert events["events"][0]["trigger"] == f"tune {doc['tuneId']}"
        assert events["events"][0]["applied"] == "recorded"
        jobs = (await client.get("/tune")).json()["jobs"]
        assert jobs[0]["tuneId"] == doc["tuneId"] and "evaluations" not in jobs[0]
        exp = (await client.get("/expectations", params={"streamId": "demo"})).json()
        assert exp["learned"] and exp["expectations"]
        assert (await client.get("/triggers")).status_code == 200
        gone = await client.delete(location)
        assert gone.status_code == 409 and gone.json()["error"]["field"] == "tuneId"

    through_asgi(api, go)


def test_tune_errors_name_the_field(api_recorded: Recorded) -> None:
    api = build(api_recorded)

    async def go(client: httpx.AsyncClient) -> None:
        cases = [
            (tune_body(api_recorded, algorithm="annealing"), 400, "algorithm"),
            (tune_body(api_recorded, budget=0), 400, "budget"),
            (tune_body(api_recorded, slo={"p99LatencyMs": -5}), 400, "slo.p99LatencyMs"),
            (tune_body(api_recorded, slo={}), 422, "slo.p99LatencyMs"),
            (tune_body(api_recorded, streamId="nope"), 404, "streamId"),
            (tune_body(api_recorded, nodeTypes=["huge"]), 404, "nodeTypes"),
            (tune_body(api_recorded, nodes=[1, 99]), 400, "nodes"),
            (tune_body(api_recorded, startTime="yesterday"), 400, "startTime"),
            ({"streamId": "demo"}, 422, "startTime"),
        ]
        for doc, status, field in cases:
            r = await client.post("/tune", json=doc)
            assert r.status_code == status, (doc, r.text)
            assert r.json()["error"]["field"] == field, (doc, r.text)
        r = await client.get("/tune/t-unknown")
        assert r.status_code == 404 and r.json()["error"]["field"] == "tuneId"
        r = await client.get("/tune/bad id!")
        assert r.status_code == 400 and r.json()["error"]["field"] == "tuneId"
        r = await client.get("/scaling/events", params={"streamId": "bad id!"})
        assert r.status_code == 400 and r.json()["error"]["field"] == "streamId"
        r = await client.get("/scaling/events", params={"limit": 0})
        assert r.status_code == 400 and r.json()["error"]["field"] == "limit"

    through_asgi(api, go)
