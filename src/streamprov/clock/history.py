"""A node clock's synchronization history: (time, offset, error bound) per sync round, thinned
so that a run of any length keeps at most ``max_points`` evenly spaced points.

Each point covers the rounds since the point before it: its time and offset are those of the
last of them, its error bound the widest bound the clock had during them (the bound grows
between syncs, so this is the value just before a sync, or during an outage the value when
the round failed). Thinning merges neighbouring points the same way, so a thinned history still
shows every excursion beyond the tolerance, never a narrower bound than the clock had.
"""

from __future__ import annotations

import threading

Point = tuple[int, int, int]
"""``(time_ns, offset_ns, error_ns)``: Unix ns of the node's corrected clock, reference minus
raw clock, and the widest error bound over the point's rounds."""

MAX_POINTS = 200


def _merge(a: Point, b: Point) -> Point:
    return (b[0], b[1], max(a[2], b[2]))


class SyncHistory:
    """Bounded history of sync rounds; ``add`` from the sync thread, ``points`` from any."""

    def __init__(self, max_points: int = MAX_POINTS) -> None:
        if max_points < 2:
            raise ValueError("a history keeps at least 2 points")
        self.max_points = max_points
        self._points: list[Point] = []
        self._stride = 1
        """Rounds per point; doubles whenever the points are thinned."""
        self._pending: Point | None = None
        self._pending_rounds = 0
        self._lock = threading.Lock()

    def add(self, time_ns: int, offset_ns: int, error_ns: int) -> None:
        """One round's figures (see ``Point``)."""
        point: Point = (time_ns, offset_ns, error_ns)
        with self._lock:
            if self._pending is not None:
                point = _merge(self._pending, point)
            self._pending_rounds += 1
            if self._pending_rounds < self._stride:
                self._pending = point
                return
            self._pending, self._pending_rounds = None, 0
            self._points.append(point)
            if len(self._points) >= self.max_points:
                pts = self._points
                thinned = [_merge(pts[i], pts[i + 1]) for i in range(0, len(pts) - 1, 2)]
                if len(pts) % 2:
                    thinned.append(pts[-1])
                self._points = thinned
                self._stride *= 2

    def points(self) -> list[Point]:
        """The points so far, oldest first (rounds not yet making up a point are the last)."""
        with self._lock:
            pending = [] if self._pending is None else [self._pending]
            return [*self._points, *pending]

    def __len__(self) -> int:
        return len(self.points())
