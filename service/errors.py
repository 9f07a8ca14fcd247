"""One JSON shape for every error, and the handlers that produce it.

    {"error": {"status": 404, "code": "model_not_found", "message": "...", "detail": ...}}

`code` is a short stable word clients can branch on (and the `kind` label of
histoserve_errors_total, so the set of codes stays small and fixed in the source).
The domain layers raise their own exceptions (the registry's `LookupFailed`, imaging's
`ImageError`, batching's `Overloaded`); only this module gives them HTTP statuses.
Unexpected exceptions never reach these handlers: `RequestMiddleware` (middleware.py)
turns them into a 500 in the same shape.
"""
from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .batching import Overloaded
from .imaging import ImageError
from .registry import LookupFailed, ModelNotFound

log = logging.getLogger("histoserve.errors")

# Codes for errors Starlette raises by itself (routing, body parsing).
_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
                 413: "payload_too_large", 415: "unsupported_media_type", 422: "invalid_request",
                 503: "unavailable"}


class ServiceError(Exception):
    """An error with its HTTP status; raised by handlers and services, rendered by `install`."""

    def __init__(self, status: int, code: str, message: str, detail: Any = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.detail = detail
        self.headers = headers


def error_response(request: Request | None, status: int, code: str, message: str, detail: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    if request is not None and (metrics := getattr(request.app.state, "metrics", None)) is not None:
        metrics.errors.labels(kind=code).inc()
    body = {"error": {"status": status, "code": code, "message": message, "detail": detail}}
    return JSONResponse(body, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> list[dict[str, Any]]:
    # exc.errors() may hold raw bytes and exception objects; keep only what is JSON and useful.
    return [{"loc": [str(p) for p in e.get("loc", ())], "message": str(e.get("msg", "")), "type": str(e.get("type", ""))}
            for e in exc.errors()]


async def _service_error(request: Request, exc: ServiceError) -> JSONResponse:
    return error_response(request, exc.status, exc.code, exc.message, exc.detail, exc.headers)


async def _image_error(request: Request, exc: ImageError) -> JSONResponse:
    return error_response(request, exc.status, exc.code, str(exc))


async def _lookup_failed(request: Request, exc: LookupFailed) -> JSONResponse:
    status = 404 if isinstance(exc, ModelNotFound) else 422
    return error_response(request, status, exc.code, exc.message, exc.detail)


async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
    return error_response(request, 503, "overloaded", str(exc), headers={"Retry-After": str(exc.retry_after)})


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    status = exc.status_code
    code = _STATUS_CODES.get(status, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if status == 404 and request.scope.get("route") is None:
        message = f"no route for {request.method} {request.url.path}"
    return error_response(request, status, code, message, headers=getattr(exc, "headers", None))


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    detail = _validation_detail(exc)
    message = "; ".join(f"{'.'.join(d['loc'][1:] or d['loc'])}: {d['message']}" for d in detail) or "invalid request"
    return error_response(request, 422, "invalid_request", message, detail)


def install(app: FastAPI) -> None:
    """Register the handlers; unexpected exceptions are caught by RequestMiddleware (middleware.py)."""
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(ImageError, _image_error)
    app.add_exception_handler(LookupFailed, _lookup_failed)
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
