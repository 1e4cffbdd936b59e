"""The replay's source: reads a reconstructed window file and emits records on schedule.

Record ``i`` is due at ``t0 + (ts_i - ts_0) / speed``, where ``t0`` is when injection starts
and ``ts_i`` the record's original hop-0 time, so the original gaps are kept (divided by the
speed). A batch leaves when its first record is due and holds the records due within
``quantum_ns`` of it (when the source is late: every record already due, up to the batch
size); the **pacing lag** of each record is ``actual emit time - due time``, measured as the
batch is handed to the runtime and kept in a histogram. The source never waits longer to hide
lag: when the pipeline cannot keep up (backpressure blocks the source), the lag grows and the
report shows it.

To emit on time the source does its own work ahead (JSON decoding, loading the next file
batch) while it waits, sleeps until ``SPIN_NS`` before a batch is due and spins for the rest,
turns off garbage collection while injecting, and asks for fine timers, a short scheduler
slice and (where permitted) a higher priority: on a busy machine a sleeping process otherwise
wakes milliseconds late.

The source runs in its own process (one instance: a replay keeps the window's total order).
It is controlled through files beside the window file, because the driver cannot reach into
it: injection starts when ``<window>.go`` exists (every node is up), and stops early when
``<window>.cancel`` exists.
"""

from __future__ import annotations

import contextlib
import gc
import mmap
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from streamprov.errors import PipelineError
from streamprov.metrics.histogram import LatencyHistogram
from streamprov.runtime.sources import SourceChunk

_GO_TIMEOUT_S = 300.0
_CANCEL_EVERY_NS = 10_000_000
_DECODE_SLICE = 32
_SLICE_COST_NS = 150_000
"""Time a slice of preparation may take at most, as far as the wait loop assumes."""

QUANTUM_NS = 1_000_000
"""Records due within this long of the first one of a batch leave with it (1 ms): every batch
is a message through each of the pipeline's processes, and a message costs each of them about
a hundred microseconds whatever it holds. At 0.5 ms a 10x replay of records 0.1 ms apart sent
2,000 messages a second, about what a small pipeline's processes take on 2 cores: the source
was held back (backpressure) and emitted 2-4 ms late (lag p99 2.0-2.7 ms); at 1 ms, lateness
p99 was 0.002-0.004 ms. A record so emitted is early by less than this much; its (negative)
lag counts in the pacing error (``pacingErrorNs``: absolute), not in the lateness."""

SPIN_NS = 200_000
"""The source sleeps until this long before a batch is due and spins on the clock for the
rest: a sleeping process wakes a little late, by more when the machine is busy."""

_PRECISE_PRIORITY = -5
"""Niceness the source asks for (granted with the privilege to raise priority, else it stays
as it is): the one process whose timing is measured should not wait behind the pipeline's
nodes for a core when its batch is due."""


def go_path(window: Path) -> Path:
    return window.with_name(window.name + ".go")


def cancel_path(window: Path) -> Path:
    return window.with_name(window.name + ".cancel")


_SLICE_NS = 100_000
"""Time slice the source asks the scheduler for (Linux 6.12+): see ``_short_slice``."""
_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}


def _short_slice(slice_ns: int) -> None:
    """Ask for a short time slice (``sched_setattr`` with ``sched_runtime`` under the default
    policy; Linux 6.12+ with EEVDF, no privilege needed): a task with a short slice gets an
    earlier deadline, so it runs sooner after it wakes. Older kernels ignore it."""
    import ctypes
    import struct

    number = _SCHED_SETATTR.get(os.uname().machine)
    if number is None:
        return
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    # struct sched_attr (version 1, 56 bytes): size, policy (SCHED_OTHER), flags, nice,
    # priority, runtime (the slice), deadline, period, util_min, util_max
    attr = struct.pack("=IIQiIQQQII", 56, 0, 0, nice, 0, slice_ns, 0, 0, 0, 0)
    ctypes.CDLL(None, use_errno=True).syscall(number, 0, ctypes.create_string_buffer(attr, 56), 0)


REALTIME_ENV = "STREAMPROV_REPLAY_REALTIME"
"""Set to 0 to keep the replay source off the real-time scheduling class."""


def _precise_timers() -> tuple[bool, Callable[[], None]]:
    """Best effort, Linux: 1 us timer slack (the default 50 us makes sleeps end late), a
    higher priority when the process may raise it, a short time slice, and where permitted
    (root, CAP_SYS_NICE or an RLIMIT_RTPRIO) the lowest real-time priority (``SCHED_FIFO``
    1). Returns whether the source runs real-time.

    Real-time is what keeps the schedule when other processes want the cores: with one busy
    process beside a replay on 2 cores, lateness p99 was 1.3-1.6 ms at nice -5 and 0.01-0.03
    ms real-time. It is safe for this process: it sleeps until just before each batch is due
    and blocks when the pipeline holds it back, and the kernel's real-time throttling (by
    default 95 % of each second) leaves the rest of the machine running even if it did not.

    The second value puts scheduling back as it was (called when injection ends: the source
    may run in a process that goes on with other work).
    """
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(29, 1000, 0, 0, 0)  # PR_SET_TIMERSLACK
    nice: int | None = None
    with contextlib.suppress(Exception):
        if os.getpriority(os.PRIO_PROCESS, 0) > _PRECISE_PRIORITY:
            nice = os.getpriority(os.PRIO_PROCESS, 0)
            os.setpriority(os.PRIO_PROCESS, 0, _PRECISE_PRIORITY)
    with contextlib.suppress(Exception):
        _short_slice(_SLICE_NS)
    realtime = False
    policy: tuple[int, int] | None = None
    if os.environ.get(REALTIME_ENV, "1").strip() != "0":
        with contextlib.suppress(OSError, AttributeError):  # not permitted (or not Linux)
            policy = (os.sched_getscheduler(0), os.sched_getparam(0).sched_priority)
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
            realtime = True

    def restore() -> None:
        with contextlib.suppress(OSError, AttributeError):
            if realtime and policy is not None:
                os.sched_setscheduler(0, policy[0], os.sched_param(policy[1]))
        with contextlib.suppress(OSError):
            if nice is not None:
                os.setpriority(os.PRIO_PROCESS, 0, nice)
        with contextlib.suppress(Exception):
            if os.sched_getscheduler(0) == os.SCHED_OTHER:
                _short_slice(0)  # (0: the kernel's default slice)

    return realtime, restore


class _MappedFile:
    """The window file, memory-mapped: a batch's pages come in as they are decoded, in the
    slices the wait loop allows for, where reading a batch from the file costs up to
    milliseconds at once. Mapped pages count in the process's RSS (what the replay report
    samples) once touched, so ``release`` gives back those of the batches already sent
    (the data stays in the page cache; a page touched again comes back from there)."""

    def __init__(self, path: str) -> None:
        with open(path, "rb") as f:
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def reader(self) -> pa.BufferReader:
        return pa.BufferReader(pa.py_buffer(self._map))

    def release(self) -> None:
        with contextlib.suppress(OSError, AttributeError, ValueError):  # (best effort)
            self._map.madvise(mmap.MADV_DONTNEED)


class _Batch:
    """One file batch: due offsets, and ids and JSON turned into Python a slice at a time,
    ahead of the records' due times (never between a batch's due time and its emission)."""

    def __init__(self, rb: pa.RecordBatch, ts0: int, inv_speed: float) -> None:
        ts = rb.column("origin_ts_ns").to_numpy()
        self.offset_ns = ((ts - ts0) * inv_speed).astype(np.int64)
        self.ts0 = ts0
        self.rb = rb
        self.ids: list[int] = []
        self.payloads: list[Any] = []
        self.keys: list[Any] = []
        self.lag_ns = np.zeros(rb.num_rows, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.rb.num_rows)

    @property
    def decoded(self) -> int:
        return len(self.payloads)

    def decode(self, upto: int) -> None:
        lo = len(self.payloads)
        if upto <= lo:
            return
        part = self.rb.slice(lo, upto - lo)
        loads = orjson.loads
        self.ids += part.column("record_id").to_pylist()
        self.payloads += [loads(t) for t in part.column("payload").to_pylist()]
        self.keys += [None if t is None else loads(t) for t in part.column("key").to_pylist()]


class ReplaySource:
    """Emits the records of a window file at ``speed`` times their original pace.

    Picklable (it holds paths and numbers only); ``report`` is valid after ``read`` ends.
    """

    def __init__(self, path: str | Path, speed: float, records: int,
                 quantum_ns: int = QUANTUM_NS) -> None:
        self.path = str(path)
        self.speed = float(speed)
        self.records = records
        self.quantum_ns = quantum_ns
        self._report: dict[str, Any] = {}
        self._realtime = False

    @property
    def max_instances(self) -> int | None:
        return 1

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "speed": self.speed, "records": self.records,
                "quantum_ns": self.quantum_ns}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.path = state["path"]
        self.speed = state["speed"]
        self.records = state["records"]
        self.quantum_ns = state["quantum_ns"]
        self._report = {}
        self._realtime = False

    def _wait_for_go(self, window: Path) -> bool:
        go, cancel = go_path(window), cancel_path(window)
        deadline = time.monotonic() + _GO_TIMEOUT_S
        while not go.exists():
            if cancel.exists():
                return False
            if time.monotonic() > deadline:
                raise PipelineError(f"replay source: no start signal within {_GO_TIMEOUT_S}s")
            time.sleep(0.002)
        return True

    def read(self, index: int, count: int, batch_size: int) -> Iterator[SourceChunk]:
        """Record ``i`` of a batch leaves at its due time (the first of the batch is never
        early): the source decodes ahead while it waits, sleeps until ``SPIN_NS`` before the
        due time and spins for the rest, then measures and yields. A batch holds the records
        due within ``quantum_ns`` of its first, and when the source is late, every record
        already due (up to ``batch_size``), so it catches up without ever sending early."""
        mapped = _MappedFile(self.path)
        reader = pa.ipc.open_file(mapped.reader())
        batches: list[_Batch] = []
        if reader.num_record_batches:
            first_rb = reader.get_batch(0)
            ts0 = int(first_rb.column("origin_ts_ns")[0].as_py()) if first_rb.num_rows else 0
            batches.append(_Batch(first_rb, ts0, 1.0 / self.speed))
            batches[0].decode(len(batches[0]))  # before the start: costs no pacing
        self._realtime, restore = _precise_timers()
        # no garbage collection while injecting: a full collection stalls the schedule for
        # milliseconds, and what the source allocates (decoded payloads) holds no cycles
        collecting = gc.isenabled()
        gc.collect()
        gc.disable()
        try:
            yield from self._inject(reader, batches, batch_size, mapped)
        finally:
            restore()
            if collecting:
                gc.enable()

    def _inject(self, reader: pa.ipc.RecordBatchFileReader, batches: list[_Batch],
                batch_size: int, mapped: _MappedFile) -> Iterator[SourceChunk]:
        window = Path(self.path)
        cancel = cancel_path(window)
        late = LatencyHistogram()
        error = LatencyHistogram()
        emitted = 0
        cancelled = False
        last_lag = 0
        first_emit_ns = last_emit_ns = 0
        clock = time.perf_counter_ns
        total = reader.num_record_batches
        inv = 1.0 / self.speed
        quantum = self.quantum_ns
        ts0 = batches[0].ts0 if batches else 0
        if not self._wait_for_go(window):
            cancelled = True
            batches.clear()
        t0 = clock()
        wall0 = time.time_ns()
        loaded = len(batches)
        cancel_checked = t0

        def work_ahead() -> bool:
            """One slice of preparation (decode, or load the next file batch); False when
            there is nothing left to prepare."""
            nonlocal loaded
            for b in batches:
                if b.decoded < len(b):
                    b.decode(b.decoded + _DECODE_SLICE)
                    return True
            if loaded < total and len(batches) < 2:
                batches.append(_Batch(reader.get_batch(loaded), ts0, inv))
                loaded += 1
                return True
            return False

        while batches and not cancelled:
            cur = batches[0]
            n = len(cur)
            off = cur.offset_ns
            i = 0
            while i < n:
                due_i = t0 + int(off[i])
                j = int(np.searchsorted(off, off[i] + quantum, side="left"))
                j = max(i + 1, min(j, i + batch_size, n))
                if cur.decoded < j:
                    cur.decode(j)
                now = clock()
                # wait: prepare ahead while there is time, then sleep, then spin
                while now < due_i:
                    left = due_i - now
                    if now - cancel_checked > _CANCEL_EVERY_NS:
                        cancel_checked = now
                        if cancel.exists():
                            cancelled = True
                            break
                    if left > SPIN_NS + _SLICE_COST_NS and work_ahead():
                        pass
                    elif left > SPIN_NS:
                        time.sleep((left - SPIN_NS) / 1e9)
                    now = clock()
                if cancelled:
                    break
                if now - due_i > quantum:  # late: take every record already due
                    k = int(np.searchsorted(off, now - t0, side="right"))
                    j = max(j, min(k, i + batch_size, n))
                    if cur.decoded < j:
                        cur.decode(j)
                        now = clock()
                cur.lag_ns[i:j] = now - t0 - off[i:j]
                last_lag = int(cur.lag_ns[i])
                last_emit_ns = wall0 + (now - t0)
                if not emitted:
                    first_emit_ns = last_emit_ns
                emitted += j - i
                yield SourceChunk(cur.payloads[i:j], cur.keys[i:j], record_ids=cur.ids[i:j])
                i = j
            lags = cur.lag_ns[:i]
            late.record(lags)
            error.record(np.abs(lags))
            batches.pop(0)
            mapped.release()
            if not cancelled and not batches and loaded < total:
                work_ahead()  # (the source is behind: nothing was prepared)
            if not cancelled and cancel.exists():
                cancelled = True
        self._report = {
            "records": emitted, "cancelled": cancelled, "pacingLagNs": late.summary(),
            "pacingErrorNs": error.summary(), "quantumNs": self.quantum_ns,
            "lagHistogram": late.to_json(), "lastLagNs": last_lag,
            "realtime": self._realtime, "firstEmitNs": first_emit_ns,
            "lastEmitNs": last_emit_ns, "pid": os.getpid(),
        }

    def report(self) -> dict[str, Any]:
        return dict(self._report)
