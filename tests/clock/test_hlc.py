from __future__ import annotations

import numpy as np

from streamprov.clock import HybridLogicalClock


class FixedClock:
    def __init__(self, now: int, bound: int = 0) -> None:
        self.now = now
        self.bound = bound

    def now_ns(self) -> int:
        return self.now

    def error_bound_ns(self) -> int:
        return self.bound


def test_stamps_strictly_increase_per_node_when_time_stands_still() -> None:
    clock = FixedClock(1_000)
    hlc = HybridLogicalClock(clock)
    ts1, lg1 = hlc.stamp(3)
    ts2, lg2 = hlc.stamp(2)
    assert ts1 == ts2 == 1_000
    assert lg1.tolist() == [0, 1, 2]
    assert lg2.tolist() == [3, 4]
    clock.now = 900  # corrected backwards
    assert hlc.stamp_one() == (1_000, 5)
    clock.now = 2_000
    assert hlc.stamp_one() == (2_000, 0)


def test_a_record_stamped_ahead_pushes_the_chain_forward() -> None:
    hlc = HybridLogicalClock(FixedClock(1_000, bound=50))
    ts, _ = hlc.stamp(2, np.array([500, 5_000], dtype=np.int64))
    assert ts == 5_001
    assert hlc.error_bound_ns() == 50 + 4_001  # the lead over the physical clock is included
    assert hlc.stamp_one(after_ns=9_000)[0] == 9_001


def test_unknown_physical_bound_stays_unknown() -> None:
    hlc = HybridLogicalClock(FixedClock(1_000, bound=0))
    hlc.stamp_one(after_ns=5_000)
    assert hlc.error_bound_ns() == 0
    assert hlc.lead_ns() == 4_001
