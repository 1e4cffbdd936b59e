"""``streamprov run --autoscale``: the memory autoscaler on a real run, from the terminal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from streamprov.cli import main
from tests.adapt.pipelines import HOLD_CONTROL_ENV

TOML = """
[node_types.tiny]
cpus = 1
memory_bytes = 209715200
cost_per_hour = 0.01
"""


def test_run_scales_a_stage_out_on_memory_and_back_in(tmp_path: Path) -> None:
    control = tmp_path / "bytes-per-record"
    control.write_text("0")
    toml = tmp_path / "streamprov.toml"
    toml.write_text(TOML)
    data = tmp_path / "data"
    env = {**os.environ, HOLD_CONTROL_ENV: str(control), "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamprov.cli", "run", "tests.adapt.pipelines:stateful_run",
         "--autoscale", "hold", "--node-type", "tiny", "--memory-high", "0.7",
         "--memory-low", "0.4", "--cooldown", "1.5", "--config-file", str(toml),
         "--data-dir", str(data)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    trail = data / "adapt" / "scaling.jsonl"
    try:
        time.sleep(3.0)
        control.write_text(str(256 * 1024))  # ~100 MiB of state on one 200 MiB node
        deadline = time.monotonic() + 60  # until the scale-out is on the audit trail
        while ((not trail.exists() or not trail.read_text().strip()) and proc.poll() is None
               and time.monotonic() < deadline):
            time.sleep(0.1)
        time.sleep(1.0)
        control.write_text("0")  # the state drains within a second
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    lines = [ln for ln in stdout.splitlines() if ln.startswith("memory autoscaler on hold")]
    assert len(lines) >= 2, stdout
    assert "1 -> " in lines[0] and "above the high-water mark" in lines[0]
    assert "-> 1 nodes" in lines[-1] and "below the low-water mark" in lines[-1]

    events = subprocess.run(
        [sys.executable, "-m", "streamprov.cli", "scaling", "events", "--json",
         "--data-dir", str(data)], capture_output=True, text=True, check=True)
    docs = [json.loads(ln) for ln in events.stdout.splitlines() if ln.strip()]
    got = docs if isinstance(docs[0], dict) and "trigger" in docs[0] else docs[0]["events"]
    memory = [d for d in got if d.get("trigger") == "memory"]
    assert len(memory) == len(lines)
    assert all(d["streamId"] == "stateful" and d["applied"] == "live" for d in memory)


@pytest.mark.parametrize(("args", "message"), [
    (["--autoscale", "nope"], "has no stage 'nope'"),
    (["--autoscale", "hold", "--node-type", "nope"], "nope"),
    (["--autoscale", "hold", "--memory-high", "0.2", "--memory-low", "0.5"], "low < high"),
])
def test_autoscale_options_are_checked_before_anything_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "tests.adapt.pipelines:stateful_run", "--data-dir", str(tmp_path / "d"),
              *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "d" / "streams.duckdb").exists()
