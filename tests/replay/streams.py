"""A small recorded stream for replay and API tests: the demo pipeline at a known pace."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from streamprov.app import App, Settings
from streamprov.config import Catalog, Configuration, NodeType
from streamprov.examples.demo import build
from streamprov.model import Chain

RECORDS = 1200
SOURCES = 2
RATE = 1000.0  # records/s per source: the window spans about 0.6 s
BATCH = 40  # small batches spread hop-0 stamps, so pacing has gaps to keep


@dataclass(frozen=True, slots=True)
class Recorded:
    data_dir: Path
    first_ns: int
    last_ns: int
    order: list[int]
    """Record ids of the original window, branch 0, in the original order."""

    @property
    def end_ns(self) -> int:
        return self.last_ns + 1

    @property
    def span_s(self) -> float:
        return (self.last_ns - self.first_ns) / 1e9


def record_stream(data_dir: Path) -> Recorded:
    app = App(Settings.resolve(data_dir, batch_size=BATCH))
    app.run(build(records=RECORDS, sources=SOURCES, rate=RATE))
    with app.provenance() as store:
        chains: list[Chain] = [c for chunk in store.iter_window("demo", 0, 2**63 - 1)
                               for c in chunk]
    order = [c.record_id for c in chains if c.branch == 0]
    return Recorded(data_dir, chains[0].origin_ns, max(c.origin_ns for c in chains), order)


def catalog_for_tests(data_dir: Path | None = None) -> Catalog:
    """Defaults plus two configurations with the same batch size (1024)."""
    cat = Catalog.load(None, data_dir, cwd=Path("/nonexistent"))
    cat.put_node_type("tiny", NodeType(cpus=1, memory_bytes=1 << 30, cost_per_hour=0.01))
    cat.put_configuration("one", Configuration(nodes=1, node_type="tiny", batch_size=1024))
    cat.put_configuration("two", Configuration(nodes=2, node_type="medium", batch_size=1024))
    return cat
