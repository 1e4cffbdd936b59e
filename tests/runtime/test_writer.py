"""The provenance writer: how long it holds chains, and a store outage (a real PostgreSQL server
stopped mid-run)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from streamprov.examples.demo import build
from streamprov.runtime import CaptureSink, LocalRunner
from streamprov.runtime.worker import flush_interval_s
from streamprov.store import open_provenance_store
from tests.pg_server import ExternalServer, PgServer


def test_store_outage_buffers_then_holds_back_and_loses_nothing(
    tmp_path: Path, postgres_server: PgServer | ExternalServer, pg_url: str
) -> None:
    if not isinstance(postgres_server, PgServer):
        import pytest

        pytest.skip("needs a server this test may stop")
    records = 24_000
    url = pg_url + "&retry=500ms"
    pipeline = build(records=records, sources=1, rate=4_000).with_sink(CaptureSink())
    runner = LocalRunner(batch_size=200, writer_buffer_rows=5_000)
    dep = runner.start(pipeline, provenance_url=url,
                       stream_log_url=f"duckdb://{tmp_path / 'streams.duckdb'}")
    seen: dict[str, Any] = {}

    def outage() -> None:
        while dep.ingested() < 4_000:
            time.sleep(0.01)
        postgres_server.stop("fast")
        seen["before"] = dep.ingested()
        time.sleep(4.0)
        seen["during"] = dep.ingested()
        postgres_server.start()

    t = threading.Thread(target=outage)
    t.start()
    try:
        result = dep.wait(300)
    finally:
        t.join()
        if not postgres_server.running:
            postgres_server.start()

    writer = next(n for n in result.nodes if n["role"] == "writer")
    assert writer["storeOutages"] >= 1
    assert writer["chains"] == records
    assert writer["heldBack"] > 0, "the full buffer held the pipeline back"
    assert any("unavailable" in w for w in result.warnings)
    assert any("back after" in w for w in result.warnings)
    # held back: far fewer records came in during the outage than the sources' pace allows
    assert seen["during"] - seen["before"] < 4.0 * 4_000 / 2
    store = open_provenance_store(url)
    try:
        chains = Counter(c.record_id for chunk in store.iter_window("demo", 0, 2**63 - 1)
                         for c in chunk)
    finally:
        store.close()
    assert set(chains) == set(range(records)) and max(chains.values()) == 1
    assert result.delivered + result.dropped + result.failed == records


def test_a_duckdb_writer_holds_chains_longer_than_a_server_writer() -> None:
    assert flush_interval_s("duckdb:///data/provenance.duckdb") == 2.0
    assert flush_interval_s("/data/provenance.duckdb") == 2.0
    assert flush_interval_s("postgresql://db.example/streamprov") == 0.5
    assert flush_interval_s("postgres://db.example/streamprov") == 0.5
