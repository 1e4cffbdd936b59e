"""Physical clocks a node reads its time from.

A ``PhysicalClock`` is the node's best estimate of true time (after any synchronization
correction) plus a bound on how wrong that estimate may be.
"""

from __future__ import annotations

import time
from typing import Protocol


class PhysicalClock(Protocol):
    """A source of corrected physical time.

    ``now_ns`` returns nanoseconds since the Unix epoch; it may go backwards (a sync correction
    or a clock step), which is why nodes stamp through a ``HybridLogicalClock`` and never read it
    directly. ``error_bound_ns`` bounds ``|now_ns() - true time|``; 0 means "no bound known".
    Both must be cheap (called once per batch) and must never block.
    """

    def now_ns(self) -> int: ...

    def error_bound_ns(self) -> int: ...


class SystemClock:
    """The host's clock, uncorrected; no error bound is known."""

    def now_ns(self) -> int:
        return time.time_ns()

    def error_bound_ns(self) -> int:
        return 0

    def at_host_ns(self, host_ns: int) -> int:
        """What this clock read at host time ``host_ns`` (for kernel packet timestamps)."""
        return host_ns
