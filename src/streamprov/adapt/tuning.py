"""Tuning jobs: search the configuration space by real replays of a window and recommend the
cheapest configuration that meets an SLO, optionally applying it.

A job runs on a background thread (``submit``) or in the caller's thread (``run``), one at a
time per process (replays of embedded stores run one after another anyway). Its record is a
JSON file under ``<data dir>/tuning/`` (request, state, every evaluation, the best
configuration, the improvement over the starting one, what was applied), replaced atomically
after every evaluation, so ``GET /tune/{id}`` shows progress and a record survives a restart.
The replays of a job are kept under ``tuning/<job id>/replays/``.

Window: the evaluation replays a sample of the window, its first ``sample_s`` seconds from the
first record in it (the whole window when ``sample_s`` is None).
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import orjson

from streamprov.adapt.errors import TuningBusy, TuningConflict
from streamprov.adapt.evaluate import ReplayEvaluator
from streamprov.adapt.search import ALGORITHMS, make_search, search, summary
from streamprov.adapt.service import AdaptationService
from streamprov.adapt.slo import Evaluation, Slo
from streamprov.adapt.space import Candidate, SearchSpace
from streamprov.config import Catalog
from streamprov.errors import InvalidInput, NotFound, StoreError, StreamprovError
from streamprov.model import format_time_ns, parse_time_ns, validate_id
from streamprov.replay.gate import StoreGate
from streamprov.replay.request import check_speed
from streamprov.runtime import Pipeline
from streamprov.store import ProvenanceStore

_log = logging.getLogger("streamprov.adapt")
MAX_BUDGET = 500
DEFAULT_START = "medium"
"""Starting configuration when a request names none (the improvement is measured from it)."""
INTERRUPTED = "interrupted: the process running this tuning job stopped before it finished"


@dataclass(frozen=True, slots=True)
class TuneRequest:
    """What to tune: a window of a stream, an SLO, an algorithm and a budget of evaluations."""

    stream_id: str
    start_ns: int
    end_ns: int
    slo: Slo
    algorithm: str = "hill-climb"
    budget: int = 12
    apply: bool = False
    sample_s: float | None = None
    speed: float = 1.0
    configuration_id: str | None = None
    nodes: tuple[int, int] | None = None
    node_types: tuple[str, ...] | None = None
    batch_sizes: tuple[int, ...] | None = None
    repeats: int = 1
    seed: int = 0

    @classmethod
    def parse(cls, *, stream_id: str, start: str | int, end: str | int,
              p99_latency_ms: float, max_error_rate: float = 0.0, keep_up: bool = True,
              algorithm: str = "hill-climb", budget: int = 12, apply: bool = False,
              sample_s: float | None = None, speed: Any = 1.0,
              configuration_id: str | None = None, nodes: list[int] | None = None,
              node_types: list[str] | None = None, batch_sizes: list[int] | None = None,
              repeats: int = 1, seed: int = 0) -> TuneRequest:
        """Validate user input; ``InvalidInput`` names the API field that is wrong."""
        validate_id(stream_id, "streamId")
        start_ns = parse_time_ns(start, "startTime")
        end_ns = parse_time_ns(end, "endTime")
        if start_ns >= end_ns:
            raise InvalidInput("startTime must be before endTime", field="startTime")
        if not (isinstance(p99_latency_ms, int | float) and math.isfinite(p99_latency_ms)
                and p99_latency_ms > 0):
            raise InvalidInput("slo.p99LatencyMs must be a positive number",
                               field="slo.p99LatencyMs")
        slo = Slo(round(p99_latency_ms * 1e6), float(max_error_rate), bool(keep_up))
        if algorithm not in ALGORITHMS:
            raise InvalidInput(f"algorithm must be one of {', '.join(ALGORITHMS)}, got "
                               f"{algorithm!r}", field="algorithm")
        if not 1 <= budget <= MAX_BUDGET:
            raise InvalidInput(f"budget must be 1..{MAX_BUDGET} evaluations", field="budget")
        if sample_s is not None and not (math.isfinite(sample_s) and sample_s > 0):
            raise InvalidInput("sampleS must be a positive number of seconds", field="sampleS")
        if configuration_id is not None:
            validate_id(configuration_id, "configurationId")
        node_range: tuple[int, int] | None = None
        if nodes is not None:
            if len(nodes) != 2 or not 1 <= nodes[0] <= nodes[1] <= 1024:
                raise InvalidInput("nodes must be [min, max] with 1 <= min <= max",
                                   field="nodes")
            node_range = (nodes[0], nodes[1])
        if batch_sizes is not None and (not batch_sizes
                                        or any(not 1 <= b <= 1_000_000 for b in batch_sizes)):
            raise InvalidInput("batchSizes must be 1..1000000 each", field="batchSizes")
        if node_types is not None:
            if not node_types:
                raise InvalidInput("nodeTypes must name at least one node type",
                                   field="nodeTypes")
            for t in node_types:
                validate_id(t, "nodeTypes")
        if not 0 <= repeats <= 5:
            raise InvalidInput("repeats must be 0..5", field="repeats")
        return cls(stream_id, start_ns, end_ns, slo, algorithm, budget, apply, sample_s,
                   check_speed(speed), configuration_id, node_range,
                   tuple(node_types) if node_types else None,
                   tuple(sorted(set(batch_sizes))) if batch_sizes else None, repeats, seed)

    def to_json(self) -> dict[str, Any]:
        return {
            "streamId": self.stream_id, "startTime": format_time_ns(self.start_ns),
            "endTime": format_time_ns(self.end_ns), "startNs": self.start_ns,
            "endNs": self.end_ns, "slo": self.slo.to_json(), "algorithm": self.algorithm,
            "budget": self.budget, "apply": self.apply, "sampleS": self.sample_s,
            "replaySpeed": self.speed, "configurationId": self.configuration_id,
            "nodes": list(self.nodes) if self.nodes else None,
            "nodeTypes": list(self.node_types) if self.node_types else None,
            "batchSizes": list(self.batch_sizes) if self.batch_sizes else None,
            "repeats": self.repeats, "seed": self.seed,
        }


class StoreSettings(Protocol):
    @property
    def data_dir(self) -> Path: ...

    @property
    def provenance_url(self) -> str: ...

    @property
    def stream_log_url(self) -> str: ...

    @property
    def queue_batches(self) -> int: ...


class TuningHost(Protocol):
    """What a tuning job needs of the process it runs in (``streamprov.app.App`` is one):
    where the stores are, the gate that orders their use, the pipeline of a stream, and a
    shared read of the provenance store (through the gate)."""

    @property
    def settings(self) -> StoreSettings: ...

    @property
    def gate(self) -> StoreGate: ...

    def pipeline_for(self, stream_id: str) -> Pipeline: ...

    def provenance(self, *, read_only: bool = True
                   ) -> AbstractContextManager[ProvenanceStore]: ...


def new_tune_id() -> str:
    return f"t-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


class TuningService:
    """Runs tuning jobs over ``application``'s stores with ``catalog``; ``adaptation`` learns
    from every evaluation replay and applies recommendations."""

    def __init__(self, application: TuningHost, catalog: Catalog,
                 adaptation: AdaptationService,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        self.application = application
        self.catalog = catalog
        self.adaptation = adaptation
        self.on_event = on_event
        """Called as ``on_event(state, doc)`` on the job's thread after each change of state
        has been saved (``running``, then ``completed``, ``failed`` or ``cancelled``), with a
        copy of the record. Whatever it raises is logged and ignored: a listener never fails
        a job; it should return quickly."""
        self.root = application.settings.data_dir / "tuning"
        self._lock = threading.Lock()
        self._running: dict[str, dict[str, Any]] = {}
        self._cancel: dict[str, threading.Event] = {}
        self._done: dict[str, threading.Event] = {}
        self._recover()

    # -- public API -----------------------------------------------------------------------
    def submit(self, request: TuneRequest,
               on_evaluation: Callable[[dict[str, Any]], None] | None = None
               ) -> dict[str, Any]:
        """Validate against the catalog and the stream, then start in the background."""
        plan = self._plan(request)
        with self._lock:
            if self._running:
                busy = next(iter(self._running))
                raise TuningBusy(f"tuning job {busy} is running; one runs at a time",
                                 retry_after_s=30, field="streamId")
            tune_id = new_tune_id()
            doc: dict[str, Any] = {
                "tuneId": tune_id, "request": request.to_json(), "state": "pending",
                "createdNs": time.time_ns(), "space": plan["space"].to_json(),
                "window": plan["window"], "start": None, "evaluations": [], "best": None,
                "improvement": None, "applied": [], "replays": 0, "error": None,
            }
            self._running[tune_id] = doc
            self._cancel[tune_id] = threading.Event()
            self._done[tune_id] = threading.Event()
        self._save(doc)
        threading.Thread(target=self._thread, args=(tune_id, request, plan, on_evaluation),
                         name=f"streamprov-tune-{tune_id}", daemon=True).start()
        return _copy(doc)

    def run(self, request: TuneRequest,
            on_evaluation: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Submit and wait; returns the finished record."""
        doc = self.submit(request, on_evaluation)
        tune_id = doc["tuneId"]
        try:
            self._done[tune_id].wait()
        except KeyboardInterrupt:
            self.cancel(tune_id)
            self._done[tune_id].wait(120)
            raise
        return self.get(tune_id)

    def wait(self, tune_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        done = self._done.get(tune_id)
        if done is not None:
            done.wait(timeout_s)
        return self.get(tune_id)

    def get(self, tune_id: str) -> dict[str, Any]:
        validate_id(tune_id, "tuneId")
        with self._lock:
            doc = self._running.get(tune_id)
            if doc is not None:
                return _copy(doc)
        path = self.root / f"{tune_id}.json"
        try:
            loaded: dict[str, Any] = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise NotFound(f"unknown tuning job {tune_id!r}", field="tuneId") from None
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StoreError(f"cannot read tuning job {tune_id}: {exc}") from exc
        return loaded

    def list(self) -> list[dict[str, Any]]:
        """Jobs, newest first (without their evaluations)."""
        out = []
        if self.root.is_dir():
            for p in self.root.glob("t-*.json"):
                try:
                    doc = orjson.loads(p.read_bytes())
                except (OSError, orjson.JSONDecodeError):
                    continue
                doc.pop("evaluations", None)
                out.append(doc)
        return sorted(out, key=lambda d: d.get("createdNs", 0), reverse=True)

    def cancel(self, tune_id: str) -> dict[str, Any]:
        ev = self._cancel.get(tune_id)
        if ev is None or tune_id not in self._running:
            doc = self.get(tune_id)
            raise TuningConflict(f"tuning job {tune_id} has already finished ({doc['state']})",
                                 field="tuneId")
        ev.set()
        return self.get(tune_id)

    def reconfigure(self, event: dict[str, Any], *, budget: int = 6,
                    sample_s: float | None = 2.0) -> str | None:
        """A reconfiguration cycle for a deviation trigger (``AdaptationService``'s
        ``on_trigger``): tune the triggering replay's window for the cheapest configuration
        that delivers what was expected of this one (p99 within the trigger's latency
        threshold), applying the result. Returns the job id; None when the trigger names no
        window or no latency, or a job already runs (the trigger is still recorded)."""
        window = event.get("window") or {}
        expected = event.get("expected") or {}
        p99 = expected.get("p99LatencyNs")
        if not window.get("startNs") or not window.get("endNs") or not p99:
            return None
        slack = 1 + float((event.get("thresholds") or {}).get("latency", 0.5))
        cid = event.get("configurationId")
        try:
            req = TuneRequest.parse(
                stream_id=str(event["streamId"]), start=int(window["startNs"]),
                end=int(window["endNs"]), p99_latency_ms=p99 / 1e6 * slack, budget=budget,
                apply=True, sample_s=sample_s, speed=event.get("replaySpeed", 1.0),
                configuration_id=cid if cid in self.catalog.configurations() else None)
            return str(self.submit(req)["tuneId"])
        except StreamprovError:
            return None

    def close(self, timeout_s: float = 60.0) -> None:
        for tune_id in list(self._running):
            self._cancel[tune_id].set()
        for tune_id in list(self._done):
            self._done[tune_id].wait(timeout_s)

    # -- internals ------------------------------------------------------------------------
    def _recover(self) -> None:
        if not self.root.is_dir():
            return
        for p in self.root.glob("t-*.json"):
            try:
                doc = orjson.loads(p.read_bytes())
            except (OSError, orjson.JSONDecodeError):
                continue
            if doc.get("state") in ("pending", "running"):
                doc["state"] = "failed"
                doc["error"] = {"message": INTERRUPTED, "field": None}
                self._save(doc)

    def _save(self, doc: dict[str, Any]) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            path = self.root / f"{doc['tuneId']}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            tmp.replace(path)
        except OSError as exc:
            raise StoreError(f"cannot save tuning job {doc['tuneId']}: {exc}") from exc

    def _plan(self, req: TuneRequest) -> dict[str, Any]:
        """Resolve the pipeline, space, start and sample window; raise now on bad input."""
        pipeline = self.application.pipeline_for(req.stream_id)
        stages = [s.name for s in pipeline.stages]
        hi_default = min(4, pipeline.max_parallelism)
        node_range = req.nodes or (1, hi_default)
        if node_range[1] > pipeline.max_parallelism:
            raise InvalidInput(f"nodes: {node_range[1]} is more than the pipeline's "
                               f"max_parallelism ({pipeline.max_parallelism})", field="nodes")
        space = SearchSpace.generate(self.catalog, nodes=node_range, node_types=req.node_types,
                                     batch_sizes=req.batch_sizes, stages=len(stages))
        start: Candidate | None = None
        start_id = req.configuration_id
        if start_id is None and DEFAULT_START in self.catalog.configurations():
            start_id = DEFAULT_START
        if start_id is not None:
            cfg = self.catalog.configuration(start_id)
            counts = cfg.stage_counts(stages, pipeline.max_parallelism)
            start = space.clamp(Candidate(max(counts.values()), cfg.node_type,
                                          cfg.batch_size))
        with self.application.provenance() as store:
            if not store.has_stream(req.stream_id):
                raise NotFound(f"unknown stream {req.stream_id!r}", field="streamId")
            first = store.window(req.stream_id, req.start_ns, req.end_ns, limit=1)
        if not first:
            raise InvalidInput("the window holds no records of the stream", field="startTime")
        w_start = first[0].origin_ns
        w_end = req.end_ns if req.sample_s is None \
            else min(req.end_ns, w_start + round(req.sample_s * 1e9))
        window = {"startNs": w_start, "endNs": w_end, "startTime": format_time_ns(w_start),
                  "endTime": format_time_ns(w_end), "sampleS": (w_end - w_start) / 1e9}
        return {"space": space, "start": start, "window": window}

    def _update(self, tune_id: str, **changes: Any) -> None:
        with self._lock:
            doc = self._running[tune_id]
            changed = "state" in changes and changes["state"] != doc.get("state")
            doc.update(changes)
            snapshot = _copy(doc)
        self._save(snapshot)
        if changed and self.on_event is not None:
            try:
                self.on_event(snapshot["state"], snapshot)
            except Exception:
                _log.exception("tuning job %s: the state listener failed", tune_id)

    def _thread(self, tune_id: str, req: TuneRequest, plan: dict[str, Any],
                on_evaluation: Callable[[dict[str, Any]], None] | None) -> None:
        try:
            self._execute(tune_id, req, plan, on_evaluation)
        except BaseException as exc:
            if isinstance(exc, StreamprovError):
                error = {"message": exc.message, "field": exc.field}
            else:
                error = {"message": f"{type(exc).__name__}: {exc}", "field": None,
                         "trace": traceback.format_exc(limit=5)}
            state = "cancelled" if self._cancel[tune_id].is_set() else "failed"
            self._update(tune_id, state=state, error=error, finishedNs=time.time_ns())
        finally:
            with self._lock:
                self._running.pop(tune_id, None)
            self._done[tune_id].set()

    def _execute(self, tune_id: str, req: TuneRequest, plan: dict[str, Any],
                 on_evaluation: Callable[[dict[str, Any]], None] | None) -> None:
        s = self.application.settings
        space: SearchSpace = plan["space"]
        window = plan["window"]
        cancel = self._cancel[tune_id]
        replays = [0]

        def learned(doc: dict[str, Any]) -> None:
            replays[0] += 1
            self.adaptation.learn(doc)

        evaluator = ReplayEvaluator.create(
            job_dir=self.root / tune_id, catalog=self.catalog, space=space,
            provenance_url=s.provenance_url, stream_log_url=s.stream_log_url,
            pipeline_for=self.application.pipeline_for, gate=self.application.gate,
            queue_batches=s.queue_batches, slo=req.slo, stream_id=req.stream_id,
            start_ns=window["startNs"], end_ns=window["endNs"], speed=req.speed,
            repeats=req.repeats, on_replay=learned, cancelled=cancel.is_set)
        evaluations: list[dict[str, Any]] = []

        def record(ev: Evaluation) -> None:
            entry = {"index": len(evaluations) + 1, **ev.to_json()}
            evaluations.append(entry)
            self._update(tune_id, evaluations=list(evaluations), replays=replays[0])
            if on_evaluation is not None:
                on_evaluation(entry)

        self._update(tune_id, state="running", startedNs=time.time_ns())
        algorithm = make_search(req.algorithm, space, seed=req.seed)
        result = search(algorithm, space, evaluator, budget=req.budget, start=plan["start"],
                        on_evaluation=record)
        if cancel.is_set():
            raise StreamprovError("cancelled", field="tuneId")
        outcome = summary(result)
        improvement = None
        if result.best is not None and result.start is not None:
            improvement = {"startCost": round(result.start.cost, 6),
                           "bestCost": round(result.best.cost, 6),
                           "costReduction": outcome["costImprovement"],
                           "startMetSlo": result.start.slo_met,
                           "p99LatencyNs": {"start": result.start.p99_latency_ns,
                                            "best": result.best.p99_latency_ns}}
        applied: list[dict[str, Any]] = []
        if req.apply and result.best is not None:
            applied = self.adaptation.apply(
                req.stream_id, result.best.candidate, trigger=f"tune {tune_id}",
                figures={"cost": result.best.cost,
                         "p99LatencyNs": result.best.p99_latency_ns,
                         "throughput": result.best.throughput,
                         "slo": req.slo.to_json()},
                from_configuration=result.start.candidate.to_json() if result.start else None)
        self._update(tune_id, state="completed", best=outcome["best"], start=outcome["start"],
                     improvement=improvement, applied=applied, replays=replays[0],
                     finishedNs=time.time_ns(),
                     message=None if result.best is not None else
                     "no configuration evaluated met the SLO; raise the budget, widen the "
                     "space or loosen the SLO")


def _copy(doc: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(orjson.dumps(doc))
    return out
