"""Plot data computed from the provenance store: a replay's (or run's) latency CDF and
throughput over time, and node clocks' error bounds and offsets over time. Plain JSON (lists
of numbers), the same for the dashboard and the HTML reports.

Series of finished replays never change, so they are cached in ``observe/series/`` in the data
dir: a page load after the first reads one small file instead of the replay's chains.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import orjson

from streamprov.errors import NotFound, StoreError
from streamprov.model import validate_id

if TYPE_CHECKING:
    from streamprov.app import App

CDF_POINTS = 200
"""Points of a latency CDF (quantiles evenly spaced, plus the maximum)."""
THROUGHPUT_BINS = 60
CLOCK_POINTS = 120
"""Points per node of an error-bound-over-time series."""
_ALL = (0, 2**63 - 1)
_FINISHED = ("completed", "failed", "cancelled")


def _chain_ends(application: App, stream_id: str, replay_id: str
                ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Hop-0 and last-hop timestamps of every chain of a run (``replay_id`` "") or replay."""
    firsts: list[npt.NDArray[np.int64]] = []
    lasts: list[npt.NDArray[np.int64]] = []
    with application.provenance() as store:
        application.require_stream(store, stream_id)
        for batch in store.window_rows(stream_id, *_ALL, replay_id=replay_id):
            hop = batch.column("hop").to_numpy().astype(np.int64)
            hops = batch.column("hops").to_numpy().astype(np.int64)
            ts = batch.column("ts_ns").to_numpy().astype(np.int64)
            firsts.append(ts[hop == 0])
            lasts.append(ts[hop == hops - 1])
    if not firsts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(firsts), np.concatenate(lasts)


def latency_series(first_ns: npt.NDArray[np.int64], last_ns: npt.NDArray[np.int64]
                   ) -> dict[str, Any]:
    """``cdf``: latency (ms) at evenly spaced fractions; ``throughput``: chains completed per
    second in bins of the run's span (``t`` in seconds since the first hop 0)."""
    n = int(min(len(first_ns), len(last_ns)))
    if n == 0:
        return {"count": 0, "cdf": {"latencyMs": [], "fraction": []},
                "throughput": {"t": [], "rate": []}}
    lat = np.sort(np.maximum(last_ns[:n] - first_ns[:n], 0))
    fractions = np.linspace(0.0, 1.0, CDF_POINTS + 1)
    idx = np.minimum((fractions * (n - 1)).round().astype(np.int64), n - 1)
    t0 = int(first_ns.min())
    span = max(int(last_ns.max()) - t0, 1)
    bins = min(THROUGHPUT_BINS, max(1, n // 5))
    width_ns = span / bins
    counts, _ = np.histogram(last_ns[:n] - t0, bins=bins, range=(0, span))
    return {
        "count": n,
        "cdf": {"latencyMs": [round(float(lat[i]) / 1e6, 4) for i in idx],
                "fraction": [round(float(f), 4) for f in fractions]},
        "throughput": {"t": [round((i + 0.5) * width_ns / 1e9, 4) for i in range(bins)],
                       "rate": [round(float(c) / (width_ns / 1e9), 2) for c in counts]},
        "startNs": t0,
    }


def replay_series(application: App, doc: dict[str, Any],
                  cache_dir: Path | None = None) -> dict[str, Any]:
    """The latency CDF and throughput of a replay document's chains (cached once finished)."""
    rid = str(doc["replayId"])
    validate_id(rid, "replayId")
    cache = (cache_dir or application.settings.data_dir / "observe" / "series") / f"{rid}.json"
    finished = doc.get("state") in _FINISHED
    if finished and cache.exists():
        try:
            cached: dict[str, Any] = orjson.loads(cache.read_bytes())
            return cached
        except (OSError, orjson.JSONDecodeError):
            pass
    stream_id = str((doc.get("request") or {}).get("streamId"))
    first, last = _chain_ends(application, stream_id, rid)
    out = latency_series(first, last)
    out["replayId"] = rid
    if finished:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(out))
            tmp.replace(cache)
        except OSError as exc:
            raise StoreError(f"cannot cache plot data in {cache.parent}: {exc}") from exc
    return out


def stream_series(application: App, stream_id: str) -> dict[str, Any]:
    """The latency CDF and throughput of a stream's original chains."""
    validate_id(stream_id, "streamId")
    first, last = _chain_ends(application, stream_id, "")
    return latency_series(first, last)


def clock_series(application: App, stream_id: str, replay_id: str = "") -> dict[str, Any]:
    """Per node, the clock error bound its hops carried over time (max per time bin), and the
    offsets and bounds of the last run's nodes at their last sync and over the run (their sync
    histories, from ``App.clock_status()``)."""
    validate_id(stream_id, "streamId")
    node_parts: dict[str, tuple[list[npt.NDArray[np.int64]], list[npt.NDArray[np.int64]]]] = {}
    with application.provenance() as store:
        application.require_stream(store, stream_id)
        for batch in store.window_rows(stream_id, *_ALL, replay_id=replay_id):
            nodes = batch.column("node_id").to_numpy(zero_copy_only=False)
            ts = batch.column("ts_ns").to_numpy().astype(np.int64)
            err = batch.column("error_ns").to_numpy().astype(np.int64)
            for node in np.unique(nodes):
                m = nodes == node
                parts = node_parts.setdefault(str(node), ([], []))
                parts[0].append(ts[m])
                parts[1].append(err[m])
    if not node_parts:
        raise NotFound(f"stream {stream_id!r} has no hops to show clocks of", field="streamId")
    t_min = min(int(np.min(np.concatenate(p[0]))) for p in node_parts.values())
    t_max = max(int(np.max(np.concatenate(p[0]))) for p in node_parts.values())
    span = max(t_max - t_min, 1)
    series = []
    for node, (tss, errs) in sorted(node_parts.items()):
        ts = np.concatenate(tss)
        err = np.concatenate(errs)
        bins = np.minimum(((ts - t_min) * CLOCK_POINTS) // span, CLOCK_POINTS - 1)
        best = np.full(CLOCK_POINTS, -1, np.int64)
        np.maximum.at(best, bins, err)
        keep = np.nonzero(best >= 0)[0]
        series.append({"nodeId": node,
                       "t": [round((t_min + (i + 0.5) * span / CLOCK_POINTS) / 1e9, 6)
                             for i in keep],
                       "errorMs": [round(float(best[i]) / 1e6, 6) for i in keep]})
    status = application.clock_status()
    return {"streamId": stream_id, "replayId": replay_id, "nodes": series,
            "maxSkewMs": status.get("maxSkewNs", 0) / 1e6, "policy": status.get("policy"),
            "offsets": clock_offsets(status.get("nodes") or [])}


def clock_offsets(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Offsets and bounds at each node's last sync (``ClockStatus.to_json`` entries), and
    over the run: ``history`` ``{t (s), offsetMs, errorMs}`` per sync round (empty when the
    status predates sync histories)."""
    out = []
    for n in statuses:
        if n.get("offsetNs") is None or not n.get("lastSyncNs"):
            continue
        points = [p for p in n.get("history") or [] if len(p) == 3]
        out.append({"nodeId": n["nodeId"], "t": n["lastSyncNs"] / 1e9,
                    "offsetMs": n["offsetNs"] / 1e6, "errorMs": (n.get("errorNs") or 0) / 1e6,
                    "withinTolerance": bool(n.get("withinTolerance")),
                    "history": {"t": [round(p[0] / 1e9, 6) for p in points],
                                "offsetMs": [round(p[1] / 1e6, 6) for p in points],
                                "errorMs": [round(p[2] / 1e6, 6) for p in points]}})
    return out
