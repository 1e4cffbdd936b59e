"""The audit trail of scaling decisions and deviation triggers: append-only JSON Lines files in
the data dir (``adapt/scaling.jsonl``, ``adapt/triggers.jsonl``).

One line per event, written with a single ``write`` under a lock, so a reader never sees half
an event from this process; lines that do not parse (a crash mid-write) are skipped on reading.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from streamprov.errors import InvalidInput, StoreError
from streamprov.model import format_time_ns


@dataclass(slots=True)
class EventLog:
    """Append and read events (dicts with camelCase keys) of one kind."""

    path: Path
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, event: dict[str, Any]) -> dict[str, Any]:
        """Stamp ``timeNs``/``time`` (unless given) and append; returns the stored event."""
        now = int(event.get("timeNs") or time.time_ns())
        doc = {"timeNs": now, "time": format_time_ns(now), **event}
        doc["timeNs"] = now
        with self._lock:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "ab") as fh:
                    fh.write(orjson.dumps(doc) + b"\n")
            except OSError as exc:
                raise StoreError(f"cannot append to {self.path}: {exc}") from exc
        return doc

    def read(self, *, stream_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Events, newest first, optionally of one stream."""
        if not 1 <= limit <= 100_000:
            raise InvalidInput("limit must be 1..100000", field="limit")
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc}") from exc
        out: list[dict[str, Any]] = []
        for line in reversed(raw.splitlines()):
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if stream_id is None or doc.get("streamId") == stream_id:
                out.append(doc)
                if len(out) >= limit:
                    break
        return out


def scaling_log(data_dir: Path) -> EventLog:
    """Every scaling decision: ``{time, streamId, stage, from, to, trigger, figures, ...}``."""
    return EventLog(data_dir / "adapt" / "scaling.jsonl")


def trigger_log(data_dir: Path) -> EventLog:
    """Every deviation trigger: ``{time, streamId, source, reasons, observed, expected}``."""
    return EventLog(data_dir / "adapt" / "triggers.jsonl")
