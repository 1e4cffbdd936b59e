"""clock_sync: residual error of node clock synchronization against a known truth.

Setup: a 3-replica ``TimestampService`` in its own process on loopback UDP (replicas on the host
clock, which is the truth), and nodes in this process whose ``SimulatedClock``s are offset by up
to +/-50 ms and drift by up to +/-100 ppm, each synchronized every 1 s (k = 8 exchanges).
Every 20 ms a sampler reads, for every node, ``corrected(raw(true)) - true`` - the residual
``|estimated - true offset|`` - and whether it is within the node's reported error bound.
The first ``WARMUP_S`` (drift not yet estimated) are reported separately.

Also: the cost of one stamp against a bare ``time.time_ns()`` (same run), and the order
correctness figure: inversions of hop-0 order against true generation order for 3 sources
with clocks 5 ms / 100 ppm apart, with and without synchronization.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import numpy as np

from streamprov.clock import (
    ClockConfig,
    HybridLogicalClock,
    NodeClock,
    ServiceProcess,
    SimulatedClock,
    SimulationParams,
    SystemClock,
    count_inversions,
)

TARGET_P99_US = 20.0
WARMUP_S = 5.0
SAMPLE_EVERY_S = 0.02


def _percentiles(values_us: np.ndarray[Any, Any]) -> dict[str, float]:
    if len(values_us) == 0:
        return {"p50_us": float("nan"), "p99_us": float("nan"), "max_us": float("nan")}
    return {
        "p50_us": round(float(np.percentile(values_us, 50)), 2),
        "p99_us": round(float(np.percentile(values_us, 99)), 2),
        "max_us": round(float(values_us.max()), 2),
    }


def _residuals(config: ClockConfig, nodes: int, duration_s: float) -> dict[str, Any]:
    rng = random.Random(7)
    sims = {
        f"bench/node/{i}": SimulationParams(
            offset_ns=round(rng.uniform(-50e6, 50e6)), drift_ppm=rng.uniform(-100.0, 100.0),
            seed=i,
        )
        for i in range(nodes)
    }
    cfg = config.model_copy(update={"simulate": sims})
    clocks = [NodeClock(cfg, node_id) for node_id in sims]
    for c in clocks:
        c.start()
    start = time.monotonic()
    warm: list[float] = []
    resid: list[float] = []
    bounds: list[float] = []
    outside = 0
    try:
        while (elapsed := time.monotonic() - start) < duration_s:
            for c in clocks:
                sc = c.clock
                sim = c.raw
                assert sc is not None
                assert isinstance(sim, SimulatedClock)
                if not sc.synced:
                    continue
                true = time.time_ns()
                err = sc.correct(sim.reading_at(true)) - true
                bound = sc.error_bound_ns()
                if elapsed < WARMUP_S:
                    warm.append(abs(err) / 1e3)
                    continue
                resid.append(abs(err) / 1e3)
                bounds.append(bound / 1e3)
                if abs(err) > bound:
                    outside += 1
            time.sleep(SAMPLE_EVERY_S)
        statuses = [c.status() for c in clocks]
    finally:
        for c in clocks:
            c.stop()
    r = np.asarray(resid)
    b = np.asarray(bounds)
    drift_err = [abs((s.drift_ppm or 0.0) - sims[s.node_id].drift_ppm) for s in statuses]
    return {
        **_percentiles(r),
        "samples": len(resid),
        "warmup_max_us": round(max(warm), 2) if warm else None,
        "bound_p50_us": round(float(np.percentile(b, 50)), 2) if len(b) else None,
        "bound_p99_us": round(float(np.percentile(b, 99)), 2) if len(b) else None,
        "outside_bound": outside,
        "drift_error_max_ppm": round(max(drift_err), 3),
        "syncs_failed": sum(s.syncs_failed for s in statuses),
    }


def _per_call_ns(fn: Any, n: int) -> float:
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - t0) / n)
    return best


def _stamp_cost(config: ClockConfig, quick: bool) -> dict[str, Any]:
    n = 20_000 if quick else 200_000
    node = NodeClock(config, "bench/stamp")
    node.start(wait_s=3.0)
    try:
        hlc = HybridLogicalClock(node)
        bare_hlc = HybridLogicalClock(SystemClock())

        def stamp_one() -> None:
            hlc.stamp_one()
            hlc.error_bound_ns()

        def stamp_batch() -> None:
            hlc.stamp(1000)
            hlc.error_bound_ns()

        time_ns = _per_call_ns(time.time_ns, n)
        out = {
            "time_ns_call_ns": round(time_ns, 1),
            "synced_now_ns_call_ns": round(_per_call_ns(node.now_ns, n), 1),
            "error_bound_call_ns": round(_per_call_ns(node.error_bound_ns, n), 1),
            "hlc_stamp_one_system_clock_ns": round(_per_call_ns(bare_hlc.stamp_one, n), 1),
            "stamp_one_synced_ns": round(_per_call_ns(stamp_one, n), 1),
            "stamp_batch_1000_synced_ns": round(_per_call_ns(stamp_batch, n // 10), 1),
        }
        out["stamp_vs_time_ns"] = round(out["stamp_one_synced_ns"] / time_ns, 1)
        return out
    finally:
        node.stop()


def _order(config: ClockConfig, sync: bool, records: int) -> dict[str, Any]:
    sources = ["bench/src/0", "bench/src/1", "bench/src/2"]
    cfg = config.model_copy(update={"enabled": sync}).with_spread_simulation(
        sources, "5ms", "100ppm", seed=11)
    clocks = [NodeClock(cfg, s) for s in sources]
    for c in clocks:
        c.start(wait_s=3.0)
    if sync:  # let the drift estimates settle as a running pipeline's would be
        time.sleep(WARMUP_S)
    hlcs = [HybridLogicalClock(c) for c in clocks]
    sims = [c.raw for c in clocks]
    rng = random.Random(5)
    true = np.empty(records, np.int64)
    ts = np.empty(records, np.int64)
    lg = np.empty(records, np.int64)
    err = np.empty(records, np.int64)
    src = np.empty(records, np.int64)
    try:
        for i in range(records):
            k = rng.randrange(3)
            ts[i], lg[i] = hlcs[k].stamp_one()
            sim = sims[k]
            assert isinstance(sim, SimulatedClock)
            true[i] = sim.last_true_ns()
            err[i] = hlcs[k].error_bound_ns()
            src[i] = k
            if i % 64 == 0:
                time.sleep(0.0002)
    finally:
        for c in clocks:
            c.stop()
    report = count_inversions(true, ts, lg, err, src)
    return {
        "records": report.records,
        "inversions": report.inversions,
        "inversions_beyond_bounds": report.inversions_beyond_bounds,
        "error_p50_us": round(float(np.percentile(err, 50)) / 1e3, 2),
    }


def run(quick: bool) -> dict[str, Any]:
    duration_s = 25.0 if quick else 120.0
    nodes = 6 if quick else 12
    base = ClockConfig.build(base_port=0, replicas=3, sync_interval_s=1.0, exchanges=8)
    with ServiceProcess(base) as service:
        config = service.node_config()
        print(f"service: replicas {service.addresses}", flush=True)
        print(f"residuals: {nodes} nodes, {duration_s:.0f} s ...", flush=True)
        resid = _residuals(config, nodes, duration_s)
        print(f"  |estimated - true offset|: p50 {resid['p50_us']} us, p99 {resid['p99_us']} us,"
              f" max {resid['max_us']} us over {resid['samples']} samples"
              f" (warm-up max {resid['warmup_max_us']} us); error bound p50"
              f" {resid['bound_p50_us']} us p99 {resid['bound_p99_us']} us;"
              f" outside bound: {resid['outside_bound']}", flush=True)
        cost = _stamp_cost(config, quick)
        print(f"stamp cost: time.time_ns {cost['time_ns_call_ns']} ns, synced stamp+bound"
              f" {cost['stamp_one_synced_ns']} ns ({cost['stamp_vs_time_ns']}x), batch of 1000"
              f" {cost['stamp_batch_1000_synced_ns']} ns", flush=True)
        records = 20_000 if quick else 100_000
        on = _order(config, True, records)
        off = _order(config, False, records)
        print(f"order, 3 sources 5 ms / 100 ppm apart, {records} records: sync on"
              f" {on['inversions']} inversions ({on['inversions_beyond_bounds']} beyond bounds),"
              f" sync off {off['inversions']} inversions", flush=True)
    return {
        "name": "clock_sync",
        "p50_us": resid["p50_us"],
        "p99_us": resid["p99_us"],
        "max_us": resid["max_us"],
        "target_us": TARGET_P99_US,
        "residual": resid,
        "stamp_cost": cost,
        "order_sync_on": on,
        "order_sync_off": off,
        "threads": threading.active_count(),
    }
