"""The local runner: every node instance is an OS process on this machine.

The driver (the process that calls ``LocalRunner.start``) owns the deployment: it spawns the
processes, tells them about scaling, and drains them in order on stop. It never touches
records itself; it only watches events (ready, done, error) and collects captured output.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from streamprov.errors import InvalidInput, PipelineError
from streamprov.model import Outcome, validate_id
from streamprov.runtime import worker
from streamprov.runtime.base import next_record_base
from streamprov.runtime.pipeline import Pipeline
from streamprov.runtime.recovery import (
    count_from_stores,
    find_unfinished,
    plan_restart,
    why_not_restart,
    write_redrive_file,
)
from streamprov.runtime.sinks import is_capture
from streamprov.runtime.worker import (
    DRAIN,
    RING,
    ClockFactory,
    Wiring,
    flush_interval_s,
    system_clock,
)

_READY_TIMEOUT_S = 60.0
_SAVE_WRITER_S = 5.0

log = logging.getLogger(__name__)


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


@dataclass(frozen=True, slots=True)
class Recovery:
    """One restart of a deployment after a node process crashed."""

    node: str
    exit_code: int
    at_ns: int
    redriven: int
    duration_s: float

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "exitCode": self.exit_code, "atNs": self.at_ns,
                "redriven": self.redriven, "durationS": round(self.duration_s, 6)}


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
    recoveries: list[Recovery] = field(default_factory=list)
    duplicated_outputs: int | None = None
    """Outputs delivered more than once because of a restart (None: the sink cannot tell)."""
    recovered: int = 0
    """Records earlier runs had logged but not finished, re-driven by this one (in
    ``ingested``)."""
    warnings: list[str] = field(default_factory=list)
    """What went wrong and was handled (a store outage, say), in order."""
    from_record: int = 0
    """The first record id of this run (its records, and those it recovered, are >= it)."""
    prior_outcomes: dict[Outcome, int] = field(default_factory=dict)
    """Chains of ids >= ``from_record`` already stored when the run started (records between
    recovered ones that an earlier run had finished): not this run's."""

    def own_outcomes(self, stored: dict[Outcome, int]) -> dict[Outcome, int]:
        """This run's chains, given the store's counts for ids >= ``from_record``."""
        return {o: n - self.prior_outcomes.get(o, 0) for o, n in stored.items()}

    @property
    def throughput(self) -> float:
        """Ingested records per second of run time."""
        return self.ingested / self.duration_s if self.duration_s > 0 else 0.0

    def cpu_s_by_role(self) -> dict[str, float]:
        """CPU seconds the node processes used from when they were ready (start-up not
        counted), by role: ``source`` (every source), ``ingest``, each stage by name (its
        instances together), ``writer``. Empty where the processes do not report it."""
        cpu: dict[str, float] = {}
        for node in self.nodes:
            if "cpuRunS" not in node:
                continue
            role = str(node.get("role", ""))
            role = role.rsplit("-", 1)[0] if role not in ("ingest", "writer") else role
            cpu[role] = cpu.get(role, 0.0) + float(node["cpuRunS"])
        return cpu


class _Crash(Exception):
    """A node process was killed by a signal (internal: the deployment restarts)."""

    def __init__(self, entry: _Proc) -> None:
        super().__init__(entry.role)
        self.entry = entry


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

    ``batch_size`` records per batch from each source (the ingest joins up to four of a
    source's batches from one group commit: when the stream is busy, batches after the ingest
    are larger, at no cost in latency); ``queue_batches`` bounds
    every inbox (the memory a slow stage can make its producers hold back). ``max_restarts``
    bounds the restarts after node crashes; ``writer_buffer_rows`` and ``writer_outage_s``
    how much the provenance writer keeps, and how long it waits, while the store is
    unavailable.
    """

    def __init__(self, *, batch_size: int = 1024, queue_batches: int = 8,
                 start_method: str = "forkserver", max_restarts: int = 10,
                 writer_buffer_rows: int = 4_194_304, writer_outage_s: float = 600.0) -> None:
        if batch_size < 1:
            raise InvalidInput("batch size must be at least 1", field="batchSize")
        if queue_batches < 1:
            raise InvalidInput("queue size must be at least 1", field="queueBatches")
        self.batch_size = batch_size
        self.queue_batches = queue_batches
        self.max_restarts = max_restarts
        self.writer_buffer_rows = writer_buffer_rows
        self.writer_outage_s = writer_outage_s
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
        recover: bool = False,
        recover_from: int = 0,
    ) -> Deployment:
        """Start ``pipeline``; records get ids from ``record_base`` (default: after the
        stream log's last record of the stream). With ``recover``, records an earlier run
        logged but left without a chain (it was killed) go through the pipeline first; only
        ids from ``recover_from`` on are looked at (those before are known finished)."""
        pipeline.validated()
        sid = validate_id(stream_id or pipeline.name, "stream")
        record_base = next_record_base(stream_log_url, sid, record_base)
        return Deployment(self, self._ctx, pipeline, sid, replay_id, record_base, log_ingest,
                          provenance_url, stream_log_url, clock_factory,
                          recover=recover and log_ingest and not replay_id,
                          recover_from=recover_from)


class Deployment:
    """A running pipeline. Use ``wait`` (run until the source ends) or ``stop``.

    When a node process is killed (a signal: SIGKILL, the OOM killer, a segfault) the
    deployment restarts: every process of the current epoch is killed, the stores are asked
    which logged records have no chain, and a new epoch starts with the same parallelism, its
    ingest node re-driving those records and its sources resuming after what they had logged.
    That needs a resumable source and the stream log (not a replay); otherwise, or after
    ``max_restarts``, the crash fails the deployment with ``PipelineError``.
    """

    def __init__(self, runner: LocalRunner, ctx: Any, pipeline: Pipeline,
                 stream_id: str, replay_id: str, record_base: int, log_ingest: bool,
                 provenance_url: str, stream_log_url: str,
                 clock_factory: ClockFactory, *, recover: bool = False,
                 recover_from: int = 0) -> None:
        self.pipeline = pipeline
        self.stream_id = stream_id
        self.replay_id = replay_id
        self.record_base = record_base
        self.max_restarts = runner.max_restarts
        self._runner = runner
        self._ctx = ctx
        self._log_ingest = log_ingest
        self._urls = (provenance_url, stream_log_url)
        self._clock_factory = clock_factory
        self._lock = threading.RLock()
        self._tokens = 0
        self._procs: dict[int, _Proc] = {}
        self._ready: dict[int, int] = {}
        self._ingested = 0
        self._ingested_before = 0
        self._errors: list[str] = []
        self._cond = threading.Condition()
        self.captured: list[dict[str, Any]] = []
        self.scaling: list[ScaleStep] = []
        self.recoveries: list[Recovery] = []
        self.warnings: list[str] = []
        self._finished: RunResult | None = None
        self._fatal: BaseException | None = None
        self._stopping = False
        self._epoch = 0
        self._attempts = 0
        self._scratch: Path | None = None
        self._with_capture = is_capture(s.sink for s in pipeline.stages)
        self._active: list[list[int]] = [list(range(s.parallelism)) for s in pipeline.stages]
        self.recovered = 0
        """Records of earlier runs re-driven at start (``recover``)."""
        self._prior: dict[Outcome, int] = {}
        self._from_record = record_base
        """The first record id this deployment answers for."""
        redrive = self._recover_earlier(recover_from) if recover else None
        try:
            self._start_epoch((), redrive)
        except BaseException:
            self._kill_all()
            raise
        # run time counts from when every node is up: process start-up is not throughput
        self._started = time.perf_counter()
        self.started_ns = time.time_ns()
        self._supervisor = threading.Thread(target=self._supervise, daemon=True,
                                            name="streamprov-supervisor")
        self._supervisor.start()

    # -- epochs: one set of processes and queues; a crash replaces all of them ---------------
    def _start_epoch(self, skip: tuple[int, ...], redrive: Path | None) -> None:
        ctx, runner, pipeline = self._ctx, self._runner, self.pipeline
        qsize = runner.queue_batches
        self._procs = {}
        self._ready = {}
        self._errors = []  # (a killed epoch's are moot)
        self._events: Any = ctx.Queue()
        # a SimpleQueue writes synchronously: once a sink's put returns, the records are out
        # of the process, before their chains are sent (at least once across a crash)
        self._capture: Any = ctx.SimpleQueue() if self._with_capture else None
        self._stop_event = ctx.Event()
        if self._stopping:
            self._stop_event.set()
        self.wiring = Wiring(
            pipeline=pipeline, stream_id=self.stream_id, replay_id=self.replay_id,
            batch_size=runner.batch_size,
            stage_inboxes=[[ctx.Queue(qsize) for _ in range(pipeline.max_parallelism)]
                           for _ in pipeline.stages],
            ingest_inbox=ctx.Queue(qsize * max(1, pipeline.sources)),
            writer_inbox=ctx.Queue(qsize * 4),
            events=self._events, capture=self._capture,
            stream_log_url=self._urls[1], provenance_url=self._urls[0],
            record_base=self.record_base, log_ingest=self._log_ingest,
            clock_factory=self._clock_factory, stop_event=self._stop_event,
            epoch=self._epoch, source_skip=skip,
            writer_flush_s=flush_interval_s(self._urls[0]),
            writer_buffer_rows=runner.writer_buffer_rows,
            writer_outage_s=runner.writer_outage_s,
            redrive_path=None if redrive is None else str(redrive),
        )
        self._threads = [threading.Thread(target=self._pump_events, args=(self._events,),
                                          daemon=True, name="streamprov-events")]
        if self._capture is not None:
            self._threads.append(threading.Thread(target=self._pump_capture,
                                                  args=(self._capture,), daemon=True,
                                                  name="streamprov-capture"))
        for t in self._threads:
            t.start()
        self._spawn_all()

    def _scratch_file(self, name: str) -> Path:
        if self._scratch is None:
            self._scratch = Path(tempfile.mkdtemp(prefix="streamprov-redrive-"))
        return self._scratch / name

    def _recover_earlier(self, from_record: int) -> Path | None:
        """Write the records earlier runs left without a chain to a re-drive file."""
        if from_record >= self.record_base:
            return None
        unfinished = find_unfinished(self._urls[1], self._urls[0], self.stream_id,
                                     from_record=from_record)
        orphans = unfinished.orphans[unfinished.orphans < self.record_base]
        if not len(orphans):
            return None
        path = self._scratch_file("recover.arrow")
        node = Wiring.node_id_for(self.pipeline, self.replay_id, "recovered", 0)
        self.recovered = write_redrive_file(path, self._urls[1], self.stream_id, orphans,
                                            lambda ids: [node] * len(ids))
        self._from_record = int(orphans[0])
        from streamprov.store import open_provenance_store

        store = open_provenance_store(self._urls[0])
        try:
            self._prior = store.outcome_counts(self.stream_id, from_record=self._from_record)
        finally:
            store.close()
        return path

    def _restart(self, crash: _Crash) -> None:
        """Replace every process after ``crash``; re-drive what it left unfinished."""
        entry = crash.entry
        what = (f"node process {entry.role} (pid {entry.process.pid}) died with exit code "
                f"{entry.process.exitcode}")
        why_not = why_not_restart(replay_id=self.replay_id, log_ingest=self._log_ingest,
                                  source=self.pipeline.source, attempts=self._attempts,
                                  max_restarts=self.max_restarts)
        if why_not is not None:
            raise PipelineError(f"{what}; not restarting: {why_not}")
        self._attempts += 1
        started = time.perf_counter()
        at_ns = time.time_ns()
        self._kill_all(but=self._writer)
        self._save_writer()
        self._abandon_epoch()
        nxt = plan_restart(self._urls[1], self._urls[0], self.stream_id,
                           from_record=self._from_record, record_base=self.record_base,
                           sources=self.pipeline.sources,
                           redrive_path=self._scratch_file(f"epoch-{self._epoch + 1}.arrow"),
                           origin_node=self._origin_nodes, wait_s=10.0)
        self._epoch += 1
        self._ingested_before = self._ingested = nxt.logged_since_base
        # the same parallelism as before the crash, in fresh slots and queues
        self._active = [list(range(len(a))) for a in self._active]
        self._start_epoch(nxt.skip, nxt.redrive)
        self.recoveries.append(Recovery(entry.role, entry.process.exitcode or 0, at_ns,
                                        nxt.orphans, time.perf_counter() - started))

    def _origin_nodes(self, ids: npt.NDArray[np.int64]) -> list[str]:
        """Hop 0's node of each record: source instance k numbers records base + n*K + k
        (records recovered from earlier runs keep the name they were re-driven under)."""
        k = (ids - self.record_base) % self.pipeline.sources
        names = [self.wiring.node_id("source", i) for i in range(self.pipeline.sources)]
        earlier = self.wiring.node_id("recovered", 0)
        return [names[i] if rid >= self.record_base else earlier
                for i, rid in zip(k.tolist(), ids.tolist(), strict=True)]

    def _abandon_epoch(self) -> None:
        """Let go of the killed epoch's queues: a killed process may have left one with a
        half-written message or a held lock, so nothing reads or joins them again, except
        the capture pump, which hands on what the killed sinks had finished sending."""
        w = self.wiring
        for q in [w.ingest_inbox, w.writer_inbox, self._events,
                  *(q for qs in w.stage_inboxes for q in qs)]:
            q.cancel_join_thread()
        if self._capture is not None:
            deadline = time.monotonic() + 2.0
            while not self._capture.empty() and time.monotonic() < deadline:
                time.sleep(0.01)

    def _supervise(self) -> None:
        """Notice crashes while nobody waits on the deployment (a long-running pipeline)."""
        while self._finished is None and self._fatal is None:
            time.sleep(0.1)
            if not self._lock.acquire(timeout=0.1):
                continue  # wait, stop or scale holds it and checks for crashes itself
            try:
                if self._finished is None and self._fatal is None:
                    self._check_and_recover()
            except BaseException as exc:
                self._fatal = exc
                self._kill_all()
            finally:
                self._lock.release()

    def _check_and_recover(self) -> None:
        try:
            with self._cond:
                self._raise_if_failed()
        except _Crash as crash:
            self._recover_from(crash)

    def _recover_from(self, crash: _Crash) -> None:
        """Restart after ``crash``, again if a process dies while the new epoch starts."""
        while True:
            try:
                self._restart(crash)
                return
            except _Crash as again:
                crash = again

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

    def _pump_events(self, events: Any) -> None:
        while True:
            try:
                ev = events.get()
            except Exception:  # closed, or garbled by a killed writer: this epoch is over
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
                elif kind == "progress" and token in self._procs:
                    self._ingested = self._ingested_before + ev[2]
                elif kind == "error" and token in self._procs:  # (not a killed epoch's)
                    self._errors.append(ev[2])
                elif kind == "warning":
                    self.warnings.append(ev[2])
                    log.warning("%s", ev[2])
                self._cond.notify_all()

    def _pump_capture(self, capture: Any) -> None:
        while True:
            try:
                got = capture.get()
            except Exception:
                return
            if got is None:
                return
            self.captured.extend(got)

    def _raise_if_failed(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._errors:
            raise PipelineError(self._errors[0])
        for entry in self._procs.values():
            code = entry.process.exitcode
            if code is not None and code < 0 and not entry.done:
                raise _Crash(entry)  # killed by a signal: restart (see ``_restart``)
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

    def _kill_all(self, but: _Proc | None = None) -> None:
        for entry in self._procs.values():
            if entry.process.is_alive() and entry is not but:
                entry.process.kill()
        for entry in self._procs.values():
            if entry is not but:
                entry.process.join(5)

    def _save_writer(self) -> None:
        """Have a surviving writer store the chains it holds before it goes (fewer records
        to re-drive, fewer outputs repeated); kill it if it cannot within a few seconds."""
        proc = self._writer.process
        if proc.is_alive() and proc.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, worker.FLUSH_NOW)
            proc.join(_SAVE_WRITER_S)
        if proc.is_alive():
            proc.kill()
            proc.join(5)

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

    def queue_depths(self) -> dict[str, int]:
        """Batches waiting in each inbox of the running processes, by queue: ``ingest``,
        ``<stage>-<slot>`` for every active instance, and ``writer`` (chain batches not yet
        stored: the provenance backlog). A snapshot for monitoring: ``qsize`` of a
        multiprocessing queue is approximate, counts control messages too, and a queue whose
        size the platform cannot tell (``NotImplementedError`` on macOS) is left out."""
        wiring, active = self.wiring, [list(a) for a in self._active]
        queues: list[tuple[str, Any]] = [("ingest", wiring.ingest_inbox)]
        for index, stage in enumerate(self.pipeline.stages):
            queues += [(f"{stage.name}-{slot}", wiring.stage_inboxes[index][slot])
                       for slot in active[index]]
        queues.append(("writer", wiring.writer_inbox))
        depths: dict[str, int] = {}
        for name, queue in queues:
            try:
                depths[name] = max(0, int(queue.qsize()))
            except (NotImplementedError, OSError, ValueError):
                continue
        return depths

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
            self._check_and_recover()
            started = time.perf_counter()
            started_ns = time.time_ns()
            before = list(self._active[index])
            if n > len(before):
                free = [s for s in range(self.pipeline.max_parallelism) if s not in before]
                new_slots = free[: n - len(before)]
                self._active[index] = sorted(before + new_slots)
                spawned = [self._spawn_stage(index, s) for s in new_slots]
                try:
                    self._await_ready([e.token for e in spawned])
                    for inbox in self._upstream_inboxes(index):
                        inbox.put((RING, tuple(self._active[index])))
                except _Crash as crash:
                    self._recover_from(crash)
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
                try:
                    self._join(gone, None)
                except _Crash as crash:  # the restart brings the new parallelism up
                    self._recover_from(crash)
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
        if stop:
            self._stopping = True
            self._stop_event.set()
        # the sources run on without the lock held, so ``scale`` (an autoscaler's, say) and
        # the supervisor's restarts can act meanwhile
        self._await_sources(timeout_s)
        with self._lock:
            if self._finished is not None:
                return self._finished
            self._stopping = self._stopping or stop
            try:
                while True:
                    try:
                        self._drain_epoch(timeout_s)
                        break
                    except _Crash as crash:
                        self._recover_from(crash)
            except BaseException:
                self._kill_all()
                raise
            finally:
                self._close_pumps()
                if self._scratch is not None:
                    shutil.rmtree(self._scratch, ignore_errors=True)
            self._finished = self._result()
            return self._finished

    def _await_sources(self, timeout_s: float | None) -> None:
        """Until every source process has exited (or ``timeout_s``: the drain then says
        which did not), failing early on a node's error."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while self._finished is None:
            with self._cond:
                if self._fatal is not None:
                    raise self._fatal
                if self._errors:
                    raise PipelineError(self._errors[0])
            if all(e.process.exitcode is not None for e in self._sources):
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            time.sleep(0.05)

    def _drain_epoch(self, timeout_s: float | None) -> None:
        if self._stopping:
            self._stop_event.set()
        self._join(self._sources, timeout_s)
        self.wiring.ingest_inbox.put((DRAIN, frozenset(e.token for e in self._sources)))
        for index in range(len(self.pipeline.stages)):
            upstream = self._tokens_of(index)
            for e in self._live_stage(index):
                self.wiring.stage_inboxes[index][e.slot].put((DRAIN, upstream))
        self._join([self._ingest], timeout_s)
        # join every stage process, also those that already said "done": until a process
        # has exited, its last chains may still be on their way to the writer
        for index in range(len(self.pipeline.stages)):
            self._join([e for e in self._procs.values() if e.stage_index == index], timeout_s)
        self.wiring.writer_inbox.put((DRAIN, frozenset()))
        self._join([self._writer], timeout_s)

    def _close_pumps(self) -> None:
        self._events.put(None)
        if self._capture is not None:
            self._capture.put(None)
        for t in self._threads:
            t.join(10)

    def _result(self) -> RunResult:
        nodes = [dict(e.stats, role=e.role) for e in self._procs.values()]
        ingested = sum(e.stats.get("recordsOut", 0) + e.stats.get("failed", 0)
                       for e in self._sources) + self.recovered
        stages = [e for e in self._procs.values() if e.stage_index >= 0]
        result = RunResult(
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
            recoveries=list(self.recoveries),
            duplicated_outputs=0,
            recovered=self.recovered,
            from_record=0 if self.replay_id else self._from_record,
            prior_outcomes=dict(self._prior),
            warnings=list(self.warnings),
        )
        if self.recoveries:
            count_from_stores(result, self._urls[1], self._urls[0],
                              record_base=self.record_base,
                              captured=self.captured if self._with_capture else None)
        return result

    def __enter__(self) -> Deployment:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._finished is None:
            if exc[0] is None:
                self.stop()
            else:
                self._kill_all()


__all__ = ["Deployment", "LocalRunner", "Recovery", "RunResult", "ScaleStep"]
