"""PostgreSQL store URLs: validation, streamprov's own query parameters, password redaction.

``postgresql://user[:password]@host[:port]/db[?schema=NAME&partition=1h&retention=7d&pool=4
&retry=60s&...]`` — ``schema``, ``partition``, ``retention``, ``pool`` and ``retry`` are
streamprov's; every other parameter (``sslmode``, ``connect_timeout``, ...) goes to libpq.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streamprov.errors import InvalidInput

DEFAULT_SCHEMA = "streamprov"
DEFAULT_POOL = 4
DEFAULT_RETRY_S = 60.0
DEFAULT_CONNECT_TIMEOUT_S = 5

_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,47}$")
_DURATION_RE = re.compile(r"^\s*(\d+)\s*(ns|us|ms|s|m|h|d)\s*$")
_UNIT_NS = {
    "ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000,
    "h": 3_600_000_000_000, "d": 86_400_000_000_000,
}
_FIELD = "store_url"


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (also for URLs that do not parse)."""
    out = re.sub(r"(://[^/?#@:]*:)[^/?#@]*@", r"\1***@", url)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", out)


def parse_duration_ns(text: str, what: str) -> int:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"7d"`` (also ns, us, ms) in nanoseconds, > 0."""
    m = _DURATION_RE.match(text)
    if not m or int(m.group(1)) == 0:
        raise InvalidInput(
            f"{what}: {text!r} is not a duration; use a positive number with a unit, "
            "such as 500ms, 30s, 15m, 1h or 7d",
            field=_FIELD,
        )
    return int(m.group(1)) * _UNIT_NS[m.group(2)]


@dataclass(frozen=True, slots=True)
class PgTarget:
    """A parsed store URL: what libpq gets, what messages show, and streamprov's options."""

    conninfo: str
    redacted: str
    schema: str = DEFAULT_SCHEMA
    partition_ns: int | None = None
    retention_ns: int | None = None
    pool_size: int = DEFAULT_POOL
    retry_s: float = DEFAULT_RETRY_S
    connect_timeout_s: int = DEFAULT_CONNECT_TIMEOUT_S


def parse_url(url: str) -> PgTarget:
    """Check a ``postgresql://`` URL and split off streamprov's parameters.

    Raises ``InvalidInput`` (field ``store_url``) naming what is wrong, password redacted.
    """
    shown = redact(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise InvalidInput(f"malformed PostgreSQL URL {shown}: {exc}", field=_FIELD) from exc
    if parts.scheme.lower() not in ("postgresql", "postgres"):
        raise InvalidInput(
            f"not a PostgreSQL URL: {shown}; use postgresql://user@host:port/db", field=_FIELD
        )
    if parts.fragment:
        raise InvalidInput(f"malformed PostgreSQL URL {shown}: unexpected '#'", field=_FIELD)
    if "," not in parts.netloc:  # libpq's multi-host form is left to libpq to check
        try:
            port = parts.port
        except ValueError as exc:
            raise InvalidInput(
                f"malformed PostgreSQL URL {shown}: the port must be a number from 1 to 65535",
                field=_FIELD,
            ) from exc
        if port == 0:
            raise InvalidInput(
                f"malformed PostgreSQL URL {shown}: the port must be a number from 1 to 65535",
                field=_FIELD,
            )
    if parts.path.count("/") > 1:
        raise InvalidInput(
            f"malformed PostgreSQL URL {shown}: the path must be one database name",
            field=_FIELD,
        )
    try:
        query = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise InvalidInput(
            f"malformed PostgreSQL URL {shown}: bad query string ({exc})", field=_FIELD
        ) from exc
    options: dict[str, str] = {}
    libpq: list[tuple[str, str]] = []
    for key, value in query:
        if key in ("schema", "partition", "retention", "pool", "retry"):
            options[key] = value
        else:
            libpq.append((key, value))
    connect_timeout = DEFAULT_CONNECT_TIMEOUT_S
    if not any(k == "connect_timeout" for k, _ in libpq):
        libpq.append(("connect_timeout", str(connect_timeout)))
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(libpq), ""))
    _check_libpq(conninfo, shown)
    schema = options.get("schema", DEFAULT_SCHEMA)
    if not _SCHEMA_RE.match(schema):
        raise InvalidInput(
            f"{shown}: schema {schema!r} must be 1-48 of lowercase letters, digits and '_', "
            "not starting with a digit",
            field=_FIELD,
        )
    pool = options.get("pool", str(DEFAULT_POOL))
    if not pool.isdigit() or not 1 <= int(pool) <= 256:
        raise InvalidInput(f"{shown}: pool must be a number from 1 to 256", field=_FIELD)
    return PgTarget(
        conninfo=conninfo,
        redacted=redact(urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))),
        schema=schema,
        partition_ns=(
            parse_duration_ns(options["partition"], "partition") if "partition" in options
            else None
        ),
        retention_ns=(
            parse_duration_ns(options["retention"], "retention") if "retention" in options
            else None
        ),
        pool_size=int(pool),
        retry_s=(
            parse_duration_ns(options["retry"], "retry") / 1e9 if "retry" in options
            else DEFAULT_RETRY_S
        ),
        connect_timeout_s=connect_timeout,
    )


def _check_libpq(conninfo: str, shown: str) -> None:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        conninfo_to_dict(conninfo)
    except ProgrammingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InvalidInput(f"malformed PostgreSQL URL {shown}: {reason}", field=_FIELD) from exc
