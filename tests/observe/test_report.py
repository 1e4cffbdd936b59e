"""Self-contained HTML reports (every asset inlined, no link off the file) and plot data;
``streamprov replay --report``; the dashboard's routes answer HTML, assets and errors."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import orjson
import pytest

from streamprov.api import create_app
from streamprov.app import replay_engine
from streamprov.cli import main
from streamprov.observe.report import replay_report, tuning_report
from streamprov.observe.series import latency_series, replay_series
from tests.observe.demo import Demo
from tests.replay.streams import catalog_for_tests


def inlined_data(page: str) -> dict[str, object]:
    m = re.search(r"SP\.renderReport\(document\.getElementById\('main'\), (.*)\);</script>",
                  page, re.S)
    assert m is not None
    doc: dict[str, object] = orjson.loads(m.group(1))
    return doc


def test_latency_series_cdf_and_throughput() -> None:
    import numpy as np

    first = np.arange(0, 1000, dtype=np.int64) * 1_000_000  # one per ms for 1 s
    last = first + np.arange(1000, dtype=np.int64) * 1000  # latency 0..999 us
    s = latency_series(first, last)
    assert s["count"] == 1000
    cdf = s["cdf"]
    assert cdf["fraction"][0] == 0.0 and cdf["fraction"][-1] == 1.0
    assert cdf["latencyMs"] == sorted(cdf["latencyMs"])
    assert cdf["latencyMs"][-1] == 0.999
    assert abs(sum(s["throughput"]["rate"]) / len(s["throughput"]["rate"]) - 1000) < 50
    assert latency_series(first[:0], last[:0])["count"] == 0


def test_replay_report_is_self_contained(demo: Demo) -> None:
    app = demo.app()
    doc = demo.replays[0]
    page = replay_report(app, doc)
    assert "<script src" not in page and "<link rel=\"stylesheet\"" not in page
    assert not re.search(r"(src|href)=\"https?://", page)
    assert "uPlot" in page and "SP.renderReport" in page
    data = inlined_data(page)
    series = replay_series(app, doc)
    assert data["kind"] == "replay"
    assert data["replay"] == {"doc": doc, "series": series}
    assert series["count"] == doc["report"]["records"]
    # cached once finished: the second read does not need the store
    cached = app.settings.data_dir / "observe" / "series" / f"{doc['replayId']}.json"
    assert orjson.loads(cached.read_bytes()) == series


def test_tuning_report_has_the_evaluation_replays(demo: Demo) -> None:
    page = tuning_report(demo.app(), demo.tuning, [])
    data = inlined_data(page)
    assert data["kind"] == "tune"
    replays = data["replays"]
    assert isinstance(replays, list)
    ids = {r for e in demo.tuning["evaluations"] for r in e["replayIds"]}
    assert {r["doc"]["replayId"] for r in replays} == ids
    assert all(r["series"]["count"] > 0 for r in replays)


def test_cli_replay_writes_a_report(demo: Demo, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "replay.html"
    rec = demo.recorded
    base = ["replay", "demo", "--start", str(rec.first_ns), "--end", str(rec.end_ns),
            "--config", "one", "--speed", "8", "--data-dir", str(demo.data_dir)]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--report", str(tmp_path / "missing" / "r.html")])
    assert exc.value.code == 2
    assert "--report" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*base, "--report", str(out)])
    assert exc.value.code == 0, capsys.readouterr().err
    assert f"report: {out}" in capsys.readouterr().out
    data = inlined_data(out.read_text())
    assert data["kind"] == "replay"


def test_dashboard_routes(demo: Demo) -> None:
    app = demo.app()
    catalog = catalog_for_tests(demo.data_dir)
    api = create_app(app, catalog, replay_engine(app, catalog))
    rid = demo.replays[0]["replayId"]

    async def go() -> dict[str, httpx.Response]:
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return {p: await client.get(p) for p in (
                "/", "/ui", "/ui/clocks", "/ui/nope", "/ui/static/uPlot.iife.min.js",
                f"/ui/data/replay/{rid}/series", "/ui/data/replay/r-unknown/series",
                "/ui/data/clocks?streamId=demo", "/ui/data/clocks?streamId=bad%20id",
                "/ui/data/streams/demo/series")}

    r = asyncio.run(go())
    assert r["/"].status_code == 307 and r["/"].headers["location"] == "/ui"
    assert r["/ui"].status_code == 200 and 'data-page="overview"' in r["/ui"].text
    assert 'data-page="clocks"' in r["/ui/clocks"].text
    assert r["/ui/nope"].status_code == 404
    assert r["/ui/nope"].json()["error"]["field"] == "page"
    assert r["/ui/static/uPlot.iife.min.js"].status_code == 200
    assert r[f"/ui/data/replay/{rid}/series"].json()["count"] == 1200
    assert r["/ui/data/replay/r-unknown/series"].status_code == 404
    assert r["/ui/data/replay/r-unknown/series"].json()["error"]["field"] == "replayId"
    clocks = r["/ui/data/clocks?streamId=demo"].json()
    assert clocks["maxSkewMs"] == 1.0
    assert {n["nodeId"] for n in clocks["nodes"]} >= {"demo/parse/0", "demo/sink/0"}
    assert r["/ui/data/clocks?streamId=bad%20id"].status_code == 400
    assert r["/ui/data/clocks?streamId=bad%20id"].json()["error"]["field"] == "streamId"
    assert r["/ui/data/streams/demo/series"].json()["count"] == 1200
