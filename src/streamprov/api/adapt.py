# ruff: noqa: N803  (parameters named as the API names them: streamId, tuneId)
"""Routes of the adaptation layer: tuning jobs, the scaling audit trail, deviation triggers and
expected performance. Like the rest of the API: parse, call one service method, shape JSON.

Replays finished since the last look are checked against their expectation (the deviation
trigger) before these routes answer, so a trigger caused by any replay shows up here.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Response
from pydantic import Field

from streamprov.adapt.search import ALGORITHMS
from streamprov.adapt.service import AdaptationService
from streamprov.adapt.tuning import MAX_BUDGET, TuneRequest, TuningService
from streamprov.api import limits
from streamprov.api.schemas import Body, Out, TimeValue
from streamprov.config import ServeSection
from streamprov.model import validate_id
from streamprov.replay.engine import ReplayEngine


class SloBody(Body):
    """What the recommended configuration must deliver."""

    p99_latency_ms: float = Field(description="Bound on p99 end-to-end latency, ms.",
                                  examples=[250.0])
    max_error_rate: float = Field(0.0, ge=0.0, le=1.0,
                                  description="Bound on failed / records.")
    keep_up: bool = Field(True, description="The replay must keep up with its speed.")


class TuneBody(Body):
    """Search configurations by replaying a window of a stream."""

    stream_id: str = Field(examples=["demo"])
    start_time: TimeValue = Field(description="Window start (inclusive), by hop-0 time.")
    end_time: TimeValue = Field(description="Window end (exclusive).")
    slo: SloBody
    algorithm: str = Field("hill-climb", description=f"One of {', '.join(ALGORITHMS)}.")
    budget: int = Field(12, description=f"Distinct configurations to replay, "
                        f"1..{MAX_BUDGET}.")
    apply: bool = Field(False, description="Scale the live deployment to the best "
                        "configuration (and keep it as `<stream>-tuned`).")
    sample_s: float | None = Field(None, description="Replay only the window's first "
                                   "seconds (default: all of it).")
    replay_speed: float = Field(1.0, description="Speed of every evaluation replay.")
    configuration_id: str | None = Field(None, description="Starting configuration "
                                         "(default `medium`); improvement is against it.")
    nodes: list[int] | None = Field(None, description="[min, max] nodes per stage.")
    node_types: list[str] | None = Field(None, description="Node types to consider "
                                         "(default: all of the catalog).")
    batch_sizes: list[int] | None = Field(None, description="Batch sizes to consider "
                                          "(default: those of the catalog).")
    repeats: int = Field(1, description="Extra replays of a result near a bound, 0..5.")
    seed: int = Field(0, description="Seed of the randomized searches.")


class TuneAccepted(Out):
    tune_id: str
    state: str
    location: str


class TuneOut(Out):
    """A tuning job: request, state, every evaluation (configuration, cost, latency,
    throughput, SLO met), the best configuration and the improvement over the start."""

    tune_id: str
    state: str
    request: dict[str, Any]
    evaluations: list[dict[str, Any]] = Field(default_factory=list)
    best: dict[str, Any] | None = None
    start: dict[str, Any] | None = None
    improvement: dict[str, Any] | None = None
    applied: list[dict[str, Any]] = Field(default_factory=list)
    error: dict[str, Any] | None = None


class EventList(Out):
    events: list[dict[str, Any]]


class ExpectationList(Out):
    expectations: list[dict[str, Any]] = Field(
        description="What each catalog configuration should deliver, per stream "
        "(basis `observed` or `model`).")
    learned: list[dict[str, Any]] = Field(description="The smoothed figures learned from "
                                          "replay reports.")


def install(api: FastAPI, engine: ReplayEngine, adaptation: AdaptationService,
            tuning: TuningService, serve: ServeSection) -> None:
    def sync() -> None:
        adaptation.sync_replays(lambda: engine.history())

    @api.post("/tune", status_code=202, response_model=TuneAccepted, tags=["adaptation"])
    def post_tune(body: TuneBody, response: Response) -> dict[str, Any]:
        """Start a tuning job: every evaluation is a real replay of (a sample of) the window.
        Answers at once; poll the `Location`."""
        req = TuneRequest.parse(
            stream_id=body.stream_id, start=body.start_time, end=body.end_time,
            p99_latency_ms=body.slo.p99_latency_ms, max_error_rate=body.slo.max_error_rate,
            keep_up=body.slo.keep_up, algorithm=body.algorithm, budget=body.budget,
            apply=body.apply, sample_s=body.sample_s, speed=body.replay_speed,
            configuration_id=body.configuration_id, nodes=body.nodes,
            node_types=body.node_types, batch_sizes=body.batch_sizes, repeats=body.repeats,
            seed=body.seed)
        limits.check_window(req.start_ns, req.end_ns, serve)
        sync()
        doc = tuning.submit(req)
        location = f"/tune/{doc['tuneId']}"
        response.headers["Location"] = location
        return {"tuneId": doc["tuneId"], "state": doc["state"], "location": location}

    @api.get("/tune/{tuneId}", response_model=TuneOut, tags=["adaptation"])
    def get_tune(tuneId: str) -> dict[str, Any]:
        """State, every evaluation so far, and the outcome when done."""
        validate_id(tuneId, "tuneId")
        return tuning.get(tuneId)

    @api.delete("/tune/{tuneId}", status_code=202, response_model=TuneOut,
                tags=["adaptation"])
    def delete_tune(tuneId: str) -> dict[str, Any]:
        """Cancel a running tuning job (the replay under way finishes first)."""
        validate_id(tuneId, "tuneId")
        return tuning.cancel(tuneId)

    @api.get("/tune", tags=["adaptation"])
    def list_tunes() -> dict[str, Any]:
        """Tuning jobs, newest first (without their evaluations)."""
        return {"jobs": tuning.list()}

    @api.get("/scaling/events", response_model=EventList, tags=["adaptation"])
    def scaling_events(streamId: str | None = None, limit: int = 1000) -> dict[str, Any]:
        """Every scaling decision, newest first: time, stream, stage, from, to, trigger
        (memory, tune <id>), figures, and whether it was applied to a live deployment."""
        sync()
        return {"events": adaptation.scaling_events(streamId, limit)}

    @api.get("/triggers", response_model=EventList, tags=["adaptation"])
    def triggers(streamId: str | None = None, limit: int = 1000) -> dict[str, Any]:
        """Every deviation trigger, newest first: source (replay, live), reasons, observed and
        expected figures."""
        sync()
        return {"events": adaptation.trigger_events(streamId, limit)}

    @api.get("/expectations", response_model=ExpectationList, tags=["adaptation"])
    def expectations(streamId: str | None = None) -> dict[str, Any]:
        """Expected performance per configuration and stream, learned from replays."""
        sync()
        return {"expectations": adaptation.expectations(streamId),
                "learned": adaptation.model.entries(streamId)}
