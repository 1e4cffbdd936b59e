"""Order correctness: how far the order rebuilt from hop-0 stamps is from the true order.

Replay orders a stream by hop-0 ``(timestamp, logical, node id, ...)``. Given each record's true
generation time, ``count_inversions`` counts the pairs that order gets wrong, and separately
the wrong pairs whose stamps are at least their two recorded error bounds apart - those are the
ones synchronization promised to get right (with honest bounds the count is 0). A bound of 0
means "unknown" (sync off), so every wrong pair counts there.

O(n log^2 n) in numpy: a bottom-up merge that counts cross pairs per level with one sort and
one ``searchsorted``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class OrderReport:
    records: int
    pairs: int
    """Pairs with distinct true times (the ones that have a right order)."""
    inversions: int
    """Pairs the reconstructed order puts the wrong way round."""
    inversions_beyond_bounds: int
    """Wrong pairs whose stamps differ by at least the sum of their error bounds."""

    @property
    def inversions_within_bounds(self) -> int:
        return self.inversions - self.inversions_beyond_bounds

    def to_json(self) -> dict[str, int]:
        return {
            "records": self.records, "pairs": self.pairs, "inversions": self.inversions,
            "inversionsBeyondBounds": self.inversions_beyond_bounds,
            "inversionsWithinBounds": self.inversions_within_bounds,
        }


def _count_cross(a: Int64Array, b: Int64Array) -> int:
    """Number of pairs ``i < j`` with ``a[i] > b[j]``; ``a`` and ``b`` are ranks in [0, m)."""
    n = len(a)
    if n < 2:
        return 0
    m = int(max(int(a.max()), int(b.max()))) + 1
    idx = np.arange(n, dtype=np.int64)
    total = 0
    size = 1
    while size < n:
        block = idx // (2 * size)
        left = (idx // size) % 2 == 0
        lblock, rblock = block[left], block[~left]
        if len(rblock):
            keys = np.sort(lblock * m + a[left])
            # left elements of the same block with a <= b[j]; the rest have a > b[j]
            le = (np.searchsorted(keys, rblock * m + b[~left], side="right")
                  - np.searchsorted(keys, rblock * m, side="left"))
            per_block = np.bincount(lblock, minlength=int(block.max()) + 1)
            total += int((per_block[rblock] - le).sum())
        size *= 2
    return total


def _ranks(*columns: Int64Array) -> Int64Array:
    """Dense ranks of rows given by lexicographic ``columns`` (first column most significant)."""
    order = np.lexsort(columns[::-1])
    stacked = np.stack([c[order] for c in columns])
    new = np.ones(len(order), dtype=bool)
    new[1:] = np.any(stacked[:, 1:] != stacked[:, :-1], axis=0)
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.cumsum(new) - 1
    return ranks


def count_inversions(
    true_ns: Sequence[int] | npt.ArrayLike,
    ts_ns: Sequence[int] | npt.ArrayLike,
    logical: Sequence[int] | npt.ArrayLike | None = None,
    error_ns: Sequence[int] | npt.ArrayLike | None = None,
    source: Sequence[Any] | npt.ArrayLike | None = None,
) -> OrderReport:
    """Compare the order of records by hop-0 ``(ts_ns, logical, source)`` with their true order.

    ``true_ns``: each record's true generation time (ties have no right order: not counted).
    ``error_ns``: each stamp's recorded error bound (0 = unknown). ``source``: node ids (or any
    sortable labels), the tie-break after the logical counter, as in the store's chain order.
    """
    true = np.asarray(true_ns, dtype=np.int64)
    ts = np.asarray(ts_ns, dtype=np.int64)
    n = len(true)
    if len(ts) != n:
        raise ValueError("true_ns and ts_ns differ in length")
    lg = np.zeros(n, np.int64) if logical is None else np.asarray(logical, dtype=np.int64)
    err = np.zeros(n, np.int64) if error_ns is None else np.asarray(error_ns, dtype=np.int64)
    if source is None:
        src = np.zeros(n, np.int64)
    else:
        _, inverse = np.unique(np.asarray(source), return_inverse=True)
        src = inverse.astype(np.int64).reshape(-1)
    if len(lg) != n or len(err) != n or len(src) != n:
        raise ValueError("all columns must have the same length")
    if n < 2:
        return OrderReport(n, 0, 0, 0)
    # Reconstructed rank (unique: the record index breaks the last ties, as record ids do).
    rank = _ranks(ts, lg, src, np.arange(n, dtype=np.int64))
    # Walk records in true order; true ties sorted by reconstructed rank so they never count.
    walk = np.lexsort((rank, true))
    true_w, rank_w, ts_w, err_w = true[walk], rank[walk], ts[walk], err[walk]
    _, tie_sizes = np.unique(true_w, return_counts=True)
    pairs = n * (n - 1) // 2 - int((tie_sizes * (tie_sizes - 1) // 2).sum())
    inversions = _count_cross(rank_w, rank_w)
    # Beyond bounds: (ts_i - err_i, rank_i) > (ts_j + err_j, rank_j) lexicographically.
    lo = ts_w - err_w
    hi = ts_w + err_w
    both = _ranks(np.concatenate([lo, hi]), np.concatenate([rank_w, rank_w]))
    beyond = _count_cross(both[:n], both[n:])
    return OrderReport(n, pairs, inversions, beyond)
