"""Store fixtures: every conformance test runs against each backend (DuckDB, PostgreSQL).

``backend`` is parametrized; a test asks ``stores`` for a provenance store or stream log of
the current backend, fresh for the test (a new DuckDB file; a new PostgreSQL schema on the
session's throwaway server, see ``tests/pg_server.py``). ``-k "not postgres"`` leaves the
PostgreSQL ones out.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streamprov.store import (
    ProvenanceStore,
    StreamLog,
    open_provenance_store,
    open_stream_log,
)

PARTITION_NS = 1_000_000_000
"""Partition width the conformance tests use (one second), so windows cross boundaries."""


class Stores:
    """Opens stores of one backend for one test, and closes them afterwards."""

    def __init__(self, backend: str, base_url: str) -> None:
        self.backend = backend
        self.base_url = base_url
        self._open: list[ProvenanceStore | StreamLog] = []

    def url(self, kind: str) -> str:
        if self.backend == "duckdb":
            return f"{self.base_url}/{kind}.duckdb"
        return self.base_url

    def provenance(self, **options: Any) -> ProvenanceStore:
        options.setdefault("partition_ns", PARTITION_NS)
        store = open_provenance_store(self.url("provenance"), **options)
        self._open.append(store)
        return store

    def stream_log(self, **options: Any) -> StreamLog:
        options.setdefault("partition_ns", PARTITION_NS)
        log = open_stream_log(self.url("streams"), **options)
        self._open.append(log)
        return log

    def close_all(self) -> None:
        for store in reversed(self._open):
            store.close()
        self._open.clear()


@pytest.fixture(params=["duckdb", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def stores(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Stores]:
    base = f"duckdb://{tmp_path}" if backend == "duckdb" else request.getfixturevalue("pg_url")
    s = Stores(backend, base)
    yield s
    s.close_all()
