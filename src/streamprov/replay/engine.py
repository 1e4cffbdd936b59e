"""The replay engine: rebuild a window, provision a configuration, inject at speed, report.

A replay runs on a background thread through these states::

    pending -> provisioning (reconstructing the window, starting nodes)
            -> running (injecting, draining, measuring) -> completed | failed | cancelled

Embedded DuckDB stores admit one process at a time, so a replay holds the ``StoreGate``
exclusively from reconstruction to report: the window is first written to an Arrow IPC file
in the data dir and the stores are closed; only then is the deployment started (its writer
process opens the provenance store); after it has drained, the store is reopened to measure
the replay's chains. With one replay slot (the default for embedded stores) a second request
is refused with ``ReplayBusy`` instead of queueing behind it.

Isolation: the deployment runs with the replay's id, so its node ids are
``<pipeline>~replay/<stage>/<slot>`` and every chain is stored under that id; records keep
their original ids, and nothing is appended to the stream log.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from streamprov.config import Catalog, Configuration
from streamprov.errors import InvalidInput, NotFound, PipelineError, StreamprovError
from streamprov.metrics.resources import ResourceSampler
from streamprov.model import validate_id
from streamprov.replay.errors import ReplayBusy, ReplayConflict
from streamprov.replay.gate import StoreGate
from streamprov.replay.measure import measure
from streamprov.replay.reconstruct import WindowFile, reconstruct
from streamprov.replay.registry import ReplayRegistry
from streamprov.replay.report import build_report, empty_report
from streamprov.replay.request import OutputSink, ReplayRequest, ReplayState
from streamprov.replay.source import ReplaySource, cancel_path, go_path
from streamprov.runtime import CaptureSink, Deployment, LocalRunner, NullSink, Pipeline
from streamprov.runtime.worker import ClockFactory, system_clock
from streamprov.store import open_provenance_store, open_stream_log

_POLL_S = 0.02
_log = logging.getLogger("streamprov.replay")
REPLAY_QUEUE_BATCHES = 64


def new_replay_id() -> str:
    return f"r-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"


@dataclass(slots=True)
class _Run:
    """A replay this engine is running (the registry holds the persisted view)."""

    replay_id: str
    request: ReplayRequest
    doc: dict[str, Any]
    cancel: threading.Event = field(default_factory=threading.Event)
    rescale: list[str] = field(default_factory=list)
    deployment: Deployment | None = None
    window: WindowFile | None = None
    expected_s: float = 0.0
    started_at: float = field(default_factory=time.monotonic)
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)


class ReplayEngine:
    """Runs replays; the API and the CLI are thin layers over these methods.

    ``pipeline_for(stream_id)`` returns the pipeline that produced a stream (``NotFound``
    otherwise). ``max_concurrent`` replays may run at once (1 for embedded stores).
    """

    def __init__(self, *, data_dir: Path, provenance_url: str, stream_log_url: str,
                 catalog: Catalog, pipeline_for: Callable[[str], Pipeline], gate: StoreGate,
                 queue_batches: int = 8, max_concurrent: int = 1,
                 sample_interval_s: float = 0.25,
                 clock_factory: Callable[[], ClockFactory] | None = None,
                 runner_factory: Callable[..., Any] | None = None,
                 on_event: Callable[[str, dict[str, Any]], None] | None = None) -> None:
        if max_concurrent < 1:
            raise InvalidInput("max concurrent replays must be at least 1",
                               field="maxConcurrent")
        self.data_dir = data_dir
        self.provenance_url = provenance_url
        self.stream_log_url = stream_log_url
        self.catalog = catalog
        self.pipeline_for = pipeline_for
        self.gate = gate
        self.queue_batches = queue_batches
        self.max_concurrent = 1 if gate.enabled else max_concurrent
        self.sample_interval_s = sample_interval_s
        self.clock_factory = clock_factory
        self.runner_factory = runner_factory
        """Builds the runner for a replay: ``(batch_size=, queue_batches=, node_type=)``;
        None: the local runner."""
        """Gives the clocks of replay nodes (synchronized like the original run's)."""
        self.on_event = on_event
        """Called as ``on_event(state, doc)`` on the replay's thread after each change of
        state has been saved (``provisioning``, ``running``, then ``completed``, ``failed`` or
        ``cancelled``), with a copy of the record. Whatever it raises is logged and ignored:
        a listener never fails a replay; it should return quickly (hand slow work to a
        thread of its own)."""
        self.registry = ReplayRegistry(data_dir / "replays")
        self.registry.recover()
        self._runs: dict[str, _Run] = {}
        self._lock = threading.Lock()

    # -- public API ---------------------------------------------------------------------------
    def submit(self, request: ReplayRequest) -> dict[str, Any]:
        """Validate, take a slot and start the replay in the background; returns its record.

        Raises before anything is stored: ``NotFound`` (unknown stream, configuration or
        pipeline), ``InvalidInput`` (counts the pipeline cannot take), ``ReplayBusy`` (no slot).
        """
        cfg = self.catalog.configuration(request.configuration_id)
        node_type = self.catalog.node_type(cfg.node_type, field="configurationId")
        pipeline = self.pipeline_for(request.stream_id)
        counts = self._counts(pipeline, cfg)
        with self._lock:
            active = [r for r in self._runs.values() if not r.done.is_set()]
            if len(active) >= self.max_concurrent:
                raise ReplayBusy(
                    f"{len(active)} replay(s) running (limit {self.max_concurrent}); try again "
                    "when one has finished", retry_after_s=self._retry_after(active),
                    field="streamId")
            self._check_window(request)
            replay_id = new_replay_id()
            doc: dict[str, Any] = {
                "replayId": replay_id, "request": request.to_json(),
                "state": ReplayState.PENDING.value, "createdNs": time.time_ns(),
                "progress": {"phase": "queued", "recordsTotal": None, "recordsInjected": 0,
                             "fraction": 0.0},
                "configuration": {"id": request.configuration_id, **cfg.model_dump(by_alias=True),
                                  "nodeTypeSpec": node_type.model_dump(by_alias=True)},
                "report": None, "error": None,
            }
            run = _Run(replay_id, request, doc)
            self._runs[replay_id] = run
        try:
            self.registry.save(doc)
        except BaseException:
            with self._lock:
                self._runs.pop(replay_id, None)
            raise
        threading.Thread(target=self._thread, args=(run, pipeline, cfg, counts),
                         name=f"streamprov-replay-{replay_id}", daemon=True).start()
        return dict(doc)

    def run(self, request: ReplayRequest,
            on_progress: Callable[[dict[str, Any]], None] | None = None,
            poll_s: float = 0.1) -> dict[str, Any]:
        """Submit and wait; returns the finished record (state, report or error)."""
        doc = self.submit(request)
        run = self._runs[doc["replayId"]]
        try:
            while not run.done.wait(poll_s):
                if on_progress is not None:
                    on_progress(dict(run.doc["progress"]))
        except KeyboardInterrupt:
            self.cancel(run.replay_id)
            run.done.wait(120)
            raise
        return self.get(run.replay_id)

    def get(self, replay_id: str) -> dict[str, Any]:
        run = self._runs.get(replay_id)
        if run is not None:
            with run.lock:
                return _copy(run.doc)
        return self.registry.get(replay_id)

    def live_deployments(self) -> list[Deployment]:
        """The deployments of the replays running now (a snapshot; one that finishes
        meanwhile reports its drained, empty queues)."""
        runs = list(self._runs.values())
        return [r.deployment for r in runs if r.deployment is not None and not r.done.is_set()]

    def history(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        """Past and running replays, newest first (from the registry)."""
        if stream_id is not None:
            validate_id(stream_id, "streamId")
        return self.registry.list(stream_id)

    def wait(self, replay_id: str, timeout_s: float | None = None) -> dict[str, Any]:
        run = self._runs.get(replay_id)
        if run is not None:
            run.done.wait(timeout_s)
        return self.get(replay_id)

    def cancel(self, replay_id: str) -> dict[str, Any]:
        """Ask a replay to stop; records already injected are drained and measured."""
        run = self._runs.get(replay_id)
        if run is None or run.done.is_set():
            doc = self.get(replay_id)  # NotFound for unknown ids
            raise ReplayConflict(f"replay {replay_id} has already finished ({doc['state']})",
                                 field="replayId")
        run.cancel.set()
        if run.window is not None:
            cancel_path(run.window.path).touch()
        return self.get(replay_id)

    def reconfigure(self, replay_id: str, configuration_id: str) -> dict[str, Any]:
        """Scale a running replay's deployment to another configuration's node counts."""
        run = self._runs.get(replay_id)
        if run is None or run.done.is_set():
            doc = self.get(replay_id)
            raise ReplayConflict(f"replay {replay_id} is not running ({doc['state']})",
                                 field="replayId")
        cfg = self.catalog.configuration(configuration_id)
        self.catalog.node_type(cfg.node_type, field="configurationId")
        self._counts(self.pipeline_for(run.request.stream_id), cfg)
        with run.lock:
            run.rescale.append(configuration_id)
        return self.get(replay_id)

    def close(self, timeout_s: float = 60.0) -> None:
        """Cancel running replays and wait for them (server shutdown)."""
        for run in list(self._runs.values()):
            if not run.done.is_set():
                run.cancel.set()
                if run.window is not None:
                    cancel_path(run.window.path).touch()
        for run in list(self._runs.values()):
            run.done.wait(timeout_s)

    # -- internals ------------------------------------------------------------------------------
    _FIELDS: ClassVar[dict[str, str]] = {
        "stream": "streamId", "start": "startTime", "end": "endTime"}

    def _check_window(self, request: ReplayRequest) -> None:
        """Raise now, not in the background, for an unknown stream or an expired window."""
        with self.gate.shared():
            store = open_provenance_store(self.provenance_url, read_only=True)
            try:
                if not store.has_stream(request.stream_id):
                    raise NotFound(f"unknown stream {request.stream_id!r}", field="streamId")
                store.window(request.stream_id, request.start_ns, request.end_ns, limit=1)
            except StreamprovError as exc:
                exc.field = self._FIELDS.get(exc.field or "", exc.field)
                raise
            finally:
                store.close()

    @staticmethod
    def _counts(pipeline: Pipeline, cfg: Configuration) -> dict[str, int]:
        names = [s.name for s in pipeline.stages]
        return cfg.stage_counts(names, pipeline.max_parallelism)

    def _retry_after(self, active: list[_Run]) -> int:
        left = [max(1.0, r.expected_s - (time.monotonic() - r.started_at)) for r in active]
        return max(1, math.ceil(min(left))) if left else 5

    def _update(self, run: _Run, *, save: bool = False, **changes: Any) -> None:
        with run.lock:
            changed = "state" in changes and changes["state"] != run.doc["state"]
            for k, v in changes.items():
                if k == "progress":
                    run.doc["progress"].update(v)
                else:
                    run.doc[k] = v
            doc = _copy(run.doc)
        if save:
            self.registry.save(doc)
        if changed and self.on_event is not None:
            try:
                self.on_event(doc["state"], doc)
            except Exception:
                _log.exception("replay %s: the state listener failed", run.replay_id)

    def _thread(self, run: _Run, pipeline: Pipeline, cfg: Configuration,
                counts: dict[str, int]) -> None:
        try:
            with self.gate.exclusive(f"replay {run.replay_id}", wait_s=60.0):
                self._execute(run, pipeline, cfg, counts)
        except BaseException as exc:
            if isinstance(exc, StreamprovError):
                error = {"message": exc.message, "field": exc.field}
            else:
                error = {"message": f"{type(exc).__name__}: {exc}", "field": None,
                         "trace": traceback.format_exc(limit=5)}
            self._update(run, save=True, state=ReplayState.FAILED.value, error=error,
                         finishedNs=time.time_ns())
        finally:
            if run.window is not None:
                for p in (run.window.path, go_path(run.window.path),
                          cancel_path(run.window.path)):
                    p.unlink(missing_ok=True)
            run.done.set()
            with self._lock:
                self._runs.pop(run.replay_id, None)

    def _execute(self, run: _Run, pipeline: Pipeline, cfg: Configuration,
                 counts: dict[str, int]) -> None:
        req = run.request
        started_wall = time.perf_counter()
        self._update(run, save=True, state=ReplayState.PROVISIONING.value,
                     progress={"phase": "reconstructing"})
        path = self.registry.root / f"{run.replay_id}.window.arrow"
        run.window = WindowFile(path)
        store = open_provenance_store(self.provenance_url, read_only=True)
        try:
            log = open_stream_log(self.stream_log_url, read_only=True)
            try:
                t = time.perf_counter()
                window = reconstruct(
                    store, log, req.stream_id, req.start_ns, req.end_ns, path,
                    on_progress=lambda n: self._update(run, progress={"recordsRead": n}),
                    cancelled=run.cancel.is_set)
                reconstruct_s = time.perf_counter() - t
            finally:
                log.close()
        finally:
            store.close()
        run.window = window
        run.expected_s = window.span_ns / 1e9 / req.speed
        self._update(run, progress={"recordsTotal": window.records})
        if run.cancel.is_set():
            self._update(run, save=True, state=ReplayState.CANCELLED.value,
                         finishedNs=time.time_ns())
            return
        if window.records == 0:
            report = empty_report(run.replay_id, req, window, reconstruct_s)
            self._update(run, save=True, state=ReplayState.COMPLETED.value, report=report,
                         progress={"phase": "done", "fraction": 1.0},
                         finishedNs=time.time_ns())
            return
        if not pipeline.provenance:
            raise PipelineError(f"pipeline {pipeline.name!r} has provenance turned off; a "
                                "replay is measured from its chains")
        sink = CaptureSink() if req.sink is OutputSink.CAPTURE else NullSink()
        replay_pipeline = (pipeline.with_source(ReplaySource(path, req.speed, window.records),
                                                sources=1)
                           .with_sink(sink).with_parallelism(counts))
        self._update(run, progress={"phase": "starting nodes"})
        node_type = self.catalog.node_type(cfg.node_type)
        t = time.perf_counter()
        # deeper inboxes than a normal run: the source emits many small batches on schedule,
        # and the ingest node gathers for up to 20 ms before forwarding (group commit); a
        # shallow inbox would block the source for that long and show as pacing lag
        queue_batches = max(self.queue_batches, REPLAY_QUEUE_BATCHES)
        runner = (self.runner_factory(batch_size=cfg.batch_size, queue_batches=queue_batches,
                                      node_type=node_type)
                  if self.runner_factory is not None
                  else LocalRunner(batch_size=cfg.batch_size, queue_batches=queue_batches))
        local = isinstance(runner, LocalRunner)
        dep = runner.start(replay_pipeline, provenance_url=self.provenance_url,
                           stream_log_url=self.stream_log_url, stream_id=req.stream_id,
                           replay_id=run.replay_id, record_base=0, log_ingest=False,
                           clock_factory=(self.clock_factory() if self.clock_factory is not None
                                          else system_clock))
        provisioning_s = time.perf_counter() - t
        run.deployment = dep
        sampler = ResourceSampler(dep.pids, interval_s=self.sample_interval_s,
                                  pin_cpus=node_type.cpus if local else None).start()
        configs = [(req.configuration_id, cfg)]
        warnings: list[str] = []
        try:
            go_path(path).touch()
            run.started_at = time.monotonic()
            self._update(run, save=True, state=ReplayState.RUNNING.value,
                         progress={"phase": "injecting"}, provisioningS=provisioning_s)
            self._inject(run, dep, sampler, configs, warnings, window.records)
            self._update(run, progress={"phase": "draining"})
            result = dep.wait()
        except BaseException:
            sampler.stop()
            if not dep.finished:
                dep.__exit__(RuntimeError, None, None)  # kills every node process
            raise
        usage = sampler.stop()
        self._update(run, progress={"phase": "measuring",
                                    "recordsInjected": result.ingested})
        store = open_provenance_store(self.provenance_url, read_only=True)
        try:
            start_ns = dep.started_ns - 60_000_000_000
            metrics = measure(store, req.stream_id, run.replay_id, max(0, start_ns),
                              time.time_ns() + 60_000_000_000)
        finally:
            store.close()
        final_cfg_id, final_cfg = configs[-1]
        final_type = self.catalog.node_type(final_cfg.node_type)
        report = build_report(
            replay_id=run.replay_id, request=req, window=window, result=result,
            metrics=metrics, usage=usage, node_type=final_type, configuration_id=final_cfg_id,
            initial_counts=counts, provisioning_s=provisioning_s, reconstruct_s=reconstruct_s,
            wall_s=time.perf_counter() - started_wall, cancelled=run.cancel.is_set(),
            warnings=warnings, captured=len(dep.captured),
        )
        state = ReplayState.CANCELLED if run.cancel.is_set() else ReplayState.COMPLETED
        self._update(run, save=True, state=state.value, report=report,
                     progress={"phase": "done", "fraction": 1.0,
                               "recordsInjected": result.ingested},
                     finishedNs=time.time_ns())

    def _inject(self, run: _Run, dep: Deployment, sampler: ResourceSampler,
                configs: list[tuple[str, Configuration]], warnings: list[str],
                total: int) -> None:
        """Watch the deployment while the source injects; apply rescale requests."""
        expected = set(dep.pids())
        while "source-0" in (live := dep.pids()):
            if set(expected) - set(live) - {"source-0"}:
                return  # a node died: wait() reports how
            with run.lock:
                pending = list(run.rescale)
                run.rescale.clear()
            for config_id in pending:
                cfg = self.catalog.configuration(config_id)
                counts = self._counts(dep.pipeline, cfg)
                sampler.set_pin_cpus(self.catalog.node_type(cfg.node_type).cpus)
                current = dep.parallelism()
                for stage, n in counts.items():
                    if current.get(stage) != n:
                        dep.scale(stage, n)
                if cfg.batch_size != configs[-1][1].batch_size:
                    warnings.append(f"scaled to {config_id!r} mid-flight: its batch size "
                                    f"{cfg.batch_size} applies to new deployments only")
                configs.append((config_id, cfg))
                self._update(run, save=True, scalingSteps=[s.to_json() for s in dep.scaling],
                             configurationId=config_id)
                expected = set(dep.pids())
            done = dep.ingested()
            self._update(run, progress={"recordsInjected": done,
                                        "fraction": round(min(1.0, done / total), 4)})
            time.sleep(_POLL_S)


def _copy(doc: dict[str, Any]) -> dict[str, Any]:
    import orjson

    out: dict[str, Any] = orjson.loads(orjson.dumps(doc))
    return out
