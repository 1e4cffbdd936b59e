# ruff: noqa: N803  (parameters named as the API names them: streamId, replayId)
"""The HTTP API (FastAPI): routes translate requests into calls on the app, the catalog and the
replay engine, and their answers into JSON. No business logic here; errors become HTTP answers
in ``streamprov.api.errors``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Query, Request, Response
from pydantic import ValidationError

from streamprov.adapt.service import AdaptationService
from streamprov.adapt.tuning import TuningService
from streamprov.api import adapt as adapt_routes
from streamprov.api import auth, errors, limits
from streamprov.api import ui as ui_routes
from streamprov.api.schemas import (
    CatalogOut,
    ClockInfo,
    ConfigurationBody,
    ErrorBody,
    Health,
    IngestResult,
    NodeTypeBody,
    ProvenancePage,
    RecordProvenance,
    ReplayAccepted,
    ReplayBody,
    ReplayList,
    ReplayOut,
    RescaleBody,
    StreamInfo,
)
from streamprov.app import (
    App,
    adaptation_service,
    provenance_page,
    streams_overview,
)
from streamprov.config import Catalog, Configuration, NodeType, ServeSection, validation_error
from streamprov.errors import InvalidInput, NotFound
from streamprov.model import parse_time_ns, validate_id
from streamprov.observe.propagation import ingest_traced, parse_traceparent
from streamprov.replay.engine import ReplayEngine
from streamprov.replay.request import ReplayRequest
from streamprov.runtime import load_pipeline

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text} for code, text in (
        (400, "Invalid input; `error.field` names it."),
        (404, "Unknown stream, record, replay or configuration."),
        (409, "Conflicting state (the replay or tuning job already finished, say)."),
        (413, "Body too large, or more records or bigger ones than the limits allow."),
        (422, "Request body or parameters do not match the schema."),
        (429, "Too many concurrent replays or tuning jobs; see Retry-After."),
        (503, "Stores busy (an embedded store admits one process at a time); see Retry-After."),
    )
}


def _time_param(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if value == "now":
        return time.time_ns()
    return parse_time_ns(value, name)


def create_app(application: App, catalog: Catalog, engine: ReplayEngine, *,
               served: dict[str, str] | None = None,
               adaptation: AdaptationService | None = None,
               tuning: TuningService | None = None, auto_tune: bool = False,
               serve: ServeSection | None = None, api_token: str | None = None) -> FastAPI:
    """The ASGI app. ``served`` maps stream ids to pipeline import paths that
    ``POST /streams/{streamId}/records`` feeds (default: the catalog's ``[serve]`` section).
    ``adaptation`` and ``tuning`` default to services over ``application``'s data dir;
    ``auto_tune``: a deviation trigger after a replay starts a tuning job (and applies it).
    ``serve``: limits and ``protect_reads`` (default: the catalog's ``[serve]`` section);
    ``api_token``: requests that change something (and reads, with ``protect_reads``) must
    carry it (``streamprov.api.auth``)."""
    serve = serve or catalog.serve
    pipelines = dict(served if served is not None else serve.pipelines)
    adaptation = adaptation or adaptation_service(application, catalog)
    tuning = tuning or TuningService(application, catalog, adaptation)
    if auto_tune:
        adaptation.trigger.on_fire = tuning.reconfigure

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        tuning.close()
        engine.close()

    api = FastAPI(
        title="streamprov",
        version="0.1.0",
        description="Provenance of every record of a stream, and replays of any window on "
        "another configuration. Times are int ns since the epoch or RFC 3339 with up to 9 "
        "fractional digits. Every error answers with `{error: {type, field, message}}`.",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    errors.install(api)
    api.add_middleware(errors.BodyLimit, max_bytes=serve.max_body_bytes)
    if api_token is not None:  # added last: runs first, before a body is read
        api.add_middleware(auth.BearerAuth, token=api_token, protect_reads=serve.protect_reads)
    build_openapi = api.openapi

    def openapi() -> dict[str, Any]:
        if api.openapi_schema is None:
            doc = errors.document(build_openapi())
            if api_token is not None:
                doc = auth.document(doc, serve.protect_reads)
            api.openapi_schema = doc
        return api.openapi_schema

    api.openapi = openapi  # type: ignore[method-assign]
    adapt_routes.install(api, engine, adaptation, tuning, serve)
    ui_routes.install(api, application, engine, tuning, adaptation)

    # -- health, streams, provenance ---------------------------------------------------------
    @api.get("/healthz", response_model=Health, tags=["service"])
    def healthz() -> dict[str, Any]:
        """Liveness, and what holds the stores if something does."""
        return {"status": "ok", "dataDir": str(application.settings.data_dir),
                "storesBusy": application.gate.holder or None}

    @api.get("/clock", response_model=ClockInfo, tags=["service"])
    def clock() -> dict[str, Any]:
        """Node clocks (offset, error bound, drift, tolerance) and timestamp replicas."""
        return application.clock_status()

    @api.get("/streams", response_model=list[StreamInfo], tags=["streams"])
    def streams() -> list[dict[str, Any]]:
        """Every stream with its record count and first/last hop-0 time."""
        return streams_overview(application)

    @api.get("/streams/{streamId}/records/{recordId}/provenance",
             response_model=RecordProvenance, tags=["streams"])
    def record_provenance(streamId: str, recordId: str,
                          replayId: str = "") -> dict[str, Any]:
        """A record's provenance chain: `provenance: [{nodeId, timestamp}]`, one hop per node
        (further branches of a flat_map under `branches`)."""
        stream_id = streamId
        record_id = _record_id(recordId)
        validate_id(stream_id, "streamId")
        if replayId:
            validate_id(replayId, "replayId")
        with application.provenance() as store:
            application.require_stream(store, stream_id)
            chains = store.chains_for_record(stream_id, record_id, replayId)
        if not chains:
            raise NotFound(f"stream {stream_id!r} has no record {record_id}"
                           + (f" in replay {replayId}" if replayId else ""), field="recordId")
        out = chains[0].to_json()
        out["branches"] = [c.to_json() for c in chains[1:]]
        return out

    @api.get("/streams/{streamId}/provenance", response_model=ProvenancePage,
             tags=["streams"])
    def window(
        streamId: str,
        start: Annotated[str | None, Query(description="Window start (inclusive); default: "
                                           "the beginning.")] = None,
        end: Annotated[str | None, Query(description="Window end (exclusive), or `now`; "
                                         "default: now.")] = None,
        cursor: Annotated[str | None, Query(description="`nextCursor` of the previous "
                                            "page.")] = None,
        limit: Annotated[int, Query(description="Chains per page, 1..10000.")] = 1000,
        replayId: Annotated[str | None, Query(
            description="Chains recorded by this replay (window by the replay's own hop-0 "
            "times) instead of the original ones.")] = None,
    ) -> dict[str, Any]:
        """Chains whose hop 0 lies in [start, end), in the original order, page by page."""
        stream_id = streamId
        validate_id(stream_id, "streamId")
        start_ns = _time_param(start, "start", 0)
        end_ns = _time_param(end, "end", time.time_ns() + 1)
        chains, nxt = provenance_page(application, stream_id, start_ns, end_ns, cursor=cursor,
                                      limit=limit, replay_id=replayId or "")
        return {"chains": [c.to_json() for c in chains], "count": len(chains),
                "nextCursor": nxt}

    @api.post("/streams/{streamId}/records", response_model=IngestResult, tags=["streams"],
              openapi_extra={"requestBody": {"content": {
                  "application/json": {"schema": {"description": "A JSON value (one record) "
                                                  "or an array of them."}},
                  "application/x-ndjson": {"schema": {"type": "string",
                                                      "description": "One JSON per line."}},
              }, "required": True}})
    async def ingest(request: Request, streamId: str,
                     keyField: str | None = None) -> Any:
        """Run the pipeline served for this stream over the posted records (JSON or NDJSON)
        and answer when they have all been processed."""
        stream_id = streamId
        validate_id(stream_id, "streamId")
        ref = pipelines.get(stream_id)
        if ref is None:
            raise NotFound(f"no pipeline is served for stream {stream_id!r}; name it under "
                           "[serve] pipelines in streamprov.toml", field="streamId")
        header = request.headers.get("traceparent")
        parent = parse_traceparent(header) if header is not None else None
        payloads = limits.parse_records(await request.body(),
                                        request.headers.get("content-type", ""), serve)
        pipeline = load_pipeline(ref)
        from starlette.concurrency import run_in_threadpool

        # with a W3C traceparent, the records' provenance traces join the client's trace
        summary, traced = await run_in_threadpool(ingest_traced, application, stream_id,
                                                  pipeline, payloads, keyField, parent)
        r = summary.result
        return {"streamId": stream_id, "records": r.ingested, "delivered": r.delivered,
                "dropped": r.dropped, "failed": r.failed, **traced}

    # -- configurations -------------------------------------------------------------------------
    def _catalog_json() -> dict[str, Any]:
        return {
            "configurations": {k: v.model_dump(by_alias=True)
                               for k, v in catalog.configurations().items()},
            "nodeTypes": {k: v.model_dump(by_alias=True) for k, v in catalog.node_types().items()},
            "source": catalog.source,
        }

    @api.get("/configurations", response_model=CatalogOut, tags=["configurations"])
    def configurations() -> dict[str, Any]:
        """The catalog: named configurations and node types."""
        return _catalog_json()

    @api.get("/configurations/{configurationId}", response_model=ConfigurationBody,
             tags=["configurations"])
    def configuration(configurationId: str) -> dict[str, Any]:
        cid = configurationId
        validate_id(cid, "configurationId")
        return catalog.configuration(cid).model_dump(by_alias=True)

    @api.put("/configurations/{configurationId}", response_model=ConfigurationBody,
             tags=["configurations"], responses={201: {"model": ConfigurationBody}})
    def put_configuration(configurationId: str, body: ConfigurationBody,
                          response: Response) -> dict[str, Any]:
        """Create or replace a configuration (kept in the data dir across restarts)."""
        cid = configurationId
        validate_id(cid, "configurationId")
        try:
            cfg = Configuration.model_validate(body.model_dump())
        except ValidationError as exc:
            raise validation_error(exc) from exc
        if catalog.put_configuration(cid, cfg):
            response.status_code = 201
        return cfg.model_dump(by_alias=True)

    @api.put("/node-types/{name}", response_model=NodeTypeBody, tags=["configurations"],
             responses={201: {"model": NodeTypeBody}})
    def put_node_type(name: str, body: NodeTypeBody, response: Response) -> dict[str, Any]:
        """Create or replace a node type."""
        validate_id(name, "name")
        try:
            nt = NodeType.model_validate(body.model_dump())
        except ValidationError as exc:
            raise validation_error(exc) from exc
        if catalog.put_node_type(name, nt):
            response.status_code = 201
        return nt.model_dump(by_alias=True)

    # -- replays --------------------------------------------------------------------------------
    @api.post("/replay", status_code=202, response_model=ReplayAccepted, tags=["replay"])
    def post_replay(body: ReplayBody, response: Response) -> dict[str, Any]:
        """Replay a window of a stream on a configuration at a speed. Answers at once; poll
        the `Location` for state, progress and the report."""
        req = ReplayRequest.parse(body.stream_id, body.start_time, body.end_time,
                                  body.configuration_id, body.replay_speed, body.sink.value)
        limits.check_window(req.start_ns, req.end_ns, serve)
        doc = engine.submit(req)
        location = f"/replay/{doc['replayId']}"
        response.headers["Location"] = location
        return {"replayId": doc["replayId"], "state": doc["state"], "location": location}

    @api.get("/replay/{replayId}", response_model=ReplayOut, tags=["replay"])
    def get_replay(replayId: str) -> dict[str, Any]:
        """State (pending, provisioning, running, completed, failed, cancelled), progress, and
        the report when done."""
        validate_id(replayId, "replayId")
        return engine.get(replayId)

    @api.delete("/replay/{replayId}", status_code=202, response_model=ReplayOut,
                tags=["replay"])
    def delete_replay(replayId: str) -> dict[str, Any]:
        """Cancel a running replay (records already injected are drained and measured)."""
        validate_id(replayId, "replayId")
        return engine.cancel(replayId)

    @api.put("/replay/{replayId}/configuration", status_code=202, response_model=ReplayOut,
             tags=["replay"])
    def rescale_replay(replayId: str, body: RescaleBody) -> dict[str, Any]:
        """Scale a running replay to another configuration's node counts (nothing is lost)."""
        validate_id(replayId, "replayId")
        validate_id(body.configuration_id, "configurationId")
        return engine.reconfigure(replayId, body.configuration_id)

    @api.get("/replays", response_model=ReplayList, tags=["replay"])
    def replays(streamId: str | None = None) -> dict[str, Any]:
        """Past and running replays, newest first."""
        return {"replays": engine.history(streamId)}

    return api


def _record_id(value: str) -> int:
    try:
        record_id = int(value)
    except ValueError:
        raise InvalidInput(f"recordId must be an integer, got {value!r}",
                           field="recordId") from None
    if not 0 <= record_id < 2**63:
        raise InvalidInput(f"recordId must be 0..2^63-1, got {value!r}", field="recordId")
    return record_id

