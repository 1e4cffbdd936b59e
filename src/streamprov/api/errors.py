"""The one place where errors become HTTP answers: a JSON ``ErrorBody`` naming the field.

``StreamprovError`` subclasses map to 4xx (503 for stores that are busy or unreachable);
pydantic's request validation errors become 422 in the same shape; anything unexpected is a
500 with a one-line message and never a traceback.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from streamprov.errors import (
    InvalidInput,
    NotFound,
    PipelineError,
    StoreError,
    StreamprovError,
    TooLarge,
)
from streamprov.replay.errors import ReplayBusy, ReplayConflict, StoreBusy

log = logging.getLogger("streamprov.api")

_TYPE_NAMES = frozenset({"int", "str", "float", "bool", "json-or-python[json=int,python=int]"})
_FIELD_NAMES = {"stream": "streamId", "record": "recordId"}


def error_response(status: int, kind: str, message: str, field: str | None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"type": kind, "field": field, "message": " ".join(message.split())}}
    return JSONResponse(body, status_code=status, headers=headers)


def status_of(exc: StreamprovError) -> tuple[int, dict[str, str]]:
    if isinstance(exc, ReplayBusy):
        return 429, {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, StoreBusy):
        return 503, {"Retry-After": str(exc.retry_after_s)}
    if isinstance(exc, NotFound):
        return 404, {}
    if isinstance(exc, ReplayConflict | PipelineError):
        return 409, {}
    if isinstance(exc, StoreError):
        return 503, {"Retry-After": "5"}
    if isinstance(exc, TooLarge):
        return 413, {}
    if isinstance(exc, InvalidInput):
        return 400, {}
    return 400, {}


def _loc_field(loc: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    # drop pydantic's names of union branches and validators ("int", "function-after[...]")
    parts = [p for p in parts if p not in _TYPE_NAMES and not p.startswith(("function-",
                                                                              "dict[", "list["))]
    return ".".join(parts) or ("body" if loc and loc[0] == "body" else None)


def install(app: FastAPI) -> None:
    @app.exception_handler(StreamprovError)
    async def _streamprov(request: Request, exc: StreamprovError) -> JSONResponse:
        status, headers = status_of(exc)
        field = _FIELD_NAMES.get(exc.field or "", exc.field)
        return error_response(status, type(exc).__name__, exc.message, field, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request"}
        field = _loc_field(tuple(first.get("loc", ())))
        msg = str(first.get("msg", "invalid value"))
        if first.get("type") == "json_invalid":
            field, msg = "body", "the body is not valid JSON"
        elif first.get("type") == "missing":
            msg = "this field is required"
        return error_response(422, "InvalidInput", f"{field}: {msg}", field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = "NotFound" if exc.status_code == 404 else "HTTPError"
        return error_response(exc.status_code, kind, str(exc.detail), None,
                              dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return error_response(500, "InternalError",
                              f"unexpected {type(exc).__name__}; see the server log", None)


def document(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (an OpenAPI document) with every error answer as what it is: JSON ``ErrorBody``
    (FastAPI gives an HTML or text route's errors that route's media type)."""
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for operations in doc.get("paths", {}).values():
        for operation in operations.values():
            if not isinstance(operation, dict):
                continue
            for status, response in operation.get("responses", {}).items():
                if str(status)[0] in "45":
                    response["content"] = dict(error)
    return doc


class BodyLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` with 413 (field ``body``),
    whether it announces its length or streams it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_big = int(value) > self.max_bytes
                except ValueError:
                    too_big = False
                if too_big:
                    await self._refuse(scope, receive, send)
                    return
        seen = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413, "InvalidInput", f"body: the request body is larger than {self.max_bytes:,} "
            "bytes", "body")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass
