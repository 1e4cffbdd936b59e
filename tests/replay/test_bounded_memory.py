"""A replay's window is rebuilt and injected chunk by chunk: the memory reconstruction and the
replay source need must not grow with the window's size.

One store holds 1.2M recorded chains; a window of 300k of them and the whole 1.2M are each
reconstructed, then injected by the replay source, each in a fresh process that reports its
peak memory. Holding the window (or its payloads, or one sort of it) in memory would add at
least the 900k extra records' payload bytes to the bigger window's peak; the tests allow half
of that. No timing is asserted.

Reconstruction is measured by what it holds, sampled as it runs: the embedded database's
working memory (sorts, joins) by its own account, less its cache of file blocks (bounded by
the memory limit the stores are opened with, and checked against it), plus Arrow's allocated
bytes. The process's peak RSS would also count what the allocators keep after a free, which
grows with the work done, not with what is held. The source is measured by its anonymous
memory (what it allocates), sampled as it injects (``/proc``, Linux).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from streamprov.app import Settings
from streamprov.testing import PASSTHROUGH_STREAM as STREAM

SMALL = 300_000
BIG = 1_200_000
GAP_NS = 1_000
T0_NS = 1_700_000_000_000_000_000
_MB = 1 << 20
LIMIT = "64MB"
"""The stores' DuckDB memory limit in the reconstructing process (``?memory_limit=``)."""
_ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/smaps_rollup").exists(),
    reason="peak and anonymous memory are read from /proc (Linux)")

_FILL = """
import json, sys
from pathlib import Path
from streamprov.testing import fill_passthrough_window as fill
from streamprov.app import Settings

settings = Settings.resolve(Path(sys.argv[1]))
settings.ensure_data_dir()
print(json.dumps(fill(settings, int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))))
"""

_RECONSTRUCT = """
import json, sys, threading, time
from pathlib import Path
import pyarrow as pa
from streamprov.app import Settings
from streamprov.replay.reconstruct import reconstruct
from streamprov.store import open_provenance_store, open_stream_log

data_dir, stream, start, end, out, limit = sys.argv[1:7]
settings = Settings.resolve(Path(data_dir))
store = open_provenance_store(f"{settings.provenance_url}?memory_limit={limit}", read_only=True)
log = open_stream_log(f"{settings.stream_log_url}?memory_limit={limit}", read_only=True)
arrow_before = pa.total_allocated_bytes()
peak = {"work": 0, "cache": 0, "arrow": 0}
engine: dict[str, int] = {}
done = threading.Event()

def sample() -> None:
    con = store._con.cursor()
    try:
        while not done.is_set():
            tags = dict(con.sql("SELECT tag, memory_usage_bytes FROM duckdb_memory()").fetchall())
            for tag, used in tags.items():
                engine[tag] = max(engine.get(tag, 0), int(used))
            cache = int(tags.get("BASE_TABLE", 0))
            peak["work"] = max(peak["work"], sum(map(int, tags.values())) - cache)
            peak["cache"] = max(peak["cache"], cache)
            peak["arrow"] = max(peak["arrow"], pa.total_allocated_bytes() - arrow_before)
            time.sleep(0.002)
    finally:
        con.close()

sampler = threading.Thread(target=sample)
sampler.start()
try:
    window = reconstruct(store, log, stream, int(start), int(end), Path(out))
finally:
    done.set()
    sampler.join()
    log.close()
    store.close()
print(json.dumps({"records": window.records, **peak,
                  "engine": {k: v for k, v in engine.items() if v}}))
"""

_INJECT = """
import json, sys
from pathlib import Path
from streamprov.replay.source import ReplaySource, go_path

def anonymous() -> int:
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            if line.startswith("Anonymous:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no Anonymous line")

path, records = Path(sys.argv[1]), int(sys.argv[2])
go_path(path).touch()
source = ReplaySource(path, 1000.0, records)
before = peak = anonymous()
emitted = 0
for i, chunk in enumerate(source.read(0, 1, 2048)):
    emitted += len(chunk.payloads)
    if i % 16 == 0:
        peak = max(peak, anonymous())
peak = max(peak, anonymous())
print(json.dumps({"records": emitted, "before": before, "peak": peak}))
"""


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """A window of ``records`` reconstructed in a process of its own, and what it took."""

    records: int
    path: Path
    payload_bytes: int
    measured: dict[str, Any]

    @property
    def held(self) -> int:
        """Peak memory the reconstruction itself held: the embedded database's working
        memory (sorts, joins; not its cache of file blocks, which ``LIMIT`` bounds) and Arrow
        buffers."""
        return int(self.measured["work"]) + int(self.measured["arrow"])


def _python(script: str, *args: object) -> Any:
    """Run ``script`` in a fresh interpreter (from the project's root);
    returns the JSON of its last line of output."""
    done = subprocess.run([sys.executable, "-c", script, *map(str, args)], cwd=_ROOT,
                          capture_output=True, text=True, timeout=240, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _payload_bytes(path: Path) -> int:
    with pa.memory_map(str(path), "r") as f:
        table = pa.ipc.open_file(f).read_all()
        return sum(int(pc.sum(pc.binary_length(table.column(c))).as_py() or 0)
                   for c in ("payload", "key"))


@pytest.fixture(scope="module")
def windows(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Rebuilt]:
    root = tmp_path_factory.mktemp("bounded")
    settings = Settings.resolve(root / "data")
    settings.ensure_data_dir()
    # (in a child: the fill's own memory stays out of the test process)
    start, _ = _python(_FILL, settings.data_dir, BIG, GAP_NS, T0_NS)
    out: dict[int, Rebuilt] = {}
    for records in (SMALL, BIG):
        path = root / f"w{records}.arrow"
        end = start + (records - 1) * GAP_NS + 1
        measured = _python(_RECONSTRUCT, settings.data_dir, STREAM, start, end, path, LIMIT)
        assert measured["records"] == records
        out[records] = Rebuilt(records, path, _payload_bytes(path), measured)
    return out


def _mb(n: float) -> str:
    return f"{n / _MB:.1f} MB"


@pytest.mark.slow
def test_reconstruction_memory_does_not_grow_with_the_window(
        windows: dict[int, Rebuilt]) -> None:
    small, big = windows[SMALL], windows[BIG]
    extra_payloads = big.payload_bytes - small.payload_bytes
    engine = {n: ", ".join(f"{k} {_mb(v)}" for k, v in w.measured["engine"].items())
              for n, w in windows.items()}
    assert big.held - small.held < extra_payloads / 2, (
        f"reconstructing {BIG:,} records held {_mb(big.held)} at most, {SMALL:,} held "
        f"{_mb(small.held)}; the {BIG - SMALL:,} extra records' payloads are "
        f"{_mb(extra_payloads)} (allowed: half). Embedded database memory by tag at its "
        f"peak: {BIG:,} records: {engine[BIG] or '-'}; {SMALL:,} records: "
        f"{engine[SMALL] or '-'}")
    for w in windows.values():  # and its cache stayed within the limit it was given
        assert int(w.measured["cache"]) <= 64 * _MB


@pytest.mark.slow
def test_replay_source_memory_does_not_grow_with_the_window(
        windows: dict[int, Rebuilt]) -> None:
    growth: dict[int, int] = {}
    for records, rebuilt in windows.items():
        measured = _python(_INJECT, rebuilt.path, records)
        assert measured["records"] == records
        growth[records] = int(measured["peak"]) - int(measured["before"])
    extra_payloads = windows[BIG].payload_bytes - windows[SMALL].payload_bytes
    assert growth[BIG] - growth[SMALL] < extra_payloads / 2, (
        f"injecting {BIG:,} records grew the source's anonymous memory by "
        f"{_mb(growth[BIG])}, {SMALL:,} records by {_mb(growth[SMALL])}; the "
        f"{BIG - SMALL:,} extra records' payloads are {_mb(extra_payloads)} (allowed: half)")
