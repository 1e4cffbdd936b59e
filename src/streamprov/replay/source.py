"""The replay's source: reads a reconstructed window file and emits records on schedule.

Record ``i`` is due at ``t0 + (ts_i - ts_0) / speed``, where ``t0`` is when injection starts
and ``ts_i`` the record's original hop-0 time, so the original gaps are kept (divided by the
speed). Every record due by the time the source gets to run is emitted at once, up to a batch;
the **pacing lag** of each record is ``actual emit time - due time``, kept in a histogram.
The source never waits longer to hide lag: when the pipeline cannot keep up (backpressure
blocks the source), the lag grows and the report shows it.

The source runs in its own process (one instance: a replay keeps the window's total order).
It is controlled through files beside the window file, because the driver cannot reach into
it: injection starts when ``<window>.go`` exists (every node is up), and stops early when
``<window>.cancel`` exists.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa

from streamprov.errors import PipelineError
from streamprov.metrics.histogram import LatencyHistogram
from streamprov.runtime.sources import SourceChunk

_GO_TIMEOUT_S = 300.0
_SLICE_S = 0.05
_DECODE_AHEAD = 256

QUANTUM_NS = 500_000
"""Records due within this long of the first one due are emitted together (0.5 ms): a batch
per record would cost more in inter-process messages than the pacing gains. A record so
emitted is early by at most this much; its (negative) lag counts in the pacing error."""


def go_path(window: Path) -> Path:
    return window.with_name(window.name + ".go")


def cancel_path(window: Path) -> Path:
    return window.with_name(window.name + ".cancel")


class _Decoder:
    """JSON of one file batch, decoded a slice at a time (ahead of need, while waiting)."""

    def __init__(self, rb: pa.RecordBatch) -> None:
        self.texts = rb.column("payload").to_pylist()
        self.key_texts = rb.column("key").to_pylist()
        self.payloads: list[Any] = []
        self.keys: list[Any] = []

    def decode(self, upto: int) -> None:
        loads = orjson.loads
        for k in range(len(self.payloads), min(upto, len(self.texts))):
            self.payloads.append(loads(self.texts[k]))
            kt = self.key_texts[k]
            self.keys.append(None if kt is None else loads(kt))


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
        window = Path(self.path)
        cancel = cancel_path(window)
        late = LatencyHistogram()
        error = LatencyHistogram()
        emitted = 0
        cancelled = False
        last_lag = 0
        first_emit_ns = last_emit_ns = 0
        if not self._wait_for_go(window):
            cancelled = True
        else:
            reader = pa.ipc.open_file(pa.memory_map(self.path, "r"))
            t0 = time.perf_counter_ns()
            wall0 = time.time_ns()
            ts0: int | None = None
            inv = 1.0 / self.speed
            quantum = self.quantum_ns
            for b in range(reader.num_record_batches):
                rb = reader.get_batch(b)
                ts = rb.column("origin_ts_ns").to_numpy()
                if ts0 is None and len(ts):
                    ts0 = int(ts[0])
                assert ts0 is not None
                due = t0 + ((ts - ts0) * inv).astype(np.int64)
                ids = rb.column("record_id").to_pylist()
                dec = _Decoder(rb)
                payloads, keys, decode = dec.payloads, dec.keys, dec.decode
                i, n = 0, len(ids)
                decode(min(n, batch_size))
                while i < n:
                    now = time.perf_counter_ns()
                    wait_ns = int(due[i]) - quantum // 2 - now
                    while wait_ns > 0:
                        if cancel.exists():
                            cancelled = True
                            break
                        if len(payloads) < n and wait_ns > 1_000_000:
                            decode(len(payloads) + _DECODE_AHEAD)
                        else:
                            time.sleep(min(wait_ns / 1e9, _SLICE_S))
                        now = time.perf_counter_ns()
                        wait_ns = int(due[i]) - quantum // 2 - now
                    if cancelled:
                        break
                    j = int(np.searchsorted(due, max(now, int(due[i])) + quantum // 2,
                                            side="right"))
                    j = max(i + 1, min(j, i + batch_size, n))
                    decode(j)
                    now = time.perf_counter_ns()
                    lags = now - due[i:j]
                    late.record(lags)
                    error.record(np.abs(lags))
                    last_lag = int(lags[0])
                    last_emit_ns = wall0 + (now - t0)
                    if not emitted:
                        first_emit_ns = last_emit_ns
                    emitted += j - i
                    yield SourceChunk(payloads[i:j], keys[i:j], record_ids=ids[i:j])
                    i = j
                if cancelled or cancel.exists():
                    cancelled = True
                    break
        self._report = {
            "records": emitted, "cancelled": cancelled, "pacingLagNs": late.summary(),
            "pacingErrorNs": error.summary(), "quantumNs": self.quantum_ns,
            "lagHistogram": late.to_json(), "lastLagNs": last_lag,
            "firstEmitNs": first_emit_ns, "lastEmitNs": last_emit_ns, "pid": os.getpid(),
        }

    def report(self) -> dict[str, Any]:
        return dict(self._report)
