"""The app factory and its lifespan: load and check every bundle, warm up, then report ready.

Importing this module opens nothing; models load when the app starts (FastAPI's lifespan),
so tests and tools can import it freely.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version

import onnxruntime as ort
from fastapi import FastAPI

from . import errors, page
from .metrics import Metrics
from .middleware import RequestMiddleware
from .registry import ModelRegistry
from .routers import api_router
from .routers import slides as slide_routes
from .settings import Settings
from .slides.service import SlideService
from .state import open_adapter_store

log = logging.getLogger("histoserve")


def service_version() -> str:
    try:
        return version("histoserve")
    except PackageNotFoundError:
        return "0+unknown"


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    metrics: Metrics = app.state.metrics
    if settings.require_cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError("require_cuda is set but this onnxruntime offers no CUDAExecutionProvider "
                           f"(available: {ort.get_available_providers()})")
    registry = ModelRegistry(settings, metrics)
    # Loading and warm-up are blocking ORT work: keep them off the event loop.
    await asyncio.to_thread(registry.load)
    await asyncio.to_thread(registry.warm_up)
    # Files under state_dir, or Redis shared by every replica (HISTOSERVE_STATE_URL).
    adapters = open_adapter_store(settings)
    await asyncio.to_thread(adapters.load)
    metrics.adapters.set(len(adapters))
    providers = registry.providers()
    metrics.build.info({"version": service_version(), "providers": ",".join(providers) or "none"})
    registry.start()
    app.state.registry, app.state.adapters, app.state.ready = registry, adapters, True
    log.info("ready: %d models %s on %s, %d adapters", len(registry.models), registry.refs(), providers,
             len(adapters))
    # Slide jobs: records under state_dir; jobs an earlier instance left running are marked failed.
    slides = SlideService(settings, metrics)
    await slides.start()
    app.state.slides = slides
    try:
        yield
    finally:
        app.state.ready = False
        await slides.stop()
        await registry.stop()
        log.info("stopped")


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the app; `settings` defaults to the environment's (HISTOSERVE_*)."""
    settings = settings or Settings()
    # docs_url/redoc_url off: page.install serves /docs from vendored Swagger UI (FastAPI's loads a CDN).
    app = FastAPI(title="histoserve", version=service_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Histopathology classification, few-shot adapters and Grad-CAM from ONNX bundles.")
    app.state.settings = settings
    app.state.metrics = Metrics()
    app.state.ready = False
    errors.install(app)
    app.include_router(api_router)
    app.include_router(slide_routes.router)
    page.install(app)
    # Exact path -> body limit in bytes for routes that take more than max_upload_bytes (slide uploads).
    app.state.body_limits = {}
    app.add_middleware(RequestMiddleware, metrics=app.state.metrics, max_body_bytes=settings.max_upload_bytes,
                       body_limits=app.state.body_limits)
    # Slide uploads stream to disk under their own limit, not the default body limit (middleware body_limits).
    if hasattr(app.state, "body_limits"):
        app.state.body_limits["/slides"] = settings.max_slide_bytes + 1024 * 1024  # + multipart envelope
    return app
