"""SyncedClock and OffsetFilter against synthetic measurements of a known simulated clock."""

from __future__ import annotations

import itertools
import random
import time

import pytest

from streamprov.clock import HybridLogicalClock, OffsetFilter, Sample, SimulatedClock, SyncedClock

S = 1_000_000_000


def sample_at(sim: SimulatedClock, true_ns: int, noise_ns: int = 0, half_width_ns: int = 10_000,
              source: int = 0) -> Sample:
    """What a perfect exchange at true time ``true_ns`` would measure, plus ``noise_ns``."""
    mid = sim.reading_at(true_ns)
    return Sample(mid, true_ns - mid + noise_ns, 2 * half_width_ns, half_width_ns, source, 1)


def test_unsynced_clock_reads_raw_with_unknown_bound() -> None:
    sim = SimulatedClock(7_000_000)
    clock = SyncedClock(sim)
    assert not clock.synced
    assert clock.error_bound_ns() == 0
    assert abs(clock.now_ns() - time.time_ns() - 7_000_000) < 50_000_000


@pytest.mark.parametrize(("offset_ns", "drift_ppm"), [(50_000_000, 100.0), (-30_000_000, -80.0),
                                                      (0, 0.0)])
def test_drift_is_estimated_and_the_bound_holds(offset_ns: int, drift_ppm: float) -> None:
    sim = SimulatedClock(offset_ns, drift_ppm, epoch_ns=time.time_ns() - 30 * S)
    clock = SyncedClock(sim)
    rng = random.Random(1)
    now = time.time_ns()
    for k in range(12, 0, -1):
        est = clock.update(sample_at(sim, now - k * S, rng.randrange(-10_000, 10_001)))
    assert est.samples == 12
    assert abs(est.drift_ppm - drift_ppm) <= est.rate_bound * 1e6
    assert est.rate_bound * 1e6 < 10  # 12 samples over 11 s pin the drift to a few ppm
    for ahead_s in (0.0, 0.5, 1.0, 3.0):
        true = now - S + int(ahead_s * S)
        raw = sim.reading_at(true)
        residual = clock.correct(raw) - true
        assert abs(residual) <= est.bound_at(raw)


def test_first_sample_assumes_the_maximum_drift() -> None:
    sim = SimulatedClock(1_000_000, 100.0)
    clock = SyncedClock(sim)
    est = clock.update(sample_at(sim, time.time_ns()))
    assert est.rate == 0.0
    assert est.rate_bound == pytest.approx(500e-6)
    # after 1 s the bound has grown by 500 us, which covers the unknown 100 ppm
    assert est.bound_at(est.anchor_ns + S) == 10_000 + 500_000


def test_filter_restarts_on_inconsistent_sample_or_new_source() -> None:
    f = OffsetFilter()
    base = 10**18
    for k in range(5):
        f.add(Sample(base + k * S, 1_000 + k * 100, 2_000, 1_000, source=1))
    assert f.estimate is not None and f.estimate.samples == 5
    assert f.estimate.drift_ppm == pytest.approx(-0.1, abs=0.01)
    est = f.add(Sample(base + 5 * S, 5_000_000, 2_000, 1_000, source=1))  # a 5 ms jump
    assert est.reset and est.samples == 1 and f.resets == 1
    assert est.rate == pytest.approx(1e-7, rel=0.1)  # the drift is kept as the prior
    est = f.add(Sample(base + 6 * S, 5_000_000, 2_000, 1_000, source=2))
    assert est.reset and f.resets == 2


def test_clock_step_widens_the_bound_then_is_absorbed() -> None:
    sim = SimulatedClock(2_000_000, 20.0)
    clock = SyncedClock(sim)
    woken: list[bool] = []
    clock.on_step = lambda: woken.append(True)
    clock.update(sample_at(sim, time.time_ns(), half_width_ns=5_000))
    assert clock.error_bound_ns() < 1_000_000
    sim.step(S)  # the raw clock jumps 1 s forward
    assert clock.error_bound_ns() >= S  # the reader sees it at once
    assert woken
    assert abs(clock.now_ns() - time.time_ns() - S) < 10_000_000  # not yet corrected
    step = clock.check_step()  # what the sync thread does within 50 ms
    assert abs(step - S) < 1_000_000
    assert clock.steps == 1
    assert abs(clock.now_ns() - time.time_ns()) < 10_000_000  # time continuous again
    assert clock.error_bound_ns() >= S  # still reported until a sync confirms it
    clock.update(sample_at(sim, time.time_ns(), half_width_ns=5_000))
    assert clock.error_bound_ns() < 1_000_000
    assert clock.check_step() == 0


@pytest.mark.parametrize("step_ns", [S, -S])
def test_hlc_stays_monotonic_across_a_step_and_reports_it(step_ns: int) -> None:
    sim = SimulatedClock(0)
    clock = SyncedClock(sim)
    clock.update(sample_at(sim, time.time_ns(), half_width_ns=5_000))
    hlc = HybridLogicalClock(clock)
    stamps = [hlc.stamp_one() for _ in range(100)]
    sim.step(step_ns)
    stamps += [hlc.stamp_one() for _ in range(100)]
    assert hlc.error_bound_ns() >= abs(step_ns) * 0.99
    clock.check_step()
    stamps += [hlc.stamp_one() for _ in range(100)]
    # forward: the HLC runs 1 s ahead of its (corrected) physical clock; backward: the
    # pending step keeps the bound up until the next sync
    assert hlc.error_bound_ns() >= abs(step_ns) * 0.99
    assert all(a < b for a, b in itertools.pairwise(stamps))
