"""The whole process killed (``streamprov run`` SIGKILLed mid-stream with all its node
processes) or its disk full: the stores open cleanly and the next run re-drives what was left
unfinished."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamprov.app import App, Settings
from streamprov.store import open_provenance_store, open_stream_log


def _ids(data: Path) -> tuple[set[int], Counter[int]]:
    log = open_stream_log(f"duckdb://{data / 'streams.duckdb'}", read_only=True)
    store = open_provenance_store(f"duckdb://{data / 'provenance.duckdb'}", read_only=True)
    try:
        logged = set(log.record_ids("demo").tolist())
        chains = (Counter(c.record_id for chunk in store.iter_window("demo", 0, 2**63 - 1)
                          for c in chunk) if store.has_stream("demo") else Counter())
    finally:
        log.close()
        store.close()
    return logged, chains


def test_killed_run_is_finished_by_the_next_run(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cmd = [sys.executable, "-m", "streamprov.cli", "run", "streamprov.examples.demo:pipeline",
           "--data-dir", str(data)]
    proc = subprocess.Popen([*cmd, "--records", "2000000"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        # the log's write-ahead file grows once records flow; the provenance file once the
        # writer has stored chains (its large commits go to the file itself, not the WAL)
        grown = [(data / "streams.duckdb.wal", 200_000), (data / "provenance.duckdb", 500_000)]
        deadline = time.monotonic() + 120
        while (not all(f.exists() and f.stat().st_size > n for f, n in grown)
               and proc.poll() is None):
            assert time.monotonic() < deadline, "no records were logged"
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every node process
        proc.wait(30)
    assert proc.returncode == -signal.SIGKILL

    logged, chains = _ids(data)  # both files open cleanly after the kill
    orphans = logged - set(chains)
    assert logged and orphans, "the kill left records logged without a chain"
    assert set(chains) <= logged

    again = subprocess.run([*cmd, "--records", "1000"], capture_output=True, text=True,
                           timeout=300, check=False, env={**os.environ, "COLUMNS": "250"})
    assert again.returncode == 0, again.stderr
    assert f"{len(orphans):,} left unfinished by an earlier run" in again.stdout
    assert "balances" in again.stdout, again.stdout
    logged_after, chains_after = _ids(data)
    assert len(logged_after) == len(logged) + 1000
    assert set(chains_after) == logged_after, "every logged record has a chain now"
    assert max(chains_after.values()) == 1
    # the clean run leaves a mark: the next run's recovery looks only above it
    assert App(Settings.resolve(data)).finished_through("demo") == max(logged_after) + 1


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 6 MB file system (tmpfs) to fill up; skipped where mounting is not permitted."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)],
                          capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {made.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_stops_the_run_clearly_and_corrupts_nothing(
    tmp_path: Path, small_disk: Path
) -> None:
    data = small_disk / "data"
    cmd = [sys.executable, "-m", "streamprov.cli", "run", "streamprov.examples.demo:pipeline"]
    full = subprocess.run([*cmd, "--records", "400000", "--data-dir", str(data)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert full.returncode == 2
    last = full.stderr.strip().splitlines()[-1]
    assert "is full" in last and "No space left on device" in last, full.stderr
    assert "Traceback" not in full.stderr

    moved = tmp_path / "moved"
    shutil.copytree(data, moved)  # the user frees space or moves the data dir
    logged, chains = _ids(moved)  # both files open cleanly
    assert logged and set(chains) <= logged and max(chains.values(), default=1) == 1
    again = subprocess.run([*cmd, "--records", "1000", "--data-dir", str(moved)],
                           capture_output=True, text=True, timeout=300, check=False,
                           env={**os.environ, "COLUMNS": "250"})
    assert again.returncode == 0, again.stderr
    assert "balances" in again.stdout, again.stdout
    logged_after, chains_after = _ids(moved)
    assert set(chains_after) == logged_after and max(chains_after.values()) == 1
