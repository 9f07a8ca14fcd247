"""The browser side, served by the service itself: the viewer page at `/`, its static files under
`/static`, and Swagger UI at `/docs` from vendored assets.

Hospital networks are often air-gapped, so nothing here points at a CDN: FastAPI's default
`/docs` loads Swagger UI from one and renders blank offline. The vendored files (with their
licences) live in `service/static/vendor/`; its README says where each came from.
"""
from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
SWAGGER = "/static/vendor/swagger-ui"


def install(app: FastAPI) -> None:
    """Mount `/static` and add `/` and `/docs` (build the app with docs_url=None, redoc_url=None)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} API",
                                   swagger_js_url=f"{SWAGGER}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{SWAGGER}/swagger-ui.css",
                                   swagger_favicon_url=f"{SWAGGER}/favicon-32x32.png")
