"""SyncHistory: bounded, evenly thinned, never narrower than the clock's bound was."""

from __future__ import annotations

from itertools import pairwise

import pytest

from streamprov.clock.history import SyncHistory


def test_short_history_keeps_every_round() -> None:
    h = SyncHistory(max_points=10)
    for i in range(5):
        h.add(i * 1_000, -i, 100 + i)
    assert h.points() == [(i * 1_000, -i, 100 + i) for i in range(5)]


def test_long_history_is_thinned_evenly_and_keeps_the_widest_bound() -> None:
    h = SyncHistory(max_points=8)
    rounds = 1_000
    for i in range(rounds):
        h.add(i, i, 10_000 if i == 333 else i % 7)
    pts = h.points()
    assert 4 <= len(pts) <= 8
    times = [t for t, _, _ in pts]
    assert times == sorted(times) and times[-1] == rounds - 1
    steps = {b - a for a, b in pairwise(times)}
    assert len(steps) <= 2  # evenly spaced, but for the rounds not yet making up a point
    # the one wide round survives thinning, in the point that covers it
    covering = next(p for p in pts if p[0] >= 333)
    assert covering[2] == 10_000
    assert max(e for _, _, e in pts) == 10_000
    # a point's offset is its last round's
    assert all(o == t for t, o, _ in pts)


def test_too_small_a_history_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        SyncHistory(max_points=1)
