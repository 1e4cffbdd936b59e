"""Evaluating a candidate by a real replay: the window (or a sample of it) replayed on the
candidate's configuration, the report judged against the SLO.

Tuning replays run through a ``ReplayEngine`` of their own, over the same stores and the same
``StoreGate`` as every other replay of the process (so they queue behind, never beside, a
user's replay on embedded DuckDB), with a catalog that holds the search space's generated
configurations and a registry in the job's directory. So generated candidates never enter the
user's catalog, and the user's replay history is not flooded by a search's replays.

Noise: when a result lies within ``noise_band`` of the latency bound (or the configuration
only just kept up or fell behind), the replay is repeated up to ``repeats`` times and the
median taken (keeping up by majority). Results are cached by candidate.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streamprov.adapt.slo import Evaluation, Slo, judge
from streamprov.adapt.space import Candidate, SearchSpace
from streamprov.config import Catalog
from streamprov.errors import NotFound, StreamprovError
from streamprov.replay.engine import ReplayEngine
from streamprov.replay.errors import ReplayBusy, StoreBusy
from streamprov.replay.request import ReplayRequest, ReplayState
from streamprov.runtime import Pipeline

RATE_TOLERANCE = 0.2
"""A replay keeps up when its pacing lag stayed low (``keptUp``) and it achieved at least
(1 - this) of the target rate: on a short sample a backlog can sit in deep inboxes without
ever blocking the source, so the lag alone would miss it."""
BUSY_RETRY_S = 1.0
BUSY_GIVE_UP_S = 600.0


def _kept_up(report: dict[str, Any]) -> bool:
    target = report.get("targetThroughput")
    achieved = report.get("achievedThroughput") or 0.0
    rate_ok = not target or float(achieved) >= (1 - RATE_TOLERANCE) * float(target)
    return bool(report.get("keptUp")) and rate_ok


def tuning_catalog(catalog: Catalog, space: SearchSpace,
                   extra: dict[str, Any] | None = None) -> Catalog:
    """The user's node types and configurations plus one per candidate of ``space``; in
    memory only (never written to the data dir)."""
    configurations = dict(catalog.configurations())
    configurations.update({c.id: c.configuration() for c in space})
    configurations.update(extra or {})
    return Catalog(catalog.node_types(), configurations, overrides_path=None,
                   source="tuning")


@dataclass(slots=True)
class ReplayEvaluator:
    """``Evaluator`` by real replays of ``[start_ns, end_ns)`` of ``stream_id``."""

    engine: ReplayEngine
    space: SearchSpace
    slo: Slo
    stream_id: str
    start_ns: int
    end_ns: int
    speed: float = 1.0
    repeats: int = 2
    noise_band: float = 0.15
    on_replay: Callable[[dict[str, Any]], None] | None = None
    cancelled: Callable[[], bool] = lambda: False
    cache: dict[Candidate, Evaluation] = field(default_factory=dict)
    replays: int = 0

    @classmethod
    def create(cls, *, job_dir: Path, catalog: Catalog, space: SearchSpace,
               provenance_url: str, stream_log_url: str, pipeline_for: Callable[[str], Pipeline],
               gate: Any, queue_batches: int, **kwargs: Any) -> ReplayEvaluator:
        engine = ReplayEngine(data_dir=job_dir, provenance_url=provenance_url,
                              stream_log_url=stream_log_url,
                              catalog=tuning_catalog(catalog, space), pipeline_for=pipeline_for,
                              gate=gate, queue_batches=queue_batches, sample_interval_s=0.1)
        return cls(engine, space, **kwargs)

    def _replay(self, candidate: Candidate) -> dict[str, Any]:
        req = ReplayRequest(self.stream_id, self.start_ns, self.end_ns, candidate.id,
                            self.speed)
        deadline = time.monotonic() + BUSY_GIVE_UP_S
        while True:
            if self.cancelled():
                raise StreamprovError("the tuning job was cancelled", field="tuneId")
            try:
                doc = self.engine.run(req)
                break
            except (ReplayBusy, StoreBusy):
                if time.monotonic() > deadline:
                    raise
                time.sleep(BUSY_RETRY_S)
        self.replays += 1
        if self.on_replay is not None:
            self.on_replay(doc)
        if doc["state"] == ReplayState.FAILED.value:
            error = doc.get("error") or {}
            if error.get("field") in ("streamId", "startTime", "endTime"):
                raise NotFound(str(error.get("message")), field=error.get("field"))
            if "in use by" in str(error.get("message", "")):
                raise StoreBusy(str(error.get("message")))
        return doc

    def _marginal(self, ev: Evaluation) -> bool:
        ratio = ev.p99_latency_ns / self.slo.p99_latency_ns
        near_latency = abs(ratio - 1.0) <= self.noise_band
        near_rate = (ev.target_throughput is not None and ev.target_throughput > 0
                     and abs(ev.throughput / ev.target_throughput - 1.0) <= self.noise_band
                     and not ev.kept_up)
        return near_latency or near_rate

    def _judge(self, candidate: Candidate, docs: list[dict[str, Any]]) -> Evaluation:
        cost = self.space.cost(candidate)
        ids = tuple(d["replayId"] for d in docs)
        reports = [d["report"] for d in docs
                   if d["state"] == ReplayState.COMPLETED.value and d.get("report")
                   and d["report"].get("records")]
        if not reports:
            errors = [str((d.get("error") or {}).get("message", d["state"])) for d in docs]
            return judge(self.slo, candidate, cost, p99_latency_ns=2**62, throughput=0.0,
                         error_rate=1.0, kept_up=False, replay_ids=ids,
                         notes=tuple(f"replay failed: {e}" for e in errors))
        p99 = int(statistics.median(int(r["latencyNs"]["p99"]) for r in reports))
        tput = float(statistics.median(float(r.get("achievedThroughput") or 0.0)
                                       for r in reports))
        target = reports[0].get("targetThroughput")
        err = statistics.median(int(r.get("errors", 0)) / max(1, int(r["records"]))
                                for r in reports)
        kept = sum(_kept_up(r) for r in reports) * 2 > len(reports)
        notes = tuple(f"repeated {len(reports)}x: results were near a bound"
                      for _ in [0] if len(reports) > 1)
        return judge(self.slo, candidate, cost, p99_latency_ns=p99, throughput=tput,
                     error_rate=float(err), kept_up=kept, replay_ids=ids,
                     target_throughput=float(target) if target is not None else None,
                     notes=notes)

    def evaluate(self, candidate: Candidate) -> Evaluation:
        got = self.cache.get(candidate)
        if got is not None:
            return got
        docs = [self._replay(candidate)]
        ev = self._judge(candidate, docs)
        while len(docs) <= self.repeats and self._marginal(ev) and ev.throughput > 0:
            docs.append(self._replay(candidate))
            ev = self._judge(candidate, docs)
        self.cache[candidate] = ev
        return ev
