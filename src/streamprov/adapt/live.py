"""The live pipeline: its metrics, its deviation checks and applying scaling decisions to it.

Metrics of a live deployment come from a ``LatencyProbeSink`` (latency from hop 0 to the sink,
per delivered record, summarized per batch and sent back to the driver) and from the
deployment's own ingest counter (input rate). The provenance store cannot be read while the
deployment runs on embedded DuckDB (its writer process holds the file), so live latency is
measured at the sink instead of from the chains; the error rate is not observed live (failed
records never reach the sink) and is checked after replays only.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from streamprov.adapt.expectation import Expectation
from streamprov.adapt.trigger import DeviationTrigger, Observation
from streamprov.config import Configuration
from streamprov.runtime import CaptureSink
from streamprov.runtime.sinks import SinkWriter


class _ProbeWriter:
    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def write(self, records: list[dict[str, Any]]) -> None:
        now = time.time_ns()
        lat = [now - int(r["provenance"][0]["timestamp"]) for r in records if r["provenance"]]
        self._queue.put([{"probeNs": now, "latencyNs": lat}])

    def close(self) -> None:
        return None


class LatencyProbeSink(CaptureSink):
    """A sink that delivers nowhere and reports each batch's end-to-end latencies (hop 0 to
    the sink) to the driver, where ``LiveObserver`` reads them from ``Deployment.captured``."""

    def open(self, instance: int, capture: Any) -> SinkWriter:
        base = super().open(instance, capture)  # raises when the runner collects nothing
        del base
        return _ProbeWriter(capture)


class ObservableDeployment(Protocol):
    """What a ``LiveObserver`` reads: ``captured`` (probe summaries appended by the runner)
    and ``ingested()`` (records ingested so far)."""

    captured: list[dict[str, Any]]

    def ingested(self) -> int: ...


@dataclass(slots=True)
class LiveObserver:
    """Turns a deployment's probe summaries into one ``Observation`` per call (a window)."""

    deployment: ObservableDeployment
    _pos: int = 0
    _last_ingested: int = 0
    _last_s: float = field(default_factory=time.monotonic)

    def observe(self) -> Observation:
        now = time.monotonic()
        got = self.deployment.captured[self._pos:]
        self._pos += len(got)
        lat = [x for item in got if "latencyNs" in item for x in item["latencyNs"]]
        ingested = self.deployment.ingested()
        span = max(1e-6, now - self._last_s)
        input_rate = (ingested - self._last_ingested) / span
        self._last_ingested, self._last_s = ingested, now
        p99 = int(np.percentile(np.asarray(lat), 99)) if lat else None
        return Observation(p99, len(lat) / span, None, input_rate)


def calibrate(stream_id: str, configuration_id: str,
              windows: list[Observation]) -> Expectation:
    """An expectation from a deployment's own first windows (medians): for a live pipeline the
    model has no replay of."""
    p99s = sorted(w.p99_latency_ns for w in windows if w.p99_latency_ns is not None)
    tputs = sorted(w.throughput for w in windows if w.throughput is not None)
    rates = sorted(w.input_rate for w in windows if w.input_rate is not None)
    return Expectation(stream_id, configuration_id,
                       rates[len(rates) // 2] if rates else None,
                       tputs[len(tputs) // 2] if tputs else None,
                       p99s[len(p99s) // 2] if p99s else None, 0.0, "calibrated",
                       len(windows))


@dataclass(slots=True)
class LiveMonitor:
    """Checks a live deployment every ``interval_s`` against ``expected`` (or, when None,
    against what its first ``calibrate_windows`` windows showed); sustained deviations fire
    ``trigger``."""

    observer: LiveObserver
    trigger: DeviationTrigger
    stream_id: str
    configuration_id: str
    expected: Expectation | None = None
    calibrate_windows: int = 3
    fired: list[dict[str, Any]] = field(default_factory=list)
    windows: list[Observation] = field(default_factory=list)

    def step(self) -> dict[str, Any] | None:
        obs = self.observer.observe()
        self.windows.append(obs)
        if self.expected is None:
            if len(self.windows) >= self.calibrate_windows:
                self.expected = calibrate(self.stream_id, self.configuration_id,
                                          self.windows[-self.calibrate_windows:])
            return None
        event = self.trigger.check(self.expected, obs, source="live", sustained=True)
        if event is not None:
            self.fired.append(event)
        return event


class LiveDeployments:
    """Deployments running in this process, by stream, that scaling decisions may act on."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_stream: dict[str, Any] = {}

    def attach(self, stream_id: str, deployment: Any) -> None:
        with self._lock:
            self._by_stream[stream_id] = deployment

    def detach(self, stream_id: str) -> None:
        with self._lock:
            self._by_stream.pop(stream_id, None)

    def get(self, stream_id: str) -> Any | None:
        with self._lock:
            dep = self._by_stream.get(stream_id)
        if dep is not None and getattr(dep, "finished", False):
            self.detach(stream_id)
            return None
        return dep


class RunMailbox:
    """How a scaling decision reaches a ``streamprov run`` in another process.

    The running process announces itself (``adapt/running/<stream>.json``: its pid) and
    polls ``adapt/requests/<stream>.json``, where ``post`` leaves the newest request (stage
    counts, trigger, figures); ``take`` claims it by renaming, so it is applied once. Plain
    files in the data dir: what every process of one data dir already shares.
    """

    def __init__(self, data_dir: Path) -> None:
        self.running_dir = data_dir / "adapt" / "running"
        self.requests_dir = data_dir / "adapt" / "requests"

    # -- the running process ------------------------------------------------------------
    def announce(self, stream_id: str) -> None:
        self.running_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.running_dir / f"{stream_id}.json",
                      {"streamId": stream_id, "pid": os.getpid()})

    def withdraw(self, stream_id: str) -> None:
        (self.running_dir / f"{stream_id}.json").unlink(missing_ok=True)

    def take(self, stream_id: str) -> dict[str, Any] | None:
        path = self.requests_dir / f"{stream_id}.json"
        claimed = path.with_suffix(f".{os.getpid()}.taken")
        try:
            path.rename(claimed)
        except FileNotFoundError:
            return None
        try:
            doc: dict[str, Any] = orjson.loads(claimed.read_bytes())
            return doc
        except (OSError, orjson.JSONDecodeError):
            return None
        finally:
            claimed.unlink(missing_ok=True)

    # -- whoever decides ----------------------------------------------------------------
    def running_pid(self, stream_id: str) -> int | None:
        """The pid of the process running ``stream_id`` now, if one announced itself and is
        alive."""
        try:
            pid = int(orjson.loads((self.running_dir / f"{stream_id}.json").read_bytes())["pid"])
        except (OSError, orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        return pid

    def post(self, stream_id: str, request: dict[str, Any]) -> None:
        self.requests_dir.mkdir(parents=True, exist_ok=True)
        _write_atomic(self.requests_dir / f"{stream_id}.json", request)


def _write_atomic(path: Path, doc: dict[str, Any]) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(orjson.dumps(doc))
    tmp.replace(path)


def serve_mailbox(data_dir: Path, stream_id: str, deployment: Any,
                  interval_s: float = 0.5) -> Callable[[], None]:
    """Apply the scaling requests other processes post for ``stream_id`` to ``deployment``
    until the returned function is called; each applied step goes to the audit trail."""
    from streamprov.adapt.audit import scaling_log

    box = RunMailbox(data_dir)
    box.announce(stream_id)
    trail = scaling_log(data_dir)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval_s):
            req = box.take(stream_id)
            if req is None:
                continue
            current = deployment.parallelism()
            try:
                stages = deployment.pipeline.stages
                counts = Configuration.model_validate(req.get("configuration")).stage_counts(
                    list(current), deployment.pipeline.max_parallelism,
                    {s.name: s.sink is None or s.sink.parallel_safe for s in stages})
            except Exception as exc:  # (a request this version cannot read)
                trail.append({"streamId": stream_id, "stage": None, "trigger":
                              req.get("trigger"), "applied": "failed", "note": str(exc)})
                continue
            for stage, n in sorted(counts.items()):
                if stage not in current or current[stage] == n:
                    continue
                try:
                    deployment.scale(stage, int(n))
                    applied, note = "live", f"applied by the running process (pid {os.getpid()})"
                except Exception as exc:  # a finished run, a count out of range
                    applied, note = "failed", str(exc)
                trail.append({"streamId": stream_id, "stage": stage, "from": current[stage],
                              "to": int(n), "trigger": req.get("trigger"),
                              "figures": req.get("figures") or {}, "applied": applied,
                              "configurationId": req.get("configurationId"), "note": note})

    thread = threading.Thread(target=loop, name="streamprov-mailbox", daemon=True)
    thread.start()

    def close() -> None:
        stop.set()
        thread.join(5)
        box.withdraw(stream_id)

    return close
