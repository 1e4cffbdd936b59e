"""Fixtures shared by every test folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamprov.app import App, Settings
from tests.pg_server import postgres_server

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
