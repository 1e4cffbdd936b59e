"""Clock plot data: offsets and bounds of the last run's nodes over their sync rounds."""

from __future__ import annotations

from itertools import pairwise

from streamprov.observe.series import clock_offsets
from tests.observe.demo import Demo


def test_clock_offsets_carry_each_nodes_sync_history() -> None:
    status = [{"nodeId": "p/a/0", "offsetNs": -2_000_000, "errorNs": 300_000,
               "lastSyncNs": 3_000_000_000, "withinTolerance": True,
               "history": [[1_000_000_000, -1_000_000, 100_000],
                           [3_000_000_000, -2_000_000, 500_000]]},
              {"nodeId": "p/b/0", "offsetNs": 5, "errorNs": 1, "lastSyncNs": 2}]
    a, b = clock_offsets(status)
    assert a["history"] == {"t": [1.0, 3.0], "offsetMs": [-1.0, -2.0], "errorMs": [0.1, 0.5]}
    assert (a["offsetMs"], a["errorMs"]) == (-2.0, 0.3)
    # a status written before sync histories existed plots as its last sync only
    assert b["history"] == {"t": [], "offsetMs": [], "errorMs": []}


def test_the_last_runs_clock_status_keeps_sync_histories(demo: Demo) -> None:
    nodes = demo.app().clock_status()["nodes"]
    synced = [n for n in nodes if n["synced"]]
    assert synced and all(n["history"] for n in synced)
    for n in nodes:
        times = [t for t, _, _ in n["history"]]
        assert all(a < b for a, b in pairwise(times))
        assert len(times) <= 200
