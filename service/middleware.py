"""One ASGI middleware around every HTTP request: request id, body size limit, metrics, access log,
and the last line of defence that turns an unexpected exception into a JSON answer.

A plain ASGI middleware (not BaseHTTPMiddleware) so that it sees the route Starlette matched
(`scope["route"]`) after the call, and can label metrics with the route template.
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.routing import Match

from .metrics import UNMATCHED_ROUTE, Metrics

log = logging.getLogger("histoserve.errors")
access = logging.getLogger("histoserve.access")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Clients may send any token as a method; only these become label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class BodyTooLarge(HTTPException):
    """Raised from `receive`; FastAPI passes HTTPExceptions from body reading through unchanged."""

    def __init__(self, limit: int):
        super().__init__(413, f"the request body exceeds the limit of {limit} bytes")


class RequestMiddleware:
    def __init__(self, app, *, metrics: Metrics, max_body_bytes: int):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    def _route(self, scope) -> str:
        route = scope.get("route")
        if route is None:
            # Answered before routing (for example 413 on Content-Length): match by hand.
            for candidate in scope["app"].router.routes:
                if candidate.matches(scope)[0] is Match.FULL:
                    route = candidate
                    break
        return getattr(route, "path", None) or UNMATCHED_ROUTE

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        headers = Headers(scope=scope)
        incoming = headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        state = {"status": 500, "started": False}

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                state["status"], state["started"] = message["status"], True
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
            return message

        try:
            length = headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                await self._error(send_with_id, 413, "payload_too_large",
                                  f"the request body of {length} bytes exceeds the limit of {self.max_body_bytes} bytes")
            else:
                await self.app(scope, limited_receive, send_with_id)
        except Exception:
            # Anything that got this far is a bug, not bad input: log it with its id, answer, keep serving.
            log.exception("unhandled error in %s %s", scope["method"], scope["path"],
                          extra={"fields": {"request_id": request_id}})
            if not state["started"]:
                await self._error(send_with_id, 500, "internal_error",
                                  f"unexpected error; quote request id {request_id} when reporting it")
        finally:
            self._observe(scope, state["status"], time.perf_counter() - started, request_id)

    async def _error(self, send, status: int, code: str, message: str) -> None:
        self.metrics.errors.labels(kind=code).inc()
        body = json.dumps({"error": {"status": status, "code": code, "message": message, "detail": None}}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    def _observe(self, scope, status: int, seconds: float, request_id: str) -> None:
        route = self._route(scope)
        method = scope["method"] if scope["method"] in _METHODS else "OTHER"
        self.metrics.http_requests.labels(route=route, method=method, status=str(status)).inc()
        self.metrics.http_duration.labels(route=route, method=method).observe(seconds)
        client = scope.get("client")
        access.info("%s %s %d", method, scope["path"], status, extra={"fields": {
            "request_id": request_id, "method": method, "path": scope["path"], "route": route, "status": status,
            "duration_ms": round(seconds * 1000, 2), "client": client[0] if client else None}})
