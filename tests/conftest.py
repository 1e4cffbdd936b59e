"""Fixtures shared by every test folder."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamprov.app import App, Settings
from tests.pg_server import ExternalServer, PgServer, postgres_server

__all__ = ["postgres_server"]
"""``postgres_server``: one throwaway PostgreSQL server for the whole session."""


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings.resolve(data_dir)


@pytest.fixture
def app(settings: Settings) -> App:
    return App(settings)


@pytest.fixture
def pg_url(postgres_server: PgServer | ExternalServer) -> Iterator[str]:
    """A URL to a schema of its own on the session's PostgreSQL server; dropped afterwards."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield postgres_server.url(schema=schema)
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
