"""The memory autoscaler on a live deployment whose state grows, then shrinks; and its
decision rule on injected samples."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from streamprov.adapt.autoscaler import MemoryAutoscaler, MemoryPolicy, PsutilMemorySampler
from streamprov.adapt.service import AdaptationService
from streamprov.config import Catalog
from streamprov.errors import InvalidInput
from streamprov.runtime import LocalRunner
from tests.adapt.pipelines import stateful

MIB = 1 << 20


def test_scales_out_under_growing_state_and_back_in_without_oscillating(
        tmp_path: Path) -> None:
    control = tmp_path / "bytes-per-record"
    control.write_text("0")
    adaptation = AdaptationService(tmp_path, Catalog.load(None, None, cwd=Path("/x")))
    # 400 records/s x 256 KiB held for 1 s: ~100 MiB of state on one node, over a ~45 MiB
    # idle process (45-55 MiB, depending on what is installed); 200 MiB nodes: high-water
    # 140 MiB, low-water 80 MiB, well above an idle node
    dep = LocalRunner(batch_size=32).start(
        stateful(control, rate=400.0),
        provenance_url=f"duckdb://{tmp_path / 'provenance.duckdb'}",
        stream_log_url=f"duckdb://{tmp_path / 'streams.duckdb'}")

    def record(decision: dict[str, Any]) -> None:
        adaptation.record_scaling("stateful", decision)

    scaler = MemoryAutoscaler(
        dep, PsutilMemorySampler(dep.pids), "hold", 200 * MIB,
        MemoryPolicy(high=0.7, low=0.4, sustain=3, cooldown_s=2.0, max_nodes=6),
        record=record)
    counts: list[int] = []

    def watch(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            scaler.step()
            counts.append(dep.parallelism()["hold"])
            time.sleep(0.25)

    try:
        watch(1.5)
        assert scaler.decisions == []  # idle: below the low-water mark, but at the minimum
        control.write_text(str(256 * 1024))
        watch(6.0)
        control.write_text("0")
        watch(5.0)
    finally:
        result = dep.stop()
    ups = [d for d in scaler.decisions if d["to"] > d["from"]]
    downs = [d for d in scaler.decisions if d["to"] < d["from"]]
    assert len(ups) == 1, scaler.decisions
    assert ups[0]["from"] == 1 and ups[0]["to"] >= 2
    assert len(downs) == 1 and downs[0]["to"] == 1, scaler.decisions
    assert scaler.decisions == ups + downs  # out, then in: no flapping in between
    assert counts[-1] == 1
    assert result.ingested == result.delivered  # scaling lost nothing
    events = adaptation.scaling_events("stateful")
    assert [e["to"] for e in reversed(events)] == [d["to"] for d in scaler.decisions]
    assert all(e["trigger"] == "memory" and e["figures"]["utilization"] for e in events)


@dataclass
class FakeDeployment:
    n: int = 1
    scaled: list[int] = field(default_factory=list)

    def parallelism(self) -> dict[str, int]:
        return {"hold": self.n}

    def scale(self, stage: str, n: int) -> None:
        self.n = n
        self.scaled.append(n)


@dataclass
class StateSamples:
    """Injected RSS: a fixed idle footprint plus ``state`` bytes spread over the nodes, with
    +/- ``jitter`` per sample."""

    dep: FakeDeployment
    state: int = 0
    jitter: int = 0
    k: int = 0

    def sample(self) -> dict[str, int]:
        self.k += 1
        sign = 1 if self.k % 2 else -1
        per = self.state // self.dep.n
        return {f"hold-{i}": 40 * MIB + per + sign * self.jitter for i in range(self.dep.n)}


def test_noise_inside_the_band_never_scales_and_a_step_converges_in_one() -> None:
    dep = FakeDeployment()
    samples = StateSamples(dep, state=30 * MIB, jitter=8 * MIB)
    now = [0.0]
    scaler = MemoryAutoscaler(dep, samples, "hold", 200 * MIB,
                              MemoryPolicy(high=0.6, low=0.3, sustain=3, cooldown_s=2.0),
                              clock=lambda: now[0])
    for _ in range(50):
        scaler.step()
        now[0] += 0.25
    assert dep.scaled == []
    samples.state = 500 * MIB  # a step change in load
    for _ in range(60):
        scaler.step()
        now[0] += 0.25
    assert dep.scaled == [8]  # capped at max_nodes (8): one decision, then steady
    samples.state = 200 * MIB
    for _ in range(60):
        scaler.step()
        now[0] += 0.25
    assert len(dep.scaled) == 1  # 200 MiB over 8 nodes sits inside the band: stays


def test_policy_errors_name_the_field() -> None:
    with pytest.raises(InvalidInput) as exc:
        MemoryPolicy(high=0.3, low=0.6)
    assert exc.value.field == "low"
    with pytest.raises(InvalidInput) as exc:
        MemoryPolicy(cooldown_s=-1)
    assert exc.value.field == "cooldownS"
