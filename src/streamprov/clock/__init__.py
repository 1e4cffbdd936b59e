"""Time for processing nodes: physical clocks, hybrid logical clocks, synchronization.

The pieces, bottom up (see ``docs/clock.md``):

* ``PhysicalClock`` (protocol), ``SystemClock``, ``SimulatedClock`` - raw clocks;
* ``HybridLogicalClock`` - per-node stamps that strictly increase per node and along chains;
* ``SyncedClock`` + ``OffsetFilter`` - a clock corrected in software from NTP samples;
* ``SyncClient`` - the thread that takes k exchanges per interval and fails over on the ring;
* ``TimestampService`` / ``ServiceProcess`` - N NTPv4 replicas (``NtpServer``) on a
  ``ReplicaRing``, aligned to a leader or to upstream NTP servers;
* ``NodeClock`` / ``NodeClockFactory`` - what a node process builds from ``ClockConfig``;
* ``count_inversions`` - order correctness of hop-0 stamps against true generation order.
"""

from streamprov.clock.client import SyncClient, Target, query
from streamprov.clock.config import (
    ClockConfig,
    SimulationParams,
    SkewPolicy,
    parse_duration_ns,
    parse_ppm,
)
from streamprov.clock.hlc import HybridLogicalClock
from streamprov.clock.node import ClockStatus, NodeClock, NodeClockFactory, node_clock_statuses
from streamprov.clock.ntp import Exchange, MalformedPacket, NtpPacket
from streamprov.clock.order import OrderReport, count_inversions
from streamprov.clock.physical import PhysicalClock, SystemClock
from streamprov.clock.ring import ReplicaRing
from streamprov.clock.server import NtpServer, ServerStats
from streamprov.clock.service import (
    ReplicaProbe,
    ReplicaStatus,
    ServiceProcess,
    TimestampService,
    probe_replicas,
)
from streamprov.clock.simulated import SimulatedClock
from streamprov.clock.synced import Estimate, OffsetFilter, Sample, SyncedClock

__all__ = [
    "ClockConfig",
    "ClockStatus",
    "Estimate",
    "Exchange",
    "HybridLogicalClock",
    "MalformedPacket",
    "NodeClock",
    "NodeClockFactory",
    "NtpPacket",
    "NtpServer",
    "OffsetFilter",
    "OrderReport",
    "PhysicalClock",
    "ReplicaProbe",
    "ReplicaRing",
    "ReplicaStatus",
    "Sample",
    "ServerStats",
    "ServiceProcess",
    "SimulatedClock",
    "SimulationParams",
    "SkewPolicy",
    "SyncClient",
    "SyncedClock",
    "SystemClock",
    "Target",
    "TimestampService",
    "count_inversions",
    "node_clock_statuses",
    "parse_duration_ns",
    "parse_ppm",
    "probe_replicas",
    "query",
]
