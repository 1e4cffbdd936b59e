"""The exception tree: one root, one subtree per subsystem.

Third-party errors (DuckDB, OS, pickling) are translated into these at the boundary where they
occur, so callers (CLI, API) only ever map ``StreamprovError`` subclasses to user-facing errors.
"""

from __future__ import annotations


class StreamprovError(Exception):
    """Root of every error streamprov raises on purpose.

    ``field`` names the input that was wrong when the error is about user input, so the CLI
    and the API can point at it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message


class InvalidInput(StreamprovError):
    """A value given by a user (flag, request field, config entry) is malformed or out of range."""


class TooLarge(InvalidInput):
    """Input over a configured size limit (bytes of a record, records in one request)."""


class NotFound(StreamprovError):
    """A named thing (stream, record, pipeline, configuration) does not exist."""


class StoreError(StreamprovError):
    """The provenance store or the stream log cannot be opened, read or written."""


class SchemaVersionError(StoreError):
    """The store on disk was written by a newer streamprov than this one."""


class PipelineError(StreamprovError):
    """A pipeline definition is invalid or a deployment failed."""


class ClockError(StreamprovError):
    """The timestamp service or a node's clock synchronization failed."""
