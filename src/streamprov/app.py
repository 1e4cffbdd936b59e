"""Composition root: settings in, stores and runners out. The one place backends are wired."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from streamprov.errors import InvalidInput, NotFound, StoreError
from streamprov.model import Chain, Outcome, validate_id
from streamprov.runtime import LocalRunner, Pipeline, RunResult
from streamprov.store import ProvenanceStore, StreamLog, open_provenance_store, open_stream_log

DATA_DIR_ENV = "STREAMPROV_DATA_DIR"
DEFAULT_DATA_DIR = "streamprov-data"


class Settings(BaseModel):
    """Where data lives and how pipelines run. Built once, at the edge, then trusted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path
    provenance_url: str
    stream_log_url: str
    batch_size: int = Field(1024, ge=1, le=1_000_000)
    queue_batches: int = Field(8, ge=1, le=10_000)

    @classmethod
    def resolve(cls, data_dir: str | Path | None = None, **overrides: Any) -> Settings:
        """``data_dir`` from the flag, else ``$STREAMPROV_DATA_DIR``, else ./streamprov-data."""
        chosen = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
        path = Path(chosen).expanduser().absolute()
        return cls(
            data_dir=path,
            provenance_url=overrides.pop("provenance_url", None)
            or f"duckdb://{path / 'provenance.duckdb'}",
            stream_log_url=overrides.pop("stream_log_url", None)
            or f"duckdb://{path / 'streams.duckdb'}",
            **overrides,
        )

    def ensure_data_dir(self) -> None:
        from streamprov.store.duckdb import ensure_writable_dir

        ensure_writable_dir(self.data_dir)

    def check_readable(self) -> None:
        if self.data_dir.exists() and not self.data_dir.is_dir():
            raise StoreError(f"data dir {self.data_dir} exists and is not a directory")


@dataclass(frozen=True, slots=True)
class LatencySummary:
    count: int
    p50_ns: int
    p99_ns: int
    max_ns: int


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A finished run, as the CLI reports it: the runner's counts plus what the store holds."""

    result: RunResult
    outcomes: dict[Outcome, int]
    latency: LatencySummary
    provenance_rows: int


class App:
    """Everything a command needs, built from ``Settings``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def runner(self) -> LocalRunner:
        return LocalRunner(batch_size=self.settings.batch_size,
                           queue_batches=self.settings.queue_batches)

    @contextmanager
    def provenance(self, *, read_only: bool = True) -> Iterator[ProvenanceStore]:
        self.settings.check_readable()
        store = open_provenance_store(self.settings.provenance_url, read_only=read_only)
        try:
            yield store
        finally:
            store.close()

    @contextmanager
    def stream_log(self, *, read_only: bool = True) -> Iterator[StreamLog]:
        self.settings.check_readable()
        log = open_stream_log(self.settings.stream_log_url, read_only=read_only)
        try:
            yield log
        finally:
            log.close()

    def registry_path(self) -> Path:
        return self.settings.data_dir / "pipelines.json"

    def remember_pipeline(self, stream_id: str, pipeline: Pipeline) -> None:
        """Record which pipeline feeds ``stream_id`` so a replay can run it again."""
        if pipeline.ref is None:
            return
        import orjson

        path = self.registry_path()
        known = orjson.loads(path.read_bytes()) if path.exists() else {}
        known[stream_id] = {"pipeline": pipeline.ref, "sources": pipeline.sources,
                            "parallelism": {s.name: s.parallelism for s in pipeline.stages}}
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(known, option=orjson.OPT_INDENT_2))
        tmp.replace(path)

    def pipeline_for(self, stream_id: str) -> Pipeline:
        """The pipeline that produced ``stream_id`` (as recorded by ``run``)."""
        import orjson

        from streamprov.runtime import load_pipeline

        path = self.registry_path()
        known = orjson.loads(path.read_bytes()) if path.exists() else {}
        entry = known.get(stream_id)
        if entry is None:
            raise NotFound(f"no pipeline is recorded for stream {stream_id!r}; run it with "
                           "streamprov run first", field="streamId")
        return load_pipeline(entry["pipeline"])

    def run(self, pipeline: Pipeline, *, stream_id: str | None = None,
            on_progress: Callable[[int], None] | None = None,
            interval_s: float = 0.1) -> RunSummary:
        """Run ``pipeline`` until its source ends; report from the runner and the store."""
        self.settings.ensure_data_dir()
        self.remember_pipeline(stream_id or pipeline.name, pipeline)
        deployment = self.runner().start(
            pipeline, provenance_url=self.settings.provenance_url,
            stream_log_url=self.settings.stream_log_url, stream_id=stream_id,
        )
        outcome: dict[str, Any] = {}

        def wait() -> None:
            try:
                outcome["result"] = deployment.wait()
            except BaseException as exc:
                outcome["error"] = exc

        waiter = threading.Thread(target=wait, name="streamprov-wait", daemon=True)
        waiter.start()
        try:
            while waiter.is_alive():
                waiter.join(interval_s)
                if on_progress is not None:
                    on_progress(deployment.ingested())
        except KeyboardInterrupt:
            deployment.stop()
            raise
        if "error" in outcome:
            raise outcome["error"]
        result: RunResult = outcome["result"]
        if on_progress is not None:
            on_progress(result.ingested)
        return self.summarize(result)

    def summarize(self, result: RunResult) -> RunSummary:
        with self.provenance() as store:
            outcomes = store.outcome_counts(result.stream_id, result.replay_id)
            lat = np.asarray(store.latencies_ns(result.stream_id, result.replay_id))
        rows = result.rows_written
        if len(lat):
            p50, p99 = np.percentile(lat, [50, 99], method="nearest")
            latency = LatencySummary(len(lat), int(p50), int(p99), int(lat.max()))
        else:
            latency = LatencySummary(0, 0, 0, 0)
        return RunSummary(result, outcomes, latency, rows)

    def record_chains(self, stream_id: str, record_id: int) -> list[Chain]:
        validate_id(stream_id, "stream")
        with self.provenance() as store:
            if not store.has_stream(stream_id):
                raise NotFound(f"unknown stream {stream_id!r}", field="stream")
            chains = store.chains_for_record(stream_id, record_id)
        if not chains:
            raise NotFound(f"stream {stream_id!r} has no record {record_id}", field="record")
        return chains

    def require_stream(self, store: ProvenanceStore, stream_id: str) -> None:
        validate_id(stream_id, "stream")
        if not store.has_stream(stream_id):
            raise NotFound(f"unknown stream {stream_id!r}", field="stream")


def check_window(start_ns: int, end_ns: int) -> None:
    if start_ns >= end_ns:
        raise InvalidInput("start must be before end", field="start")
