"""Where records come from: a seeded synthetic generator and JSON Lines (file or stdin).

A source is instantiated once per ingest instance (``index`` of ``count``) in that
instance's process and yields ``SourceChunk``s; the instance stamps hop 0 on them.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from multiprocessing import reduction
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from streamprov.errors import InvalidInput


@dataclass(slots=True)
class SourceChunk:
    """Payloads read together, plus items that could not be read (raw text, error)."""

    payloads: list[Any]
    keys: list[Any] | None = None
    failed: list[tuple[str, str]] = field(default_factory=list)
    record_ids: list[int] | None = None
    """Ids to keep (a replay re-injects records under their original ids); None: assign new."""


class Source(Protocol):
    """A record source.

    ``read`` runs in the ingest instance's process and may block (rate limiting, a slow
    file). It is called once per instance, with distinct ``index`` in ``range(count)``; the
    instances together must produce each record once. Nothing is guaranteed about records a
    crashed instance had read but not yet yielded: a source that must not lose them has to be
    replayable from its origin.
    """

    @property
    def max_instances(self) -> int | None:
        """How many instances may read in parallel (None: no limit)."""
        ...

    def read(self, index: int, count: int, batch_size: int) -> Iterator[SourceChunk]: ...


class ResumableSource(Protocol):
    """A source that can start again after its first ``skip`` records (for ``index`` of
    ``count``), producing exactly the records it would have produced from there on: what lets
    a deployment restart after a node crash without losing or repeating input."""

    def resumable(self) -> bool: ...

    def read_from(self, index: int, count: int, batch_size: int,
                  skip: int) -> Iterator[SourceChunk]: ...


def resume_reader(source: Any) -> ResumableSource | None:
    """``source`` as a ``ResumableSource`` if it can resume, else None."""
    check = getattr(source, "resumable", None)
    if callable(check) and check() and callable(getattr(source, "read_from", None)):
        return source  # type: ignore[no-any-return]
    return None


class ReportingSource(Protocol):
    """A source that has something to say when it ends (a replay's pacing lag, say).

    ``report`` is called in the source's process after ``read`` is exhausted or stopped; its
    JSON-compatible result reaches the driver in the instance's statistics under "source".
    """

    def report(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class SyntheticSource:
    """Seeded generator of ``{"user", "amount", "seq", "source"}`` payloads keyed by user.

    ``records`` is the total over all instances (None: until stopped); ``rate`` is records/s
    per instance (None: as fast as possible). The same seed, records and instance count give
    the same payloads.
    """

    records: int | None = None
    rate: float | None = None
    keys: int = 1000
    seed: int = 0
    batch_span_s: float = 0.05
    """With ``rate``: emit what has been generated at least this often."""
    true_time: bool = False
    """Have the ingest node add ``trueNs`` to every payload: the host clock read right after
    stamping hop 0, the known truth that simulated (skewed) source clocks are checked
    against."""

    def __post_init__(self) -> None:
        if self.records is not None and self.records <= 0:
            raise InvalidInput("records must be a positive number", field="records")
        if self.rate is not None and not self.rate > 0:
            raise InvalidInput("rate must be positive", field="rate")
        if self.keys <= 0:
            raise InvalidInput("keys must be positive", field="keys")
        if not self.batch_span_s > 0:
            raise InvalidInput("batch_span_s must be positive", field="batch_span_s")

    @property
    def max_instances(self) -> int | None:
        return None

    def share(self, index: int, count: int) -> int | None:
        if self.records is None:
            return None
        base, extra = divmod(self.records, count)
        return base + (1 if index < extra else 0)

    def resumable(self) -> bool:
        return True

    def read(self, index: int, count: int, batch_size: int) -> Iterator[SourceChunk]:
        return self.read_from(index, count, batch_size, 0)

    def read_from(self, index: int, count: int, batch_size: int,
                  skip: int) -> Iterator[SourceChunk]:
        # one generator per field: the values do not depend on how records are batched
        keys_rng = np.random.default_rng([self.seed, index, 0])
        amounts_rng = np.random.default_rng([self.seed, index, 1])
        total = self.share(index, count)
        produced = skip if total is None else min(skip, total)
        if produced:  # draw what the skipped records drew: the rest comes out the same
            keys_rng.integers(0, self.keys, produced)
            amounts_rng.random(produced)
        started = time.monotonic()
        if self.rate is not None:
            # a rate-limited source emits what it has every batch_span_s at least, as a live
            # feed would, instead of holding records back until a full batch has accumulated
            batch_size = max(1, min(batch_size, int(self.rate * self.batch_span_s)))
            started -= produced / self.rate
        while total is None or produced < total:
            n = batch_size if total is None else min(batch_size, total - produced)
            if self.rate is not None:
                due = started + produced / self.rate
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            keys = keys_rng.integers(0, self.keys, n).tolist()
            amounts = np.round(amounts_rng.random(n) * 100.0, 2).tolist()
            users = [f"u{k}" for k in keys]
            payloads = [
                {"user": u, "amount": a, "seq": produced + i, "source": index}
                for i, (u, a) in enumerate(zip(users, amounts, strict=True))
            ]
            produced += n
            yield SourceChunk(payloads, users)


class _InheritedFd:
    """A file descriptor handed to a worker process (stdin, for ``-``)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def __reduce__(self) -> tuple[Any, ...]:
        return (_InheritedFd._rebuild, (reduction.DupFd(self.fd),))

    @staticmethod
    def _rebuild(dup: Any) -> _InheritedFd:
        return _InheritedFd(dup.detach())


class JsonLinesSource:
    """One JSON document per line from a file, or stdin when ``path`` is ``-``.

    A line that is not valid JSON becomes a ``failed`` record (its raw text in the stream log,
    the line number in the error); blank lines are skipped. ``key_field`` names the payload
    field used as the record key.
    """

    def __init__(self, path: str, key_field: str | None = None) -> None:
        self.path = path
        self.key_field = key_field
        self._stdin: _InheritedFd | None = _InheritedFd(0) if path == "-" else None
        if path != "-":
            p = Path(path)
            if not p.is_file():
                raise InvalidInput(f"input {path}: no such file", field="input")
            if not os.access(p, os.R_OK):
                raise InvalidInput(f"input {path}: not readable", field="input")

    @property
    def max_instances(self) -> int | None:
        return 1

    def _open(self) -> io.BufferedReader:
        if self._stdin is not None:
            return os.fdopen(self._stdin.fd, "rb")
        return open(self.path, "rb")

    def resumable(self) -> bool:
        return self._stdin is None  # a file can be read again; stdin cannot

    def read(self, index: int, count: int, batch_size: int) -> Iterator[SourceChunk]:
        return self.read_from(index, count, batch_size, 0)

    def read_from(self, index: int, count: int, batch_size: int,
                  skip: int) -> Iterator[SourceChunk]:
        """Records (payloads and unreadable lines alike) after the first ``skip``."""
        kf = self.key_field
        with self._open() as fh:
            chunk = SourceChunk([], [] if kf else None)
            seen = 0
            for lineno, raw in enumerate(fh, start=1):
                line = raw.strip()
                if not line:
                    continue
                seen += 1
                if seen <= skip:
                    continue
                try:
                    payload = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    text = line.decode("utf-8", "replace")
                    chunk.failed.append((text, f"line {lineno}: invalid JSON: {exc}"))
                else:
                    chunk.payloads.append(payload)
                    if chunk.keys is not None:
                        chunk.keys.append(payload.get(kf) if isinstance(payload, dict) else None)
                if len(chunk.payloads) + len(chunk.failed) >= batch_size:
                    yield chunk
                    chunk = SourceChunk([], [] if kf else None)
            if chunk.payloads or chunk.failed:
                yield chunk
