"""Expected performance of a configuration on a stream, learned from replay reports.

For every (stream, configuration) the model keeps exponentially smoothed figures of the
replays it has seen: the input rate they were run at (``targetThroughput``), the achieved
throughput, p99 end-to-end latency, error rate and whether they kept up. What a configuration
should deliver at an input rate is then

* **observed**: the configuration has been replayed; throughput is the input rate when it kept
  up at a rate at least this high (else its smoothed achieved throughput, scaled down to the
  rate if lower), latency and error rate the smoothed ones;
* **modelled** (never run): a capacity model. The stream's per-core rate is the best
  ``achieved / (stage nodes x cpus)`` of replays that did *not* keep up (they were saturated);
  capacity is that times nodes x cpus; expected throughput ``min(rate, capacity)``; latency the
  stream's smoothed p99 of configurations that kept up, grown by ``1 / (1 - utilization)``
  (a queue near saturation). Without any saturated replay, capacity is unknown and only the
  latency is modelled.

The model is stored as JSON in the data dir (``adapt/expectations.json``), replaced atomically.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamprov.config import Configuration, NodeType
from streamprov.errors import StoreError

ALPHA = 0.3
"""Weight of the newest report in the smoothed figures."""


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a configuration should deliver on a stream at ``input_rate`` records/s."""

    stream_id: str
    configuration_id: str
    input_rate: float | None
    throughput: float | None
    p99_latency_ns: int | None
    error_rate: float
    basis: str
    """``observed`` (from this configuration's replays) or ``model`` (capacity model)."""
    samples: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"streamId": self.stream_id, "configurationId": self.configuration_id,
                "inputRate": self.input_rate, "throughput": self.throughput,
                "p99LatencyNs": self.p99_latency_ns, "errorRate": self.error_rate,
                "basis": self.basis, "samples": self.samples}


def stage_nodes(report: dict[str, Any]) -> int:
    return sum(1 for n in report.get("nodes", []) if n.get("kind") == "stage") or 1


class ExpectationModel:
    """Learns from replay reports; thread-safe; persisted at ``path`` (None: in memory)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._entries: dict[str, dict[str, Any]] = {}
        self._seen: set[str] = set()
        if path is not None and path.is_file():
            try:
                doc = orjson.loads(path.read_bytes())
                self._entries = dict(doc.get("entries", {}))
                self._seen = set(doc.get("seen", []))
            except (OSError, orjson.JSONDecodeError, AttributeError):
                self._entries, self._seen = {}, set()

    @staticmethod
    def _key(stream_id: str, configuration_id: str) -> str:
        return f"{stream_id}/{configuration_id}"

    def seen(self, replay_id: str) -> bool:
        with self._lock:
            return replay_id in self._seen

    def learn(self, report: dict[str, Any], *, cpus: int = 1) -> None:
        """Fold one replay report in (a report seen before is ignored)."""
        rid = str(report.get("replayId", ""))
        records = int(report.get("records") or 0)
        target = report.get("targetThroughput")
        achieved = report.get("achievedThroughput")
        if records == 0 or target is None or achieved is None:
            return
        p99 = int(report["latencyNs"]["p99"])
        err = float(report.get("errors", 0)) / records
        kept_up = bool(report.get("keptUp", True))
        per_core = float(achieved) / (stage_nodes(report) * max(1, cpus))
        key = self._key(str(report["streamId"]), str(report["configurationId"]))
        with self._lock:
            if rid and rid in self._seen:
                return
            self._seen.add(rid)
            e = self._entries.get(key)
            if e is None:
                e = {"streamId": report["streamId"],
                     "configurationId": report["configurationId"], "samples": 0,
                     "inputRate": float(target), "throughput": float(achieved),
                     "p99LatencyNs": float(p99), "errorRate": err,
                     "keptUpRate": float(target) if kept_up else 0.0, "perCore": None}
            else:
                for name, value in (("inputRate", float(target)),
                                    ("throughput", float(achieved)),
                                    ("p99LatencyNs", float(p99)), ("errorRate", err)):
                    e[name] = (1 - ALPHA) * float(e[name]) + ALPHA * value
                if kept_up:
                    e["keptUpRate"] = max(float(e["keptUpRate"]), float(target))
            if not kept_up:
                e["perCore"] = max(float(e["perCore"] or 0.0), per_core)
            e["samples"] = int(e["samples"]) + 1
            e["lastReplayId"] = rid
            self._entries[key] = e
            self._save()

    def _save(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps({"entries": self._entries,
                                          "seen": sorted(self._seen)[-10_000:]},
                                         option=orjson.OPT_INDENT_2))
            tmp.replace(self.path)
        except OSError as exc:
            raise StoreError(f"cannot save the expectation model {self.path}: {exc}") from exc

    def entries(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        """The learned figures, as stored (for showing)."""
        with self._lock:
            items = [dict(v) for v in self._entries.values()]
        if stream_id is not None:
            items = [e for e in items if e["streamId"] == stream_id]
        return sorted(items, key=lambda e: (e["streamId"], e["configurationId"]))

    def expect(self, stream_id: str, configuration_id: str, configuration: Configuration,
               node_type: NodeType, input_rate: float | None) -> Expectation | None:
        """What ``configuration`` should deliver at ``input_rate`` (None: nothing known)."""
        with self._lock:
            own = self._entries.get(self._key(stream_id, configuration_id))
            stream = [dict(v) for v in self._entries.values() if v["streamId"] == stream_id]
        rate = input_rate
        if own is not None:
            rate = rate if rate is not None else float(own["inputRate"])
            kept = float(own["keptUpRate"])
            seen = rate if kept >= rate * 0.999 else min(rate, float(own["throughput"]))
            return Expectation(stream_id, configuration_id, rate, seen,
                               int(own["p99LatencyNs"]), float(own["errorRate"]), "observed",
                               int(own["samples"]))
        if not stream:
            return None
        per_core = max((float(e["perCore"]) for e in stream if e.get("perCore")), default=None)
        kept_up = [e for e in stream if float(e["keptUpRate"]) > 0]
        base = sorted(float(e["p99LatencyNs"]) for e in kept_up or stream)
        p99 = base[len(base) // 2]
        err = sum(float(e["errorRate"]) for e in stream) / len(stream)
        nodes = configuration.nodes if isinstance(configuration.nodes, int) \
            else max(configuration.nodes.values())
        tput: float | None = rate
        if per_core is not None and rate is not None:
            capacity = per_core * nodes * node_type.cpus
            tput = min(rate, capacity)
            rho = min(0.95, rate / capacity) if capacity > 0 else 0.95
            p99 = p99 / (1 - rho)
        return Expectation(stream_id, configuration_id, rate, tput, int(p99), err, "model", 0)
