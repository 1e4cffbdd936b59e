"""The adaptation service applying a recommendation to a live deployment: in this process, and
to a ``streamprov run`` in another one."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from streamprov.adapt.service import AdaptationService
from streamprov.adapt.space import Candidate
from streamprov.config import Catalog
from streamprov.runtime import CaptureSink, LocalRunner, Pipeline, SyntheticSource
from streamprov.testing import identity, user_key


def test_apply_scales_the_live_deployment_and_audits_each_stage(tmp_path: Path) -> None:
    catalog = Catalog.load(None, tmp_path, cwd=Path("/nonexistent"))
    adaptation = AdaptationService(tmp_path, catalog)
    p = Pipeline("live", source=SyntheticSource(records=6_000, rate=2_000, seed=4),
                 max_parallelism=4)
    p.map("a", identity, key=user_key).map("b", identity).sink(CaptureSink())
    dep = LocalRunner(batch_size=100).start(
        p, provenance_url=f"duckdb://{tmp_path / 'provenance.duckdb'}",
        stream_log_url=f"duckdb://{tmp_path / 'streams.duckdb'}")
    adaptation.live.attach("live", dep)
    try:
        events = adaptation.apply("live", Candidate(3, "small", 256), trigger="tune t1",
                                  figures={"costPerHour": 0.3})
        assert dep.parallelism() == {"a": 3, "b": 3, "sink": 3}
        result = dep.wait(120)
    finally:
        adaptation.live.detach("live")
    assert [(e["stage"], e["from"], e["to"], e["applied"]) for e in events] == [
        ("a", 1, 3, "live"), ("b", 1, 3, "live"), ("sink", 1, 3, "live")]
    assert all(e["configurationId"] == "live-tuned" for e in events)
    assert "live-tuned" in catalog.configurations()
    trail = adaptation.scaling_events("live")
    assert {(e["stage"], e["to"]) for e in trail} == {("a", 3), ("b", 3), ("sink", 3)}
    # nothing lost or repeated across the live scaling
    ids = Counter(r["recordId"] for r in dep.captured)
    assert len(ids) == 6_000 and max(ids.values()) == 1
    assert result.delivered == 6_000


def test_apply_reaches_a_run_in_another_process(tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamprov.cli", "run", "tests.adapt.pipelines:tunable_long",
         "--data-dir", str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        marker = data / "adapt" / "running" / "tunable.json"
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.stderr.read() if proc.stderr else ""
        catalog = Catalog.load(None, data, cwd=Path("/nonexistent"))
        adaptation = AdaptationService(data, catalog)
        sent = adaptation.apply("tunable", Candidate(3, "small", 256), trigger="tune t9",
                                figures={"costPerHour": 0.3})
        assert [e["applied"] for e in sent] == ["requested"]
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    live = [e for e in adaptation.scaling_events("tunable") if e["applied"] == "live"]
    assert {(e["stage"], e["from"], e["to"]) for e in live} == {("work", 1, 3), ("sink", 1, 3)}
    assert all(e["trigger"] == "tune t9" and e["configurationId"] == "tunable-tuned"
               for e in live)
    assert not marker.exists()  # the run withdrew when it ended
