"""Prometheus metrics (``GET /metrics``), collected on every scrape from ``Sources``.

Nothing is counted twice or kept in process memory: every scrape reads the replay documents,
tuning jobs, scaling audit trail, clock status and last runs that the rest of streamprov
already keeps, so the figures survive a restart of the server and agree with the API; only
the queue depths are live, asked of the deployments running in this server (replays, and
runs fed by ``POST /streams/{id}/records``) at the scrape. Metric names and labels
(``_seconds`` for durations, ``_total`` for counters):

=====================================================  ===================================
``streamprov_stage_records_in_total``                  stream_id, replay_id, stage
``streamprov_stage_records_out_total``                 stream_id, replay_id, stage
``streamprov_stage_records_ended_total``               stream_id, replay_id, stage, outcome
``streamprov_provenance_rows_written_total``           stream_id, replay_id
``streamprov_provenance_write_rate_rows_per_second``   stream_id, replay_id
``streamprov_run_duration_seconds``                    stream_id, replay_id
``streamprov_replay_latency_seconds``                  stream_id, replay_id, configuration_id,
                                                       quantile (0.5, 0.95, 0.99, 1 = max)
``streamprov_replay_latency_distribution_seconds``     stream_id, replay_id, configuration_id
                                                       (histogram: ``_bucket`` with le,
                                                       ``_sum``, ``_count``)
``streamprov_replay_latency_observations``             stream_id, replay_id, configuration_id
``streamprov_replay_hop_latency_seconds``              ... , stage, quantile
``streamprov_replay_pacing_lag_seconds``               ... , quantile
``streamprov_replay_throughput_records_per_second``    ... , kind (achieved, target)
``streamprov_replay_kept_up``                          ...
``streamprov_replays``                                 state
``streamprov_replay_progress_ratio``                   stream_id, replay_id, phase
``streamprov_replay_records_injected``                 stream_id, replay_id
``streamprov_tuning_jobs``                             state
``streamprov_tuning_evaluations``                      stream_id, tune_id, state
``streamprov_tuning_budget``                           stream_id, tune_id
``streamprov_tuning_progress_ratio``                   stream_id, tune_id
``streamprov_scaling_events_total``                    stream_id, stage, trigger, applied
``streamprov_scaling_last_event_timestamp_seconds``    stream_id
``streamprov_clock_offset_seconds``                    node_id
``streamprov_clock_error_bound_seconds``               node_id
``streamprov_clock_within_tolerance``                  node_id
``streamprov_clock_skew_violations_total``             node_id
``streamprov_clock_stamps_out_of_tolerance_total``     node_id
``streamprov_clock_max_skew_seconds``                  (none)
``streamprov_stream_records``                          stream_id
``streamprov_stream_chains``                           stream_id
``streamprov_queue_depth_batches``                    stream_id, replay_id, queue (ingest,
                                                       <stage>-<slot>, writer)
``streamprov_provenance_backlog_batches``              stream_id, replay_id
``streamprov_scrape_errors``                           source
=====================================================  ===================================

Replays and tuning jobs are the newest ``MAX_REPLAYS`` / ``MAX_JOBS``, so label sets stay
bounded however many replays a data dir holds. ``replay_id`` is ``""`` for an original run.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from streamprov.errors import StreamprovError
from streamprov.observe.sources import Sources

log = logging.getLogger("streamprov.observe")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_REPLAYS = 50
MAX_JOBS = 20
QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"), ("1", "max"))
_NS = 1e-9

_RUN_LABELS = ["stream_id", "replay_id"]
_Family = CounterMetricFamily | GaugeMetricFamily
_REPLAY_LABELS = ["stream_id", "replay_id", "configuration_id"]


def stage_of(node: dict[str, Any]) -> str:
    """A node entry's stage: ``parse`` of role ``parse-1`` (``writer``, ``ingest`` as is)."""
    role = str(node.get("role") or node.get("node") or "?")
    head, _, tail = role.rpartition("-")
    return head if head and tail.isdigit() else role


def stage_counts(nodes: Iterable[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per stage: records in, forwarded out, and ended delivered/dropped/failed, summed over
    the stage's instances (a node entry of a run result or a replay report)."""
    out: dict[str, dict[str, int]] = defaultdict(Counter)
    for n in nodes:
        if "recordsIn" not in n and "recordsOut" not in n:
            continue
        c = out[stage_of(n)]
        for key in ("recordsIn", "recordsOut", "delivered", "dropped", "failed"):
            c[key] += int(n.get(key) or 0)
    return {k: dict(v) for k, v in out.items()}


class StreamprovCollector(Collector):
    """A ``prometheus_client`` collector over ``Sources`` (register it in a registry)."""

    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def describe(self) -> list[Metric]:
        return []  # collected lazily: describing would read every source at registration

    def collect(self) -> Iterator[Metric]:
        errors: Counter[str] = Counter()
        stages = self._stage_families()
        yield from self._guarded("runs", lambda: self._runs(stages), errors)
        yield from self._guarded("replays", lambda: self._replays(stages), errors)
        yield from stages.values()
        yield from self._guarded("tuning", self._tuning, errors)
        yield from self._guarded("scaling", self._scaling, errors)
        yield from self._guarded("clock", self._clock, errors)
        yield from self._guarded("streams", self._streams, errors)
        yield from self._guarded("live", self._live, errors)
        g = GaugeMetricFamily("streamprov_scrape_errors", "Sources that could not be read in "
                              "this scrape (1), e.g. a store held by a running replay.",
                              labels=["source"])
        for source in ("runs", "replays", "tuning", "scaling", "clock", "streams", "live"):
            g.add_metric([source], float(errors[source]))
        yield g

    @staticmethod
    def _guarded(name: str, fn: Callable[[], list[Metric]],
                 errors: Counter[str]) -> list[Metric]:
        try:
            return fn()
        except StreamprovError as exc:
            errors[name] += 1
            log.info("metrics: %s not available in this scrape: %s", name, exc.message)
            return []

    # -- runs and replays: records per stage ----------------------------------------------------
    def _stage_families(self) -> dict[str, _Family]:
        lbl = [*_RUN_LABELS, "stage"]
        return {
            "in": CounterMetricFamily("streamprov_stage_records_in", "Records a stage took in "
                                      "(all its instances), by run or replay.", labels=lbl),
            "out": CounterMetricFamily("streamprov_stage_records_out", "Records a stage "
                                       "forwarded to the next stage.", labels=lbl),
            "ended": CounterMetricFamily("streamprov_stage_records_ended", "Records whose path "
                                         "ended at a stage, by outcome.",
                                         labels=[*lbl, "outcome"]),
            "rows": CounterMetricFamily("streamprov_provenance_rows_written", "Hop rows the "
                                        "provenance writer stored.", labels=_RUN_LABELS),
            "rate": GaugeMetricFamily("streamprov_provenance_write_rate_rows_per_second",
                                      "Hop rows stored per second of the run.",
                                      labels=_RUN_LABELS),
            "dur": GaugeMetricFamily("streamprov_run_duration_seconds",
                                     "Duration of the run or replay.", labels=_RUN_LABELS),
        }

    @staticmethod
    def _add_stages(f: dict[str, _Family], stream: str, replay: str,
                    nodes: list[dict[str, Any]], duration_s: float) -> None:
        for stage, c in sorted(stage_counts(nodes).items()):
            f["in"].add_metric([stream, replay, stage], c.get("recordsIn", 0))
            f["out"].add_metric([stream, replay, stage], c.get("recordsOut", 0))
            for outcome in ("delivered", "dropped", "failed"):
                if c.get(outcome):
                    f["ended"].add_metric([stream, replay, stage, outcome], c[outcome])
        rows = sum(int(n.get("rowsWritten") or 0) for n in nodes)
        f["rows"].add_metric([stream, replay], rows)
        f["dur"].add_metric([stream, replay], duration_s)
        f["rate"].add_metric([stream, replay], rows / duration_s if duration_s > 0 else 0.0)

    def _runs(self, f: dict[str, _Family]) -> list[Metric]:
        for run in self.sources.runs():
            self._add_stages(f, str(run.get("streamId")), str(run.get("replayId") or ""),
                             list(run.get("nodes") or []), float(run.get("durationS") or 0.0))
        return []  # the stage families are yielded once, after the replays' samples

    def _replays(self, f: dict[str, _Family]) -> list[Metric]:
        lat = GaugeMetricFamily("streamprov_replay_latency_seconds", "End-to-end latency of "
                                "a replay's chains (quantile 1 is the maximum).",
                                labels=[*_REPLAY_LABELS, "quantile"])
        obs = GaugeMetricFamily("streamprov_replay_latency_observations", "Chains measured "
                                "for the replay's latency.", labels=_REPLAY_LABELS)
        hop = GaugeMetricFamily("streamprov_replay_hop_latency_seconds", "Per-hop latency of a "
                                "replay by stage (a hop minus the one before).",
                                labels=[*_REPLAY_LABELS, "stage", "quantile"])
        lag = GaugeMetricFamily("streamprov_replay_pacing_lag_seconds", "Actual minus scheduled "
                                "injection time of a replay's records.",
                                labels=[*_REPLAY_LABELS, "quantile"])
        thr = GaugeMetricFamily("streamprov_replay_throughput_records_per_second", "Achieved "
                                "and target (the window's pace x speed) throughput.",
                                labels=[*_REPLAY_LABELS, "kind"])
        kept = GaugeMetricFamily("streamprov_replay_kept_up", "1 when the configuration kept "
                                 "up with the replay's pace.", labels=_REPLAY_LABELS)
        states = GaugeMetricFamily("streamprov_replays", "Replays known, by state.",
                                   labels=["state"])
        prog = GaugeMetricFamily("streamprov_replay_progress_ratio", "Fraction of the window "
                                 "injected so far (unfinished replays).",
                                 labels=["stream_id", "replay_id", "phase"])
        inj = GaugeMetricFamily("streamprov_replay_records_injected", "Records injected so far "
                                "(unfinished replays).", labels=["stream_id", "replay_id"])
        dist = HistogramMetricFamily(
            "streamprov_replay_latency_distribution_seconds", "End-to-end latency of a "
            "replay's chains as a histogram (cumulative buckets; reports from before buckets "
            "were kept have only the quantiles).", labels=_REPLAY_LABELS)
        docs = self.sources.replays()
        for state, n in sorted(Counter(str(d.get("state")) for d in docs).items()):
            states.add_metric([state], n)
        for d in docs[:MAX_REPLAYS]:
            rid = str(d.get("replayId"))
            req = d.get("request") or {}
            stream = str(req.get("streamId"))
            p = d.get("progress") or {}
            if d.get("state") not in ("completed", "failed", "cancelled"):
                prog.add_metric([stream, rid, str(p.get("phase", ""))],
                                float(p.get("fraction") or 0.0))
                inj.add_metric([stream, rid], float(p.get("recordsInjected") or 0))
            r = d.get("report")
            if not r:
                continue
            labels = [stream, rid, str(r.get("configurationId") or req.get("configurationId"))]
            _quantiles(lat, labels, r.get("latencyNs") or {})
            _histogram(dist, labels, r.get("latencyBucketsNs"))
            obs.add_metric(labels, float((r.get("latencyNs") or {}).get("count", 0)))
            for stage, h in sorted((r.get("perHopLatencyNs") or {}).items()):
                _quantiles(hop, [*labels, stage], h)
            _quantiles(lag, labels, r.get("pacingLagNs") or {})
            for kind in ("achieved", "target"):
                v = r.get(f"{kind}Throughput")
                if v is not None:
                    thr.add_metric([*labels, kind], float(v))
            kept.add_metric(labels, 1.0 if r.get("keptUp") else 0.0)
            self._add_stages(f, stream, rid, list(r.get("nodes") or []),
                             float(r.get("durationS") or 0.0))
        return [lat, dist, obs, hop, lag, thr, kept, states, prog, inj]

    # -- tuning, scaling, clocks, streams -------------------------------------------------------
    def _tuning(self) -> list[Metric]:
        jobs = GaugeMetricFamily("streamprov_tuning_jobs", "Tuning jobs known, by state.",
                                 labels=["state"])
        evals = GaugeMetricFamily("streamprov_tuning_evaluations", "Configurations a tuning "
                                  "job has replayed so far.",
                                  labels=["stream_id", "tune_id", "state"])
        budget = GaugeMetricFamily("streamprov_tuning_budget", "Evaluations a tuning job may "
                                   "run at most.", labels=["stream_id", "tune_id"])
        prog = GaugeMetricFamily("streamprov_tuning_progress_ratio", "Evaluations over budget "
                                 "(1 once the job finished).", labels=["stream_id", "tune_id"])
        docs = self.sources.tuning_jobs()
        for state, n in sorted(Counter(str(d.get("state")) for d in docs).items()):
            jobs.add_metric([state], n)
        for d in docs[:MAX_JOBS]:
            req = d.get("request") or {}
            stream, tid, state = str(req.get("streamId")), str(d.get("tuneId")), str(d["state"])
            n = len(d.get("evaluations") or [])
            b = int(req.get("budget") or 0)
            evals.add_metric([stream, tid, state], n)
            budget.add_metric([stream, tid], b)
            done = state in ("completed", "failed", "cancelled")
            prog.add_metric([stream, tid], 1.0 if done else (n / b if b else 0.0))
        return [jobs, evals, budget, prog]

    def _scaling(self) -> list[Metric]:
        events = CounterMetricFamily("streamprov_scaling_events", "Scaling decisions on the "
                                     "audit trail (trigger: tune, memory, ...; applied: live, "
                                     "recorded, failed).",
                                     labels=["stream_id", "stage", "trigger", "applied"])
        last = GaugeMetricFamily("streamprov_scaling_last_event_timestamp_seconds", "Time of "
                                 "the newest scaling decision.", labels=["stream_id"])
        counts: Counter[tuple[str, str, str, str]] = Counter()
        newest: dict[str, int] = {}
        for e in self.sources.scaling_events():
            stream = str(e.get("streamId", ""))
            trigger = str(e.get("trigger") or "").split(" ", 1)[0]
            counts[(stream, str(e.get("stage") or "all"), trigger,
                    str(e.get("applied", "")))] += 1
            newest[stream] = max(newest.get(stream, 0), int(e.get("timeNs") or 0))
        for key, n in sorted(counts.items()):
            events.add_metric(list(key), n)
        for stream, t in sorted(newest.items()):
            last.add_metric([stream], t * _NS)
        return [events, last]

    def _clock(self) -> list[Metric]:
        doc = self.sources.clock_status()
        lbl = ["node_id"]
        offset = GaugeMetricFamily("streamprov_clock_offset_seconds", "Estimated offset of the "
                                   "node's raw clock against its replica (reference minus "
                                   "node), at the end of the last run.", labels=lbl)
        bound = GaugeMetricFamily("streamprov_clock_error_bound_seconds", "The node clock's "
                                  "error bound.", labels=lbl)
        within = GaugeMetricFamily("streamprov_clock_within_tolerance", "1 while the bound is "
                                   "within the skew tolerance.", labels=lbl)
        viol = CounterMetricFamily("streamprov_clock_skew_violations", "Times the node went "
                                   "out of tolerance.", labels=lbl)
        stamps = CounterMetricFamily("streamprov_clock_stamps_out_of_tolerance", "Batches "
                                     "stamped while out of tolerance.", labels=lbl)
        tol = GaugeMetricFamily("streamprov_clock_max_skew_seconds", "The configured skew "
                                "tolerance.")
        for n in doc.get("nodes") or []:
            node = [str(n.get("nodeId"))]
            if n.get("offsetNs") is not None:
                offset.add_metric(node, int(n["offsetNs"]) * _NS)
            bound.add_metric(node, int(n.get("errorNs") or 0) * _NS)
            within.add_metric(node, 1.0 if n.get("withinTolerance") else 0.0)
            viol.add_metric(node, int(n.get("violations") or 0))
            stamps.add_metric(node, int(n.get("stampsOutOfTolerance") or 0))
        if doc.get("maxSkewNs") is not None:
            tol.add_metric([], int(doc["maxSkewNs"]) * _NS)
        return [offset, bound, within, viol, stamps, tol]

    def _streams(self) -> list[Metric]:
        records = GaugeMetricFamily("streamprov_stream_records", "Records in the stream log.",
                                    labels=["stream_id"])
        chains = GaugeMetricFamily("streamprov_stream_chains", "Original chains in the "
                                   "provenance store.", labels=["stream_id"])
        for s in self.sources.streams():
            records.add_metric([str(s["streamId"])], float(s.get("records") or 0))
            chains.add_metric([str(s["streamId"])], float(s.get("chains") or 0))
        return [records, chains]

    def _live(self) -> list[Metric]:
        depth = GaugeMetricFamily("streamprov_queue_depth_batches", "Batches waiting in an "
                                  "inbox of a running deployment (ingest, <stage>-<slot>, "
                                  "writer).", labels=[*_RUN_LABELS, "queue"])
        backlog = GaugeMetricFamily("streamprov_provenance_backlog_batches", "Chain batches "
                                    "waiting for the provenance writer of a running "
                                    "deployment.", labels=_RUN_LABELS)
        for d in self.sources.live():
            run = [str(d.get("streamId")), str(d.get("replayId") or "")]
            queues: dict[str, int] = d.get("queues") or {}
            for queue, n in sorted(queues.items()):
                depth.add_metric([*run, queue], float(n))
            if "writer" in queues:
                backlog.add_metric(run, float(queues["writer"]))
        return [depth, backlog]


def _histogram(family: HistogramMetricFamily, labels: list[str],
               doc: dict[str, Any] | None) -> None:
    """A report's cumulative buckets (``latencyBucketsNs``) as one histogram sample set."""
    if not doc or not doc.get("le"):
        return
    buckets = [(f"{le * _NS:g}", float(n))
               for le, n in zip(doc["le"], doc["cumulative"], strict=True)]
    buckets.append(("+Inf", float(doc.get("count", 0))))
    family.add_metric(labels, buckets, sum_value=float(doc.get("sumNs", 0)) * _NS)


def _quantiles(family: GaugeMetricFamily, labels: list[str], summary: dict[str, Any]) -> None:
    if not summary.get("count"):
        return
    for q, key in QUANTILES:
        if summary.get(key) is not None:
            family.add_metric([*labels, q], float(summary[key]) * _NS)


def registry_for(sources: Sources) -> CollectorRegistry:
    """A registry of its own (never the global one) holding a ``StreamprovCollector``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StreamprovCollector(sources))
    return registry


def exposition(registry: CollectorRegistry) -> bytes:
    """The text exposition format of ``registry`` (what ``GET /metrics`` answers)."""
    return generate_latest(registry)
