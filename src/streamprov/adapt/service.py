"""The adaptation service of one process: expected performance, deviation triggers after
replays, and scaling decisions (applied to a live deployment when one runs here) with their
audit trail. The API and the CLI call these methods; ``tuning.TuningService`` uses them.

Files in the data dir: ``adapt/expectations.json`` (the model), ``adapt/triggers.jsonl`` and
``adapt/scaling.jsonl`` (the audit trails).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamprov.adapt.audit import EventLog, scaling_log, trigger_log
from streamprov.adapt.expectation import Expectation, ExpectationModel
from streamprov.adapt.live import LiveDeployments, RunMailbox
from streamprov.adapt.space import Candidate
from streamprov.adapt.trigger import DeviationTrigger, Observation, Thresholds
from streamprov.config import Catalog
from streamprov.errors import NotFound, StreamprovError
from streamprov.model import validate_id
from streamprov.replay.request import ReplayState


class AdaptationService:
    """``on_trigger(event)`` starts a reconfiguration cycle for a trigger (returns its id, or
    None when it starts none); unset, triggers are only recorded."""

    def __init__(self, data_dir: Path, catalog: Catalog, *,
                 thresholds: Thresholds | None = None,
                 on_trigger: Callable[[dict[str, Any]], str | None] | None = None) -> None:
        self.data_dir = data_dir
        self.catalog = catalog
        self.model = ExpectationModel(data_dir / "adapt" / "expectations.json")
        self.scaling: EventLog = scaling_log(data_dir)
        self.triggers: EventLog = trigger_log(data_dir)
        self.trigger = DeviationTrigger(self.triggers, thresholds or Thresholds(),
                                        on_fire=on_trigger)
        self.live = LiveDeployments()
        self.mailbox = RunMailbox(data_dir)
        self._lock = threading.Lock()

    # -- expectations ---------------------------------------------------------------------
    def expectation(self, stream_id: str, configuration_id: str,
                    input_rate: float | None = None) -> Expectation | None:
        try:
            cfg = self.catalog.configuration(configuration_id)
            nt = self.catalog.node_type(cfg.node_type)
        except NotFound:
            return None
        return self.model.expect(stream_id, configuration_id, cfg, nt, input_rate)

    def expectations(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        """What the model learned, and what each catalog configuration should deliver."""
        if stream_id is not None:
            validate_id(stream_id, "streamId")
        learned = self.model.entries(stream_id)
        streams = sorted({e["streamId"] for e in learned})
        out: list[dict[str, Any]] = []
        for s in streams:
            rate = max((float(e["inputRate"]) for e in learned if e["streamId"] == s),
                       default=None)
            for cid in self.catalog.configurations():
                exp = self.expectation(s, cid, rate)
                if exp is not None:
                    out.append(exp.to_json())
        return out

    # -- after a replay -------------------------------------------------------------------
    def after_replay(self, doc: dict[str, Any], *, learn: bool = True,
                     source: str = "replay") -> dict[str, Any] | None:
        """Compare a finished replay with the expectation (then learn from it); returns the
        trigger when one fired. Replays seen before, unfinished or empty are skipped."""
        report = doc.get("report")
        if doc.get("state") != ReplayState.COMPLETED.value or not report \
                or not report.get("records") or self.model.seen(str(doc.get("replayId"))):
            return None
        stream_id = str(report["streamId"])
        cid = str(report["configurationId"])
        expected = self.expectation(stream_id, cid, report.get("targetThroughput"))
        event = None
        if expected is not None and expected.basis == "observed":
            req = doc.get("request") or {}
            context = {"replayId": doc.get("replayId"),
                       "window": {"startNs": req.get("startNs"), "endNs": req.get("endNs")},
                       "replaySpeed": req.get("replaySpeed", 1.0)}
            event = self.trigger.check(expected, Observation.of_report(report), source=source,
                                       context=context)
        if learn:
            self.learn(doc)
        return event

    def learn(self, doc: dict[str, Any]) -> None:
        """Fold a finished replay's report into the model (no trigger check)."""
        report = doc.get("report")
        if doc.get("state") != ReplayState.COMPLETED.value or not report:
            return
        cpus = 1
        with contextlib.suppress(NotFound):
            cfg = self.catalog.configuration(str(report["configurationId"]))
            cpus = self.catalog.node_type(cfg.node_type).cpus
        if "nodeType" in report:  # the report knows the type it ran on
            cpus = int(report["nodeType"].get("cpus", cpus))
        self.model.learn(report, cpus=cpus)

    def sync_replays(self, history: Callable[[], list[dict[str, Any]]]) -> int:
        """Check every finished replay not seen yet (oldest first); returns how many."""
        with self._lock:
            n = 0
            for doc in reversed(history()):
                if self.model.seen(str(doc.get("replayId"))):
                    continue
                if doc.get("state") == ReplayState.COMPLETED.value:
                    self.after_replay(doc)
                    n += 1
            return n

    # -- scaling --------------------------------------------------------------------------
    def apply(self, stream_id: str, candidate: Candidate, *, trigger: str,
              figures: dict[str, Any], from_configuration: dict[str, Any] | None = None,
              save_as: str | None = None) -> list[dict[str, Any]]:
        """Scale ``stream_id``'s live deployment (if one runs in this process) to the
        candidate's node counts, and keep the candidate in the catalog as ``save_as``
        (default ``<stream>-tuned``); every decision goes to the audit trail."""
        name = save_as or f"{stream_id}-tuned"
        validate_id(name, "configurationId")
        self.catalog.put_configuration(name, candidate.configuration())
        dep = self.live.get(stream_id)
        events: list[dict[str, Any]] = []
        pid = self.mailbox.running_pid(stream_id) if dep is None else None
        if dep is None and pid is not None:
            # a streamprov run of this stream in another process applies it (RunMailbox)
            self.mailbox.post(stream_id, {
                "configuration": candidate.configuration().model_dump(by_alias=True),
                "configurationId": name, "trigger": trigger, "figures": figures})
            events.append(self.scaling.append({
                "streamId": stream_id, "stage": None, "from": from_configuration,
                "to": candidate.to_json(), "trigger": trigger, "figures": figures,
                "applied": "requested", "configurationId": name,
                "note": f"sent to the running streamprov run (pid {pid}), which scales each "
                        "stage and records it here"}))
            return events
        if dep is None:
            events.append(self.scaling.append({
                "streamId": stream_id, "stage": None, "from": from_configuration,
                "to": candidate.to_json(), "trigger": trigger, "figures": figures,
                "applied": "recorded", "configurationId": name,
                "note": "no live deployment of this stream runs in this process: the "
                        f"recommendation is kept as configuration {name!r}"}))
            return events
        current = dep.parallelism()
        stages = list(current)
        counts = candidate.configuration().stage_counts(stages, dep.pipeline.max_parallelism)
        for stage, n in counts.items():
            if current.get(stage) == n:
                continue
            try:
                dep.scale(stage, n)
                applied = "live"
                note = ""
            except StreamprovError as exc:
                applied, note = "failed", exc.message
            events.append(self.scaling.append({
                "streamId": stream_id, "stage": stage, "from": current.get(stage), "to": n,
                "trigger": trigger, "figures": figures, "applied": applied,
                "configurationId": name, "note": note or
                "batch size applies to new deployments only"}))
        return events

    def record_scaling(self, stream_id: str, decision: dict[str, Any]) -> dict[str, Any]:
        """Put a decision made elsewhere (the memory autoscaler) on the audit trail."""
        return self.scaling.append({"streamId": stream_id, "applied": "live", **decision})

    def scaling_events(self, stream_id: str | None = None,
                       limit: int = 1000) -> list[dict[str, Any]]:
        if stream_id is not None:
            validate_id(stream_id, "streamId")
        return self.scaling.read(stream_id=stream_id, limit=limit)

    def trigger_events(self, stream_id: str | None = None,
                       limit: int = 1000) -> list[dict[str, Any]]:
        if stream_id is not None:
            validate_id(stream_id, "streamId")
        return self.triggers.read(stream_id=stream_id, limit=limit)
