from __future__ import annotations

import numpy as np
import pytest

from streamprov.metrics import LatencyHistogram


def test_percentiles_within_one_percent() -> None:
    rng = np.random.default_rng(1)
    values = rng.lognormal(15, 2, 200_000).astype(np.int64)
    h = LatencyHistogram()
    h.record(values[:100_000])
    other = LatencyHistogram()
    other.record(values[100_000:])
    h.merge(other)
    assert h.total == len(values)
    assert h.max_value == values.max()
    for q in (50, 95, 99, 99.9):
        exact = np.percentile(values, q, method="inverted_cdf")
        assert h.percentile(q) == pytest.approx(exact, rel=0.01)


def test_small_values_exact_and_negative_as_zero() -> None:
    h = LatencyHistogram()
    h.record([0, 1, 2, 3, 100, -5])
    assert h.percentile(50) == 1  # 0, 0, 1, 2, 3, 100
    assert h.summary() == {"count": 6, "p50": 1, "p95": 100, "p99": 100, "max": 100}


def test_empty_and_round_trip() -> None:
    assert LatencyHistogram().summary()["p99"] == 0
    h = LatencyHistogram()
    h.record([5, 10**9, 2**62])
    back = LatencyHistogram.from_json(h.to_json())
    assert back.summary() == h.summary()


def test_cumulative_buckets_count_and_sum() -> None:
    h = LatencyHistogram()
    h.record(np.array([50_000, 200_000, 900_000, 3_000_000, 20_000_000_000], dtype=np.int64))
    doc = h.cumulative((100_000, 1_000_000, 10_000_000))
    assert doc == {"le": [100_000, 1_000_000, 10_000_000], "cumulative": [1, 3, 4],
                   "count": 5, "sumNs": 20_004_150_000}
    other = LatencyHistogram()
    other.record([1_000])
    h.merge(other)
    assert h.cumulative((100_000,))["cumulative"] == [2]
    assert LatencyHistogram.from_json(h.to_json()).sum_value == 20_004_151_000
