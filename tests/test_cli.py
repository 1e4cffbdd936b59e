"""The CLI on a real data dir: what users type, what they see, and the exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streamprov.cli import main
from streamprov.model import parse_time_ns


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    captured = capsys.readouterr()
    code = exc.value.code
    return int(code) if isinstance(code, int) else 0, captured.out, captured.err


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir after one small demo run (shared: the demo takes a few seconds)."""
    d = tmp_path_factory.mktemp("demo") / "data"
    proc = subprocess.run(
        [sys.executable, "-m", "streamprov.cli", "demo", "--records", "3000", "--data-dir",
         str(d)], capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "3,000" in proc.stdout
    assert "balances" in proc.stdout
    assert "p99" in proc.stdout
    assert "streamprov provenance show demo" in proc.stdout
    cpu = next(line for line in proc.stdout.splitlines() if "CPU per record" in line)
    assert all(f" {role} " in cpu for role in ("source", "ingest", "parse", "sink", "writer"))
    (d.parent / "demo.out").write_text(proc.stdout)
    return d


def test_streams_lists_demo(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "streams", "--data-dir", str(demo_dir), "--json")
    assert code == 0
    [row] = [json.loads(line) for line in out.splitlines()]
    assert row["streamId"] == "demo"
    assert row["records"] == 3000 and row["chains"] == 3000
    assert row["firstNs"] <= row["lastNs"]
    code, out, _ = cli(capsys, "streams", "--data-dir", str(demo_dir))
    assert "demo" in out and "3,000" in out


def test_demo_suggests_replaying_its_window_in_readable_times(
        demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = (demo_dir.parent / "demo.out").read_text()
    [line] = [x for x in out.splitlines() if "streamprov replay demo --start" in x]
    words = line.split()
    start, end = words[words.index("--start") + 1], words[words.index("--end") + 1]
    assert start.endswith("Z") and "T" in start, start
    code, streams, _ = cli(capsys, "streams", "--data-dir", str(demo_dir), "--json")
    assert code == 0
    row = json.loads(streams)
    assert parse_time_ns(start) <= row["firstNs"] <= row["lastNs"] < parse_time_ns(end)


def test_provenance_show(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "provenance", "show", "demo", "5", "--data-dir", str(demo_dir),
                       "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["streamId"] == "demo" and doc["recordId"] == 5
    assert doc["outcome"] in ("delivered", "dropped")
    assert doc["provenance"][0]["nodeId"].startswith("demo/source/")
    assert all(set(h) >= {"nodeId", "timestamp"} for h in doc["provenance"])
    code, out, _ = cli(capsys, "provenance", "show", "demo", "5", "--data-dir", str(demo_dir))
    assert "demo/source/" in out and "since hop 0" in out


def test_provenance_query_window_in_order(demo_dir: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "provenance", "query", "demo", "--start", "0", "--end", "now",
                       "--data-dir", str(demo_dir), "--json")
    assert code == 0
    chains = [json.loads(line) for line in out.splitlines()]
    assert len(chains) == 3000
    keys = [(c["provenance"][0]["timestamp"], c["provenance"][0]["logical"],
             c["provenance"][0]["nodeId"], c["recordId"]) for c in chains]
    assert keys == sorted(keys)
    mid = chains[1500]["provenance"][0]["timestamp"]
    code, out, _ = cli(capsys, "provenance", "query", "demo", "--start", str(mid), "--end",
                       "now", "--limit", "7", "--data-dir", str(demo_dir), "--json")
    got = [json.loads(line) for line in out.splitlines()]
    assert len(got) == 7
    assert all(c["provenance"][0]["timestamp"] >= mid for c in got)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["provenance", "show", "nope", "1"], "unknown stream 'nope'"),
        (["provenance", "show", "demo", "999999"], "has no record 999999"),
        (["provenance", "query", "demo", "--start", "yesterday", "--end", "now"],
         "start: 'yesterday' is not a time"),
        (["provenance", "query", "demo", "--start", "10", "--end", "5"],
         "start must be before end"),
        (["provenance", "query", "demo", "--start", "0", "--end", "now", "--limit", "0"],
         "--limit must be a positive number"),
        (["provenance", "show", "bad id!", "1"], "is not a valid id"),
    ],
)
def test_bad_input_exits_2_with_one_line(demo_dir: Path, capsys: pytest.CaptureFixture[str],
                                         args: list[str], message: str) -> None:
    code, out, err = cli(capsys, *args, "--data-dir", str(demo_dir))
    assert code == 2
    assert message in err
    assert "Traceback" not in err + out


@pytest.mark.parametrize("records", ["0", "-5"])
def test_demo_rejects_non_positive_records(tmp_path: Path, records: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "demo", "--records", records, "--data-dir", str(tmp_path / "d"))
    assert code == 2
    assert "--records must be a positive number" in err
    assert not (tmp_path / "d").exists()


def test_data_dir_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    code, _, err = cli(capsys, "demo", "--records", "10", "--data-dir", str(f))
    assert code == 2
    assert "is not a directory" in err
    assert f.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_data_dir_not_writable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "ro"
    d.mkdir(mode=0o500)
    code, _, err = cli(capsys, "demo", "--records", "10", "--data-dir", str(d))
    assert code == 2 and "not writable" in err


def test_run_jsonl_from_stdin_to_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    lines = "\n".join(json.dumps({"user": f"u{i}", "seq": i}) for i in range(50)) + "\nnope\n"
    proc = subprocess.run(
        [sys.executable, "-m", "streamprov.cli", "run", "streamprov.examples.passthrough:pipeline",
         "--input", "-", "--key-field", "user", "--output", str(out), "--stream", "lines",
         "--data-dir", str(tmp_path / "d")],
        input=lines, capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(records) == 50
    assert records[0]["provenance"][0]["nodeId"] == "passthrough/source/0"
    assert "1 failed" in proc.stdout


def test_run_unknown_pipeline(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "run", "no.such.module:p", "--data-dir", str(tmp_path))
    assert code == 2 and "cannot import no.such.module" in err
    code, _, err = cli(capsys, "run", "justaname", "--data-dir", str(tmp_path))
    assert code == 2 and "package.module:name" in err


def test_help_explains_commands(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "--help")
    assert code == 0
    for word in ("demo", "run", "streams", "provenance"):
        assert word in out


def test_demo_ends_with_a_replay_comparison(demo_dir: Path) -> None:
    replays = sorted((demo_dir / "replays").glob("*.json"))
    assert len(replays) == 2
    docs = [json.loads(p.read_text()) for p in replays]
    assert {d["report"]["configurationId"] for d in docs} == {"small", "medium"}
    assert all(d["state"] == "completed" for d in docs)


def test_replay_command(demo_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "replay", "demo", "--start", "0", "--end", "now", "--config",
                         "small", "--speed", "10", "--data-dir", str(demo_dir), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["state"] == "completed"
    assert doc["report"]["window"]["records"] == 3000
    assert doc["report"]["records"] + doc["report"]["window"]["missingPayloads"] <= 3000
    code, out, err = cli(capsys, "replay", "demo", "--start", "0", "--end", "now", "--config",
                         "medium", "--speed", "10", "--data-dir", str(demo_dir))
    assert code == 0, err
    assert "pacing lag" in out and "fidelity" in out and "hop parse" in out


@pytest.mark.parametrize(("args", "needle"), [
    (["--speed", "0"], "--speed"),
    (["--speed", "nan"], "--speed"),
    (["--config", "nope"], "unknown configuration"),
    (["--start", "5", "--end", "5"], "--start"),
    (["--start", "later"], "start"),
])
def test_replay_bad_input(demo_dir: Path, capsys: pytest.CaptureFixture[str],
                          args: list[str], needle: str) -> None:
    base = {"--start": "0", "--end": "now", "--config": "small", "--speed": "1"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    code, _, err = cli(capsys, "replay", "demo", *flat, "--data-dir", str(demo_dir))
    assert code == 2
    assert needle in err
    assert "Traceback" not in err
    assert err.count("\n") == 1


def test_serve_rejects_a_bad_port(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = cli(capsys, "serve", "--port", "70000", "--data-dir", str(tmp_path))
    assert code == 2 and "--port" in err


def test_demo_ends_with_a_short_tuning_run(demo_dir: Path) -> None:
    jobs = sorted((demo_dir / "tuning").glob("t-*.json"))
    assert len(jobs) == 1
    doc = json.loads(jobs[0].read_text())
    assert doc["state"] == "completed" and 1 <= len(doc["evaluations"]) <= 3
    assert doc["request"]["algorithm"] == "hill-climb"


def test_tune_command_and_scaling_events(demo_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    # latency bound only: whether a small node keeps up depends on the machine's load
    code, out, err = cli(capsys, "tune", "demo", "--start", "0", "--end", "now", "--p99-ms",
                         "60000", "--no-keep-up", "--budget", "2", "--sample-s", "0.3",
                         "--nodes", "1-2", "--node-types", "small", "--batch-sizes", "256",
                         "--config", "small", "--apply", "--data-dir", str(demo_dir))
    assert code == 0, err
    assert "configuration" in out and "SLO" in out and "best:" in out
    code, out, err = cli(capsys, "scaling", "events", "--data-dir", str(demo_dir), "--json")
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert events[0]["trigger"].startswith("tune t-") and events[0]["applied"] == "recorded"
    code, out, err = cli(capsys, "scaling", "events", "--stream", "demo", "--data-dir",
                         str(demo_dir))
    assert code == 0 and "tune t-" in out
    code, out, err = cli(capsys, "scaling", "triggers", "--data-dir", str(demo_dir))
    assert code == 0, err


@pytest.mark.parametrize(("args", "needle"), [
    (["--algorithm", "annealing"], "algorithm"),
    (["--budget", "0"], "budget"),
    (["--p99-ms", "-1"], "p99LatencyMs"),
    (["--nodes", "a-b"], "--nodes"),
    (["--node-types", "huge"], "unknown node type"),
])
def test_tune_bad_input(demo_dir: Path, capsys: pytest.CaptureFixture[str],
                        args: list[str], needle: str) -> None:
    base = {"--start": "0", "--end": "now", "--p99-ms": "100"}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    code, _, err = cli(capsys, "tune", "demo", *flat, "--data-dir", str(demo_dir))
    assert code == 2, err
    assert needle in err and "Traceback" not in err
    assert err.count("\n") == 1
