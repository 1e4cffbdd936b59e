"""Pipelines for the adaptation tests (module level: their functions run in node processes).

* ``work``: a stage that costs ``PER_RECORD_S`` of sleep per record, so a node has a known
  capacity and the configuration search has a landscape to explore with real replays;
* ``hold``: a windowed stage whose state (anonymous memory, touched page by page) grows with
  the bytes per record named in a control file, and drains ``WINDOW_S`` after the records;
* ``slow``: sleeps per record while a flag file exists (an injected slowdown).
"""

from __future__ import annotations

import mmap
import os
import time
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any

from streamprov.runtime import NullSink, Pipeline, SyntheticSource

PER_RECORD_S = 0.0008
WINDOW_S = 1.0
SLOW_ENV = "STREAMPROV_TEST_SLOW_FLAG"

_ONES = memoryview(b"\x01" * (4 << 20))
_STATE: deque[tuple[float, mmap.mmap]] = deque()
_CONTROL: dict[str, Any] = {"checked": 0.0, "size": 0}


def work(p: dict[str, Any]) -> dict[str, Any]:
    time.sleep(PER_RECORD_S)
    return p


def hold(control: str, p: dict[str, Any]) -> dict[str, Any]:
    now = time.monotonic()
    if now - float(_CONTROL["checked"]) > 0.05:
        try:
            _CONTROL["size"] = int(Path(control).read_text() or 0)
        except (OSError, ValueError):
            _CONTROL["size"] = 0
        _CONTROL["checked"] = now
    while _STATE and _STATE[0][0] < now - WINDOW_S:
        _STATE.popleft()[1].close()
    size = min(int(_CONTROL["size"]), len(_ONES))
    if size > 0:
        m = mmap.mmap(-1, size)
        m.write(_ONES[:size])
        _STATE.append((now, m))
    return p


def slow(flag: str, p: dict[str, Any]) -> dict[str, Any]:
    if os.path.exists(flag):
        time.sleep(0.012)  # 83 records/s: far below the 300/s the stream arrives at
    return p


def tunable(records: int = 1500, rate: float = 1500.0) -> Pipeline:
    """source -> work -> sink, ``rate`` records/s: one node keeps up with ~1,100/s."""
    return (Pipeline("tunable", source=SyntheticSource(records=records, rate=rate, seed=3),
                     sources=1)
            .map("work", work).sink(NullSink()))


def tunable_default() -> Pipeline:
    return tunable()


def stateful(control: Path, rate: float = 400.0) -> Pipeline:
    """source (until stopped) -> hold -> sink."""
    return (Pipeline("stateful", source=SyntheticSource(records=None, rate=rate, seed=5),
                     sources=1)
            .map("hold", partial(hold, str(control))).sink(NullSink()))


def slowable(records: int | None = None, rate: float = 300.0) -> Pipeline:
    """source -> slow (while the flag named by $STREAMPROV_TEST_SLOW_FLAG exists) -> sink."""
    flag = os.environ.get(SLOW_ENV, "/nonexistent/flag")
    return (Pipeline("slowable", source=SyntheticSource(records=records, rate=rate, seed=9),
                     sources=1)
            .map("slow", partial(slow, flag)).sink(NullSink()))


def slowable_recorded() -> Pipeline:
    """``slowable`` with 450 records (1.5 s at 300/s), for recording and replaying."""
    return slowable(records=450)


HOLD_CONTROL_ENV = "STREAMPROV_TEST_HOLD_CONTROL"


def stateful_run() -> Pipeline:
    """``stateful`` with an end (6,000 records at 400/s, 15 s) and its control file named by
    $STREAMPROV_TEST_HOLD_CONTROL: for ``streamprov run --autoscale``."""
    control = os.environ.get(HOLD_CONTROL_ENV, "/nonexistent/control")
    return (Pipeline("stateful", source=SyntheticSource(records=6_000, rate=400.0, seed=5),
                     sources=1, max_parallelism=4)
            .map("hold", partial(hold, control)).sink(NullSink()))


def tunable_long() -> Pipeline:
    """``tunable`` for 8 s (8,000 records at 1,000/s): a run to scale from elsewhere."""
    return tunable(records=8_000, rate=1_000.0)
