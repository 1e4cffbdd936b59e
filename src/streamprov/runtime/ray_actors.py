"""The actors of a Ray deployment and how they talk (imported only once Ray is available).

Every actor is a plain class here; ``streamprov.runtime.ray`` turns it into a Ray actor with
the resource request of its role. The protocol is the local runner's (``worker.py``) with
Ray's acknowledgements in place of BYE/DRAIN messages:

* a producer calls ``push`` on the instance a record's key hashes to (the same ``Router``
  and consistent-hash ring as the local runner) and keeps at most ``window`` pushes to one
  destination unacknowledged, so a slow consumer blocks its producers (backpressure);
* Ray runs one caller's calls to a (synchronous) actor in the order they were made, so a
  ``reroute`` reaches a producer after the batches it already accepted, and a producer waits
  for every push to an instance it stops routing to before ``reroute`` returns: once every
  producer has rerouted, that instance holds no record that is not done (``finish`` then
  flushes what it sent on and retires it);
* a failure inside an actor becomes a ``PipelineError`` naming the node; a producer that sees
  it (or a dead destination) raises it in turn, so it reaches the driver within a window;
* the ingest actor group-commits like the local one (a thread behind a bounded queue appends
  every batch gathered within ``ingest_group_s`` in one transaction, then forwards them), and
  the batches a group or a ``push_many`` yields for one instance go on in one call.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray

from streamprov.clock.hlc import HybridLogicalClock
from streamprov.clock.physical import PhysicalClock
from streamprov.errors import PipelineError, StreamprovError
from streamprov.model import Outcome
from streamprov.runtime import worker
from streamprov.runtime.batch import Batch, ChainBatch, EncodedBatch
from streamprov.runtime.node import NodeProcessor, error_text
from streamprov.runtime.pipeline import Pipeline
from streamprov.runtime.ray_wire import WireBatch
from streamprov.runtime.rows import ChainRowBuilder
from streamprov.runtime.worker import BYE, DATA, ClockFactory, Router

_PROGRESS_S = 0.2
_STOP_POLL_S = 0.1


def settle(ref: Any, dest: str) -> Any:
    """``ray.get(ref)`` with Ray's errors translated: the root ``StreamprovError`` of a failed
    call is raised as is (not wrapped once per actor it passed), a dead actor becomes a
    ``PipelineError`` naming it."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.cause
        if isinstance(cause, StreamprovError):
            raise cause from None
        raise PipelineError(f"{dest}: {error_text(cause)}") from None
    except ray.exceptions.RayActorError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NodeDied(f"node {dest} died ({first[:200]})") from None


class NodeDied(PipelineError):
    """An actor of the deployment is gone (killed, its process or machine lost): the
    deployment restarts, where it can, instead of failing."""


@dataclass(slots=True)
class RayWiring:
    """Everything shared by the actors of one deployment (picklable, sent at creation)."""

    pipeline: Pipeline
    stream_id: str
    replay_id: str
    batch_size: int
    window: int
    stream_log_url: str
    provenance_url: str
    record_base: int
    log_ingest: bool
    clock_factory: ClockFactory
    direct_chains: bool
    """Each actor writes its chains to the store itself (PostgreSQL) instead of through the
    writer actor (DuckDB: one process may hold the file)."""
    chain_ship_rows: int = 65_536
    chain_ship_s: float = 0.2
    ingest_group_rows: int = 16_384
    ingest_group_s: float = 0.02
    """Group commit, as the local ingest: pushed batches gathered for up to this long (or
    this many rows) are appended to the stream log in one transaction."""
    writer_flush_rows: int = 524_288
    writer_flush_s: float = 0.5
    epoch: int = 0
    source_skip: tuple[int, ...] = ()
    redrive_path: str | None = None

    def node_id(self, role: str, slot: int, suffix: str) -> str:
        prefix = self.pipeline.name if not self.replay_id else f"{self.pipeline.name}~replay"
        return f"{prefix}/{role}/{slot}{suffix}"


def node_suffix() -> str:
    """``@<first 8 hex digits of the Ray node id>``: which machine a hop ran on."""
    return "@" + ray.get_runtime_context().get_node_id()[:8]


class Outbox:
    """Inbox-like end of the calls to one actor, as ``worker.Router`` expects: ``put`` a
    ``(DATA, batch)``, ``(FAILED, batch, errors)`` or ``(BYE, token)`` (= wait until every
    push so far is done). At most ``window`` pushes stay unacknowledged.

    Between ``hold`` and ``release`` the batches put are sent as one ``push_many`` call
    (fewer, larger calls: a Ray call has a fixed cost well above a batch's copy)."""

    def __init__(self, handle: Any, window: int, dest: str) -> None:
        self.handle = handle
        self.window = window
        self.dest = dest
        self.pending: deque[Any] = deque()
        self.held: list[Any] | None = None

    def put(self, msg: tuple[Any, ...]) -> None:
        tag = msg[0]
        if tag == BYE:
            self.flush()
            return
        item = msg[1]
        if isinstance(item, Batch):
            item = WireBatch.of(item)
        if tag == DATA and self.held is not None:
            self.held.append(item)
            return
        self.release()
        args = (item,) if tag == DATA else (item, msg[2])
        self._call(self.handle.push.remote(*args))

    def hold(self) -> None:
        if self.held is None:
            self.held = []

    def release(self) -> None:
        """Send what was held (one call) and stop holding."""
        held, self.held = self.held, None
        if held:
            self._call(self.handle.push.remote(held[0]) if len(held) == 1
                       else self.handle.push_many.remote(held))

    def _call(self, ref: Any) -> None:
        self.pending.append(ref)
        while len(self.pending) > self.window:
            settle(self.pending.popleft(), self.dest)

    def flush(self) -> None:
        self.release()
        while self.pending:
            settle(self.pending.popleft(), self.dest)


def _hold_all(outboxes: list[Any]) -> None:
    for o in outboxes:
        if o is not None:
            o.hold()


def _release_all(outboxes: list[Any]) -> None:
    for o in outboxes:
        if o is not None:
            o.release()


class ChainOut:
    """Where an actor's ended chains go: shipped in groups to the writer actor, or written to
    the store directly (``direct``). ``close`` sends what is left and waits for it."""

    def __init__(self, w: RayWiring, writer: Any) -> None:
        self.w = w
        self.store: Any = None
        self.outbox: Outbox | None = None
        if w.direct_chains:
            from streamprov.store import open_provenance_store

            self.store = open_provenance_store(w.provenance_url)
        elif writer is not None:
            self.outbox = Outbox(writer, w.window, "provenance writer")
        self.pending: list[ChainBatch] = []
        self.rows = 0
        self.first_at = 0.0
        self.rows_written = 0
        self.chains_written = 0

    def add(self, cb: ChainBatch) -> None:
        if not self.pending:
            self.first_at = time.monotonic()
        self.pending.append(cb)
        self.rows += len(cb) * len(cb.hops)
        if (self.rows >= self.w.chain_ship_rows
                or time.monotonic() - self.first_at >= self.w.chain_ship_s):
            self.ship()

    def ship(self) -> None:
        if not self.pending:
            return
        parts, self.pending, self.rows = self.pending, [], 0
        if self.store is not None:
            builder = ChainRowBuilder()
            for cb in parts:
                builder.add(cb)
            self.chains_written += builder.chains
            self.rows_written += self.store.write(builder.build())
        elif self.outbox is not None:
            self.outbox.put((DATA, parts))

    def close(self) -> dict[str, int]:
        self.ship()
        if self.outbox is not None:
            self.outbox.flush()
        if self.store is not None:
            self.store.close()
            return {"rowsWritten": self.rows_written, "chainsWritten": self.chains_written}
        return {}


class Hub:
    """The driver's side door (a threaded actor): the stop flag sources poll, the ingest
    count, and records captured by ``CaptureSink`` until the driver takes them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stop = False
        self._ingested = 0
        self._captured: list[dict[str, Any]] = []

    def ready(self) -> tuple[str, int, str]:
        return "hub", os.getpid(), ray.get_runtime_context().get_node_id()

    def set_stop(self) -> None:
        self._stop = True

    def stopped(self) -> bool:
        return self._stop

    def progress(self, n: int) -> None:
        self._ingested = max(self._ingested, n)

    def ingested(self) -> int:
        return self._ingested

    def push(self, records: list[dict[str, Any]]) -> None:
        with self._lock:
            self._captured.extend(records)

    def take_captured(self) -> list[dict[str, Any]]:
        with self._lock:
            out, self._captured = self._captured, []
        return out


class _CaptureClient:
    """What ``CaptureSink`` writes to on Ray: pushes to the hub, ``window`` at a time."""

    def __init__(self, hub: Any, window: int) -> None:
        self.outbox = Outbox(hub, window, "capture")

    def put(self, records: list[dict[str, Any]]) -> None:
        self.outbox.pending.append(self.outbox.handle.push.remote(records))
        while len(self.outbox.pending) > self.outbox.window:
            settle(self.outbox.pending.popleft(), "capture")

    def flush(self) -> None:
        self.outbox.flush()


class _StopFlag:
    """``stop_event`` for ``worker.run_source``: the hub's flag, polled at most 10 times/s."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.checked = 0.0
        self.value = False

    def is_set(self) -> bool:
        now = time.monotonic()
        if not self.value and now - self.checked >= _STOP_POLL_S:
            self.checked = now
            self.value = bool(ray.get(self.hub.stopped.remote()))
        return self.value


class _Events:
    def __init__(self) -> None:
        self.items: list[tuple[Any, ...]] = []

    def put(self, ev: tuple[Any, ...]) -> None:
        self.items.append(ev)


@dataclass(slots=True)
class _SourceWiring(worker.Wiring):
    """``worker.Wiring`` as ``run_source`` reads it, with node ids naming the Ray node."""

    suffix: str = ""

    def node_id(self, role: str, slot: int) -> str:
        return worker.Wiring.node_id(self, role, slot) + self.suffix


def _clock(factory: ClockFactory, node_id: str) -> PhysicalClock:
    # simulated offsets and replica choice are configured per node id as the local runner
    # names them: the clock is asked for the id without the Ray node suffix
    return factory(node_id.partition("@")[0])


class _BaseIdClock:
    def __init__(self, factory: ClockFactory) -> None:
        self.factory = factory

    def __call__(self, node_id: str) -> PhysicalClock:
        return _clock(self.factory, node_id)


class SourceNode:
    """One ingest source: ``worker.run_source`` as is, its inbox the ingest actor."""

    def __init__(self, w: RayWiring, index: int, ingest: Any, hub: Any) -> None:
        self.w = w
        self.index = index
        self.suffix = node_suffix()
        self.events = _Events()
        self.wiring = _SourceWiring(
            pipeline=w.pipeline, stream_id=w.stream_id, replay_id=w.replay_id,
            batch_size=w.batch_size, stage_inboxes=[], ingest_inbox=Outbox(
                ingest, w.window, "ingest"),
            writer_inbox=None, events=self.events, capture=None,
            stream_log_url=w.stream_log_url, provenance_url=w.provenance_url,
            record_base=w.record_base, log_ingest=w.log_ingest,
            clock_factory=_BaseIdClock(w.clock_factory), stop_event=_StopFlag(hub),
            source_skip=w.source_skip, suffix=self.suffix,
        )

    def ready(self) -> tuple[str, int, str]:
        return (self.wiring.node_id("source", self.index), os.getpid(),
                ray.get_runtime_context().get_node_id())

    def run(self) -> dict[str, Any]:
        """Read the source to its end (or the stop flag); the ingest actor has every record
        once this returns."""
        with contextlib.suppress(SystemExit):  # run_source reported the error first
            worker.run_source(self.wiring, 0, self.index)
        for ev in self.events.items:
            if ev[0] == "error":
                # (run_source reports failures as text: keep a dead actor down the path
                # recognizable, so the driver restarts instead of failing)
                raise (NodeDied if ": NodeDied: " in ev[2] else PipelineError)(ev[2])
        for ev in self.events.items:
            if ev[0] == "done":
                stats: dict[str, Any] = ev[2]
                return stats
        raise PipelineError(f"source {self.index} ended without a report")


def _router_for(w: RayWiring, stage_index: int, members: tuple[int, ...],
                handles: dict[int, Any], suffix: str) -> tuple[Router, list[Any]]:
    stage = w.pipeline.stages[stage_index]
    outboxes: list[Any] = [None] * w.pipeline.max_parallelism
    _add_handles(w, stage_index, outboxes, handles)
    return Router(stage, stage_index, outboxes, members, 0), outboxes


def _add_handles(w: RayWiring, stage_index: int, outboxes: list[Any],
                 handles: dict[int, Any]) -> None:
    name = w.pipeline.stages[stage_index].name
    for slot, h in handles.items():
        outboxes[slot] = Outbox(h, w.window, w.node_id(name, slot, ""))


_RING, _STOP, _REDRIVE = "ring", "stop", "redrive"


class IngestNode:
    """Appends pushed batches to the stream log (write-ahead), then routes them to stage 0.

    As the local ingest, it group-commits: ``push`` only queues a batch (at most ``window``
    wait, so backpressure still reaches the sources); a thread gathers queued batches for up
    to ``ingest_group_s`` / ``ingest_group_rows``, appends them in one stream-log transaction
    and only then forwards them, one call per first-stage instance. ``reroute`` and ``finish``
    travel through the same queue, so they act after every batch pushed before them."""

    def __init__(self, w: RayWiring, members: tuple[int, ...], handles: dict[int, Any],
                 writer: Any, hub: Any) -> None:
        from streamprov.store import open_stream_log

        self.w = w
        self.hub = hub
        self.log = open_stream_log(w.stream_log_url) if w.log_ingest else None
        self.router, self.outboxes = _router_for(w, 0, members, handles, "")
        self.chains = ChainOut(w, writer)
        self.logged = 0
        self.reported_at = 0.0
        self.closed: dict[str, int] = {}
        self.redriven = 0
        self.error: StreamprovError | None = None
        self.inbox: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=w.window)
        self.thread = threading.Thread(target=self._run, daemon=True, name="ingest")
        self.thread.start()

    def ready(self) -> tuple[str, int, str]:
        return "ingest", os.getpid(), ray.get_runtime_context().get_node_id()

    def push(self, eb: EncodedBatch, errors: list[str] | None = None) -> None:
        self._put((DATA, eb) if errors is None else (worker.FAILED, eb, errors))

    def reroute(self, members: tuple[int, ...], handles: dict[int, Any]) -> None:
        done = threading.Event()
        self._put((_RING, members, handles, done))
        self._wait(done)

    def redrive(self) -> int:
        """Send the records a crash left without a chain to stage 0 again (the driver calls
        this before any source pushes)."""
        if self.w.redrive_path is None:
            return 0
        done = threading.Event()
        self._put((_REDRIVE, done))
        self._wait(done)
        return self.redriven

    def finish(self) -> dict[str, Any]:
        done = threading.Event()
        self._put((_STOP, done))
        self._wait(done)
        ray.get(self.hub.progress.remote(self.logged))
        return {"node": "ingest", "logged": self.logged, **self.closed}

    # -- the caller's side ------------------------------------------------------------
    def _check(self) -> None:
        if self.error is not None:
            raise self.error
        if not self.thread.is_alive():
            raise PipelineError("ingest: stopped")

    def _put(self, msg: tuple[Any, ...]) -> None:
        while True:
            self._check()
            try:
                self.inbox.put(msg, timeout=_STOP_POLL_S)
                return
            except queue.Full:
                continue

    def _wait(self, done: threading.Event) -> None:
        while not done.wait(_STOP_POLL_S):
            self._check()
        if self.error is not None:
            raise self.error

    # -- the thread -------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while self._step():
                pass
        except StreamprovError as exc:
            self.error = exc
        except BaseException as exc:
            self.error = PipelineError(f"ingest: {error_text(exc)}")

    def _step(self) -> bool:
        """One group: gather, append, forward; False once finished."""
        w = self.w
        msgs, data, rows = worker.gather_group(
            self.inbox, w.ingest_group_s if self.log is not None else 0.0, w.ingest_group_rows)
        if data and self.log is not None:
            self.log.append(worker._log_rows(data))  # written ahead: forwarded only now
        self.logged += rows
        _hold_all(self.outboxes)
        for m in msgs:
            tag = m[0]
            if tag == DATA:
                self.router.send(m[1])
                continue
            _release_all(self.outboxes)
            if tag == worker.FAILED:
                eb: EncodedBatch = m[1]
                self.chains.add(ChainBatch(eb.stream_id, eb.record_ids, eb.hops,
                                           Outcome.FAILED, None, m[2], eb.replay_id))
            elif tag == _RING:
                _add_handles(w, 0, self.outboxes, m[2])
                self.router.reroute(m[1])
                m[3].set()
            elif tag == _REDRIVE:
                assert w.redrive_path is not None
                self.redriven = worker.redrive_file(w.redrive_path, w.pipeline, w.stream_id,
                                                    w.replay_id, self.router)
                m[1].set()
            elif tag == _STOP:
                self.router.bye_all()
                self.closed = self.chains.close()
                if self.log is not None:
                    self.log.close()
                    self.log = None
                m[1].set()
                return False
            _hold_all(self.outboxes)
        _release_all(self.outboxes)
        now = time.monotonic()
        if now - self.reported_at >= _PROGRESS_S:
            self.reported_at = now
            self.hub.progress.remote(self.logged)
        return True


class StageNode:
    """One instance of a stage: ``NodeProcessor`` on every pushed batch."""

    def __init__(self, w: RayWiring, stage_index: int, slot: int,
                 members: tuple[int, ...] | None, handles: dict[int, Any] | None,
                 writer: Any, hub: Any) -> None:
        p = w.pipeline
        stage = p.stages[stage_index]
        self.w = w
        self.node_id = w.node_id(stage.name, slot, node_suffix())
        nxt = p.stages[stage_index + 1] if stage_index + 1 < len(p.stages) else None
        self.router: Router | None = None
        self.outboxes: list[Any] = []
        if nxt is not None and members is not None:
            self.router, self.outboxes = _router_for(w, stage_index + 1, members,
                                                     handles or {}, "")
        self.capture = _CaptureClient(hub, w.window)
        self.sink_writer = worker.open_sink(stage, slot, self.capture, w.epoch)
        self.physical = _clock(w.clock_factory, self.node_id)
        self.gate: Callable[[], None] = worker._accept_gate(self.physical)
        self.proc = NodeProcessor(
            stage, stage_index, self.node_id, HybridLogicalClock(self.physical),
            provenance=p.provenance, next_key=nxt.key if nxt is not None else None,
            sink_writer=self.sink_writer,
        )
        self.stage_index = stage_index
        self.chains = ChainOut(w, writer)
        self.busy_ns = 0

    def ready(self) -> tuple[str, int, str]:
        return self.node_id, os.getpid(), ray.get_runtime_context().get_node_id()

    def push_many(self, items: list[WireBatch | EncodedBatch]) -> None:
        """Several batches of one producer in one call; what they yield for one instance of
        the next stage goes on as one call too."""
        _hold_all(self.outboxes)
        for item in items:
            self.push(item)
        _release_all(self.outboxes)

    def push(self, item: WireBatch | EncodedBatch) -> None:
        try:
            self.gate()
            t0 = time.perf_counter_ns()
            batch = item.decode() if isinstance(item, EncodedBatch) else item.batch()
            result = self.proc.process(batch)
            if result.out is not None and self.router is not None:
                self.router.send(result.out)
            for ended in result.ended:
                self.chains.add(ended)
            self.busy_ns += time.perf_counter_ns() - t0
        except StreamprovError:
            raise
        except BaseException as exc:  # SystemExit from an operator too: fail, do not exit
            raise PipelineError(f"node {self.node_id}: {error_text(exc)}") from None

    def reroute(self, members: tuple[int, ...], handles: dict[int, Any]) -> None:
        assert self.router is not None
        _add_handles(self.w, self.stage_index + 1, self.outboxes, handles)
        self.router.reroute(members)

    def finish(self) -> dict[str, Any]:
        """Flush everything downstream; the actor may be killed once this returns."""
        if self.router is not None:
            self.router.bye_all()
        if self.sink_writer is not None:
            self.sink_writer.close()
        self.capture.flush()
        out = self.chains.close()
        return {"node": self.node_id, "busyS": self.busy_ns / 1e9, **self.proc.stats.as_dict(),
                "cpuS": round(time.process_time(), 4), **out,
                **worker._clock_stats(self.physical)}


class ChainWriter:
    """The provenance writer in front of a single-process store (DuckDB): groups pushed
    chains and writes them every ``writer_flush_rows`` rows or ``writer_flush_s`` seconds."""

    def __init__(self, w: RayWiring) -> None:
        from streamprov.store import open_provenance_store

        self.w = w
        self.store = open_provenance_store(w.provenance_url)
        self.pending = ChainRowBuilder()
        self.first_at = 0.0
        self.written = 0
        self.chains = 0
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.error: BaseException | None = None
        self.timer = threading.Thread(target=self._tick, daemon=True, name="chain-writer")
        self.timer.start()

    def ready(self) -> tuple[str, int, str]:
        return "writer", os.getpid(), ray.get_runtime_context().get_node_id()

    def _flush(self) -> None:
        if self.pending.rows:
            self.chains += self.pending.chains
            self.written += self.store.write(self.pending.build())

    def _tick(self) -> None:
        while not self.closed.wait(self.w.writer_flush_s / 4):
            with self.lock:
                if (self.pending.rows and self.error is None
                        and time.monotonic() - self.first_at >= self.w.writer_flush_s):
                    try:
                        self._flush()
                    except BaseException as exc:
                        self.error = exc

    def push(self, parts: list[ChainBatch]) -> None:
        with self.lock:
            if self.error is not None:
                raise PipelineError(f"provenance writer: {error_text(self.error)}")
            if not self.pending.rows:
                self.first_at = time.monotonic()
            for cb in parts:
                self.pending.add(cb)
            if self.pending.rows >= self.w.writer_flush_rows:
                self._flush()

    def finish(self) -> dict[str, Any]:
        self.closed.set()
        self.timer.join()
        with self.lock:
            if self.error is not None:
                raise PipelineError(f"provenance writer: {error_text(self.error)}")
            self._flush()
            self.store.close()
        return {"node": "writer", "rowsWritten": self.written, "chains": self.chains}
