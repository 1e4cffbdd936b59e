"""The processes of a local deployment and the messages between them.

Every process has one bounded inbox (``multiprocessing.Queue``), so a slow consumer blocks its
producers (backpressure). Messages are tuples whose first item is a tag:

* ``(DATA, Batch)`` records; ``(FAILED, Batch, errors)`` unreadable source items (ingest only);
* ``(RING, members)`` route to these instances of the next stage from now on; the sender of
  this change says ``BYE`` to every instance it stops routing to;
* ``(BYE, token)`` the producer ``token`` will send nothing more to this inbox;
* ``(DRAIN, tokens)`` finish once every producer in ``tokens`` has said ``BYE``;
* ``(CHAINS, ChainBatch)`` complete chains (writer only).

A process that drains says ``BYE`` to everyone it routes to, reports ``done`` with its
statistics and exits; because a producer's messages to one inbox stay in order, a ``BYE``
always arrives after that producer's last batch, so draining loses nothing.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from streamprov.clock.hlc import HybridLogicalClock
from streamprov.clock.physical import PhysicalClock, SystemClock
from streamprov.hashring import HashRing, hash_ints, hash_keys
from streamprov.model import Outcome
from streamprov.runtime.batch import Batch, ChainBatch, EncodedBatch, HopColumn
from streamprov.runtime.node import NodeProcessor, error_text
from streamprov.runtime.pipeline import Pipeline, Stage
from streamprov.runtime.rows import ChainRowBuilder
from streamprov.runtime.sources import SourceChunk, resume_reader
from streamprov.store import is_server_url

DATA, FAILED, RING, BYE, DRAIN, CHAINS = range(6)

JOIN_BATCHES = 4
"""The ingest joins up to this many of a source's batches into one for the first stage
(``EncodedBatch.merged``): fewer, larger messages, and inboxes that still hold a bounded
number of records."""

ClockFactory = Callable[[str], PhysicalClock]


def flush_interval_s(provenance_url: str) -> float:
    """How long the writer may hold chains before storing them: 2 s for a DuckDB file, 0.5 s
    for a server. No other process can open a DuckDB file while the writer has it, so holding
    chains longer hides nothing from readers, and DuckDB stores rows for about half the cost
    per row in commits of a few hundred thousand rows than of a few ten thousand (a run going
    at 50k records/s commits 75k rows every 0.5 s). A PostgreSQL store is read while it is
    written: its chains show up within half a second. Either way the writer also stores every
    ``writer_flush_rows`` rows, which bounds its memory."""
    return 0.5 if is_server_url(provenance_url) else 2.0


def system_clock(node_id: str) -> PhysicalClock:
    return SystemClock()


@dataclass(slots=True)
class Wiring:
    """Everything shared by the processes of one deployment (picklable, sent at spawn)."""

    pipeline: Pipeline
    stream_id: str
    replay_id: str
    batch_size: int
    stage_inboxes: list[list[Any]]
    ingest_inbox: Any
    writer_inbox: Any
    events: Any
    capture: Any
    stream_log_url: str
    provenance_url: str
    record_base: int
    log_ingest: bool = True
    clock_factory: ClockFactory = system_clock
    ingest_group_rows: int = 16_384
    ingest_group_s: float = 0.02
    writer_flush_rows: int = 524_288
    writer_flush_s: float = 0.5
    """Longest a chain waits in the writer before it is stored (see ``flush_interval_s``)."""
    writer_buffer_rows: int = 4_194_304
    """Rows of chains the writer keeps while the store is unavailable before backpressure."""
    writer_outage_s: float = 600.0
    """How long the writer waits for an unavailable store before the deployment fails."""
    stop_event: Any = None
    epoch: int = 0
    """How many times the deployment restarted after a node crash before this wiring."""
    source_skip: tuple[int, ...] = ()
    """Per source instance: records it already had in the stream log (resume after them)."""
    redrive_path: str | None = None
    """Arrow IPC file of logged records without a chain, for ingest to send through again."""
    extra: dict[str, Any] = field(default_factory=dict)

    def node_id(self, role: str, slot: int) -> str:
        return Wiring.node_id_for(self.pipeline, self.replay_id, role, slot)

    @staticmethod
    def node_id_for(pipeline: Pipeline, replay_id: str, role: str, slot: int) -> str:
        prefix = pipeline.name if not replay_id else f"{pipeline.name}~replay"
        return f"{prefix}/{role}/{slot}"


def _lean(batch: Batch | EncodedBatch) -> Batch | EncodedBatch:
    return batch.lean() if isinstance(batch, EncodedBatch) else batch


class Router:
    """Routes batches to the instances of one stage by key on a consistent-hash ring."""

    def __init__(self, stage: Stage | None, stage_index: int, inboxes: list[Any],
                 members: tuple[int, ...], token: int) -> None:
        self.stage = stage
        self.inboxes = inboxes
        self.token = token
        self.name = f"stage{stage_index}"
        self.ring = HashRing(self.name, members)

    def send(self, batch: Batch | EncodedBatch) -> None:
        """Send ``batch`` on, split by owner; an encoded batch without what only routing and
        the stream log read (``EncodedBatch.lean``)."""
        members = self.ring.members
        if len(members) == 1:
            self.inboxes[members[0]].put((DATA, _lean(batch)))
            return
        if isinstance(batch, EncodedBatch) and batch.hashes is not None:
            hashes = batch.hashes
        elif self.stage is not None and self.stage.key is not None and batch.keys is not None:
            hashes = hash_keys(batch.keys)
        else:
            hashes = hash_ints(batch.record_ids)
        owners = self.ring.owners(hashes)
        batch = _lean(batch)  # (before any split: a part needs no copy of what goes)
        for m in members:
            idx = np.flatnonzero(owners == m)
            if len(idx) == len(batch):
                self.inboxes[m].put((DATA, batch))
                return
            if len(idx):
                self.inboxes[m].put((DATA, batch.take(idx)))

    def reroute(self, members: tuple[int, ...]) -> None:
        """Switch to ``members``; say BYE to the instances no longer routed to."""
        old = set(self.ring.members)
        self.ring = HashRing(self.name, members)
        for m in sorted(old - set(members)):
            self.inboxes[m].put((BYE, self.token))

    def bye_all(self) -> None:
        for m in self.ring.members:
            self.inboxes[m].put((BYE, self.token))


class _Drain:
    """Tracks BYEs against the set of producers a DRAIN waits for."""

    def __init__(self) -> None:
        self.byes: set[int] = set()
        self.expected: frozenset[int] | None = None

    def handle(self, msg: tuple[Any, ...]) -> bool:
        """Record a BYE or DRAIN; True once draining is complete."""
        if msg[0] == BYE:
            self.byes.add(msg[1])
        elif msg[0] == DRAIN:
            self.expected = frozenset(msg[1])
        return self.expected is not None and self.expected <= self.byes


def _accept_gate(physical: PhysicalClock) -> Callable[[], None]:
    """What a node calls before taking records: under the clock's ``hold`` policy it waits
    while the clock is out of tolerance (backpressure does the rest); otherwise nothing."""
    may_accept = getattr(physical, "may_accept", None)
    if may_accept is None:
        return lambda: None

    def gate() -> None:
        while not may_accept():
            time.sleep(0.005)

    return gate


def _clock_stats(physical: PhysicalClock) -> dict[str, Any]:
    status = getattr(physical, "status", None)
    if status is None:
        return {}
    stop = getattr(physical, "stop", None)
    report: dict[str, Any] = status().to_json()
    if callable(stop):
        stop()
    return {"clock": report}


_cpu_at_ready = 0.0


def ready(events: Any, token: int) -> None:
    """Tell the driver this process is up (and note the CPU its start-up took)."""
    global _cpu_at_ready
    _cpu_at_ready = time.process_time()
    events.put(("ready", token, os.getpid()))


def _guard(role: str, token: int, events: Any, body: Callable[[], dict[str, Any]]) -> None:
    try:
        stats = body()
    except BaseException as exc:  # report and exit non-zero; the driver fails the deployment
        events.put(("error", token, f"{role}: {type(exc).__name__}: {exc}",
                    traceback.format_exc()))
        raise SystemExit(1) from None
    cpu = time.process_time()
    # CPU seconds of the whole process, and since it was ready (without its start-up)
    stats["cpuS"] = round(cpu, 4)
    stats["cpuRunS"] = round(cpu - _cpu_at_ready, 4)
    events.put(("done", token, stats))


# -- ingest sources -----------------------------------------------------------------------
def _source_keys(stage: Stage, chunk: SourceChunk) -> tuple[list[Any] | None, dict[int, str]]:
    """Keys for the first stage's routing: its key function, else the source's own keys."""
    if stage.key is None:
        return chunk.keys, {}
    kf = stage.key
    try:
        return [kf(p) for p in chunk.payloads], {}
    except Exception:
        pass
    keys: list[Any] = []
    failed: dict[int, str] = {}
    for i, p in enumerate(chunk.payloads):
        try:
            keys.append(kf(p))
        except Exception as exc:
            keys.append(None)
            failed[i] = f"key of stage {stage.name!r}: {error_text(exc)}"
    return keys, failed


def run_source(w: Wiring, token: int, index: int) -> None:
    def body() -> dict[str, Any]:
        p = w.pipeline
        assert p.source is not None
        first = p.stages[0]
        node_id = w.node_id("source", index)
        physical = w.clock_factory(node_id)
        clock = HybridLogicalClock(physical)
        gate = _accept_gate(physical)
        true_time = bool(getattr(p.source, "true_time", False))
        count = p.sources
        skip = w.source_skip[index] if index < len(w.source_skip) else 0
        seq = skip
        records = 0
        failed = 0
        ready(w.events, token)

        def emit(payloads: list[Any], keys: list[Any] | None, errors: list[str] | None,
                 given_ids: list[int] | None = None) -> None:
            nonlocal seq
            n = len(payloads)
            if given_ids is not None:
                ids = np.asarray(given_ids, dtype=np.int64)
            else:
                ids = w.record_base + (np.arange(seq, seq + n, dtype=np.int64) * count) + index
                seq += n
            hops: list[HopColumn] = []
            if p.provenance or errors is not None:
                if true_time and errors is None:
                    # the truth a stamp is judged by: host time read around it; a process
                    # paused in between would blur it, so stamp again (HLC stamps may be
                    # skipped, never reused) until the reads are close together
                    for _ in range(5):
                        before = time.time_ns()
                        ts, logical = clock.stamp(n)
                        after = time.time_ns()
                        if after - before < 20_000:
                            break
                    for payload in payloads:
                        payload["trueNs"] = (before + after) // 2
                else:
                    ts, logical = clock.stamp(n)
                hops = [HopColumn(node_id, np.full(n, ts, dtype=np.int64), logical,
                                  clock.error_bound_ns())]
            batch = Batch(w.stream_id, ids, payloads, keys, None, hops, w.replay_id)
            if errors is not None:
                w.ingest_inbox.put((FAILED, EncodedBatch.encode(batch), errors))
                return
            hashes = (hash_keys(keys) if first.key is not None and keys is not None
                      else hash_ints(ids))
            w.ingest_inbox.put((DATA, EncodedBatch.encode(batch, hashes)))

        resumer = resume_reader(p.source) if skip else None
        chunks = (resumer.read_from(index, count, w.batch_size, skip) if resumer is not None
                  else p.source.read(index, count, w.batch_size))
        for chunk in chunks:
            if w.stop_event is not None and w.stop_event.is_set():
                break
            gate()
            keys, key_failed = _source_keys(first, chunk)
            bad = list(chunk.failed)
            ids = chunk.record_ids
            if key_failed:
                keep = [i for i in range(len(chunk.payloads)) if i not in key_failed]
                bad += [(orjson.dumps(chunk.payloads[i], default=str).decode(), e)
                        for i, e in key_failed.items()]
                chunk = SourceChunk([chunk.payloads[i] for i in keep],
                                    None if keys is None else [keys[i] for i in keep],
                                    record_ids=None if ids is None else [ids[i] for i in keep])
                keys = chunk.keys
            if chunk.payloads:
                emit(chunk.payloads, keys, None, chunk.record_ids)
                records += len(chunk.payloads)
            if bad:
                emit([t for t, _ in bad], None, [e for _, e in bad])
                failed += len(bad)
            if w.stop_event is not None and w.stop_event.is_set():
                break
        w.ingest_inbox.put((BYE, token))
        stats: dict[str, Any] = {"node": node_id, "recordsOut": records, "failed": failed,
                                 **_clock_stats(physical)}
        report = getattr(p.source, "report", None)
        if callable(report):
            stats["source"] = report()
        return stats

    _guard(f"node {w.node_id('source', index)}", token, w.events, body)


# -- ingest: the stream log, written ahead ---------------------------------------------------
def _log_rows(batches: list[EncodedBatch]) -> pa.Table:
    """Stream-log rows straight from the sources' JSON blobs (no parsing, no copies)."""
    ids = np.concatenate([b.record_ids for b in batches])
    now = time.time_ns()
    ts = np.concatenate([b.hops[0].ts_ns if b.hops else np.full(len(b), now, dtype=np.int64)
                         for b in batches])
    payload = pa.chunked_array([
        pa.StringArray.from_buffers(len(b), pa.py_buffer(b.offsets.astype(np.int32)),
                                    pa.py_buffer(b.blob))
        for b in batches
    ], type=pa.string())
    key_col: list[str | None] = []
    for b in batches:
        key_col.extend(b.key_json if b.key_json is not None else [None] * len(b))
    n = len(ids)
    return pa.table({
        "stream_id": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32),
                                                    [batches[0].stream_id]),
        "record_id": ids,
        "ingest_ts_ns": ts,
        "key": pa.array(key_col, pa.string()),
        "payload": payload,
    })


def _redrive(w: Wiring, router: Router) -> int:
    assert w.redrive_path is not None
    return redrive_file(w.redrive_path, w.pipeline, w.stream_id, w.replay_id, router)


def redrive_file(path: str, pipeline: Pipeline, stream_id: str, replay_id: str,
                 router: Router) -> int:
    """Send the records of ``path`` (in the stream log already, without a chain after a
    crash) to the first stage again, their hop 0 restored from the log."""
    import pyarrow.ipc as ipc

    first = pipeline.stages[0]
    sent = 0
    with ipc.open_file(path) as reader:
        for i in range(reader.num_record_batches):
            rb = reader.get_batch(i)
            nodes = rb.column("origin_node").to_pylist()
            for node in sorted(set(nodes)):
                idx = np.flatnonzero(np.asarray(nodes, dtype=object) == node)
                part = rb.take(pa.array(idx))
                router.send(_redrive_batch(stream_id, replay_id, first, node, part))
                sent += len(idx)
    return sent


def _redrive_batch(stream_id: str, replay_id: str, first: Stage, node: str,
                   rb: pa.RecordBatch) -> EncodedBatch:
    ids = rb.column("record_id").to_numpy(zero_copy_only=False).astype(np.int64)
    payload = rb.column("payload")
    texts = [t.encode() for t in payload.to_pylist()]
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)), out=offsets[1:])
    key_json: list[str | None] = rb.column("key").to_pylist()
    keys = None if all(k is None for k in key_json) else [
        None if k is None else orjson.loads(k) for k in key_json]
    hashes = (hash_keys(keys) if first.key is not None and keys is not None
              else hash_ints(ids))
    ts = rb.column("ingest_ts_ns").to_numpy(zero_copy_only=False).astype(np.int64)
    hop = HopColumn(node, ts, np.zeros(len(ids), dtype=np.int64), 0)
    return EncodedBatch(stream_id, ids, b"".join(texts), offsets, hashes, keys,
                        None if keys is None else key_json, [hop], replay_id)


def gather_group(inbox: Any, group_s: float, group_rows: int
                 ) -> tuple[list[tuple[Any, ...]], list[EncodedBatch], int]:
    """Group commit: a stream-log append has a fixed cost (1-2 ms for DuckDB), so the ingest
    takes the messages that arrive within ``group_s`` of the first one (up to ``group_rows``
    records, and up to the first message that is not records) and appends them in one
    transaction. Returns the messages, the record batches among them and their records."""
    msgs = [inbox.get()]
    rows = len(msgs[0][1]) if msgs[0][0] in (DATA, FAILED) else 0
    deadline = time.monotonic() + group_s
    while rows and rows < group_rows:
        left = deadline - time.monotonic()
        try:
            m = inbox.get(timeout=left) if left > 0 else inbox.get_nowait()
        except queue.Empty:
            break
        msgs.append(m)
        if m[0] not in (DATA, FAILED):
            break
        rows += len(m[1])
    return msgs, [m[1] for m in msgs if m[0] in (DATA, FAILED)], rows


def run_ingest(w: Wiring, token: int, members: tuple[int, ...]) -> None:
    """Append each batch to the stream log, then forward it to the first stage."""

    def body() -> dict[str, Any]:
        from streamprov.store import open_stream_log

        log = open_stream_log(w.stream_log_url) if w.log_ingest else None
        router = Router(w.pipeline.stages[0], 0, w.stage_inboxes[0], members, token)
        drain = _Drain()
        inbox = w.ingest_inbox
        logged = 0
        reported_at = time.monotonic()
        ready(w.events, token)
        redriven = _redrive(w, router) if w.redrive_path else 0
        try:
            while True:
                now = time.monotonic()
                if now - reported_at >= 0.2:
                    w.events.put(("progress", token, logged))
                    reported_at = now
                # (nothing to append when the log is not written: forward at once)
                msgs, data, rows = gather_group(
                    inbox, w.ingest_group_s if log is not None else 0.0, w.ingest_group_rows)
                if data and log is not None:
                    log.append(_log_rows(data))
                logged += rows
                for joined in EncodedBatch.merged([m[1] for m in msgs if m[0] == DATA],
                                                  JOIN_BATCHES * w.batch_size):
                    router.send(joined)
                finished = False
                for m in msgs:  # (the group's records first: a control message comes last)
                    tag = m[0]
                    if tag == DATA:
                        continue
                    if tag == FAILED:
                        eb: EncodedBatch = m[1]
                        w.writer_inbox.put((CHAINS, ChainBatch(
                            eb.stream_id, eb.record_ids, eb.hops, Outcome.FAILED, None, m[2],
                            eb.replay_id)))
                    elif tag == RING:
                        router.reroute(m[1])
                    elif drain.handle(m):
                        finished = True
                if finished:
                    break
        finally:
            if log is not None:
                log.close()
        router.bye_all()
        return {"node": "ingest", "logged": logged, "redriven": redriven}

    _guard("ingest", token, w.events, body)


# -- stage instances ------------------------------------------------------------------------
def open_sink(stage: Stage, slot: int, capture: Any, epoch: int) -> Any:
    """The stage's sink writer; after a restart (``epoch`` > 0) one that goes on after what
    the crashed epoch wrote, where the sink can (``reopen``)."""
    if stage.sink is None:
        return None
    reopen = getattr(stage.sink, "reopen", None)
    if epoch and callable(reopen):
        return reopen(slot, capture)
    return stage.sink.open(slot, capture)



def run_stage(w: Wiring, token: int, stage_index: int, slot: int,
              members: tuple[int, ...] | None) -> None:
    def body() -> dict[str, Any]:
        p = w.pipeline
        stage = p.stages[stage_index]
        node_id = w.node_id(stage.name, slot)
        nxt = p.stages[stage_index + 1] if stage_index + 1 < len(p.stages) else None
        router = (Router(nxt, stage_index + 1, w.stage_inboxes[stage_index + 1], members, token)
                  if nxt is not None and members is not None else None)
        writer = open_sink(stage, slot, w.capture, w.epoch)
        physical = w.clock_factory(node_id)
        gate = _accept_gate(physical)
        proc = NodeProcessor(
            stage, stage_index, node_id, HybridLogicalClock(physical),
            provenance=p.provenance, next_key=nxt.key if nxt is not None else None,
            sink_writer=writer,
        )
        inbox = w.stage_inboxes[stage_index][slot]
        chains_out = w.writer_inbox
        drain = _Drain()
        ready(w.events, token)
        busy_ns = 0
        while True:
            msg = inbox.get()
            tag = msg[0]
            if tag == DATA:
                gate()
                t0 = time.perf_counter_ns()
                batch = msg[1]
                if isinstance(batch, EncodedBatch):
                    batch = batch.decode()
                result = proc.process(batch)
                if result.out is not None and router is not None:
                    router.send(result.out)
                for ended in result.ended:
                    chains_out.put((CHAINS, ended))
                busy_ns += time.perf_counter_ns() - t0
            elif tag == RING:
                assert router is not None
                router.reroute(msg[1])
            elif drain.handle(msg):
                break
        if writer is not None:
            writer.close()
        if router is not None:
            router.bye_all()
        return {"node": node_id, "busyS": busy_ns / 1e9, **proc.stats.as_dict(),
                **_clock_stats(physical)}

    _guard(f"node {w.node_id(w.pipeline.stages[stage_index].name, slot)}", token, w.events,
           body)


# -- the provenance writer ------------------------------------------------------------------
FLUSH_NOW = signal.SIGUSR1
"""Tells a writer to store the chains it holds and exit without reading its inbox again."""


class _FlushNow(Exception):
    pass


def run_writer(w: Wiring, token: int) -> None:
    """Batch complete chains into the provenance store until told to drain.

    When the store fails (a server gone, a full disk) the writer keeps the chains it could not
    write and goes on taking new ones up to ``writer_buffer_rows``; past that it stops reading
    its inbox, so the stages block and the sources with them (backpressure). It retries with
    backoff and, once the store is back, writes everything in order. It gives up (and the
    deployment fails, the records safe in the stream log for a later run to re-drive) after
    ``writer_outage_s`` without a successful write.
    """

    def body() -> dict[str, Any]:
        from streamprov.errors import StoreError
        from streamprov.store import open_provenance_store

        store = open_provenance_store(w.provenance_url)
        pending = ChainRowBuilder()
        unwritten: list[tuple[pa.Table, int]] = []  # built but not yet stored, in order
        first_at = 0.0
        written = 0
        chains = 0
        outage_since: float | None = None
        retry_at = 0.0
        backoff = 0.05
        outages = 0
        held_back = 0  # times the buffer was full and the writer stopped taking chains
        inbox = w.writer_inbox
        ready(w.events, token)

        def buffered() -> int:
            return int(pending.rows + sum(t.num_rows for t, _ in unwritten))

        def flush() -> None:
            nonlocal written, chains, outage_since, retry_at, backoff, outages
            if pending.rows:
                n_chains = pending.chains  # (build empties the builder)
                unwritten.append((pending.build(), n_chains))
            while unwritten:
                table, n = unwritten[0]
                try:
                    written += store.write(table)
                except StoreError as exc:
                    now = time.monotonic()
                    if outage_since is None:
                        outage_since = now
                        outages += 1
                        w.events.put(("warning", token, (
                            f"provenance store unavailable ({exc}); keeping up to "
                            f"{w.writer_buffer_rows:,} rows of chains, then holding the "
                            "pipeline back")))
                    if now - outage_since > w.writer_outage_s:
                        raise StoreError(
                            f"the provenance store was unavailable for over "
                            f"{w.writer_outage_s:.0f}s; {buffered():,} rows of chains not "
                            f"written (their records are in the stream log, and the next run "
                            f"re-drives them): {exc}") from exc
                    retry_at = now + backoff
                    backoff = min(backoff * 2, 2.0)
                    return
                unwritten.pop(0)
                chains += n
            if outage_since is not None:
                w.events.put(("warning", token, (
                    f"provenance store back after {time.monotonic() - outage_since:.1f}s; "
                    "every buffered chain written")))
                outage_since = None
                backoff = 0.05

        # the driver restarting after a crash sends SIGUSR1: store what is here and exit
        # (chains still in the inbox are re-driven; the inbox may hold a killed sender's
        # half-written message, so nothing more is read from it)
        interrupt = {"set": False, "waiting": False}

        def on_flush_now(signum: int, frame: Any) -> None:
            interrupt["set"] = True
            if interrupt["waiting"]:
                raise _FlushNow

        def take_chains() -> None:
            nonlocal first_at, held_back
            while not interrupt["set"]:
                if outage_since is not None and buffered() >= w.writer_buffer_rows:
                    # full: take nothing more until the store is back (backpressure)
                    held_back += 1
                    time.sleep(max(0.0, retry_at - time.monotonic()))
                    flush()
                    continue
                if outage_since is not None:
                    timeout: float | None = max(0.0, retry_at - time.monotonic())
                elif pending.rows:
                    timeout = max(0.0, first_at + w.writer_flush_s - time.monotonic())
                else:
                    timeout = None
                interrupt["waiting"] = True
                try:
                    msg = inbox.get(timeout=timeout)
                except queue.Empty:
                    msg = None
                finally:
                    interrupt["waiting"] = False
                if msg is None:
                    flush()
                elif msg[0] == CHAINS:
                    if not pending.rows:
                        first_at = time.monotonic()
                    pending.add(msg[1])
                    if pending.rows >= w.writer_flush_rows and outage_since is None:
                        flush()
                elif msg[0] == DRAIN:
                    return

        signal.signal(FLUSH_NOW, on_flush_now)
        try:
            with contextlib.suppress(_FlushNow):
                take_chains()
            interrupt["waiting"] = False
            flush()
            while unwritten or pending.rows:  # draining: wait for the store (or give up)
                time.sleep(max(0.0, retry_at - time.monotonic()))
                flush()
        finally:
            store.close()
        return {"node": "writer", "rowsWritten": written, "chains": chains,
                "storeOutages": outages, "heldBack": held_back}

    _guard("provenance writer", token, w.events, body)
