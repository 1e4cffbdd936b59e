from __future__ import annotations

import pickle
import threading
import time

from streamprov.clock import SimulatedClock


def test_offset_and_drift_follow_the_formula() -> None:
    epoch = time.time_ns()
    clock = SimulatedClock(5_000_000, 100.0, epoch_ns=epoch)
    assert clock.true_offset_ns(epoch) == 5_000_000
    assert clock.true_offset_ns(epoch + 10_000_000_000) == 5_000_000 + 1_000_000
    assert clock.reading_at(epoch + 1_000_000_000) == epoch + 1_000_000_000 + 5_100_000
    reading = clock.now_ns()
    true = clock.last_true_ns()
    assert reading - true == clock.true_offset_ns(true)


def test_jitter_is_bounded_and_seeded() -> None:
    a = SimulatedClock(0, 0.0, 1_000, seed=1)
    errors = []
    for _ in range(2000):
        r = a.now_ns()
        errors.append(r - a.last_true_ns())
    assert max(abs(e) for e in errors) <= 1_000
    assert len(set(errors)) > 100
    assert a.precision_ns == 1_000


def test_step_and_last_true_is_per_thread() -> None:
    clock = SimulatedClock(0)
    clock.step(1_000_000_000)
    r = clock.now_ns()
    assert r - clock.last_true_ns() == 1_000_000_000
    seen: list[int] = []
    t = threading.Thread(target=lambda: seen.append(clock.last_true_ns()))
    t.start()
    t.join()
    assert seen == [0]


def test_pickles_to_the_same_clock() -> None:
    clock = SimulatedClock(-3_000, 12.5, 7, seed=4)
    clock.step(10)
    copy = pickle.loads(pickle.dumps(clock))
    assert (copy.offset_ns, copy.drift_ppm, copy.jitter_ns, copy.epoch_ns) == (
        -2_990, 12.5, 7, clock.epoch_ns)
    assert copy.true_offset_ns(clock.epoch_ns + 10**9) == clock.true_offset_ns(
        clock.epoch_ns + 10**9)
