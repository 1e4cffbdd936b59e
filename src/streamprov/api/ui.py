# ruff: noqa: N803  (parameters named as the API names them: streamId, replayId)
"""Observability routes: Prometheus ``GET /metrics``, the dashboard at ``/ui`` (pages, static
assets with the bundled uPlot, and the plot data they fetch). Like the rest of the API: parse,
call one function, shape the answer; errors go through ``streamprov.api.errors``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from streamprov.adapt.service import AdaptationService
from streamprov.adapt.tuning import TuningService
from streamprov.app import App
from streamprov.model import validate_id
from streamprov.observe.prometheus import CONTENT_TYPE, exposition, registry_for
from streamprov.observe.report import PAGES, dashboard_page
from streamprov.observe.series import clock_series, replay_series, stream_series
from streamprov.observe.sources import sources_for
from streamprov.replay.engine import ReplayEngine
from streamprov.ui import STATIC_DIR


def install(api: FastAPI, application: App, engine: ReplayEngine, tuning: TuningService,
            adaptation: AdaptationService) -> None:
    registry = registry_for(sources_for(application, engine, tuning, adaptation))

    @api.get("/metrics", tags=["observability"], response_class=Response,
             responses={200: {"content": {CONTENT_TYPE: {}},
                              "description": "Prometheus text exposition format."}})
    def metrics() -> Response:
        """Prometheus metrics: records in/out per stage, replay latency quantiles and
        throughput, replay and tuning progress, scaling decisions, node clocks (offset, error
        bound, tolerance violations). Read from the data dir on every scrape."""
        return Response(exposition(registry), media_type=CONTENT_TYPE)

    api.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")

    @api.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui", status_code=307)

    @api.get("/ui", response_class=HTMLResponse, tags=["observability"])
    def ui_overview() -> HTMLResponse:
        """The dashboard: streams and their time ranges, replays, tuning jobs."""
        return HTMLResponse(dashboard_page("overview"))

    @api.get("/ui/{page}", response_class=HTMLResponse, tags=["observability"])
    def ui_page(page: str) -> HTMLResponse:
        """A dashboard page: record (lineage), replay, compare, clocks, scaling, tune."""
        if page not in PAGES or page == "overview":
            from streamprov.errors import NotFound

            raise NotFound(f"no dashboard page {page!r}; pages: "
                           + ", ".join(p for p in PAGES if p != "overview"), field="page")
        return HTMLResponse(dashboard_page(page))

    @api.get("/ui/data/replay/{replayId}/series", tags=["observability"])
    def ui_replay_series(replayId: str) -> dict[str, Any]:
        """A replay's latency CDF (`cdf.latencyMs` at `cdf.fraction`) and throughput over time
        (`throughput.t` seconds since its first record, `throughput.rate` records/s)."""
        return replay_series(application, engine.get(replayId))

    @api.get("/ui/data/streams/{streamId}/series", tags=["observability"])
    def ui_stream_series(streamId: str) -> dict[str, Any]:
        """The same plot data for a stream's original chains."""
        validate_id(streamId, "streamId")
        return stream_series(application, streamId)

    @api.get("/ui/data/clocks", tags=["observability"])
    def ui_clocks(streamId: str, replayId: str = "") -> dict[str, Any]:
        """Per node, the error bound its hops carried over time; offsets and bounds at the last
        run's sync rounds; the skew tolerance."""
        validate_id(streamId, "streamId")
        if replayId:
            validate_id(replayId, "replayId")
        return clock_series(application, streamId, replayId)
