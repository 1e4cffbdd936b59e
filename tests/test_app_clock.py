"""Order correctness end to end: skewed source clocks, with and without synchronization."""

from __future__ import annotations

from pathlib import Path

from streamprov.app import App, Settings
from streamprov.clock.config import ClockConfig
from streamprov.examples.demo import build


def run_skewed(data_dir: Path, *, sync: bool) -> App:
    clock = ClockConfig.build(base_port=0, enabled=sync).with_spread_simulation(
        ["demo/source/0", "demo/source/1"], "5ms", "100ppm")
    app = App(Settings.resolve(data_dir, clock=clock))
    try:
        app.run(build(records=4_000, sources=2, rate=4_000, true_time=True))
    finally:
        app.close()
    return app


def test_skew_reorders_history_and_sync_keeps_it_within_bounds(tmp_path: Path) -> None:
    raw = run_skewed(tmp_path / "raw", sync=False).order_check("demo")
    synced = run_skewed(tmp_path / "synced", sync=True).order_check("demo")
    assert raw.records == synced.records == 4_000
    # 10 ms between the sources' clocks and records every 2 ms: many pairs change places
    assert raw.inversions_beyond_bounds > 1_000
    # synchronized, only pairs closer together than their recorded error bounds may swap
    assert synced.inversions_beyond_bounds == 0
    assert synced.inversions < raw.inversions / 10
