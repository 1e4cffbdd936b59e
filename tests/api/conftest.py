from __future__ import annotations

import pytest

from tests.replay.streams import Recorded, record_stream


@pytest.fixture(scope="session")
def api_recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """A data dir of its own for the API tests (they edit the catalog and run replays)."""
    return record_stream(tmp_path_factory.mktemp("api") / "data")
