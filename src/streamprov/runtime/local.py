"""The local runner: every node instance is an OS process on this machine.

The driver (the process that calls ``LocalRunner.start``) owns the deployment: it spawns the
processes, tells them about scaling, and drains them in order on stop. It never touches
records itself; it only watches events (ready, done, error) and collects captured output.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from streamprov.errors import InvalidInput, PipelineError
from streamprov.model import validate_id
from streamprov.runtime import worker
from streamprov.runtime.base import next_record_base
from streamprov.runtime.pipeline import Pipeline
from streamprov.runtime.sinks import is_capture
from streamprov.runtime.worker import DRAIN, RING, ClockFactory, Wiring, system_clock

_READY_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class ScaleStep:
    """One scaling action taken on a running deployment."""

    stage: str
    before: int
    after: int
    started_ns: int
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return {"stage": self.stage, "from": self.before, "to": self.after,
                "startedNs": self.started_ns, "durationS": round(self.duration_s, 6)}


@dataclass(slots=True)
class RunResult:
    """What a deployment did, from its processes' own counts."""

    stream_id: str
    replay_id: str
    duration_s: float
    ingested: int
    delivered: int
    dropped: int
    failed: int
    chains_written: int
    rows_written: int
    nodes: list[dict[str, Any]]
    scaling: list[ScaleStep] = field(default_factory=list)

    @property
    def throughput(self) -> float:
        """Ingested records per second of run time."""
        return self.ingested / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(slots=True)
class _Proc:
    token: int
    role: str
    process: mp.process.BaseProcess
    stage_index: int = -1
    slot: int = -1
    done: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


class LocalRunner:
    """Starts pipelines as OS processes.

    ``batch_size`` records per batch between processes; ``queue_batches`` bounds every inbox
    (the memory a slow stage can make its producers hold back).
    """

    def __init__(self, *, batch_size: int = 1024, queue_batches: int = 8,
                 start_method: str = "forkserver") -> None:
        if batch_size < 1:
            raise InvalidInput("batch size must be at least 1", field="batchSize")
        if queue_batches < 1:
            raise InvalidInput("queue size must be at least 1", field="queueBatches")
        self.batch_size = batch_size
        self.queue_batches = queue_batches
        self._ctx: Any = mp.get_context(start_method)
        if start_method == "forkserver":
            self._ctx.set_forkserver_preload(["streamprov.runtime.worker"])

    def start(
        self,
        pipeline: Pipeline,
        *,
        provenance_url: str,
        stream_log_url: str,
        stream_id: str | None = None,
        replay_id: str = "",
        record_base: int | None = None,
        log_ingest: bool = True,
        clock_factory: ClockFactory = system_clock,
    ) -> Deployment:
        """Start ``pipeline``; records get ids from ``record_base`` (default: after the
        stream log's last record of the stream)."""
        pipeline.validated()
        sid = validate_id(stream_id or pipeline.name, "stream")
        record_base = next_record_base(stream_log_url, sid, record_base)
        return Deployment(self, self._ctx, pipeline, sid, replay_id, record_base, log_ingest,
                          provenance_url, stream_log_url, clock_factory)


class Deployment:
    """A running pipeline. Use ``wait`` (run until the source ends) or ``stop``."""

    def __init__(self, runner: LocalRunner, ctx: Any, pipeline: Pipeline,
                 stream_id: str, replay_id: str, record_base: int, log_ingest: bool,
                 provenance_url: str, stream_log_url: str,
                 clock_factory: ClockFactory) -> None:
        self.pipeline = pipeline
        self.stream_id = stream_id
        self.replay_id = replay_id
        self._ctx = ctx
        self._lock = threading.RLock()
        self._tokens = 0
        self._procs: dict[int, _Proc] = {}
        self._events: Any = ctx.Queue()
        self._ready: dict[int, int] = {}
        self._ingested = 0
        self._errors: list[str] = []
        self._cond = threading.Condition()
        self.captured: list[dict[str, Any]] = []
        self.scaling: list[ScaleStep] = []
        self._finished: RunResult | None = None
        qsize = runner.queue_batches
        sinks = [s.sink for s in pipeline.stages]
        self._capture: Any = ctx.Queue() if is_capture(sinks) else None
        self._stop_event = ctx.Event()
        self.wiring = Wiring(
            pipeline=pipeline, stream_id=stream_id, replay_id=replay_id,
            batch_size=runner.batch_size,
            stage_inboxes=[[ctx.Queue(qsize) for _ in range(pipeline.max_parallelism)]
                           for _ in pipeline.stages],
            ingest_inbox=ctx.Queue(qsize * max(1, pipeline.sources)),
            writer_inbox=ctx.Queue(qsize * 4),
            events=self._events, capture=self._capture,
            stream_log_url=stream_log_url, provenance_url=provenance_url,
            record_base=record_base, log_ingest=log_ingest, clock_factory=clock_factory,
            stop_event=self._stop_event,
        )
        self._active: list[list[int]] = [list(range(s.parallelism)) for s in pipeline.stages]
        self._threads = [threading.Thread(target=self._pump_events, daemon=True,
                                          name="streamprov-events")]
        if self._capture is not None:
            self._threads.append(threading.Thread(target=self._pump_capture, daemon=True,
                                                  name="streamprov-capture"))
        for t in self._threads:
            t.start()
        try:
            self._spawn_all()
        except BaseException:
            self._kill_all()
            raise
        # run time counts from when every node is up: process start-up is not throughput
        self._started = time.perf_counter()
        self.started_ns = time.time_ns()

    # -- process management ---------------------------------------------------------------
    def _spawn(self, role: str, target: Any, args: tuple[Any, ...], stage_index: int = -1,
               slot: int = -1) -> _Proc:
        self._tokens += 1
        token = self._tokens
        name = f"streamprov-{self.pipeline.name}-{role}"
        proc = self._ctx.Process(target=target, args=(self.wiring, token, *args), name=name,
                                 daemon=True)
        entry = _Proc(token, role, proc, stage_index, slot)
        self._procs[token] = entry
        proc.start()
        return entry

    def _spawn_stage(self, index: int, slot: int) -> _Proc:
        members = (tuple(self._active[index + 1]) if index + 1 < len(self._active) else None)
        stage = self.pipeline.stages[index]
        return self._spawn(f"{stage.name}-{slot}", worker.run_stage, (index, slot, members),
                           index, slot)

    def _spawn_all(self) -> None:
        self._writer = self._spawn("writer", worker.run_writer, ())
        for index in reversed(range(len(self.pipeline.stages))):
            for slot in self._active[index]:
                self._spawn_stage(index, slot)
        self._ingest = self._spawn("ingest", worker.run_ingest, (tuple(self._active[0]),))
        # sources last, once everything downstream is up: records must not wait in queues
        # for processes still starting (that would count start-up as latency)
        self._await_ready(list(self._procs))
        self._sources = [
            self._spawn(f"source-{k}", worker.run_source, (k,))
            for k in range(self.pipeline.sources)
        ]
        self._await_ready(list(self._procs))

    def _await_ready(self, tokens: list[int]) -> None:
        deadline = time.monotonic() + _READY_TIMEOUT_S
        with self._cond:
            while not all(t in self._ready for t in tokens):
                self._raise_if_failed()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PipelineError("node processes did not start within "
                                        f"{_READY_TIMEOUT_S:.0f}s")
                self._cond.wait(min(left, 0.2))

    def _pump_events(self) -> None:
        while True:
            try:
                ev = self._events.get()
            except (EOFError, OSError):
                return
            if ev is None:
                return
            with self._cond:
                kind, token = ev[0], ev[1]
                if kind == "ready":
                    self._ready[token] = ev[2]
                elif kind == "done":
                    entry = self._procs.get(token)
                    if entry is not None:
                        entry.done = True
                        entry.stats = ev[2]
                elif kind == "progress":
                    self._ingested = ev[2]
                elif kind == "error":
                    self._errors.append(ev[2])
                self._cond.notify_all()

    def _pump_capture(self) -> None:
        while True:
            try:
                got = self._capture.get()
            except (EOFError, OSError):
                return
            if got is None:
                return
            self.captured.extend(got)

    def _raise_if_failed(self) -> None:
        if self._errors:
            raise PipelineError(self._errors[0])
        for entry in self._procs.values():
            code = entry.process.exitcode
            if code is not None and code != 0 and not entry.done:
                raise PipelineError(
                    f"node process {entry.role} (pid {entry.process.pid}) died with exit "
                    f"code {code}"
                )

    def _join(self, entries: list[_Proc], timeout_s: float | None) -> None:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        for entry in entries:
            while True:
                entry.process.join(0.1)
                if entry.process.exitcode is not None:
                    break
                with self._cond:
                    self._raise_if_failed()
                if deadline is not None and time.monotonic() > deadline:
                    raise PipelineError(f"{entry.role} did not finish within {timeout_s}s")
        with self._cond:
            self._raise_if_failed()
            # "done" travels on the events queue; give the pump a moment to deliver it
            wait_until = time.monotonic() + 5.0
            while not all(e.done for e in entries) and time.monotonic() < wait_until:
                self._cond.wait(0.05)

    def _kill_all(self) -> None:
        for entry in self._procs.values():
            if entry.process.is_alive():
                entry.process.kill()
        for entry in self._procs.values():
            entry.process.join(5)

    def _tokens_of(self, index: int) -> frozenset[int]:
        """Producer tokens feeding stage ``index``."""
        if index == 0:
            return frozenset([self._ingest.token])
        return frozenset(e.token for e in self._live_stage(index - 1))

    def _live_stage(self, index: int) -> list[_Proc]:
        return [e for e in self._procs.values()
                if e.stage_index == index and e.slot in self._active[index] and not e.done
                and e.process.exitcode is None]

    def _upstream_inboxes(self, index: int) -> list[Any]:
        if index == 0:
            return [self.wiring.ingest_inbox]
        return [self.wiring.stage_inboxes[index - 1][e.slot] for e in self._live_stage(index - 1)]

    # -- public API -----------------------------------------------------------------------
    def pids(self) -> dict[str, int]:
        """Process id of every node process that is up, by role (for resource sampling)."""
        with self._cond:
            return {e.role: self._ready[t] for t, e in self._procs.items()
                    if t in self._ready and e.process.exitcode is None}

    def ingested(self) -> int:
        """Records appended to the stream log so far (updated a few times a second)."""
        return self._ingested

    @property
    def finished(self) -> bool:
        return self._finished is not None

    def parallelism(self) -> dict[str, int]:
        return {s.name: len(self._active[i]) for i, s in enumerate(self.pipeline.stages)}

    def scale(self, stage: str, n: int) -> ScaleStep:
        """Run ``n`` instances of ``stage``: start new ones or drain surplus ones.

        Only the keys whose ring owner changes move; records already queued at an instance
        being drained are processed by it before it exits, so nothing is lost or duplicated.
        """
        index = self.pipeline.stage_index(stage)
        st = self.pipeline.stages[index]
        if st.sink is not None and n > 1 and not st.sink.parallel_safe:
            raise InvalidInput(f"stage {stage!r} writes one output and cannot scale out",
                               field="parallelism")
        if not 1 <= n <= self.pipeline.max_parallelism:
            raise InvalidInput(
                f"parallelism for {stage!r} must be 1..{self.pipeline.max_parallelism}",
                field="parallelism",
            )
        with self._lock:
            if self._finished is not None:
                raise PipelineError("the deployment has already finished")
            started = time.perf_counter()
            started_ns = time.time_ns()
            before = list(self._active[index])
            if n > len(before):
                free = [s for s in range(self.pipeline.max_parallelism) if s not in before]
                new_slots = free[: n - len(before)]
                self._active[index] = sorted(before + new_slots)
                spawned = [self._spawn_stage(index, s) for s in new_slots]
                self._await_ready([e.token for e in spawned])
                for inbox in self._upstream_inboxes(index):
                    inbox.put((RING, tuple(self._active[index])))
            elif n < len(before):
                leaving = before[n:]
                upstream = self._tokens_of(index)
                upstream_inboxes = self._upstream_inboxes(index)
                gone = [e for e in self._live_stage(index) if e.slot in leaving]
                self._active[index] = before[:n]
                for inbox in upstream_inboxes:
                    inbox.put((RING, tuple(self._active[index])))
                for e in gone:
                    self.wiring.stage_inboxes[index][e.slot].put((DRAIN, upstream))
                self._join(gone, None)
            step = ScaleStep(stage, len(before), n, started_ns, time.perf_counter() - started)
            self.scaling.append(step)
            return step

    def wait(self, timeout_s: float | None = None) -> RunResult:
        """Run until every source is exhausted, then drain and return the result."""
        return self._finish(stop=False, timeout_s=timeout_s)

    def stop(self, timeout_s: float | None = 60.0) -> RunResult:
        """Stop the sources and drain every record already ingested."""
        return self._finish(stop=True, timeout_s=timeout_s)

    def _finish(self, *, stop: bool, timeout_s: float | None) -> RunResult:
        with self._lock:
            if self._finished is not None:
                return self._finished
            try:
                if stop:
                    self._stop_event.set()
                self._join(self._sources, timeout_s)
                self.wiring.ingest_inbox.put(
                    (DRAIN, frozenset(e.token for e in self._sources)))
                for index in range(len(self.pipeline.stages)):
                    upstream = self._tokens_of(index)
                    for e in self._live_stage(index):
                        self.wiring.stage_inboxes[index][e.slot].put((DRAIN, upstream))
                self._join([self._ingest], timeout_s)
                # join every stage process, also those that already said "done": until a
                # process has exited, its last chains may still be on their way to the writer
                for index in range(len(self.pipeline.stages)):
                    self._join([e for e in self._procs.values() if e.stage_index == index],
                               timeout_s)
                self.wiring.writer_inbox.put((DRAIN, frozenset()))
                self._join([self._writer], timeout_s)
            except BaseException:
                self._kill_all()
                raise
            finally:
                self._close_pumps()
            self._finished = self._result()
            return self._finished

    def _close_pumps(self) -> None:
        self._events.put(None)
        if self._capture is not None:
            self._capture.put(None)
        for t in self._threads:
            t.join(10)

    def _result(self) -> RunResult:
        nodes = [dict(e.stats, role=e.role) for e in self._procs.values()]
        ingested = sum(e.stats.get("recordsOut", 0) + e.stats.get("failed", 0)
                       for e in self._sources)
        stages = [e for e in self._procs.values() if e.stage_index >= 0]
        return RunResult(
            stream_id=self.stream_id,
            replay_id=self.replay_id,
            duration_s=time.perf_counter() - self._started,
            ingested=ingested,
            delivered=sum(e.stats.get("delivered", 0) for e in stages),
            dropped=sum(e.stats.get("dropped", 0) for e in stages),
            failed=sum(e.stats.get("failed", 0) for e in stages)
            + sum(e.stats.get("failed", 0) for e in self._sources),
            chains_written=self._writer.stats.get("chains", 0),
            rows_written=self._writer.stats.get("rowsWritten", 0),
            nodes=nodes,
            scaling=list(self.scaling),
        )

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._finished is None:
            if exc[0] is None:
                self.stop()
            else:
                self._kill_all()


__all__ = ["Deployment", "LocalRunner", "RunResult", "ScaleStep"]
