"""Order correctness of hop-0 stamps against the true generation order."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest

from streamprov.clock import (
    ClockConfig,
    HybridLogicalClock,
    NodeClock,
    SimulatedClock,
    TimestampService,
    count_inversions,
)


def brute(true: list[int], ts: list[int], lg: list[int], err: list[int],
          src: list[str]) -> tuple[int, int, int]:
    n = len(true)
    pairs = inv = beyond = 0
    for i in range(n):
        for j in range(n):
            if true[i] >= true[j]:
                continue
            pairs += 1
            if (ts[i], lg[i], src[i], i) > (ts[j], lg[j], src[j], j):
                inv += 1
                if ts[i] - ts[j] >= err[i] + err[j]:
                    beyond += 1
    return pairs, inv, beyond


@pytest.mark.parametrize("seed", range(25))
def test_matches_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    n = rng.randrange(0, 60)
    true = [rng.randrange(0, 40) for _ in range(n)]  # with ties
    ts = [t + rng.randrange(-8, 9) for t in true]
    lg = [rng.randrange(0, 3) for _ in range(n)]
    err = [rng.choice([0, 0, 1, 3, 6]) for _ in range(n)]
    src = [rng.choice(["a", "b", "c"]) for _ in range(n)]
    report = count_inversions(true, ts, lg, err, src)
    assert (report.pairs, report.inversions, report.inversions_beyond_bounds) == brute(
        true, ts, lg, err, src)
    assert report.records == n


def test_small_examples() -> None:
    r = count_inversions([1, 2, 3], [10, 20, 30])
    assert (r.pairs, r.inversions, r.inversions_beyond_bounds) == (3, 0, 0)
    r = count_inversions([1, 2, 3], [30, 20, 10])
    assert (r.inversions, r.inversions_beyond_bounds) == (3, 3)
    # stamps 10 apart with bounds 6 + 6: the wrong order is within the bounds
    r = count_inversions([1, 2], [20, 10], error_ns=[6, 6])
    assert (r.inversions, r.inversions_beyond_bounds, r.inversions_within_bounds) == (1, 0, 1)
    # same stamp, unknown bounds: the tie-break decides, and a wrong one counts
    r = count_inversions([1, 2], [5, 5], logical=[1, 0])
    assert (r.inversions, r.inversions_beyond_bounds) == (1, 1)
    assert r.to_json()["inversionsBeyondBounds"] == 1
    with pytest.raises(ValueError, match="length"):
        count_inversions([1, 2], [1])


def test_large_input_is_fast() -> None:
    rng = np.random.default_rng(0)
    n = 200_000
    true = np.arange(n, dtype=np.int64) * 1_000
    ts = true + rng.integers(-5_000, 5_000, n)
    t0 = time.perf_counter()
    r = count_inversions(true, ts, error_ns=np.full(n, 2_000))
    assert time.perf_counter() - t0 < 10
    assert 0 < r.inversions_beyond_bounds < r.inversions


def stamp_sources(clocks: list[NodeClock], records: int) -> dict[str, np.ndarray]:
    """Interleave hop-0 stamps of several sources; truth is the instant each clock was read."""
    hlcs = [HybridLogicalClock(c) for c in clocks]
    rng = random.Random(9)
    cols: dict[str, list[int]] = {k: [] for k in ("true", "ts", "lg", "err", "src")}
    for i in range(records):
        k = rng.randrange(len(clocks))
        ts, lg = hlcs[k].stamp_one()
        sim = clocks[k].raw
        assert isinstance(sim, SimulatedClock)
        cols["true"].append(sim.last_true_ns())
        cols["ts"].append(ts)
        cols["lg"].append(lg)
        cols["err"].append(hlcs[k].error_bound_ns())
        cols["src"].append(k)
        if i % 50 == 0:
            time.sleep(0.0005)
    return {k: np.asarray(v, dtype=np.int64) for k, v in cols.items()}


@pytest.mark.parametrize("sync", [True, False])
def test_skewed_sources_with_and_without_sync(service: TimestampService, sync: bool) -> None:
    sources = ["p/source/0", "p/source/1", "p/source/2"]
    cfg: ClockConfig = service.node_config().replace(enabled=sync).with_spread_simulation(
        sources, "5ms", "100ppm", "500ns")
    clocks = [NodeClock(cfg, s) for s in sources]
    for c in clocks:
        assert c.start(wait_s=3) is sync
    try:
        cols = stamp_sources(clocks, 5_000)
    finally:
        for c in clocks:
            c.stop()
    r = count_inversions(cols["true"], cols["ts"], cols["lg"], cols["err"], cols["src"])
    if sync:
        assert r.inversions_beyond_bounds == 0  # the recorded bounds are honest
        assert r.inversions < r.pairs // 1000
        assert (cols["err"] > 0).all()
    else:
        assert (cols["err"] == 0).all()
        assert r.inversions > r.pairs // 100  # ms skews reorder history
        assert r.inversions_beyond_bounds == r.inversions
