"""Choosing the runner from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from streamprov.cli import main


@pytest.mark.parametrize(("args", "message"), [
    (["--runner", "spark"], "--runner must be 'local' or 'ray'"),
    (["--ray-address", "head:6379"], "--ray-address needs --runner ray"),
])
def test_bad_runner_options(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                            args: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "streamprov.examples.passthrough:pipeline", *args,
              "--data-dir", str(tmp_path)])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_run_on_ray_stores_the_same_chains(tmp_path: Path) -> None:
    d = tmp_path / "d"
    proc = subprocess.run(
        [sys.executable, "-m", "streamprov.cli", "run", "streamprov.examples.passthrough:pipeline",
         "--records", "500", "--runner", "ray", "--data-dir", str(d)],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "500 delivered" in proc.stdout
    show = subprocess.run(
        [sys.executable, "-m", "streamprov.cli", "provenance", "show", "passthrough", "7",
         "--json", "--data-dir", str(d)], capture_output=True, text=True, timeout=60, check=True)
    chain = json.loads(show.stdout)
    assert [h["nodeId"].split("@")[0] for h in chain["provenance"]] == [
        "passthrough/source/0", "passthrough/pass/0", "passthrough/sink/0"]
