"""Access control of the HTTP API: one bearer token, from a file or the environment.

Without a token the API answers everyone, which is only safe on a loopback address (the
default bind). With a token, every mutating request (anything but GET, HEAD and OPTIONS) needs
``Authorization: Bearer <token>``; with ``protect_reads`` every read does too. ``/healthz``
stays open so load balancers and probes need no secret. A missing token is a 401 with
``WWW-Authenticate: Bearer``; a wrong one is a 403. The token is compared in constant time and
never logged, echoed or put in an error message.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from streamprov.api.errors import error_response
from streamprov.api.schemas import ErrorBody
from streamprov.errors import InvalidInput

TOKEN_ENV = "STREAMPROV_API_TOKEN"
MIN_TOKEN_CHARS = 16
OPEN_PATHS = frozenset({"/healthz"})
READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
SCHEME_NAME = "bearerToken"

_TOKEN_RE = re.compile(r"[\x21-\x7e]+")
"""Printable ASCII without spaces: what fits in an ``Authorization`` header as is."""


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_token(token: str, source: str) -> str:
    """The token, stripped of surrounding whitespace; ``InvalidInput`` naming ``source`` (never
    the token) when it is too short or holds characters a header cannot carry."""
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS:
        raise InvalidInput(f"{source}: the API token must have at least {MIN_TOKEN_CHARS} "
                           "characters", field="api-token")
    if not _TOKEN_RE.fullmatch(token):
        raise InvalidInput(f"{source}: the API token must be printable ASCII without spaces",
                           field="api-token")
    return token


def read_token_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"API token file {path}: {exc.strerror or exc}",
                           field="api-token-file") from None
    except UnicodeDecodeError:
        raise InvalidInput(f"API token file {path}: not UTF-8 text",
                           field="api-token-file") from None
    return check_token(text, f"API token file {path}")


def resolve_token(token_file: Path | None, configured_file: str | None,
                  config_dir: Path | None) -> str | None:
    """The API token: from ``token_file`` (the flag), else ``$STREAMPROV_API_TOKEN``, else
    ``configured_file`` (``[serve] api_token_file``, relative to ``config_dir``); None when
    none is given."""
    if token_file is not None:
        return read_token_file(token_file)
    from_env = os.environ.get(TOKEN_ENV)
    if from_env:
        return check_token(from_env, f"${TOKEN_ENV}")
    if configured_file:
        path = Path(configured_file).expanduser()
        if not path.is_absolute() and config_dir is not None:
            path = config_dir / path
        return read_token_file(path)
    return None


def needs_token(method: str, path: str, protect_reads: bool) -> bool:
    if path in OPEN_PATHS:
        return False
    return protect_reads or method.upper() not in READ_METHODS


class BearerAuth:
    """ASGI middleware: refuse requests that need the token and do not carry it (see the
    module docstring). Runs before the body is read."""

    def __init__(self, app: ASGIApp, token: str, protect_reads: bool = False) -> None:
        self.app = app
        self._expected = token.encode("ascii")
        self.protect_reads = protect_reads

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not needs_token(scope["method"], scope["path"],
                                                       self.protect_reads):
            await self.app(scope, receive, send)
            return
        header = b""
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                header = value
                break
        scheme, _, given = header.partition(b" ")
        if scheme.lower() != b"bearer" or not given.strip():
            response = error_response(
                401, "Unauthorized", "this request needs the API token: send "
                "'Authorization: Bearer <token>'", "Authorization",
                {"WWW-Authenticate": 'Bearer realm="streamprov"'})
        elif not hmac.compare_digest(given.strip(), self._expected):
            response = error_response(403, "Forbidden", "the API token is not valid",
                                      "Authorization")
        else:
            await self.app(scope, receive, send)
            return
        await response(scope, receive, send)


def document(doc: dict[str, Any], protect_reads: bool) -> dict[str, Any]:
    """``doc`` (an OpenAPI document) with the bearer scheme on every guarded operation."""
    components = doc.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME_NAME] = {
        "type": "http", "scheme": "bearer",
        "description": "The API token of `streamprov serve` (`--api-token-file`, "
        f"`${TOKEN_ENV}` or `[serve] api_token_file`)."}
    error_ref = {"$ref": f"#/components/schemas/{ErrorBody.__name__}"}
    for path, operations in doc.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict) or not needs_token(method, path, protect_reads):
                continue
            operation["security"] = [{SCHEME_NAME: []}]
            responses = operation.setdefault("responses", {})
            responses.setdefault("401", {
                "description": "No API token given (see WWW-Authenticate).",
                "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
                "content": {"application/json": {"schema": error_ref}}})
            responses.setdefault("403", {
                "description": "The API token is not valid.",
                "content": {"application/json": {"schema": error_ref}}})
    return doc
