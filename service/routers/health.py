"""Operational endpoints: liveness, readiness, Prometheus metrics."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ..deps import MetricsDep
from ..metrics import CONTENT_TYPE
from ..schemas import Health, Readiness
from ..state import state_health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> dict:
    """The process is alive and answering."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(request: Request) -> JSONResponse:
    """The replica can serve its configured default models: loading and warm-up are done, the defaults
    (or, with none configured, at least one bundle) are loaded; 503 otherwise, and from SIGTERM on while
    draining. Refused bundles are listed in `refused` and, unless one is a default, do not make it unready.

    The state store's health is reported but does not decide readiness: /classify works without it,
    and a load balancer must not drop every replica because Redis blinked."""
    state = request.app.state
    registry = getattr(state, "registry", None)
    reasons = registry.unready_reasons() if registry is not None else ["the models are still loading"]
    ready = bool(getattr(state, "ready", False)) and not reasons
    body = {"ready": ready, "unready": reasons,
            "models": registry.refs() if registry else [],
            "refused": registry.refused if registry else {},
            "draining": bool(getattr(state, "draining", False)),
            "state": await asyncio.to_thread(state_health, getattr(state, "adapters", None))}
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format"}})
async def metrics(m: MetricsDep) -> Response:
    """Prometheus text exposition."""
    return Response(m.render(), media_type=CONTENT_TYPE)
