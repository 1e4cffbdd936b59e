from __future__ import annotations

from collections import Counter

from streamprov.clock import ReplicaRing
from streamprov.hashring import HashRing

NODES = [f"pipeline/stage-{i % 7}/{i}" for i in range(3000)]


def test_order_is_owner_then_ring_successors() -> None:
    ring = ReplicaRing(5)
    for node in NODES[:200]:
        order = ring.order(node)
        assert sorted(order) == [0, 1, 2, 3, 4]
        assert order[0] == ring.owner(node)
        # the failover replica is who would own the node if its owner were gone
        without = HashRing("streamprov-clock", [m for m in range(5) if m != order[0]], 64)
        assert without.owner(node) == order[1]


def test_failover_moves_only_the_dead_replicas_nodes() -> None:
    ring = ReplicaRing(4)
    before = {n: ring.order(n) for n in NODES}
    dead = 2
    for _n, order in before.items():
        survivor = next(r for r in order if r != dead)
        if order[0] != dead:
            assert survivor == order[0]


def test_assignment_is_balanced() -> None:
    counts = Counter(ReplicaRing(4).owner(n) for n in NODES)
    assert set(counts) == {0, 1, 2, 3}
    assert min(counts.values()) > len(NODES) / 4 * 0.6


def test_adding_a_replica_moves_about_one_in_n_plus_one() -> None:
    for n in (2, 3, 4, 8):
        old, new = ReplicaRing(n), ReplicaRing(n + 1)
        moved = [node for node in NODES if old.owner(node) != new.owner(node)]
        assert all(new.owner(node) == n for node in moved)  # all to the new replica
        share = len(moved) / len(NODES)
        assert 0.5 / (n + 1) < share < 1.6 / (n + 1), (n, share)
