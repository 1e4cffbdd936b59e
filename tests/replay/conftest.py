from __future__ import annotations

import pytest

from tests.replay.streams import Recorded, record_stream


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Recorded:
    """A data dir holding one run of the demo pipeline (shared: a run takes seconds)."""
    return record_stream(tmp_path_factory.mktemp("recorded") / "data")
