"""Few-shot adapters: POST /adapt builds one from a labelled support set; list, show, delete, export, import."""
from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Response, UploadFile

from .. import inference
from ..adapters import HEADS, new_adapter
from ..adapters.transfer import TransferError, export_adapter, import_adapter
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
from ..schemas import AdapterInfo, AdapterList, AdaptResponse, Deleted, error_responses

router = APIRouter(tags=["adapters"])


@router.post("/adapt", status_code=201, dependencies=[ApiKey, Multipart], response_model=AdaptResponse,
             responses=error_responses(401, 404, 413, 415, 422, 503))
async def adapt(
    registry: RegistryDep, adapters: AdaptersDep, settings: SettingsDep, metrics: MetricsDep,
    files: Annotated[list[UploadFile], File(description="support images")],
    labels: Annotated[list[str], Form(description="one label per file, same order")],
    model: Annotated[str | None, Form(description="a bundle with an embedding output")] = None,
    name: Annotated[str | None, Form(description="a name to recognise the adapter by")] = None,
    head: Annotated[Literal["auto", *HEADS], Form(
        description="auto: the head with the best leave-one-out accuracy on the support set")] = "auto",
    augment: Annotated[Literal["none", "dihedral"] | None, Form(
        description="dihedral: also embed each image's 7 rotations/flips; default HISTOSERVE_ADAPTER_AUGMENT")] = None,
    mpp: Annotated[float | None, Form(ge=0.01, le=100, allow_inf_nan=False, description=(
        "microns per pixel of every support image (both axes): each is resized to the embedding bundle's pixel "
        "size and its input cut from the centre, as /classify does with `mpp`"))] = None,
) -> dict:
    """Build a few-shot adapter from a labelled support set; the answer says which head it chose and why."""
    labels = check_support(labels, len(files), name, max_classes=settings.adapter_max_classes,
                           max_shots=settings.adapter_max_shots, label_max_length=settings.label_max_length,
                           label_pattern=settings.label_pattern)
    if len(adapters) >= settings.adapter_max_count:
        raise ServiceError(422, "too_many_adapters",
                           f"{len(adapters)} adapters are stored, the limit; delete some first")
    loaded = registry.embedder(model)
    augment = augment or settings.adapter_augment
    rescale = inference.rescale_for(loaded, mpp, fallback_mpp=settings.slide_model_mpp,
                                    max_pixels=settings.max_image_pixels)
    embeddings, groups, rescaled = await inference.embed_support(
        loaded, files, augment=augment, max_pixels=settings.max_image_pixels, rescale=rescale)
    rows = [labels[g] for g in groups]
    # fitting and leave-one-out are numpy work: off the event loop
    adapter = await asyncio.to_thread(
        new_adapter, name=name, model=loaded.bundle.name, version=loaded.bundle.version, embeddings=embeddings,
        labels=rows, groups=groups, distance=loaded.bundle.embedding_distance,
        temperature=loaded.bundle.embedding_temperature, augmentation=None if augment == "none" else augment,
        bundle_sha256=inference.model_sha256(loaded.bundle), head=head, parts=loaded.bundle.embedding_parts)
    await asyncio.to_thread(adapters.save, adapter)
    metrics.adapters.set(len(adapters))
    if rescaled is not None:  # only with mpp: what was done to each support image, in upload order
        return {**adapter.meta(), "rescaled": [{"filename": f.filename, **note}
                                               for f, note in zip(files, rescaled, strict=True)]}
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


@router.get("/adapters/{adapter_id}/export", response_class=Response,
            responses={200: {"content": {"application/json": {}},
                             "description": "the adapter as a file for POST /adapters/import"},
                       **error_responses(404)})
async def export(adapter_id: str, adapters: AdaptersDep, registry: RegistryDep) -> Response:
    """The adapter as a portable JSON file, bound to its embedding bundle's name, version and model hash."""
    adapter = adapter_or_404(adapters, adapter_id)
    sha = adapter.bundle_sha256
    if sha is None:  # made before adapters recorded the hash: the loaded bundle vouches for it
        sha = inference.model_sha256(inference.adapter_model(registry, adapter).bundle)
    body = await asyncio.to_thread(export_adapter, adapter, sha)
    return Response(body, media_type="application/json",
                    headers={"Content-Disposition": f'attachment; filename="adapter-{adapter.id}.json"'})


@router.post("/adapters/import", status_code=201, dependencies=[ApiKey, Multipart], response_model=AdapterInfo,
             responses=error_responses(401, 404, 409, 413, 415, 422, 503))
async def import_(
    response: Response, registry: RegistryDep, adapters: AdaptersDep, settings: SettingsDep, metrics: MetricsDep,
    file: Annotated[UploadFile, File(description="a file from GET /adapters/{id}/export")],
) -> dict:
    """Take an exported adapter; its embedding bundle must be loaded here, with the same model hash."""
    try:
        adapter, bundle = await asyncio.to_thread(import_adapter, await file.read())
    except TransferError as e:
        raise ServiceError(422, "invalid_adapter_file", f"not an adapter file this server can take: {e}") from e
    ref = f"{bundle['name']}/{bundle['version']}"
    loaded = registry.models.get((bundle["name"], bundle["version"]))
    if loaded is None:
        raise ServiceError(404, "bundle_not_loaded",
                           f"the adapter was built on the embedding bundle {ref}, which is not loaded here",
                           {"bundle": ref, "loaded": registry.refs()})
    if inference.model_sha256(loaded.bundle) != bundle["model_sha256"]:
        raise ServiceError(422, "bundle_mismatch",
                           f"the adapter was built on a different {ref}: its model.onnx hash differs from the "
                           "loaded one", {"bundle": ref, "file_sha256": bundle["model_sha256"],
                                          "loaded_sha256": inference.model_sha256(loaded.bundle)})
    adapter.bundle_sha256 = bundle["model_sha256"]
    existing = adapters.get(adapter.id)
    if existing is not None:
        if export_adapter(existing, bundle["model_sha256"]) == export_adapter(adapter, bundle["model_sha256"]):
            response.status_code = 200  # the same adapter again: nothing to do
            return existing.meta()
        raise ServiceError(409, "adapter_exists", f"another adapter with id {adapter.id} exists; delete it first")
    if len(adapters) >= settings.adapter_max_count:
        raise ServiceError(422, "too_many_adapters",
                           f"{len(adapters)} adapters are stored, the limit; delete some first")
    await asyncio.to_thread(adapters.save, adapter)
    metrics.adapters.set(len(adapters))
    return adapter.meta()
