"""OpenLineage run events for replays and tuning jobs.

A replay is a run of the job ``replay.<streamId>`` (namespace ``streamprov`` unless configured)
that reads the stream's dataset (the window of its log and chains) and writes the replay's
chains (dataset ``<streamId>~replay``, as replay nodes are named ``<pipeline>~replay/...``); a
tuning job is a run of ``tune.<streamId>`` over the same datasets (its evaluations are
replays). Datasets live in the namespace ``streamprov://<host>[:port]/<database>`` for a
PostgreSQL store, ``streamprov://<hostname><data dir>`` for embedded stores.

Events, one per change of state that OpenLineage knows:

* ``START`` when the replay or job starts running, ``COMPLETE`` when it completes, ``FAIL``
  when it fails (with the standard ``errorMessage`` run facet), ``ABORT`` when cancelled;
* ``run.runId`` is ``uuid5(RUN_ID_NAMESPACE, <replay or tuning id>)``: every event of a run
  carries the same id, and re-sending an event is idempotent for a lineage server;
* run facets ``streamprov_window`` (stream, start/end in ns and RFC 3339, speed, the streamprov
  id) on every event, ``streamprov_configuration`` (id, node type and its spec, nodes, batch
  size) on a replay's, ``streamprov_report`` (the report's headline figures) on a replay that
  completed or was cancelled after running, ``streamprov_tuningResult`` (best and starting
  configuration, improvement, evaluations, what was applied) on a completed tuning job;
* job facets ``jobType`` (standard) and, for tuning jobs, ``streamprov_tuning`` (algorithm,
  SLO, budget, search space, sample length).

Custom facets carry ``_producer`` and ``_schemaURL`` as the spec asks. Delivery: a
``LineageEmitter`` hands events to one sender thread, so a slow or dead lineage server never
holds up a replay; each transport (HTTP POST with a short timeout, or a JSON-lines file) is
tried once per event, and a failure is logged and counted (``LineageEmitter.stats``), never
raised to the replay or the job.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from streamprov import __version__
from streamprov.config import LineageSection
from streamprov.errors import InvalidInput, StreamprovError
from streamprov.model import format_time_ns
from streamprov.store import is_server_url

log = logging.getLogger("streamprov.observe")

URL_ENV = "STREAMPROV_LINEAGE_URL"
FILE_ENV = "STREAMPROV_LINEAGE_FILE"
PRODUCER = f"urn:streamprov:{__version__}"
"""``producer`` of every event and ``_producer`` of every facet: a URN naming streamprov and
its version (OpenLineage asks for a URI; the project has no public home to point at yet)."""
SCHEMA_URL = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"
FACETS_SCHEMA_URL = f"{PRODUCER}:facets"
"""Where the custom facets' JSON schemas live (``#/$defs/<Facet>`` each)."""
RUN_ID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "streamprov://runs")
MAX_QUEUED = 10_000
"""Events waiting for the sender beyond this are dropped (and counted)."""

_ERROR_SCHEMA = ("https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json"
                 "#/$defs/ErrorMessageRunFacet")
_JOB_TYPE_SCHEMA = ("https://openlineage.io/spec/facets/2-0-3/JobTypeJobFacet.json"
                    "#/$defs/JobTypeJobFacet")
_ENGINE_SCHEMA = ("https://openlineage.io/spec/facets/1-1-1/ProcessingEngineRunFacet.json"
                  "#/$defs/ProcessingEngineRunFacet")
EVENT_TYPES = {"running": "START", "completed": "COMPLETE", "failed": "FAIL",
               "cancelled": "ABORT"}
"""streamprov state -> OpenLineage ``eventType``; other states emit nothing."""


class LineageError(StreamprovError):
    """A lineage transport could not deliver an event (logged and counted, never raised to a
    replay or a tuning job)."""


# -- configuration -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LineageConfig:
    """Where events go: ``url`` (HTTP POST), ``file`` (JSON lines), both, or neither."""

    url: str | None = None
    file: Path | None = None
    namespace: str = "streamprov"
    timeout_s: float = 2.0

    @classmethod
    def resolve(cls, section: LineageSection | None = None,
                environ: Mapping[str, str] | None = None) -> LineageConfig:
        """``$STREAMPROV_LINEAGE_URL`` / ``$STREAMPROV_LINEAGE_FILE`` over the config file's
        ``[lineage]`` section; ``InvalidInput`` naming ``lineage.url`` for a URL that is not
        http(s)."""
        env = os.environ if environ is None else environ
        section = section or LineageSection()
        url = env.get(URL_ENV) or section.url
        file = env.get(FILE_ENV) or section.file
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise InvalidInput(f"lineage.url: {url!r} is not an http(s) URL of an "
                                   "OpenLineage endpoint (http://host:5000/api/v1/lineage)",
                                   field="lineage.url")
        return cls(url or None, Path(file).expanduser() if file else None, section.namespace,
                   section.timeout_s)

    @property
    def enabled(self) -> bool:
        return self.url is not None or self.file is not None


def dataset_namespace(data_dir: Path, provenance_url: str) -> str:
    """``streamprov://host[:port]/database`` for a PostgreSQL store (credentials left out),
    ``streamprov://<hostname><data dir>`` for embedded ones."""
    if is_server_url(provenance_url):
        parts = urlsplit(provenance_url)
        host = parts.hostname or "localhost"
        port = f":{parts.port}" if parts.port else ""
        return f"streamprov://{host}{port}{parts.path}"
    return f"streamprov://{socket.gethostname()}{data_dir.absolute().as_posix()}"


# -- events ----------------------------------------------------------------------------------
def run_id_for(streamprov_id: str) -> str:
    """The OpenLineage run id of a replay or tuning job: stable for its streamprov id."""
    return str(uuid.uuid5(RUN_ID_NAMESPACE, streamprov_id))


def _event_time(ts_ns: int) -> str:
    # microseconds: what every OpenLineage consumer parses (format_time_ns gives 9 digits)
    return format_time_ns(ts_ns - ts_ns % 1000)[:-4] + "Z"


def _facet(name: str, **fields: Any) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": f"{FACETS_SCHEMA_URL}#/$defs/{name}",
            **fields}


def _window(request: Mapping[str, Any], streamprov_id: Mapping[str, str]) -> dict[str, Any]:
    return _facet("WindowRunFacet", **streamprov_id, streamId=request.get("streamId"),
                  startNs=request.get("startNs"), endNs=request.get("endNs"),
                  startTime=request.get("startTime"), endTime=request.get("endTime"),
                  speed=request.get("replaySpeed"))


def _error(doc: Mapping[str, Any]) -> dict[str, Any]:
    error = doc.get("error") or {}
    facet = {"_producer": PRODUCER, "_schemaURL": _ERROR_SCHEMA,
             "message": str(error.get("message") or "failed"), "programmingLanguage": "python"}
    if error.get("trace"):
        facet["stackTrace"] = str(error["trace"])
    return facet


def _job_type(job_type: str) -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": _JOB_TYPE_SCHEMA, "processingType": "BATCH",
            "integration": "STREAMPROV", "jobType": job_type}


def _engine() -> dict[str, Any]:
    return {"_producer": PRODUCER, "_schemaURL": _ENGINE_SCHEMA, "name": "streamprov",
            "version": __version__}


def _datasets(namespace: str, names: Sequence[str]) -> list[dict[str, Any]]:
    return [{"namespace": namespace, "name": n, "facets": {}} for n in names]


def _headline(report: Mapping[str, Any]) -> dict[str, Any]:
    latency = report.get("latencyNs") or {}
    lag = report.get("pacingLagNs") or {}
    return _facet(
        "ReportRunFacet", records=report.get("records"), durationS=report.get("durationS"),
        targetThroughput=report.get("targetThroughput"),
        achievedThroughput=report.get("achievedThroughput"),
        latencyNs={k: latency[k] for k in ("p50", "p95", "p99", "max") if k in latency},
        pacingLagP99Ns=lag.get("p99"), keptUp=report.get("keptUp"),
        errors=report.get("errors"), fidelity=report.get("fidelity"),
        orderPreserved=report.get("orderPreserved"), costEstimate=report.get("costEstimate"),
        cancelled=bool(report.get("cancelled")))


def _event(event_type: str, time_ns: int, run_key: str, run_facets: dict[str, Any],
           job: dict[str, Any], inputs: list[dict[str, Any]],
           outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"eventType": event_type, "eventTime": _event_time(time_ns),
            "run": {"runId": run_id_for(run_key), "facets": run_facets}, "job": job,
            "inputs": inputs, "outputs": outputs, "producer": PRODUCER,
            "schemaURL": SCHEMA_URL}


def replay_event(state: str, doc: Mapping[str, Any], *, namespace: str = "streamprov",
                 dataset_ns: str) -> dict[str, Any] | None:
    """The run event of a replay record (``ReplayEngine.get``) entering ``state``; None for a
    state OpenLineage has no event for."""
    event_type = EVENT_TYPES.get(state)
    if event_type is None:
        return None
    req: Mapping[str, Any] = doc.get("request") or {}
    stream = str(req.get("streamId"))
    cfg: Mapping[str, Any] = doc.get("configuration") or {}
    facets: dict[str, Any] = {
        "processing_engine": _engine(),
        "streamprov_window": _window(req, {"replayId": str(doc["replayId"])}),
        "streamprov_configuration": _facet(
            "ConfigurationRunFacet", id=doc.get("configurationId") or cfg.get("id"),
            nodeType=cfg.get("nodeType"), nodes=cfg.get("nodes"),
            batchSize=cfg.get("batchSize"), nodeTypeSpec=cfg.get("nodeTypeSpec")),
    }
    report = doc.get("report")
    if report and event_type in ("COMPLETE", "ABORT"):
        facets["streamprov_report"] = _headline(report)
    if event_type == "FAIL":
        facets["errorMessage"] = _error(doc)
    job = {"namespace": namespace, "name": f"replay.{stream}",
           "facets": {"jobType": _job_type("REPLAY")}}
    when = doc.get("finishedNs") if event_type != "START" else None
    return _event(event_type, int(when or time.time_ns()), str(doc["replayId"]), facets, job,
                  _datasets(dataset_ns, [stream]), _datasets(dataset_ns, [f"{stream}~replay"]))


def tuning_event(state: str, doc: Mapping[str, Any], *, namespace: str = "streamprov",
                 dataset_ns: str) -> dict[str, Any] | None:
    """The run event of a tuning job record (``TuningService.get``) entering ``state``."""
    event_type = EVENT_TYPES.get(state)
    if event_type is None:
        return None
    req: Mapping[str, Any] = doc.get("request") or {}
    stream = str(req.get("streamId"))
    window = _window(req, {"tuneId": str(doc["tuneId"])})
    sampled = doc.get("window") or {}
    window["sampled"] = {k: sampled.get(k) for k in ("startNs", "endNs", "startTime",
                                                      "endTime", "sampleS")}
    facets: dict[str, Any] = {"processing_engine": _engine(), "streamprov_window": window}
    if event_type == "COMPLETE":
        facets["streamprov_tuningResult"] = _facet(
            "TuningResultRunFacet", best=doc.get("best"), start=doc.get("start"),
            improvement=doc.get("improvement"), evaluations=len(doc.get("evaluations") or []),
            replays=doc.get("replays"), applied=doc.get("applied") or [],
            message=doc.get("message"))
    if event_type == "FAIL":
        facets["errorMessage"] = _error(doc)
    tuning = _facet(
        "TuningJobFacet", algorithm=req.get("algorithm"), slo=req.get("slo"),
        budget=req.get("budget"), apply=req.get("apply"), sampleS=req.get("sampleS"),
        repeats=req.get("repeats"), seed=req.get("seed"),
        startConfigurationId=req.get("configurationId"), space=doc.get("space"))
    job = {"namespace": namespace, "name": f"tune.{stream}",
           "facets": {"jobType": _job_type("TUNING"), "streamprov_tuning": tuning}}
    when = doc.get("finishedNs") if event_type != "START" else doc.get("startedNs")
    return _event(event_type, int(when or time.time_ns()), str(doc["tuneId"]), facets, job,
                  _datasets(dataset_ns, [stream]), _datasets(dataset_ns, [f"{stream}~replay"]))


# -- transports ------------------------------------------------------------------------------
class LineageTransport(Protocol):
    """Delivers one run event. Called from the emitter's single sender thread, in the order
    events were emitted; never retries on its own and bounds every wait by a timeout; raises
    ``LineageError`` (or any exception) when the event was not delivered."""

    def send(self, event: Mapping[str, Any]) -> None: ...


class HttpTransport:
    """POSTs each event as JSON to an OpenLineage endpoint (Marquez:
    ``http://host:5000/api/v1/lineage``); any answer but 2xx is a failure."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def send(self, event: Mapping[str, Any]) -> None:
        req = urllib.request.Request(self.url, data=orjson.dumps(event), method="POST",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            exc.close()
            raise LineageError(f"{self.url} answered {exc.code} {exc.reason}",
                               field="lineage.url") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise LineageError(f"{self.url}: {reason}", field="lineage.url") from None


class FileTransport:
    """Appends each event as one line of JSON (NDJSON) to a file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def send(self, event: Mapping[str, Any]) -> None:
        try:
            with open(self.path, "ab") as fh:
                fh.write(orjson.dumps(event) + b"\n")
        except OSError as exc:
            raise LineageError(f"cannot append to {self.path}: {exc.strerror}",
                               field="lineage.file") from None


def read_events(path: str | Path) -> list[dict[str, Any]]:
    """Every event of a file written by ``FileTransport``, in order."""
    return [orjson.loads(line) for line in Path(path).read_bytes().splitlines() if line.strip()]


# -- emitter ---------------------------------------------------------------------------------
class LineageEmitter:
    """Turns replay and tuning state changes into run events and delivers them on a sender
    thread of its own (started on the first event; a daemon, so ``close`` before exit to
    deliver what is queued). ``replay_event``/``tuning_event`` are the ``on_event``
    listeners of ``ReplayEngine`` and ``TuningService``; they never block and never raise."""

    def __init__(self, transports: Sequence[LineageTransport], *, namespace: str = "streamprov",
                 dataset_ns: str) -> None:
        self.transports = list(transports)
        self.namespace = namespace
        self.dataset_ns = dataset_ns
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread: threading.Thread | None = None
        self._stats = {"emitted": 0, "sent": 0, "failed": 0, "dropped": 0}

    @classmethod
    def from_config(cls, config: LineageConfig, *, dataset_ns: str) -> LineageEmitter:
        transports: list[LineageTransport] = []
        if config.url:
            transports.append(HttpTransport(config.url, config.timeout_s))
        if config.file:
            transports.append(FileTransport(config.file))
        return cls(transports, namespace=config.namespace, dataset_ns=dataset_ns)

    def replay_event(self, state: str, doc: dict[str, Any]) -> None:
        self._safely(replay_event, state, doc)

    def tuning_event(self, state: str, doc: dict[str, Any]) -> None:
        self._safely(tuning_event, state, doc)

    def _safely(self, build: Any, state: str, doc: dict[str, Any]) -> None:
        try:
            event = build(state, doc, namespace=self.namespace, dataset_ns=self.dataset_ns)
        except Exception:
            log.exception("lineage: cannot build the %s event of %s", state,
                          doc.get("replayId") or doc.get("tuneId"))
            return
        if event is not None:
            self.emit(event)

    def emit(self, event: dict[str, Any]) -> None:
        """Queue an event for every transport (dropped, and counted, when closed or full)."""
        with self._cond:
            if self._closed or len(self._queue) >= MAX_QUEUED:
                self._stats["dropped"] += 1
                return
            self._stats["emitted"] += 1
            self._queue.append(event)
            if self._thread is None:
                self._thread = threading.Thread(target=self._send_loop, daemon=True,
                                                name="streamprov-lineage")
                self._thread.start()
            self._cond.notify_all()

    def stats(self) -> dict[str, int]:
        """``emitted`` events, deliveries ``sent`` and ``failed`` (one per transport and
        event), events ``dropped`` (queue full or emitter closed)."""
        with self._cond:
            return dict(self._stats)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued event has been tried; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout_s``), then stop the sender thread."""
        self.flush(timeout_s)
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if not self._queue:
                    return
                event = self._queue.popleft()
                self._busy = True
            sent = failed = 0
            for transport in self.transports:
                try:
                    transport.send(event)
                    sent += 1
                except Exception as exc:
                    failed += 1
                    log.warning("lineage: %s event of run %s not delivered: %s",
                                event.get("eventType"), event["run"]["runId"], exc)
            with self._cond:
                self._stats["sent"] += sent
                self._stats["failed"] += failed
                self._busy = False
                self._cond.notify_all()
