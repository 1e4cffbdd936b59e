"""A synthetic landscape with a known optimum: capacity grows with nodes and CPUs, batch sizes
trade throughput for latency. No replays: for testing the search algorithms alone."""

from __future__ import annotations

from dataclasses import dataclass, field

from streamprov.adapt.slo import Evaluation, Slo, judge
from streamprov.adapt.space import Candidate, SearchSpace

CPUS = {"small": 1, "medium": 2, "large": 4}
COSTS = {"small": 0.05, "medium": 0.20, "large": 0.80}
SPACE = SearchSpace((1, 8), ("small", "medium", "large"), (64, 128, 256, 512, 1024, 2048),
                    COSTS, stages=2)
SLO = Slo(p99_latency_ns=50_000_000)
DEMAND = 5_000.0  # records/s to keep up with


def capacity(c: Candidate) -> float:
    """Records/s: per-core rate grows with the batch size (amortized overhead)."""
    per_core = 400.0 * (1 + min(c.batch_size, 512) / 256)
    return c.nodes * CPUS[c.node_type] * per_core


def p99_ns(c: Candidate) -> int:
    """Latency: batching delay plus queueing near saturation."""
    rho = min(0.99, DEMAND / capacity(c))
    return int((5 + c.batch_size / 32) * 1e6 / (1 - rho) ** 0.5)


@dataclass
class LandscapeEvaluator:
    calls: list[Candidate] = field(default_factory=list)

    def evaluate(self, candidate: Candidate) -> Evaluation:
        self.calls.append(candidate)
        cap = capacity(candidate)
        return judge(SLO, candidate, SPACE.cost(candidate), p99_latency_ns=p99_ns(candidate),
                     throughput=min(cap, DEMAND), error_rate=0.0, kept_up=cap >= DEMAND,
                     target_throughput=DEMAND)


def optimum() -> Evaluation:
    ev = LandscapeEvaluator()
    met = [e for e in (ev.evaluate(c) for c in SPACE) if e.slo_met]
    return min(met, key=lambda e: e.rank)
