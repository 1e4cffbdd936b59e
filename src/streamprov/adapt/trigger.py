"""The deviation trigger: observed performance against what the configuration should deliver.

After every replay (its report) and on a live pipeline's metrics (windows of a few seconds), the
observed p99 latency, throughput and error rate are compared with the ``Expectation``. Beyond
the thresholds a trigger fires: it is recorded (reason and figures) and a reconfiguration
cycle may start. For live metrics a deviation must hold for ``sustain`` consecutive windows,
so one noisy window does not fire; a replay is one long measurement and fires at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamprov.adapt.audit import EventLog
from streamprov.adapt.expectation import Expectation
from streamprov.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Thresholds:
    """How far observations may stray before a trigger fires.

    ``latency``: p99 above expected x (1 + latency); ``throughput``: below expected x
    (1 - throughput); ``error_rate``: more than expected + error_rate (absolute).
    """

    latency: float = 0.5
    throughput: float = 0.2
    error_rate: float = 0.01
    sustain: int = 2

    def __post_init__(self) -> None:
        for name in ("latency", "throughput", "error_rate"):
            if not getattr(self, name) >= 0:
                raise InvalidInput(f"threshold {name} must be at least 0", field=name)
        if self.sustain < 1:
            raise InvalidInput("sustain must be at least 1 window", field="sustain")

    def to_json(self) -> dict[str, Any]:
        return {"latency": self.latency, "throughput": self.throughput,
                "errorRate": self.error_rate, "sustain": self.sustain}


@dataclass(frozen=True, slots=True)
class Observation:
    """Measured figures: from a replay report, or a live window. ``None``: not measured."""

    p99_latency_ns: int | None
    throughput: float | None
    error_rate: float | None
    input_rate: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"p99LatencyNs": self.p99_latency_ns, "throughput": self.throughput,
                "errorRate": self.error_rate, "inputRate": self.input_rate}

    @classmethod
    def of_report(cls, report: dict[str, Any]) -> Observation:
        records = int(report.get("records") or 0)
        return cls(int(report["latencyNs"]["p99"]), report.get("achievedThroughput"),
                   (int(report.get("errors", 0)) / records) if records else None,
                   report.get("targetThroughput"))


def deviations(expected: Expectation, observed: Observation, t: Thresholds) -> list[str]:
    """The reasons ``observed`` strays from ``expected`` beyond ``t`` (empty: within)."""
    reasons: list[str] = []
    if (observed.p99_latency_ns is not None and expected.p99_latency_ns
            and observed.p99_latency_ns > expected.p99_latency_ns * (1 + t.latency)):
        reasons.append(f"p99 latency {observed.p99_latency_ns / 1e6:.1f} ms is over "
                       f"{1 + t.latency:.2f}x the expected "
                       f"{expected.p99_latency_ns / 1e6:.1f} ms")
    if (observed.throughput is not None and expected.throughput
            and observed.throughput < expected.throughput * (1 - t.throughput)):
        reasons.append(f"throughput {observed.throughput:,.0f}/s is under "
                       f"{1 - t.throughput:.2f}x the expected {expected.throughput:,.0f}/s")
    if (observed.error_rate is not None
            and observed.error_rate > expected.error_rate + t.error_rate):
        reasons.append(f"error rate {observed.error_rate:.2%} exceeds the expected "
                       f"{expected.error_rate:.2%} by more than {t.error_rate:.2%}")
    return reasons


@dataclass(slots=True)
class DeviationTrigger:
    """Compares observations with expectations and records the triggers that fire.

    ``on_fire(event)`` is called for each trigger (to start a reconfiguration cycle); what it
    returns (a tuning job id, say) is stored in the event as ``cycle``.
    """

    log: EventLog
    thresholds: Thresholds = field(default_factory=Thresholds)
    on_fire: Callable[[dict[str, Any]], str | None] | None = None
    _streak: dict[str, int] = field(default_factory=dict)

    def check(self, expected: Expectation | None, observed: Observation, *, source: str,
              sustained: bool = False, context: dict[str, Any] | None = None
              ) -> dict[str, Any] | None:
        """The recorded trigger when ``observed`` deviates (None otherwise).

        ``sustained``: count consecutive deviating windows of this stream and configuration
        and fire only at ``thresholds.sustain`` (live metrics); else fire at once (a replay).
        """
        if expected is None:
            return None
        key = f"{expected.stream_id}/{expected.configuration_id}/{source}"
        reasons = deviations(expected, observed, self.thresholds)
        if not reasons:
            self._streak[key] = 0
            return None
        if sustained:
            self._streak[key] = self._streak.get(key, 0) + 1
            if self._streak[key] < self.thresholds.sustain:
                return None
            self._streak[key] = 0
        event: dict[str, Any] = {
            "streamId": expected.stream_id, "configurationId": expected.configuration_id,
            "source": source, "reasons": reasons, "observed": observed.to_json(),
            "expected": expected.to_json(), "thresholds": self.thresholds.to_json(),
            **(context or {}),
        }
        if self.on_fire is not None:
            event["cycle"] = self.on_fire(event)
        return self.log.append(event)
