"""What the observability exports read: plain JSON documents from the replay engine, the tuning
service, the scaling audit trail, the clock status and the last runs, and the queue depths of
the deployments running right now, behind one value.

Every source is a callable returning the same documents the API answers with, so the exports
(Prometheus, dashboard, reports) need no store of their own and tests can hand in dicts.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamprov.adapt.service import AdaptationService
    from streamprov.adapt.tuning import TuningService
    from streamprov.app import App
    from streamprov.replay.engine import ReplayEngine
    from streamprov.runtime.base import Deployment

Docs = Callable[[], list[dict[str, Any]]]


def _none() -> list[dict[str, Any]]:
    return []


def _no_clock() -> dict[str, Any]:
    return {"nodes": [], "replicas": []}


@dataclass(frozen=True, slots=True)
class Sources:
    """Callables the exports read on every scrape or page load; each may raise
    ``StreamprovError`` (a busy store, say), which the caller reports instead of failing."""

    replays: Docs = _none
    """Replay documents (``GET /replay/{id}``), newest first."""
    tuning_jobs: Docs = _none
    """Tuning job documents with their ``evaluations``, newest first."""
    scaling_events: Docs = _none
    """Scaling decisions of the audit trail, newest first."""
    clock_status: Callable[[], dict[str, Any]] = _no_clock
    """``App.clock_status()``: the last run's node clocks and the tolerance."""
    runs: Docs = _none
    """The last run of each stream: ``{streamId, timeNs, durationS, ingested, ..., nodes}``."""
    streams: Docs = _none
    """``GET /streams``: streams with record counts and first/last hop-0 time."""
    live: Docs = _none
    """Deployments running now: ``{streamId, replayId, queues: {queue: batches}}`` (see
    ``live_queues``)."""
    extra: dict[str, Any] = field(default_factory=dict)


def sources_for(application: App, engine: ReplayEngine, tuning: TuningService,
                adaptation: AdaptationService) -> Sources:
    """The sources of a served app: its engine's replays, its tuning jobs, its data dir."""
    from streamprov.app import streams_overview

    def jobs() -> list[dict[str, Any]]:
        return [tuning.get(d["tuneId"]) for d in tuning.list()]

    return Sources(
        replays=lambda: engine.history(),
        tuning_jobs=jobs,
        scaling_events=lambda: adaptation.scaling_events(None, 100_000),
        clock_status=application.clock_status,
        runs=application.last_runs,
        streams=lambda: streams_overview(application),
        live=lambda: live_queues([*_replay_deployments(engine),
                                  *application.live_deployments()]),
    )


def live_queues(deployments: Iterable[Deployment]) -> list[dict[str, Any]]:
    """``{streamId, replayId, queues}`` of each deployment that reports its queue depths
    (``queue_depths()``, the local runner's); others (Ray) are left out."""
    out = []
    for dep in deployments:
        depths = getattr(dep, "queue_depths", None)
        if callable(depths):
            out.append({"streamId": dep.stream_id, "replayId": dep.replay_id,
                        "queues": dict(depths())})
    return out


def _replay_deployments(engine: ReplayEngine) -> list[Deployment]:
    live: list[Deployment] = list(engine.live_deployments())
    return live
