"""The replay report: a plain JSON document (camelCase keys), stored with the replay.

Figures and where they come from:

* ``records``, ``durationS``, ``achievedThroughput``: the replay's chains (first hop 0 to last
  hop of any chain); ``targetThroughput``: the window's records over its span divided by the
  speed, i.e. the rate the original gaps ask for;
* ``latencyNs`` (end to end) and ``perHopLatencyNs`` (by stage: a hop minus the one before),
  each ``{count, p50, p95, p99, max}``: log-linear histograms over the replay's chains;
* ``pacingLagNs``: actual minus scheduled emit time of every record, from the replay source;
  ``keptUp`` is false when its p99 exceeds ``LAG_LIMIT_NS`` (the configuration could not keep
  up; the replay did not slow down to hide it); ``pacingErrorNs``: the same without its sign
  (a record that leaves with an earlier one of its batch is early by less than the source's
  quantum, 1 ms);
* ``nodes``: per node process, its counts and psutil samples (CPU %, peak RSS, memory
  utilization against the node type);
* ``fidelity``: ``match`` when the replay's outcome digest equals the original window's (same
  records ended the same way, on the same branches), ``mismatch`` otherwise, ``unknown`` when
  the replay did not cover the whole window (cancelled, payloads expired, errors at the
  source) — a deterministic pipeline replays to ``match``.
"""

from __future__ import annotations

from typing import Any

from streamprov.config import NodeType
from streamprov.metrics.histogram import LatencyHistogram
from streamprov.metrics.resources import NodeUsage
from streamprov.model import format_time_ns
from streamprov.replay.measure import ChainMetrics
from streamprov.replay.reconstruct import WindowFile
from streamprov.replay.request import ReplayRequest
from streamprov.runtime import RunResult

LAG_LIMIT_NS = 10_000_000
"""Pacing lag p99 above which a configuration is reported as not keeping up (10 ms)."""

_INFRA = ("source", "ingest", "writer")


def _window_json(req: ReplayRequest, window: WindowFile) -> dict[str, Any]:
    return {
        "startTime": format_time_ns(req.start_ns), "endTime": format_time_ns(req.end_ns),
        "records": window.records, "chains": window.chains, "spanNs": window.span_ns,
        "skippedFailedAtSource": window.skipped_failed_at_source,
        "missingPayloads": window.missing_payloads, "outcomes": window.outcomes,
        "digest": window.digest.to_json(),
    }


def empty_report(replay_id: str, req: ReplayRequest, window: WindowFile,
                 reconstruct_s: float) -> dict[str, Any]:
    zero = LatencyHistogram().summary()
    return {
        "replayId": replay_id, "streamId": req.stream_id, "records": 0, "durationS": 0.0,
        "targetThroughput": 0.0, "achievedThroughput": 0.0, "latencyNs": zero,
        "latencyBucketsNs": LatencyHistogram().cumulative(), "perHopLatencyNs": {},
        "pacingLagNs": zero, "pacingErrorNs": zero, "keptUp": True, "nodes": [],
        "scalingSteps": [], "errors": 0, "fidelity": "unknown",
        "message": "the window holds no records to replay: nothing was provisioned",
        "window": _window_json(req, window), "reconstructS": round(reconstruct_s, 4),
        "provisioningS": 0.0, "speed": req.speed, "configurationId": req.configuration_id,
    }


def _role_kind(role: str) -> str:
    return role.rsplit("-", 1)[0] if role.rsplit("-", 1)[-1].isdigit() else role


def build_report(*, replay_id: str, request: ReplayRequest, window: WindowFile,
                 result: RunResult, metrics: ChainMetrics, usage: dict[str, NodeUsage],
                 node_type: NodeType, configuration_id: str, initial_counts: dict[str, int],
                 provisioning_s: float, reconstruct_s: float, wall_s: float, cancelled: bool,
                 warnings: list[str], captured: int) -> dict[str, Any]:
    source_stats: dict[str, Any] = {}
    nodes: list[dict[str, Any]] = []
    for stats in result.nodes:
        role = str(stats.get("role"))
        if role.startswith("source-") and isinstance(stats.get("source"), dict):
            source_stats = stats["source"]
        entry = {k: v for k, v in stats.items() if k != "source"}
        kind = _role_kind(role)
        u = usage.get(role)
        mem = node_type.memory_bytes if kind not in _INFRA else None
        if u is not None:
            entry.update(u.to_json(mem))
        entry["kind"] = "infrastructure" if kind in _INFRA else "stage"
        nodes.append(entry)
    lag = source_stats.get("pacingLagNs") or LatencyHistogram().summary()
    error = source_stats.get("pacingErrorNs") or LatencyHistogram().summary()
    records = metrics.digest.records  # one branch-0 chain per replayed record
    duration_s = metrics.span_ns / 1e9
    span_s = window.span_ns / 1e9 / request.speed
    target = window.records / span_s if span_s > 0 else None
    achieved = records / duration_s if duration_s > 0 else None
    kept_up = int(lag.get("p99", 0)) <= LAG_LIMIT_NS
    messages = list(warnings)
    if not kept_up:
        messages.append(
            f"configuration {configuration_id!r} could not keep up at {request.speed:g}x: "
            f"pacing lag p99 {lag['p99'] / 1e6:.1f} ms, max {lag['max'] / 1e6:.1f} ms"
            + (f"; achieved {achieved:,.0f} of {target:,.0f} records/s"
               if achieved and target else ""))
    lost = result.ingested - records
    if lost > 0:
        messages.append(
            f"{lost} injected record(s) have no chain in the provenance store: the runtime "
            "lost them while draining the deployment")
    complete = (not cancelled and window.missing_payloads == 0
                and window.skipped_failed_at_source == 0 and records == window.records)
    if not complete:
        fidelity = "unknown"
    elif metrics.digest.outcomes == window.digest.outcomes:
        fidelity = "match"
    else:
        fidelity = "mismatch"
    stage_nodes = sum(1 for n in nodes if n["kind"] == "stage")
    failed = metrics.outcomes.get("failed", 0)
    steps = [{"stage": s, "from": 0, "to": n, "action": "start",
              "durationS": round(provisioning_s, 6)} for s, n in initial_counts.items()]
    steps += [dict(s.to_json(), action="scale") for s in result.scaling]
    return {
        "replayId": replay_id,
        "streamId": request.stream_id,
        "configurationId": configuration_id,
        "speed": request.speed,
        "records": records,
        "durationS": round(duration_s, 6),
        "targetDurationS": round(span_s, 6),
        "wallS": round(wall_s, 4),
        "reconstructS": round(reconstruct_s, 4),
        "provisioningS": round(provisioning_s, 4),
        "targetThroughput": round(target, 1) if target is not None else None,
        "achievedThroughput": round(achieved, 1) if achieved is not None else None,
        "latencyNs": metrics.end_to_end.summary(),
        "latencyBucketsNs": metrics.end_to_end.cumulative(),
        "perHopLatencyNs": {s: h.summary() for s, h in sorted(metrics.per_stage.items())},
        "pacingLagNs": {k: lag[k] for k in ("count", "p50", "p95", "p99", "max") if k in lag},
        "pacingErrorNs": {k: error[k] for k in ("count", "p50", "p95", "p99", "max")
                          if k in error},
        "keptUp": kept_up,
        "outcomes": metrics.outcomes,
        "nodes": nodes,
        "nodeType": node_type.model_dump(by_alias=True),
        "costEstimate": round(node_type.cost_per_hour * stage_nodes * wall_s / 3600, 6),
        "scalingSteps": steps,
        "errors": failed,
        "fidelity": fidelity,
        "orderPreserved": (metrics.digest.order == window.digest.order) if complete else None,
        "digest": metrics.digest.to_json(),
        "window": _window_json(request, window),
        "captured": captured,
        "cancelled": cancelled,
        "messages": messages,
    }
