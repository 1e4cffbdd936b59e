"""Errors of the adaptation layer (below ``StreamprovError``, carrying ``field``)."""

from __future__ import annotations

from streamprov.replay.errors import ReplayBusy, ReplayConflict


class TuningBusy(ReplayBusy):
    """A tuning job already runs (its replays hold the embedded stores); the API's 429."""


class TuningConflict(ReplayConflict):
    """The tuning job is in a state that does not allow the operation; the API's 409."""
