"""Replay: rebuild a window of a stream, provision a configuration, re-inject it at a speed,
and report how the configuration did (see ``engine``)."""

from streamprov.replay.engine import ReplayEngine
from streamprov.replay.errors import ReplayBusy, ReplayConflict, ReplayError, StoreBusy
from streamprov.replay.request import OutputSink, ReplayRequest, ReplayState

__all__ = [
    "OutputSink",
    "ReplayBusy",
    "ReplayConflict",
    "ReplayEngine",
    "ReplayError",
    "ReplayRequest",
    "ReplayState",
    "StoreBusy",
]
