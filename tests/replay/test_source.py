"""The replay source on its own: what it emits and in which order (never how fast: unit tests
do not assert on timing)."""

from __future__ import annotations

import gc
import os
import pickle
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pytest

from streamprov.replay.reconstruct import WINDOW_FILE_SCHEMA
from streamprov.replay.source import REALTIME_ENV, ReplaySource, cancel_path, go_path
from streamprov.runtime import SourceChunk


def _window(path: Path, n: int, gap_ns: int, batch_rows: int) -> Path:
    ids = np.arange(n, dtype=np.int64) * 7
    table = pa.table([pa.array(ids), pa.array(10**18 + np.arange(n) * gap_ns),
                      pa.array([None if i % 3 else f'"k{i}"' for i in range(n)], pa.string()),
                      pa.array([orjson.dumps({"seq": i, "tags": [i, "x"]}).decode()
                                for i in range(n)])], schema=WINDOW_FILE_SCHEMA)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, WINDOW_FILE_SCHEMA) as w:
        for part in table.to_batches(max_chunksize=batch_rows):
            w.write_batch(part)
    return path


def test_every_record_leaves_once_in_file_order(tmp_path: Path) -> None:
    n = 1_000
    path = _window(tmp_path / "w.arrow", n, 20_000, batch_rows=128)  # 20 us apart
    go_path(path).touch()
    source = pickle.loads(pickle.dumps(ReplaySource(path, 10.0, n)))
    chunks: list[SourceChunk] = list(source.read(0, 1, 16))
    assert all(0 < len(c.payloads) <= 16 for c in chunks)
    ids = [r for c in chunks for r in (c.record_ids or [])]
    assert ids == [7 * i for i in range(n)]
    assert [p for c in chunks for p in c.payloads] == [{"seq": i, "tags": [i, "x"]}
                                                        for i in range(n)]
    assert [k for c in chunks for k in (c.keys or [])] == [
        None if i % 3 else f"k{i}" for i in range(n)]
    report = source.report()
    assert report["records"] == n and report["cancelled"] is False
    assert report["pacingLagNs"]["count"] == n
    assert gc.isenabled()  # collection is off only while injecting


def test_cancel_file_stops_injection(tmp_path: Path) -> None:
    n = 200
    path = _window(tmp_path / "w.arrow", n, 10_000_000, batch_rows=50)  # 10 ms apart
    go_path(path).touch()
    source = ReplaySource(path, 1.0, n)
    got = 0
    for chunk in source.read(0, 1, 8):
        got += len(chunk.payloads)
        if got >= 3:
            cancel_path(path).touch()
    report = source.report()
    assert report["cancelled"] is True
    assert 3 <= report["records"] == got < n
    assert gc.isenabled()


def _scheduling() -> tuple[int, int]:
    return os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0)


def test_scheduling_is_as_before_once_injection_ends(tmp_path: Path) -> None:
    path = _window(tmp_path / "w.arrow", 50, 20_000, batch_rows=16)
    go_path(path).touch()
    before = _scheduling()
    during: list[tuple[int, int]] = []
    source = ReplaySource(path, 10.0, 50)
    for _ in source.read(0, 1, 8):
        during.append(_scheduling())
    assert _scheduling() == before
    report = source.report()
    if report["realtime"]:  # (where the process may use the real-time class)
        assert during[0][0] == os.SCHED_FIFO


def test_real_time_scheduling_can_be_turned_off(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REALTIME_ENV, "0")
    path = _window(tmp_path / "w.arrow", 20, 20_000, batch_rows=16)
    go_path(path).touch()
    source = ReplaySource(path, 10.0, 20)
    schedulers = {os.sched_getscheduler(0) for _ in source.read(0, 1, 8)}
    assert source.report()["realtime"] is False
    assert os.SCHED_FIFO not in schedulers
