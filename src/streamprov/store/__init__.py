"""Provenance store and stream log, chosen by URL scheme through a lazy registry.

``duckdb:///path/file.duckdb`` (or a bare path) opens the embedded DuckDB backend;
``postgresql://user@host:port/db`` the PostgreSQL one (the ``[postgres]`` extra), whose URL may
carry ``?schema=``, ``partition=``, ``retention=``, ``pool=`` and ``retry=`` (see
``streamprov.store.pgurl``).
"""

from __future__ import annotations

from streamprov.errors import StoreError
from streamprov.store.base import (
    CHAIN_ORDER,
    DEFAULT_PARTITION_NS,
    LOG_ENTRY_SCHEMA,
    PROVENANCE_SCHEMA,
    STREAM_LOG_SCHEMA,
    ChainCursor,
    LogEntry,
    ProvenanceStore,
    StreamLog,
    StreamSummary,
)

__all__ = [
    "CHAIN_ORDER",
    "DEFAULT_PARTITION_NS",
    "LOG_ENTRY_SCHEMA",
    "PROVENANCE_SCHEMA",
    "STREAM_LOG_SCHEMA",
    "ChainCursor",
    "LogEntry",
    "ProvenanceStore",
    "StreamLog",
    "StreamSummary",
    "open_provenance_store",
    "open_stream_log",
    "redact_url",
]

_POSTGRES = ("postgresql", "postgres")


def _scheme(url: str) -> str:
    if "://" not in url:
        return "duckdb"  # a bare path means an embedded DuckDB file
    return url.split("://", 1)[0].lower()


def is_server_url(url: str) -> bool:
    """Whether ``url`` names a database server (PostgreSQL), which many processes write and
    read at once, rather than an embedded DuckDB file."""
    return _scheme(url) in _POSTGRES


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for messages and logs."""
    from streamprov.store.pgurl import redact

    return redact(url)


def _unsupported(url: str, scheme: str) -> StoreError:
    return StoreError(
        f"unsupported store URL scheme {scheme!r} in {redact_url(url)}; "
        "use duckdb:///path/file.duckdb or postgresql://user@host:port/db"
    )


def _need_postgres() -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise StoreError(
            "PostgreSQL stores need the postgres extra: pip install 'streamprov[postgres]'"
        ) from exc


def open_provenance_store(
    url: str,
    *,
    read_only: bool = False,
    partition_ns: int | None = None,
    retention_ns: int | None = None,
) -> ProvenanceStore:
    """Open the provenance store at ``url``.

    ``partition_ns`` is the width of a time partition (the unit retention drops; default one
    hour); ``retention_ns``, when set, makes writes drop data older than that. For PostgreSQL
    both can also be given in the URL (``?partition=1h&retention=7d``).
    """
    scheme = _scheme(url)
    if scheme == "duckdb":
        from streamprov.store.duckdb import DuckDBProvenanceStore

        return DuckDBProvenanceStore(
            url, read_only=read_only, partition_ns=partition_ns, retention_ns=retention_ns
        )
    if scheme in _POSTGRES:
        _need_postgres()
        from streamprov.store.postgres import PostgresProvenanceStore

        return PostgresProvenanceStore(
            url, read_only=read_only, partition_ns=partition_ns, retention_ns=retention_ns
        )
    raise _unsupported(url, scheme)


def open_stream_log(
    url: str,
    *,
    read_only: bool = False,
    partition_ns: int | None = None,
    retention_ns: int | None = None,
) -> StreamLog:
    """Open the stream log at ``url`` (see ``open_provenance_store`` for the options).

    The stream log may share a PostgreSQL server, database and schema with the provenance
    store: its tables have other names.
    """
    scheme = _scheme(url)
    if scheme == "duckdb":
        from streamprov.store.duckdb import DuckDBStreamLog

        return DuckDBStreamLog(
            url, read_only=read_only, partition_ns=partition_ns, retention_ns=retention_ns
        )
    if scheme in _POSTGRES:
        _need_postgres()
        from streamprov.store.postgres import PostgresStreamLog

        return PostgresStreamLog(
            url, read_only=read_only, partition_ns=partition_ns, retention_ns=retention_ns
        )
    raise _unsupported(url, scheme)
