from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from streamprov.app import App, Settings
from streamprov.runtime import load_pipeline


@dataclass(frozen=True, slots=True)
class Tunable:
    data_dir: Path
    first_ns: int
    last_ns: int


@pytest.fixture(scope="session")
def tunable(tmp_path_factory: pytest.TempPathFactory) -> Tunable:
    """A data dir with one recorded run of ``pipelines.tunable`` (1,500 records at 1,500/s)."""
    data_dir = tmp_path_factory.mktemp("tunable") / "data"
    app = App(Settings.resolve(data_dir, batch_size=64))
    app.run(load_pipeline("tests.adapt.pipelines:tunable_default"))
    with app.provenance() as store:
        summary = next(s for s in store.streams() if s.stream_id == "tunable")
    assert summary.first_ns is not None and summary.last_ns is not None
    return Tunable(data_dir, summary.first_ns, summary.last_ns)
