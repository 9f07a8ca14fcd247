"""One ASGI middleware around every HTTP request: request id, body size limits, metrics, access log,
and the last line of defence that turns an unexpected exception into a JSON answer.

A plain ASGI middleware (not BaseHTTPMiddleware) so that it sees the route Starlette matched
(`scope["route"]`) after the call, and can label metrics with the route template.

Body limits are per route: `body_limits` maps an exact path to its limit in bytes (an upload
route declares its own, e.g. `app.state.body_limits["/slides"] = settings.max_slide_bytes`), and
every other path has `max_body_bytes`. Whenever the service answers before it has read the whole
body (413 from Content-Length or mid-stream, 404 for an unknown route, 401, 415...), it first
reads and discards the rest, up to `drain_bytes` and `drain_seconds`: clients that send the whole
body before reading (urllib, requests, httpx: no `Expect: 100-continue`) would otherwise see
"connection reset" instead of the answer. A body beyond the drain bound gets its answer with
`Connection: close`; a client that asked for `100-continue` has not sent it, so nothing is drained.
"""
from __future__ import annotations

import asyncio
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

    def __init__(self, limit: int, declared: int | None = None):
        size = f" of {declared} bytes" if declared else ""
        super().__init__(413, f"the request body{size} exceeds the limit of {limit} bytes")


class RequestMiddleware:
    def __init__(self, app, *, metrics: Metrics, max_body_bytes: int, body_limits: dict[str, int] | None = None,
                 drain_bytes: int = 64 * 1024 * 1024, drain_seconds: float = 30.0):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        # Kept by reference: routes may declare their limits after the middleware was added.
        self.body_limits = body_limits if body_limits is not None else {}
        self.drain_bytes = drain_bytes
        self.drain_seconds = drain_seconds

    def _route(self, scope) -> str:
        route = scope.get("route")
        if route is None:
            # No route matched (404, 405) or it failed before routing: match by hand.
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
        limit = self.body_limits.get(scope["path"], self.max_body_bytes)
        length = headers.get("content-length")
        has_body = (length is not None and length != "0") or "transfer-encoding" in headers
        # A client waiting for 100 Continue sends nothing until the app reads: there is nothing to drain.
        expects_continue = headers.get("expect", "").lower() == "100-continue"
        state = {"status": 500, "started": False, "body_done": not has_body, "read": False, "drained": False}

        async def drain() -> None:
            """Read and discard the rest of the body, within the bounds; at most once per request."""
            if state["drained"] or state["body_done"] or (expects_continue and not state["read"]):
                return
            state["drained"] = True
            discarded = 0
            try:
                async with asyncio.timeout(self.drain_seconds):
                    while discarded <= self.drain_bytes:
                        message = await receive()
                        if message["type"] != "http.request":
                            state["body_done"] = True
                            return
                        discarded += len(message.get("body", b""))
                        if not message.get("more_body", False):
                            state["body_done"] = True
                            return
            except TimeoutError:
                pass

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                await drain()
                response_headers = MutableHeaders(scope=message)
                # The unread rest must not be parsed as a request; and a draining replica closes each connection
                # after its answer, so no load balancer holds an idle one to it when it stops (nginx 502s a POST
                # sent on a connection closed under it: tests/deploy/test_scale_live.py's rolling stop).
                if not state["body_done"] or getattr(scope["app"].state, "draining", False):
                    response_headers["Connection"] = "close"
                state["status"], state["started"] = message["status"], True
                response_headers["X-Request-ID"] = request_id
            await send(message)

        received = 0
        declared = int(length) if length is not None and length.isdigit() else 0

        async def limited_receive():
            nonlocal received
            if not state["read"] and declared > limit:
                # Only a matched route reads its body, so an unknown route still answers 404 (drained).
                state["read"] = True
                if declared > limit + self.drain_bytes:
                    state["drained"] = True  # too much to read for nothing: answer and close
                await drain()
                raise BodyTooLarge(limit, declared)
            state["read"] = True
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if not message.get("more_body", False):
                    state["body_done"] = True
                if received > limit:
                    await drain()
                    raise BodyTooLarge(limit)
            else:
                state["body_done"] = True
            return message

        try:
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
