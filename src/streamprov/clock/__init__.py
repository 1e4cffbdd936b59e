"""Time for processing nodes: physical clocks, hybrid logical clocks, synchronization."""

from streamprov.clock.hlc import HybridLogicalClock
from streamprov.clock.physical import PhysicalClock, SystemClock

__all__ = ["HybridLogicalClock", "PhysicalClock", "SystemClock"]
