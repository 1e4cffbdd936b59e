"""Where delivered records go: nowhere, a JSON Lines file, or back to the driver (tests).

A sink's ``open`` runs in the sink instance's process. Records are handed over in their JSON
form (``streamId``, ``recordId``, ``payload``, ``provenance``), except that a sink may ask for
the raw batch to skip building it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import orjson

from streamprov.errors import InvalidInput


class SinkWriter(Protocol):
    def write(self, records: list[dict[str, Any]]) -> None:
        """Deliver records; raise to fail them all (they end ``failed``)."""
        ...

    def close(self) -> None:
        """Flush and release; called once, after the last ``write``, on a clean stop."""
        ...


class Sink(Protocol):
    """Factory of writers, one per sink instance. Must be picklable."""

    @property
    def parallel_safe(self) -> bool:
        """Whether several instances may write at once."""
        ...

    @property
    def wants_records(self) -> bool:
        """False if ``write`` ignores its argument (lets the node skip building records)."""
        ...

    def open(self, instance: int, capture: Any) -> SinkWriter: ...


class _NullWriter:
    def write(self, records: list[dict[str, Any]]) -> None:
        return None

    def close(self) -> None:
        return None


class NullSink:
    """Discards records (their chains are still stored)."""

    parallel_safe = True
    wants_records = False

    def open(self, instance: int, capture: Any) -> SinkWriter:
        return _NullWriter()


class _JsonLinesWriter:
    def __init__(self, path: Path, *, append: bool = False) -> None:
        self._final = path
        self._partial = path.with_name(path.name + ".partial")
        self._fh = open(self._partial, "ab" if append else "wb")  # noqa: SIM115

    def write(self, records: list[dict[str, Any]]) -> None:
        # out of the process before the chains are sent: a crash after this point repeats
        # these records (at least once), never loses them
        self._fh.write(b"".join(orjson.dumps(r) + b"\n" for r in records))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
        os.replace(self._partial, self._final)


class JsonLinesSink:
    """Writes one JSON record per line. The file appears whole when the pipeline stops
    cleanly (written as ``<path>.partial`` until then)."""

    parallel_safe = False
    wants_records = True

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        parent = self.path.parent
        if not parent.is_dir():
            raise InvalidInput(f"output {self.path}: directory {parent} does not exist",
                               field="output")
        if self.path.is_dir():
            raise InvalidInput(f"output {self.path} is a directory", field="output")

    def open(self, instance: int, capture: Any) -> SinkWriter:
        return _JsonLinesWriter(self.path)

    def reopen(self, instance: int, capture: Any) -> SinkWriter:
        """After a restart: go on appending to what the crashed run wrote."""
        return _JsonLinesWriter(self.path, append=True)


class _CaptureWriter:
    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def write(self, records: list[dict[str, Any]]) -> None:
        self._queue.put(records)

    def close(self) -> None:
        return None


class CaptureSink:
    """Sends delivered records back to the driver, where ``Deployment.captured`` collects
    them. For tests and small runs: everything is kept in memory."""

    parallel_safe = True
    wants_records = True

    def open(self, instance: int, capture: Any) -> SinkWriter:
        if capture is None:
            raise InvalidInput("CaptureSink needs a runner that collects captured records")
        return _CaptureWriter(capture)


def is_capture(sinks: Iterable[Sink | None]) -> bool:
    return any(isinstance(s, CaptureSink) for s in sinks)
