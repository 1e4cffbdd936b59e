"""Input limits of the API: body bytes, records per ingest, bytes per record, replay window,
id character sets. Each is refused with a 4xx naming the field and the limit, and nothing is
stored or started."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from streamprov.api import create_app
from streamprov.app import App, Settings, replay_engine
from streamprov.config import ServeSection, parse_toml
from streamprov.errors import InvalidInput
from tests.api.test_api import through_asgi
from tests.replay.streams import Recorded, catalog_for_tests

LIMITS = ServeSection(max_body_bytes=4096, max_record_bytes=100, max_records_per_request=3,
                      max_replay_window_s=60.0)
NDJSON = {"content-type": "application/x-ndjson"}
START = 1_700_000_000_000_000_000


def build(data_dir: Path, limits: ServeSection = LIMITS) -> FastAPI:
    app = App(Settings.resolve(data_dir))
    catalog = catalog_for_tests(data_dir)
    return create_app(app, catalog, replay_engine(app, catalog),
                      served={"payments": "streamprov.examples.passthrough:pipeline"},
                      serve=limits)


def ndjson(*docs: str) -> bytes:
    return "".join(d + "\n" for d in docs).encode()


def error(res: httpx.Response) -> dict[str, Any]:
    doc: dict[str, Any] = res.json()["error"]
    return doc


def test_ingest_limits_refuse_before_storing(tmp_path: Path) -> None:
    api = build(tmp_path / "data")
    big = '{"text": "' + "x" * 120 + '"}'

    async def go(client: httpx.AsyncClient) -> None:
        for kwargs in ({"content": ndjson(*['{"a": 1}'] * 4), "headers": NDJSON},
                       {"json": [{"a": i} for i in range(4)]}):
            res = await client.post("/streams/payments/records", **kwargs)
            assert res.status_code == 413, res.text
            assert error(res)["field"] == "body"
            assert "3 records" in error(res)["message"]
            assert "max_records_per_request" in error(res)["message"]
        res = await client.post("/streams/payments/records", content=ndjson('{"a": 1}', big),
                                headers=NDJSON)
        assert res.status_code == 413, res.text
        assert error(res)["field"] == "body"
        assert "line 2" in error(res)["message"] and "100 bytes" in error(res)["message"]
        res = await client.post("/streams/payments/records",
                                json=[{"a": 1}, {"text": "x" * 120}])
        assert res.status_code == 413 and "body[1]" in error(res)["message"], res.text
        res = await client.post("/streams/payments/records", content=b"[" + b" " * 5000 + b"]",
                                headers={"content-type": "application/json"})
        assert res.status_code == 413 and "4,096 bytes" in error(res)["message"], res.text
        assert (await client.get("/streams")).json() == []
        # at the limits: accepted
        res = await client.post("/streams/payments/records",
                                content=ndjson(*['{"a": 1}'] * 3), headers=NDJSON)
        assert res.status_code == 200 and res.json()["records"] == 3, res.text

    through_asgi(api, go)


def test_replay_and_tuning_windows_are_bounded(tmp_path: Path) -> None:
    api = build(tmp_path / "data")
    window = {"streamId": "demo", "startTime": START, "configurationId": "one"}
    slo = {"p99LatencyMs": 100.0}

    async def go(client: httpx.AsyncClient) -> None:
        too_long = START + 61 * 10**9
        res = await client.post("/replay", json={**window, "endTime": too_long})
        assert res.status_code == 400, res.text
        assert error(res)["field"] == "endTime"
        assert "max_replay_window_s" in error(res)["message"]
        assert "1.017 min" in error(res)["message"] and "1 min" in error(res)["message"]
        res = await client.post("/tune", json={"streamId": "demo", "startTime": START,
                                               "endTime": too_long, "slo": slo})
        assert res.status_code == 400 and error(res)["field"] == "endTime", res.text
        # within the limit the request goes on (and finds no such stream here)
        res = await client.post("/replay", json={**window, "endTime": START + 60 * 10**9})
        assert res.status_code == 404 and error(res)["field"] == "streamId", res.text
        assert (await client.get("/replays")).json()["replays"] == []

    through_asgi(api, go)


def test_the_default_window_limit_is_a_week(api_recorded: Recorded) -> None:
    api = build(api_recorded.data_dir, ServeSection())
    week_ns = 7 * 24 * 3600 * 10**9

    async def go(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post("/replay", json={
            "streamId": "demo", "startTime": api_recorded.first_ns,
            "endTime": api_recorded.first_ns + week_ns + 1, "configurationId": "one"})

    res = through_asgi(api, go)
    assert res.status_code == 400 and "7 days" in error(res)["message"], res.text


@pytest.mark.parametrize(("method", "path", "body", "field"), [
    ("GET", "/streams/demo%0A/provenance", None, "streamId"),
    ("GET", "/streams/-demo/records/1/provenance", None, "streamId"),
    ("GET", "/streams/demo/records/99999999999999999999/provenance", None, "recordId"),
    ("GET", "/streams/demo/records/-1/provenance", None, "recordId"),
    ("GET", "/replay/r%20x", None, "replayId"),
    ("DELETE", "/replay/r%21", None, "replayId"),
    ("GET", "/tune/t%0A", None, "tuneId"),
    ("GET", "/configurations/.hidden", None, "configurationId"),
    ("PUT", "/configurations/bad%20id", {"nodes": 1, "nodeType": "small"}, "configurationId"),
    ("PUT", "/node-types/gpu%0A", {"cpus": 1, "memoryBytes": 1, "costPerHour": 0}, "name"),
    ("PUT", "/replay/r-1/configuration", {"configurationId": "x y"}, "configurationId"),
    ("POST", "/replay", {"streamId": "demo\n", "startTime": 0, "endTime": 1,
                         "configurationId": "one"}, "streamId"),
    ("POST", "/replay", {"streamId": "demo", "startTime": 0, "endTime": 1,
                         "configurationId": "on\u00e9"}, "configurationId"),
    ("POST", "/streams/pay%C3%A9/records", [{"a": 1}], "streamId"),
    ("GET", "/replays?streamId=a%0A", None, "streamId"),
    ("GET", "/ui/data/clocks?streamId=a%0A", None, "streamId"),
])
def test_ids_are_checked_everywhere(api_recorded: Recorded, method: str, path: str,
                                    body: Any, field: str) -> None:
    api = build(api_recorded.data_dir, ServeSection())

    async def go(client: httpx.AsyncClient) -> tuple[httpx.Response, dict[str, Any]]:
        res = await client.request(method, path, json=body)
        return res, (await client.get("/configurations")).json()

    res, catalog = through_asgi(api, go)
    assert res.status_code == 400, res.text
    assert error(res)["field"] == field
    assert "not a valid id" in error(res)["message"] or "recordId" in error(res)["message"]
    assert "bad id" not in catalog["configurations"]
    assert not any("\n" in name for name in catalog["nodeTypes"])


def test_limits_in_toml_are_validated(tmp_path: Path) -> None:
    assert ServeSection() == ServeSection(max_record_bytes=1 << 20,
                                          max_records_per_request=100_000,
                                          max_replay_window_s=7 * 24 * 3600.0,
                                          max_body_bytes=16 << 20, protect_reads=False)
    path = tmp_path / "streamprov.toml"
    path.write_text("[serve]\nmax_records_per_request = 10\nmax_replay_window_s = 3600\n"
                    "protect_reads = true\n")
    serve = parse_toml(path).serve
    assert serve.max_records_per_request == 10 and serve.max_replay_window_s == 3600
    assert serve.protect_reads
    path.write_text("[serve]\nmax_record_bytes = 0\n")
    with pytest.raises(InvalidInput, match=r"serve\.max_record_bytes") as exc:
        parse_toml(path)
    assert exc.value.field == "serve.max_record_bytes"
