"""Reconstruction of a recorded window: the window file holds the original order exactly,
whichever way the payloads are joined (inside DuckDB, or chunk by chunk)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from streamprov.app import Settings
from streamprov.replay.reconstruct import WindowFile, reconstruct
from streamprov.store import StreamLog, open_provenance_store, open_stream_log
from tests.replay.streams import Recorded


class _ElsewhereLog:
    """A log the provenance store cannot reach from inside its database."""

    def __init__(self, log: StreamLog) -> None:
        self.log = log

    def entries_table(self, stream_id: str, record_ids: Sequence[int]) -> pa.Table:
        return self.log.entries_table(stream_id, record_ids)


def _rebuild(recorded: Recorded, path: Path, join: str, chunk_rows: int
             ) -> tuple[WindowFile, pa.Table, dict[int, str]]:
    settings = Settings.resolve(recorded.data_dir)
    store = open_provenance_store(settings.provenance_url, read_only=True)
    log = open_stream_log(settings.stream_log_url, read_only=True)
    try:
        joined: Any = log if join == "in database" else _ElsewhereLog(log)
        out = reconstruct(store, joined, "demo", recorded.first_ns, recorded.end_ns, path,
                          chunk_rows=chunk_rows)
        stored = log.entries_table("demo", recorded.order)
    finally:
        log.close()
        store.close()
    with pa.OSFile(str(path), "rb") as f:
        table = pa.ipc.open_file(f).read_all()
    payloads = dict(zip(stored.column("record_id").to_pylist(),
                        stored.column("payload").to_pylist(), strict=True))
    return out, table, payloads


@pytest.mark.parametrize("chunk_rows", [97, 131_072])
@pytest.mark.parametrize("join", ["in database", "chunk by chunk"])
def test_window_file_holds_the_original_order_exactly(recorded: Recorded, tmp_path: Path,
                                                      join: str, chunk_rows: int) -> None:
    out, table, payloads = _rebuild(recorded, tmp_path / "w.arrow", join, chunk_rows)
    ids = table.column("record_id").to_pylist()
    assert ids == recorded.order
    assert out.records == len(ids) and out.missing_payloads == 0
    assert table.column("payload").to_pylist() == [payloads[i] for i in ids]
    ts = table.column("origin_ts_ns").to_pylist()
    assert ts == sorted(ts) and (out.first_ns, out.last_ns) == (ts[0], ts[-1])


def test_both_joins_agree_on_what_the_window_holds(recorded: Recorded, tmp_path: Path) -> None:
    inside, a, _ = _rebuild(recorded, tmp_path / "a.arrow", "in database", 500)
    outside, b, _ = _rebuild(recorded, tmp_path / "b.arrow", "chunk by chunk", 500)
    assert a.equals(b)
    assert inside.digest.outcomes == outside.digest.outcomes
    assert inside.digest.order == outside.digest.order
    assert (inside.chains, inside.outcomes) == (outside.chains, outside.outcomes)
