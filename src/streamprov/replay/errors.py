"""Errors of the replay engine (below ``StreamprovError``, carrying ``field`` like the rest)."""

from __future__ import annotations

from streamprov.errors import StreamprovError


class ReplayError(StreamprovError):
    """A replay could not be started, changed or completed."""


class ReplayBusy(ReplayError):
    """Too many replays run at once; try again after ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: int = 5,
                 field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s


class ReplayConflict(ReplayError):
    """The replay is in a state that does not allow the operation (rescale a finished one)."""


class StoreBusy(ReplayError):
    """The embedded stores are held by a running deployment (DuckDB has one process at a time);
    try again after ``retry_after_s`` seconds."""

    def __init__(self, message: str, *, retry_after_s: int = 2,
                 field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after_s = retry_after_s
