"""A log-linear (HDR-style) histogram of non-negative integer durations, filled with numpy.

Like HdrHistogram, values below ``2**SUB_BITS`` are counted exactly and every larger power of
two is split into ``2**SUB_BITS`` equal sub-buckets, so a reported percentile is within
``1 / 2**SUB_BITS`` (0.8 %) of the true value; the maximum is kept exactly. It records whole
numpy arrays at once (``np.bincount``), which is what the report needs for millions of chains;
the ``hdrhistogram`` package records one value per Python call. Histograms merge by adding
counts, so chunks of a window can be measured separately in bounded memory.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

SUB_BITS = 7
_SUB = 1 << SUB_BITS
_BUCKETS = _SUB + (63 - SUB_BITS) * _SUB

PERCENTILES = (50.0, 95.0, 99.0)

BUCKET_BOUNDS_NS = tuple(int(s * 1e9) for s in (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0))
"""Upper bounds of the cumulative buckets a report keeps (100 µs to 10 s, 1-2.5-5 steps):
what a Prometheus histogram of replay latency is made of."""


def _index(values: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    v = values
    idx = v.copy()
    big = v >= _SUB
    if big.any():
        vb = v[big]
        _, exp = np.frexp(vb.astype(np.float64))
        e = exp.astype(np.int64) - 1  # floor(log2(v)), maybe one too high after rounding
        shift = e - SUB_BITS
        mant = vb >> shift
        low = mant < _SUB
        e[low] -= 1
        shift = e - SUB_BITS
        mant = vb >> shift
        idx[big] = _SUB + (e - SUB_BITS) * _SUB + (mant - _SUB)
    return idx


def _bucket_value(idx: int) -> int:
    """A representative (middle) value of bucket ``idx``."""
    if idx < _SUB:
        return idx
    e = (idx - _SUB) // _SUB + SUB_BITS
    mant = (idx - _SUB) % _SUB + _SUB
    shift = e - SUB_BITS
    return (mant << shift) + ((1 << shift) >> 1)


class LatencyHistogram:
    """Counts of non-negative int64 values (nanoseconds, by convention) in log-linear buckets.

    Negative values are counted as 0 (a clock step can make a difference negative).
    """

    __slots__ = ("counts", "max_value", "sum_value", "total")

    def __init__(self) -> None:
        self.counts = np.zeros(_BUCKETS, dtype=np.int64)
        self.total = 0
        self.max_value = 0
        self.sum_value = 0

    def record(self, values: npt.ArrayLike) -> None:
        """Add every value of ``values`` (any int array-like)."""
        arr = np.asarray(values, dtype=np.int64).ravel()
        if not len(arr):
            return
        arr = np.maximum(arr, 0)
        self.counts += np.bincount(_index(arr), minlength=_BUCKETS)
        self.total += len(arr)
        self.max_value = max(self.max_value, int(arr.max()))
        self.sum_value += int(arr.sum())

    def merge(self, other: LatencyHistogram) -> None:
        self.counts += other.counts
        self.total += other.total
        self.max_value = max(self.max_value, other.max_value)
        self.sum_value += other.sum_value

    def cumulative(self, bounds_ns: Iterable[int] = BUCKET_BOUNDS_NS) -> dict[str, Any]:
        """``{"le": bounds, "cumulative": values <= each bound, "count", "sumNs"}``, JSON-ready.

        A bound's own bucket counts as below it, so a count may include values up to 0.8 %
        above the bound; ``count`` and ``sumNs`` are exact."""
        le = [int(b) for b in bounds_ns]
        cum = np.cumsum(self.counts)
        idx = _index(np.asarray(le, dtype=np.int64)) if le else np.zeros(0, np.int64)
        return {"le": le, "cumulative": [int(cum[i]) for i in idx.tolist()],
                "count": self.total, "sumNs": self.sum_value}

    def percentile(self, q: float) -> int:
        """The value below or at which ``q`` percent of the recorded values lie (0 if empty)."""
        if self.total == 0:
            return 0
        rank = max(1, int(np.ceil(q / 100.0 * self.total)))
        idx = int(np.searchsorted(np.cumsum(self.counts), rank))
        return min(_bucket_value(idx), self.max_value)

    def summary(self, percentiles: Iterable[float] = PERCENTILES) -> dict[str, int]:
        """``{"count", "p50", "p95", "p99", "max"}`` (JSON-ready)."""
        out: dict[str, int] = {"count": self.total}
        for q in percentiles:
            out[f"p{q:g}"] = self.percentile(q)
        out["max"] = self.max_value
        return out

    def to_json(self) -> dict[str, Any]:
        """Sparse form, for sending across processes: ``{"buckets": {idx: n}, "max": ...}``."""
        nz = np.flatnonzero(self.counts)
        return {"buckets": {int(i): int(self.counts[i]) for i in nz}, "max": self.max_value,
                "sum": self.sum_value}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> LatencyHistogram:
        h = cls()
        for i, n in doc.get("buckets", {}).items():
            h.counts[int(i)] = int(n)
        h.total = int(h.counts.sum())
        h.max_value = int(doc.get("max", 0))
        h.sum_value = int(doc.get("sum", 0))
        return h
