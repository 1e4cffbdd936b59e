"""The throwaway-server helper says how to enable the PostgreSQL tests when it cannot start."""

from __future__ import annotations

import pytest

from tests import pg_server


def test_missing_binaries_say_how_to_enable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_server, "find_bindir", lambda: None)
    with pytest.raises(pg_server.PgUnavailable) as err:
        pg_server.start_server()
    assert "apt-get install" in str(err.value)
    assert "STREAMPROV_PG_BINDIR" in str(err.value)
