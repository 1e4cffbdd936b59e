"""Replay records (request, state, progress, report) kept as JSON files in the data dir.

One file per replay under ``<data dir>/replays/``, replaced atomically on every change, so
reports survive a restart and listing never needs the provenance store (which a running
replay's writer process holds). A replay found unfinished when the registry opens was cut off
by a stop of the process that ran it; it is marked ``failed`` with that reason.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import orjson

from streamprov.errors import NotFound, StoreError
from streamprov.model import validate_id
from streamprov.replay.request import ReplayState

INTERRUPTED = "interrupted: the process running this replay stopped before it finished"


class ReplayRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()

    def _path(self, replay_id: str) -> Path:
        return self.root / f"{replay_id}.json"

    def recover(self) -> int:
        """Mark replays left unfinished by an earlier process as failed; drop their files."""
        fixed = 0
        if not self.root.is_dir():
            return 0
        for path in self.root.glob("*.json"):
            doc = self._read(path)
            if doc is None or ReplayState(doc.get("state", "failed")).finished:
                continue
            doc["state"] = ReplayState.FAILED.value
            doc["error"] = {"message": INTERRUPTED, "field": None}
            self.save(doc)
            fixed += 1
        for leftover in self.root.glob("*.window.arrow*"):
            leftover.unlink(missing_ok=True)
        return fixed

    def save(self, doc: dict[str, Any]) -> None:
        with self._lock:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                path = self._path(doc["replayId"])
                tmp = path.with_suffix(".tmp")
                tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
                tmp.replace(path)
            except OSError as exc:
                raise StoreError(f"cannot save replay {doc['replayId']}: {exc}") from exc

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            doc = orjson.loads(path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        return doc if isinstance(doc, dict) else None

    def get(self, replay_id: str) -> dict[str, Any]:
        validate_id(replay_id, "replayId")
        doc = self._read(self._path(replay_id))
        if doc is None:
            raise NotFound(f"unknown replay {replay_id!r}", field="replayId")
        return doc

    def list(self, stream_id: str | None = None) -> list[dict[str, Any]]:
        """Replays, newest first, optionally of one stream."""
        if not self.root.is_dir():
            return []
        docs = [d for p in self.root.glob("*.json") if (d := self._read(p)) is not None]
        if stream_id is not None:
            docs = [d for d in docs if d.get("request", {}).get("streamId") == stream_id]
        return sorted(docs, key=lambda d: d.get("createdNs", 0), reverse=True)
