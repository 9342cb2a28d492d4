"""Error responses: how the search service answers errors: a status per error type, JSON `detail`, no internals.

A user's mistake gets a 4xx whose `detail` says what was wrong and what to do;
anything else is a 500 with a fixed message, its traceback only in the log.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from retrieval.errors import RetrievalError
from retrieval.serve.query_parsing import BadQueryError, QueryTooLargeError, QueryValidationError
from retrieval.serve.guards import BodyTooLargeError
from retrieval.serve.registry import AddLimitError, DuplicateKeyError, UnknownIndexError, UnknownKeyError

log = logging.getLogger("clipline.serve")
INTERNAL_ERROR = "internal error; the server log has the details"


class UnsupportedMediaError(RetrievalError):
    """The request's Content-Type is not one the route reads (HTTP 415)."""


# Most specific first: the first class an error is an instance of gives its status.
STATUS_BY_ERROR: list[tuple[type[Exception], int]] = [
    (UnknownIndexError, 404), (UnknownKeyError, 404), (DuplicateKeyError, 409),
    (QueryTooLargeError, 413), (BodyTooLargeError, 413), (AddLimitError, 413), (UnsupportedMediaError, 415),
    (QueryValidationError, 422), (BadQueryError, 400), (RetrievalError, 400),
]


async def user_error(request: Request, exc: Exception) -> JSONResponse:
    status = next(code for cls, code in STATUS_BY_ERROR if isinstance(exc, cls))
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default echoes the input back, which may be megabytes; list the fields only.
    parts = [f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg', 'invalid')}" for e in exc.errors()[:5]]
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)


async def client_gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
    # An everyday event (a closed tab, a cancelled upload): one line, no traceback; nobody reads the answer.
    log.info("client disconnected before the whole request arrived: %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "client disconnected"}, status_code=400)


async def internal_error(request: Request, exc: Exception) -> JSONResponse:
    log.exception("internal error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": INTERNAL_ERROR}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    for cls, _ in STATUS_BY_ERROR:
        app.add_exception_handler(cls, user_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(ClientDisconnect, client_gone)
    app.add_exception_handler(Exception, internal_error)
