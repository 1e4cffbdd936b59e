"""A physical clock with a known error, for tests, demos and the benchmark.

``SimulatedClock`` wraps the host clock (the "true" time on this machine, shared by all its
processes) and adds an offset, a frequency drift and read jitter::

    reading = true + offset_ns + drift_ppm * 1e-6 * (true - epoch_ns) + uniform(-jitter, +jitter)

so a synchronization's residual error is measurable against a known truth.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any


class SimulatedClock:
    """A ``PhysicalClock`` that is wrong by a known amount.

    ``now_ns`` is thread-safe; ``last_true_ns`` returns the true time behind the calling
    thread's latest ``now_ns`` reading, so a test can pair each stamp with its exact truth.
    ``step`` changes the offset at once (a clock step). Pickles to its parameters.
    """

    def __init__(
        self,
        offset_ns: int = 0,
        drift_ppm: float = 0.0,
        jitter_ns: int = 0,
        *,
        seed: int | None = None,
        epoch_ns: int | None = None,
    ) -> None:
        if jitter_ns < 0:
            raise ValueError("jitter_ns must not be negative")
        self._offset_ns = offset_ns
        self._rate = drift_ppm * 1e-6
        self.drift_ppm = drift_ppm
        self.jitter_ns = jitter_ns
        self.seed = seed
        self.epoch_ns = time.time_ns() if epoch_ns is None else epoch_ns
        self._rng = random.Random(seed)
        self._tls = threading.local()

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild,
            (self._offset_ns, self.drift_ppm, self.jitter_ns, self.seed, self.epoch_ns),
        )

    @property
    def offset_ns(self) -> int:
        """The offset at ``epoch_ns`` (including steps so far)."""
        return self._offset_ns

    @property
    def precision_ns(self) -> int:
        """Largest error of a single reading beyond the deterministic offset (the jitter)."""
        return self.jitter_ns

    def true_offset_ns(self, true_ns: int) -> int:
        """``reading - true`` at true time ``true_ns``, without jitter."""
        return self._offset_ns + round(self._rate * (true_ns - self.epoch_ns))

    def reading_at(self, true_ns: int) -> int:
        """The noiseless reading this clock gives at true time ``true_ns``."""
        return true_ns + self.true_offset_ns(true_ns)

    def at_host_ns(self, host_ns: int) -> int:
        """The reading (with jitter) at host time ``host_ns`` (for kernel packet timestamps)."""
        reading = host_ns + self.true_offset_ns(host_ns)
        if self.jitter_ns:
            reading += round((2.0 * self._rng.random() - 1.0) * self.jitter_ns)
        return reading

    def step(self, delta_ns: int) -> None:
        """Jump the clock by ``delta_ns`` (positive: forward)."""
        self._offset_ns += delta_ns

    def now_ns(self) -> int:
        true = time.time_ns()
        self._tls.true_ns = true
        reading = true + self._offset_ns + round(self._rate * (true - self.epoch_ns))
        if self.jitter_ns:
            reading += round((2.0 * self._rng.random() - 1.0) * self.jitter_ns)
        return reading

    def last_true_ns(self) -> int:
        """True time of the calling thread's latest ``now_ns`` (0 before the first)."""
        return int(getattr(self._tls, "true_ns", 0))

    def error_bound_ns(self) -> int:
        return 0

    def __repr__(self) -> str:
        return (f"SimulatedClock(offset_ns={self._offset_ns}, drift_ppm={self.drift_ppm}, "
                f"jitter_ns={self.jitter_ns})")


def _rebuild(
    offset_ns: int, drift_ppm: float, jitter_ns: int, seed: int | None, epoch_ns: int
) -> SimulatedClock:
    return SimulatedClock(offset_ns, drift_ppm, jitter_ns, seed=seed, epoch_ns=epoch_ns)
