"""Composition root: settings in, stores and runners out. The one place backends are wired."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, ConfigDict, Field

from streamprov.clock.config import ClockConfig
from streamprov.clock.node import NodeClockFactory
from streamprov.clock.order import OrderReport, count_inversions
from streamprov.clock.service import TimestampService
from streamprov.errors import InvalidInput, NotFound, StoreError
from streamprov.model import Chain, Outcome, validate_id
from streamprov.runtime import LocalRunner, Pipeline, RunResult
from streamprov.runtime.base import Deployment, Runner
from streamprov.runtime.worker import ClockFactory, system_clock
from streamprov.store import (
    ChainCursor,
    ProvenanceStore,
    StreamLog,
    is_server_url,
    open_provenance_store,
    open_stream_log,
)

if TYPE_CHECKING:
    from streamprov.adapt.service import AdaptationService
    from streamprov.adapt.tuning import TuningService
    from streamprov.config import Catalog, NodeType
    from streamprov.observe.lineage import LineageEmitter
    from streamprov.replay.engine import ReplayEngine

DATA_DIR_ENV = "STREAMPROV_DATA_DIR"
STORE_ENV = "STREAMPROV_STORE"
PROVENANCE_URL_ENV = "STREAMPROV_PROVENANCE_URL"
STREAM_LOG_URL_ENV = "STREAMPROV_STREAM_LOG_URL"
DEFAULT_DATA_DIR = "streamprov-data"


class Settings(BaseModel):
    """Where data lives and how pipelines run. Built once, at the edge, then trusted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path
    provenance_url: str
    stream_log_url: str
    batch_size: int = Field(1024, ge=1, le=1_000_000)
    queue_batches: int = Field(8, ge=1, le=10_000)
    runner: Literal["local", "ray"] = "local"
    """Where node instances run: OS processes here, or actors on a Ray cluster."""
    ray_address: str | None = None
    """Ray cluster to join (host:6379 or ray://host:10001); None starts a local one."""
    clock: ClockConfig = Field(default_factory=lambda: ClockConfig.build(base_port=0))
    """Clock synchronization for the nodes of runs and replays. Embedded runs start their own
    timestamp service on ephemeral loopback ports; ``streamprov clock serve`` runs one on
    fixed ports for nodes elsewhere."""

    @classmethod
    def resolve(cls, data_dir: str | Path | None = None, **overrides: Any) -> Settings:
        """``data_dir`` from the flag, else ``$STREAMPROV_DATA_DIR``, else ./streamprov-data.

        Store URLs: given here, else ``$STREAMPROV_PROVENANCE_URL`` /
        ``$STREAMPROV_STREAM_LOG_URL``, else ``$STREAMPROV_STORE`` for both (one PostgreSQL
        server keeps them in separate tables), else DuckDB files in the data dir.
        """
        chosen = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
        path = Path(chosen).expanduser().absolute()
        both = overrides.pop("store_url", None) or os.environ.get(STORE_ENV)
        return cls(
            data_dir=path,
            provenance_url=overrides.pop("provenance_url", None)
            or os.environ.get(PROVENANCE_URL_ENV) or both
            or f"duckdb://{path / 'provenance.duckdb'}",
            stream_log_url=overrides.pop("stream_log_url", None)
            or os.environ.get(STREAM_LOG_URL_ENV) or both
            or f"duckdb://{path / 'streams.duckdb'}",
            **overrides,
        )

    def ensure_data_dir(self) -> None:
        from streamprov.store.duckdb import ensure_writable_dir

        ensure_writable_dir(self.data_dir)

    def check_readable(self) -> None:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise StoreError(f"data dir {self.data_dir} exists and is not a directory")


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    p50_ns: int
    p99_ns: int
    max_ns: int


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A finished run, as the CLI reports it: the runner's counts plus what the store holds."""

    result: RunResult
    outcomes: dict[Outcome, int]
    latency: LatencySummary
    provenance_rows: int


class App:
    """Everything a command needs, built from ``Settings``."""

    def __init__(self, settings: Settings) -> None:
        from streamprov.replay.gate import StoreGate

        self.settings = settings
        embedded = not is_server_url(settings.provenance_url)
        self.gate = StoreGate(enabled=embedded)
        """Orders store use within this process (embedded DuckDB: one process at a time)."""
        self._clock_lock = threading.Lock()
        self._clock_service: TimestampService | None = None
        self.lineage: LineageEmitter | None = None
        """OpenLineage events of this app's replays and tuning jobs (``lineage_emitter``)."""
        self._live: dict[int, Deployment] = {}

    def clock_factory(self) -> ClockFactory:
        """How node processes get their clocks: synchronized against this app's timestamp
        service (started on first use), simulated when configured, or the host clock."""
        cfg = self.settings.clock
        if not cfg.enabled and not cfg.simulate and cfg.simulate_default is None:
            return system_clock
        if not cfg.enabled:
            return NodeClockFactory(cfg)
        with self._clock_lock:
            if self._clock_service is None:
                service = TimestampService(cfg)
                service.start()
                self._clock_service = service
            return NodeClockFactory(self._clock_service.node_config())

    def clock_service(self) -> TimestampService | None:
        return self._clock_service

    def close(self) -> None:
        """Stop what this app started (the timestamp service; the lineage emitter, after
        delivering the events it holds)."""
        with self._clock_lock:
            if self._clock_service is not None:
                self._clock_service.stop()
                self._clock_service = None
            lineage, self.lineage = self.lineage, None
        if lineage is not None:
            lineage.close()

    def runner(self, *, batch_size: int | None = None, queue_batches: int | None = None,
               node_type: NodeType | None = None) -> Runner:
        """The runner of the settings: local processes, or actors on Ray sized from
        ``node_type``."""
        bs = batch_size or self.settings.batch_size
        qb = queue_batches or self.settings.queue_batches
        if self.settings.runner == "ray":
            from streamprov.runtime.ray import ClusterOptions, RayRunner

            temp = self.settings.data_dir / "ray"
            if len(str(temp)) > 60:  # Ray's socket paths must stay under 107 bytes
                temp = Path(tempfile.gettempdir()) / f"streamprov-ray-{os.getuid()}"
            return RayRunner(batch_size=bs, queue_batches=qb,
                             num_cpus=node_type.cpus if node_type else 1.0,
                             memory_bytes=node_type.memory_bytes if node_type else None,
                             cluster=ClusterOptions(address=self.settings.ray_address,
                                                    temp_dir=temp))
        return LocalRunner(batch_size=bs, queue_batches=qb)

    @contextmanager
    def provenance(self, *, read_only: bool = True) -> Iterator[ProvenanceStore]:
        self.settings.check_readable()
        with self.gate.shared():
            store = open_provenance_store(self.settings.provenance_url, read_only=read_only)
            try:
                yield store
            finally:
                store.close()

    @contextmanager
    def stream_log(self, *, read_only: bool = True) -> Iterator[StreamLog]:
        self.settings.check_readable()
        with self.gate.shared():
            log = open_stream_log(self.settings.stream_log_url, read_only=read_only)
            try:
                yield log
            finally:
                log.close()

    def registry_path(self) -> Path:
        return self.settings.data_dir / "pipelines.json"

    def remember_pipeline(self, stream_id: str, pipeline: Pipeline) -> None:
        """Record which pipeline feeds ``stream_id`` so a replay can run it again."""
        if pipeline.ref is None:
            return
        import orjson

        path = self.registry_path()
        known = orjson.loads(path.read_bytes()) if path.exists() else {}
        known[stream_id] = {"pipeline": pipeline.ref, "sources": pipeline.sources,
                            "parallelism": {s.name: s.parallelism for s in pipeline.stages}}
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(known, option=orjson.OPT_INDENT_2))
        tmp.replace(path)

    def pipeline_for(self, stream_id: str) -> Pipeline:
        """The pipeline that produced ``stream_id`` (as recorded by ``run``)."""
        import orjson

        from streamprov.runtime import load_pipeline

        path = self.registry_path()
        known = orjson.loads(path.read_bytes()) if path.exists() else {}
        entry = known.get(stream_id)
        if entry is None:
            raise NotFound(f"no pipeline is recorded for stream {stream_id!r}; run it with "
                           "streamprov run first", field="streamId")
        return load_pipeline(entry["pipeline"])

    def run(self, pipeline: Pipeline, *, stream_id: str | None = None,
            on_progress: Callable[[int], None] | None = None,
            interval_s: float = 0.1,
            on_start: Callable[[Deployment], Callable[[], None]] | None = None,
            ) -> RunSummary:
        """Run ``pipeline`` until its source ends; report from the runner and the store.

        ``on_start(deployment)`` is called once the deployment runs (to attach an autoscaler,
        say); what it returns is called when the run ends, however it ends."""
        with self.gate.exclusive(f"a run of pipeline {pipeline.name!r}", wait_s=1.0):
            return self._run(pipeline, stream_id=stream_id, on_progress=on_progress,
                             interval_s=interval_s, on_start=on_start)

    def _run(self, pipeline: Pipeline, *, stream_id: str | None,
             on_progress: Callable[[int], None] | None, interval_s: float,
             on_start: Callable[[Deployment], Callable[[], None]] | None = None,
             ) -> RunSummary:
        self.settings.ensure_data_dir()
        self.remember_pipeline(stream_id or pipeline.name, pipeline)
        runner = self.runner()
        # records a killed earlier run logged but never finished go through first (the
        # local runner re-drives them; see streamprov.runtime.recovery)
        extra: dict[str, Any] = ({"recover": True,
                                  "recover_from": self.finished_through(stream_id
                                                                        or pipeline.name)}
                                 if isinstance(runner, LocalRunner) else {})
        deployment = runner.start(
            pipeline, provenance_url=self.settings.provenance_url,
            stream_log_url=self.settings.stream_log_url, stream_id=stream_id,
            clock_factory=self.clock_factory(), **extra,
        )
        self._live[id(deployment)] = deployment
        ended: Callable[[], None] | None = None
        # scaling decisions made in other processes (tune --apply, the API) reach this run
        from streamprov.adapt.live import serve_mailbox

        closed = serve_mailbox(self.settings.data_dir, deployment.stream_id, deployment)
        try:
            try:
                ended = on_start(deployment) if on_start is not None else None
            except BaseException:
                deployment.stop()
                raise
            return self._watch(deployment, on_progress, interval_s)
        finally:
            if ended is not None:
                ended()
            closed()
            self._live.pop(id(deployment), None)

    def live_deployments(self) -> list[Deployment]:
        """The deployments of this app's runs that are running now (``GET /metrics``)."""
        return list(self._live.values())

    def _watch(self, deployment: Deployment, on_progress: Callable[[int], None] | None,
               interval_s: float) -> RunSummary:
        outcome: dict[str, Any] = {}

        def wait() -> None:
            try:
                outcome["result"] = deployment.wait()
            except BaseException as exc:
                outcome["error"] = exc

        waiter = threading.Thread(target=wait, name="streamprov-wait", daemon=True)
        waiter.start()
        try:
            while waiter.is_alive():
                waiter.join(interval_s)
                if on_progress is not None:
                    on_progress(deployment.ingested())
        except KeyboardInterrupt:
            deployment.stop()
            raise
        if "error" in outcome:
            raise outcome["error"]
        result: RunResult = outcome["result"]
        if on_progress is not None:
            on_progress(result.ingested)
        self.remember_clocks(result)
        self.remember_run(result)
        return self.summarize(result)

    def clock_status_path(self) -> Path:
        return self.settings.data_dir / "clock.json"

    def remember_clocks(self, result: RunResult) -> list[dict[str, Any]]:
        """Keep the last run's per-node clock status (what ``clock status`` shows)."""
        import orjson

        nodes = [n["clock"] for n in result.nodes if "clock" in n]
        if nodes:
            doc = {"streamId": result.stream_id, "replayId": result.replay_id, "nodes": nodes,
                   "maxSkewNs": self.settings.clock.max_skew_ns}
            tmp = self.clock_status_path().with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            tmp.replace(self.clock_status_path())
        return nodes

    def runs_path(self) -> Path:
        return self.settings.data_dir / "runs.json"

    def remember_run(self, result: RunResult) -> dict[str, Any]:
        """Keep each stream's last run (counts and per-node stats) for ``GET /metrics`` and the
        dashboard: ``runs.json`` in the data dir, keyed by stream id, replaced atomically."""
        import time

        import orjson

        with self.stream_log() as log:  # the run ended cleanly: every id below has a chain
            finished = log.next_record_id(result.stream_id)
        doc = {"streamId": result.stream_id, "replayId": result.replay_id,
               "finishedThrough": finished,
               "timeNs": time.time_ns(), "durationS": result.duration_s,
               "ingested": result.ingested, "delivered": result.delivered,
               "dropped": result.dropped, "failed": result.failed,
               "chainsWritten": result.chains_written, "rowsWritten": result.rows_written,
               "nodes": result.nodes}
        path = self.runs_path()
        known = orjson.loads(path.read_bytes()) if path.exists() else {}
        known[result.stream_id] = doc
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(known, option=orjson.OPT_INDENT_2))
        tmp.replace(path)
        return doc

    def finished_through(self, stream_id: str) -> int:
        """Every record of ``stream_id`` below this id has a chain (the stream log's end after
        the last run that ended cleanly; 0 when unknown): where recovery starts looking."""
        for doc in self.last_runs():
            if doc.get("streamId") == stream_id:
                return int(doc.get("finishedThrough") or 0)
        return 0

    def last_runs(self) -> list[dict[str, Any]]:
        """The last run of every stream (see ``remember_run``), newest first."""
        import orjson

        path = self.runs_path()
        try:
            known: dict[str, dict[str, Any]] = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return []
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StoreError(f"cannot read {path}: {exc}") from exc
        return sorted(known.values(), key=lambda d: d.get("timeNs", 0), reverse=True)

    def clock_status(self) -> dict[str, Any]:
        """Clocks of the last run's nodes, and this app's timestamp service replicas."""
        import orjson

        path = self.clock_status_path()
        doc: dict[str, Any] = orjson.loads(path.read_bytes()) if path.exists() else {
            "nodes": []}
        service = self._clock_service
        doc["replicas"] = [] if service is None else [r.to_json() for r in service.status()]
        doc["maxSkewNs"] = self.settings.clock.max_skew_ns
        doc["policy"] = str(self.settings.clock.policy)
        return doc

    def order_check(self, stream_id: str) -> OrderReport:
        """Compare the stream's order by hop-0 stamps with its records' true generation times
        (payload field ``trueNs``, see ``SyntheticSource.true_time``)."""
        ts: list[int] = []
        logical: list[int] = []
        error: list[int] = []
        node: list[str] = []
        ids: list[int] = []
        with self.provenance() as store:
            for chunk in store.iter_window(stream_id, 0, 2**63 - 1):
                for c in chunk:
                    if c.branch:
                        continue
                    h = c.hops[0]
                    ts.append(h.timestamp_ns)
                    logical.append(h.logical)
                    error.append(h.error_ns)
                    node.append(h.node_id)
                    ids.append(c.record_id)
        with self.stream_log() as log:
            entries = log.entries_table(stream_id, ids)
        true_by_id = dict(zip(entries.column("record_id").to_pylist(),
                              entries.column("payload").to_pylist(), strict=True))
        true_ns = []
        for rid in ids:
            doc = orjson.loads(true_by_id[rid]) if rid in true_by_id else {}
            if "trueNs" not in doc:
                raise InvalidInput(f"stream {stream_id!r} has no true generation times "
                                   "(payload field trueNs)", field="stream")
            true_ns.append(doc["trueNs"])
        return count_inversions(true_ns, ts, logical, error, node)

    def summarize(self, result: RunResult) -> RunSummary:
        with self.provenance() as store:
            outcomes = result.own_outcomes(store.outcome_counts(
                result.stream_id, result.replay_id, from_record=result.from_record))
            lat = np.asarray(store.latencies_ns(result.stream_id, result.replay_id))
        rows = result.rows_written
        if len(lat):
            p50, p99 = np.percentile(lat, [50, 99], method="nearest")
            latency = LatencySummary(len(lat), int(p50), int(p99), int(lat.max()))
        else:
            latency = LatencySummary(0, 0, 0, 0)
        return RunSummary(result, outcomes, latency, rows)

    def record_chains(self, stream_id: str, record_id: int) -> list[Chain]:
        validate_id(stream_id, "stream")
        with self.provenance() as store:
            if not store.has_stream(stream_id):
                raise NotFound(f"unknown stream {stream_id!r}", field="stream")
            chains = store.chains_for_record(stream_id, record_id)
        if not chains:
            raise NotFound(f"stream {stream_id!r} has no record {record_id}", field="record")
        return chains

    def require_stream(self, store: ProvenanceStore, stream_id: str) -> None:
        validate_id(stream_id, "stream")
        if not store.has_stream(stream_id):
            raise NotFound(f"unknown stream {stream_id!r}", field="stream")


def check_window(start_ns: int, end_ns: int) -> None:
    if start_ns >= end_ns:
        raise InvalidInput("start must be before end", field="start")


def replay_engine(application: App, catalog: Catalog, *, max_concurrent: int = 1,
                  sample_interval_s: float = 0.25) -> ReplayEngine:
    """The replay engine over ``application``'s stores, pipelines registry and gate."""
    from streamprov.replay.engine import ReplayEngine

    s = application.settings
    lineage = lineage_emitter(application, catalog)
    return ReplayEngine(data_dir=s.data_dir, provenance_url=s.provenance_url,
                        stream_log_url=s.stream_log_url, catalog=catalog,
                        pipeline_for=application.pipeline_for, gate=application.gate,
                        queue_batches=s.queue_batches, max_concurrent=max_concurrent,
                        sample_interval_s=sample_interval_s,
                        clock_factory=application.clock_factory,
                        runner_factory=application.runner,
                        on_event=lineage.replay_event if lineage is not None else None)


def lineage_emitter(application: App, catalog: Catalog) -> LineageEmitter | None:
    """The app's OpenLineage emitter (built once), configured by ``$STREAMPROV_LINEAGE_URL``
    / ``$STREAMPROV_LINEAGE_FILE`` over the config file's ``[lineage]`` section; None when
    neither names a destination."""
    from streamprov.observe.lineage import LineageConfig, LineageEmitter, dataset_namespace

    with application._clock_lock:
        if application.lineage is not None:
            return application.lineage
        config = LineageConfig.resolve(catalog.lineage)
        if not config.enabled:
            return None
        s = application.settings
        application.lineage = LineageEmitter.from_config(
            config, dataset_ns=dataset_namespace(s.data_dir, s.provenance_url))
        return application.lineage


def adaptation_service(application: App, catalog: Catalog) -> AdaptationService:
    """Expectations, deviation triggers and the scaling audit trail in the data dir."""
    from streamprov.adapt.service import AdaptationService

    return AdaptationService(application.settings.data_dir, catalog)


def tuning_service(application: App, catalog: Catalog,
                   adaptation: AdaptationService | None = None) -> TuningService:
    """Tuning jobs over ``application``'s stores (their replays share its gate)."""
    from streamprov.adapt.tuning import TuningService

    lineage = lineage_emitter(application, catalog)
    return TuningService(application, catalog,
                         adaptation or adaptation_service(application, catalog),
                         on_event=lineage.tuning_event if lineage is not None else None)


# -- reads shared by the CLI and the API ---------------------------------------------------------
def encode_cursor(cursor: ChainCursor) -> str:
    """An opaque, URL-safe page token for the position after a chain."""
    import base64

    import orjson

    raw = orjson.dumps(list(cursor.as_tuple()))
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str, field: str = "cursor") -> ChainCursor:
    import base64
    import binascii

    import orjson

    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        ts, logical, node, rid, branch = orjson.loads(raw)
        if not (isinstance(node, str) and all(isinstance(x, int) and not isinstance(x, bool)
                                              for x in (ts, logical, rid, branch))):
            raise ValueError("types")
    except (binascii.Error, ValueError, TypeError, orjson.JSONDecodeError):
        raise InvalidInput(f"{field}: not a cursor returned by this API", field=field) from None
    return ChainCursor(ts, logical, node, rid, branch)


MAX_PAGE = 10_000
"""Largest page of chains one request returns (pages chain with ``nextCursor``)."""


def streams_overview(application: App) -> list[dict[str, Any]]:
    """Every stream: records in the log, original chains, first/last hop-0 time."""
    with application.provenance() as store:
        summaries = store.streams()
    with application.stream_log() as log:
        counts = {s.stream_id: log.count(s.stream_id) for s in summaries}
    return [{"streamId": s.stream_id, "records": counts[s.stream_id], "chains": s.chains,
             "firstNs": s.first_ns, "lastNs": s.last_ns} for s in summaries]


def provenance_page(application: App, stream_id: str, start_ns: int, end_ns: int, *,
                    cursor: str | None = None, limit: int = 1000,
                    replay_id: str = "") -> tuple[list[Chain], str | None]:
    """One page of the window's chains in the original order, and the next page's cursor
    (None at the end)."""
    check_window(start_ns, end_ns)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be 1..{MAX_PAGE}", field="limit")
    if replay_id:
        validate_id(replay_id, "replayId")
    after = decode_cursor(cursor) if cursor else None
    with application.provenance() as store:
        application.require_stream(store, stream_id)
        chains = store.window(stream_id, start_ns, end_ns, replay_id=replay_id, after=after,
                              limit=limit + 1)
    more = len(chains) > limit
    chains = chains[:limit]
    return chains, (encode_cursor(ChainCursor.after(chains[-1])) if more else None)


def ingest_records(application: App, stream_id: str, pipeline: Pipeline,
                   payloads: list[Any], key_field: str | None = None) -> RunSummary:
    """Run ``pipeline`` over ``payloads`` (already-parsed JSON values) into ``stream_id``.

    The records are staged in a temporary JSON Lines file in the data dir and the pipeline
    runs to completion on it: a batch ingest, not a standing deployment (see the docs).
    """
    import tempfile

    import orjson

    from streamprov.runtime import JsonLinesSource

    validate_id(stream_id, "streamId")
    if not payloads:
        raise InvalidInput("body: no records given", field="body")
    application.settings.ensure_data_dir()
    fd, name = tempfile.mkstemp(prefix="ingest-", suffix=".jsonl",
                                dir=application.settings.data_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as fh:
            for p in payloads:
                fh.write(orjson.dumps(p) + b"\n")
        source = JsonLinesSource(str(path), key_field)
        return application.run(pipeline.with_source(source, sources=1), stream_id=stream_id)
    finally:
        path.unlink(missing_ok=True)
