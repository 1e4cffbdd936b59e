"""Service-level objectives and the evaluation of one candidate against them.

The objective of a search is the cheapest candidate that meets the SLO: p99 end-to-end latency
at most ``p99_latency_ns``, keeping up with the replay speed (the replay's pacing lag stayed
under its limit, ``keptUp``) and an error rate (failed / records) at most ``max_error_rate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from streamprov.adapt.space import Candidate
from streamprov.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Slo:
    """What a configuration must deliver."""

    p99_latency_ns: int
    max_error_rate: float = 0.0
    keep_up: bool = True

    def __post_init__(self) -> None:
        if self.p99_latency_ns <= 0:
            raise InvalidInput("slo.p99LatencyMs must be positive", field="slo.p99LatencyMs")
        if not 0.0 <= self.max_error_rate <= 1.0 or math.isnan(self.max_error_rate):
            raise InvalidInput("slo.maxErrorRate must be within 0..1",
                               field="slo.maxErrorRate")

    def to_json(self) -> dict[str, Any]:
        return {"p99LatencyMs": self.p99_latency_ns / 1e6, "maxErrorRate": self.max_error_rate,
                "keepUp": self.keep_up}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Slo:
        return cls(round(float(doc["p99LatencyMs"]) * 1e6), float(doc["maxErrorRate"]),
                   bool(doc["keepUp"]))


@dataclass(frozen=True, slots=True)
class Evaluation:
    """How one candidate did (a median over its replays when they were repeated)."""

    candidate: Candidate
    cost: float
    p99_latency_ns: int
    throughput: float
    """Achieved records per second."""
    error_rate: float
    kept_up: bool
    slo_met: bool
    violation: float
    """0 when the SLO is met; else the summed relative excess over each bound."""
    replay_ids: tuple[str, ...] = ()
    target_throughput: float | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def rank(self) -> tuple[int, float, float]:
        """Smaller is better: feasible before infeasible, then cost (or violation)."""
        if self.slo_met:
            return (0, self.cost, self.p99_latency_ns)
        return (1, self.violation, self.cost)

    def to_json(self) -> dict[str, Any]:
        return {
            "configuration": self.candidate.to_json(), "cost": round(self.cost, 6),
            "p99LatencyNs": self.p99_latency_ns, "throughput": round(self.throughput, 1),
            "targetThroughput": (round(self.target_throughput, 1)
                                 if self.target_throughput is not None else None),
            "errorRate": round(self.error_rate, 6), "keptUp": self.kept_up,
            "sloMet": self.slo_met, "violation": round(self.violation, 6),
            "replayIds": list(self.replay_ids), "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Evaluation:
        return cls(Candidate.from_json(doc["configuration"]), float(doc["cost"]),
                   int(doc["p99LatencyNs"]), float(doc["throughput"]), float(doc["errorRate"]),
                   bool(doc["keptUp"]), bool(doc["sloMet"]), float(doc["violation"]),
                   tuple(doc.get("replayIds", ())), doc.get("targetThroughput"),
                   tuple(doc.get("notes", ())))


def judge(slo: Slo, candidate: Candidate, cost: float, *, p99_latency_ns: int,
          throughput: float, error_rate: float, kept_up: bool,
          replay_ids: tuple[str, ...] = (), target_throughput: float | None = None,
          notes: tuple[str, ...] = ()) -> Evaluation:
    """An ``Evaluation`` of measured figures against ``slo``."""
    violation = max(0.0, p99_latency_ns / slo.p99_latency_ns - 1.0)
    if slo.keep_up and not kept_up:
        # graded, so a search can tell "almost keeps up" from "far behind"
        short = (1.0 - throughput / target_throughput
                 if target_throughput and target_throughput > 0 else 1.0)
        violation += 1.0 + max(0.0, min(1.0, short))
    if error_rate > slo.max_error_rate:
        violation += (error_rate - slo.max_error_rate) / max(slo.max_error_rate, 0.01)
    return Evaluation(candidate, cost, p99_latency_ns, throughput, error_rate, kept_up,
                      violation == 0.0, violation, replay_ids, target_throughput, notes)
