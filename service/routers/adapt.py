"""Few-shot adapters: POST /adapt builds one from a labelled support set; list, show, delete."""
from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile

from .. import inference
from ..adapters import new_adapter
from ..deps import (
    AdaptersDep,
    ApiKey,
    MetricsDep,
    Multipart,
    RegistryDep,
    SettingsDep,
    adapter_or_404,
    check_support,
)
from ..errors import ServiceError
from ..schemas import AdapterInfo, AdapterList, Deleted, error_responses

router = APIRouter(tags=["adapters"])


@router.post("/adapt", status_code=201, dependencies=[ApiKey, Multipart], response_model=AdapterInfo,
             responses=error_responses(401, 404, 413, 415, 422, 503))
async def adapt(
    registry: RegistryDep, adapters: AdaptersDep, settings: SettingsDep, metrics: MetricsDep,
    files: Annotated[list[UploadFile], File(description="support images")],
    labels: Annotated[list[str], Form(description="one label per file, same order")],
    model: Annotated[str | None, Form(description="a bundle with an embedding output")] = None,
    name: Annotated[str | None, Form(description="a name to recognise the adapter by")] = None,
) -> dict:
    """Build a prototype adapter from a labelled support set."""
    labels = check_support(labels, len(files), name, max_classes=settings.adapter_max_classes,
                           max_shots=settings.adapter_max_shots, label_max_length=settings.label_max_length,
                           label_pattern=settings.label_pattern)
    if len(adapters) >= settings.adapter_max_count:
        raise ServiceError(422, "too_many_adapters",
                           f"{len(adapters)} adapters are stored, the limit; delete some first")
    loaded = registry.embedder(model)
    images = await inference.read_images(files, settings.max_image_pixels)
    embeddings = await inference.embed(loaded, images, chunk=settings.max_files)
    adapter = new_adapter(name=name, model=loaded.bundle.name, version=loaded.bundle.version,
                          embeddings=embeddings, labels=labels, distance=loaded.bundle.embedding_distance,
                          temperature=loaded.bundle.embedding_temperature)
    await asyncio.to_thread(adapters.save, adapter)
    metrics.adapters.set(len(adapters))
    return adapter.meta()


@router.get("/adapters", response_model=AdapterList)
async def list_adapters(adapters: AdaptersDep) -> dict:
    """Every stored adapter."""
    return {"adapters": [a.meta() for a in adapters.all()]}


@router.get("/adapters/{adapter_id}", response_model=AdapterInfo, responses=error_responses(404, 422))
async def get_adapter(adapter_id: str, adapters: AdaptersDep) -> dict:
    """One adapter."""
    return adapter_or_404(adapters, adapter_id).meta()


@router.delete("/adapters/{adapter_id}", dependencies=[ApiKey], response_model=Deleted,
               responses=error_responses(401, 404, 422))
async def delete_adapter(adapter_id: str, adapters: AdaptersDep, metrics: MetricsDep) -> dict:
    """Delete an adapter and its file."""
    adapter = adapter_or_404(adapters, adapter_id)
    await asyncio.to_thread(adapters.delete, adapter.id)
    metrics.adapters.set(len(adapters))
    return {"id": adapter.id, "deleted": True}
