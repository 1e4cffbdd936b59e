"""Which timestamp-service replica a node synchronizes with: a consistent-hash ring.

Built on ``streamprov.hashring.HashRing`` with replica indices as members. A node's preference
order is its owner, then the replica that would own it if the owner were gone, and so on - the
next distinct replicas clockwise on the ring (removing a member hands its arcs to exactly those
successors, because the other members' points do not move). Adding a replica moves about
1/(N+1) of the nodes, all of them to the new replica.
"""

from __future__ import annotations

from functools import lru_cache

from streamprov.hashring import HashRing

RING_NAME = "streamprov-clock"


@lru_cache(maxsize=256)
def _ring(members: frozenset[int], vnodes: int) -> HashRing:
    return HashRing(RING_NAME, members, vnodes)


class ReplicaRing:
    """Assignment of node ids to replica indices ``0..replicas-1``. Immutable, cheap to copy."""

    __slots__ = ("replicas", "vnodes")

    def __init__(self, replicas: int, vnodes: int = 64) -> None:
        if replicas < 1:
            raise ValueError("a ring needs at least one replica")
        self.replicas = replicas
        self.vnodes = vnodes

    def owner(self, node_id: str) -> int:
        """The replica that owns ``node_id``."""
        return _ring(frozenset(range(self.replicas)), self.vnodes).owner(node_id)

    def order(self, node_id: str) -> tuple[int, ...]:
        """Every replica, in the order ``node_id`` tries them: owner first, then ring
        successors (failover order)."""
        remaining = set(range(self.replicas))
        out: list[int] = []
        while remaining:
            member = _ring(frozenset(remaining), self.vnodes).owner(node_id)
            out.append(member)
            remaining.discard(member)
        return tuple(out)
