"""Dependencies the routers declare, as `Annotated` aliases: settings, models, adapters, API key;
and the request checks that answer 4xx (file counts, support sets).

The dependencies are `async def` although they never await: FastAPI runs a plain `def` dependency in
a worker thread, and these lookups are cheaper than the hop (five of them per /classify request)."""
from __future__ import annotations

import re
import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from .adapters import Adapter, AdapterStore
from .errors import ServiceError
from .metrics import Metrics
from .registry import ModelRegistry
from .settings import Settings


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def loaded_state(request: Request, name: str, what: str):
    """`app.state.<name>`, set by the lifespan once loaded; 503 + Retry-After until then."""
    value = getattr(request.app.state, name, None)
    if value is None:
        raise ServiceError(503, "not_ready", f"the {what} are still loading", headers={"Retry-After": "5"})
    return value


async def get_registry(request: Request) -> ModelRegistry:
    return loaded_state(request, "registry", "models")


async def get_adapters(request: Request) -> AdapterStore:
    return loaded_state(request, "adapters", "adapters")


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
AdaptersDep = Annotated[AdapterStore, Depends(get_adapters)]


async def require_api_key(settings: SettingsDep,
                          x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None) -> None:
    """When an API key is configured, the request must carry it in X-API-Key."""
    if settings.api_key is None:
        return
    expected = settings.api_key.get_secret_value().encode()
    if x_api_key is None or not secrets.compare_digest(x_api_key.encode(), expected):
        raise ServiceError(401, "unauthorized", "a valid X-API-Key header is required for this request",
                           headers={"WWW-Authenticate": "ApiKey"})


async def require_multipart(request: Request) -> None:
    """Uploads come as multipart/form-data; say so plainly instead of 'field required'."""
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise ServiceError(415, "unsupported_media_type",
                           f"expected a multipart/form-data body, got {content_type or 'no content type'!r}")


ApiKey = Depends(require_api_key)
Multipart = Depends(require_multipart)


def check_file_count(count: int, limit: int) -> None:
    if count > limit:
        raise ServiceError(413, "too_many_files", f"{count} files in one request; the limit is {limit}")


def adapter_or_404(adapters: AdapterStore, adapter_id: str) -> Adapter:
    adapter = adapters.get(adapter_id)
    if adapter is None:
        raise ServiceError(404, "adapter_not_found", f"no adapter with id {adapter_id!r}")
    return adapter


def check_support(labels: list[str], n_files: int, name: str | None, *, max_classes: int, max_shots: int,
                  label_max_length: int, label_pattern: str) -> list[str]:
    """The support set's labels, checked against the limits; each broken rule is a 422 saying which."""

    def bad(message: str, detail: object = None) -> ServiceError:
        return ServiceError(422, "invalid_support_set", message, detail)

    # `labels=a,b,c` in one field is the same as three fields: friendlier for curl users.
    if len(labels) == 1 and n_files > 1 and "," in labels[0]:
        labels = [s.strip() for s in labels[0].split(",")]
    if n_files == 0:
        raise bad("the support set has no images")
    if len(labels) != n_files:
        raise bad(f"{n_files} files but {len(labels)} labels; give one label per file, in the same order")
    pattern = re.compile(label_pattern)
    for text in [*labels, *([name] if name is not None else [])]:
        if not text or len(text) > label_max_length or not pattern.fullmatch(text):
            raise bad(f"label or name {text[:80]!r} must be 1..{label_max_length} characters matching {label_pattern}")
    classes = list(dict.fromkeys(labels))
    if len(classes) < 2:
        raise bad(f"the support set has {len(classes)} class; at least 2 are needed", {"classes": classes})
    if len(classes) > max_classes:
        raise bad(f"the support set has {len(classes)} classes; the limit is {max_classes}")
    shots = {c: labels.count(c) for c in classes}
    over = {c: n for c, n in shots.items() if n > max_shots}
    if over:
        raise bad(f"at most {max_shots} shots per class", {"shots": over})
    return labels
