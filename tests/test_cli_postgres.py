"""The CLI with both stores on a real PostgreSQL server (``--store`` and the environment)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any


def streamprov(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "streamprov.cli", *args], capture_output=True,
                          text=True, timeout=300, check=False, env=env)


def test_run_and_query_with_postgres_stores(tmp_path: Path, postgres_server: Any) -> None:
    url = postgres_server.url(schema=f"cli_{uuid.uuid4().hex[:8]}")
    d = str(tmp_path / "d")
    ran = streamprov("--store", url, "run", "streamprov.examples.passthrough:pipeline",
                     "--records", "800", "--data-dir", d)
    assert ran.returncode == 0, ran.stderr
    assert "800 delivered" in ran.stdout
    assert "postgresql://" in ran.stdout and "duckdb" not in ran.stdout
    assert not (tmp_path / "d" / "provenance.duckdb").exists()
    env = {**os.environ, "STREAMPROV_STORE": url}
    listed = streamprov("streams", "--json", "--data-dir", d, env=env)
    assert listed.returncode == 0, listed.stderr
    [row] = [json.loads(x) for x in listed.stdout.splitlines()]
    assert row["streamId"] == "passthrough" and row["records"] == row["chains"] == 800
    shown = streamprov("provenance", "show", "passthrough", "3", "--json", "--data-dir", d,
                       env=env)
    assert json.loads(shown.stdout)["provenance"][0]["nodeId"] == "passthrough/source/0"


def test_unreachable_store_is_one_line_with_password_hidden(tmp_path: Path) -> None:
    got = streamprov("--store", "postgresql://u:hunter2@127.0.0.1:1/db?connect_timeout=1",
                     "streams", "--data-dir", str(tmp_path))
    assert got.returncode == 2
    assert "hunter2" not in got.stderr and "Traceback" not in got.stderr
    assert len(got.stderr.strip().splitlines()) == 1


def test_store_and_runner_from_the_config_file(tmp_path: Path, postgres_server: Any) -> None:
    url = postgres_server.url(schema=f"toml_{uuid.uuid4().hex[:8]}")
    toml = f'[store]\nurl = "{url}"\n\n[runtime]\nrunner = "local"\n'
    (tmp_path / "streamprov.toml").write_text(toml)
    got = subprocess.run(
        [sys.executable, "-m", "streamprov.cli", "run", "streamprov.examples.passthrough:pipeline",
         "--records", "300", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert got.returncode == 0, got.stderr
    assert "postgresql://" in got.stdout and "300 delivered" in got.stdout
    (tmp_path / "streamprov.toml").write_text('[runtime]\nrunner = "spark"\n')
    bad = subprocess.run([sys.executable, "-m", "streamprov.cli", "streams"], capture_output=True,
                         text=True, timeout=60, check=False, cwd=tmp_path)
    assert bad.returncode == 2 and "runtime.runner" in bad.stderr
