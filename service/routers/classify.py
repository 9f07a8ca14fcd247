"""POST /classify: images -> labels, with a bundle's classifier or a few-shot adapter's prototypes."""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, UploadFile

from .. import inference
from ..deps import (
    AdaptersDep,
    MetricsDep,
    Multipart,
    RegistryDep,
    SettingsDep,
    adapter_or_404,
    check_file_count,
)
from ..errors import ServiceError
from ..schemas import ClassifyResponse, error_responses

router = APIRouter(tags=["classify"])

MPP_HELP = ("microns per pixel of the uploaded images (both axes): they are resized to the model's pixel size "
            "and the model's input is cut from their centre; without it, images are resized to the input as sent")
TTA_HELP = ("dihedral: each image is classified in its 8 rotations and flips and the probabilities averaged "
            "(8x the compute; the out-of-distribution flag reads the image as sent)")


@router.post("/classify", dependencies=[Multipart], response_model=ClassifyResponse,
             responses=error_responses(404, 413, 415, 422, 503))
async def classify(
    registry: RegistryDep, adapters: AdaptersDep, settings: SettingsDep, metrics: MetricsDep,
    files: Annotated[list[UploadFile], File(description="one or more images")],
    model: Annotated[str | None, Form(description="name or name/version; the default model otherwise")] = None,
    top_k: Annotated[int, Form(ge=1, le=1000, description="classes listed per image")] = 5,
    adapter: Annotated[str | None, Form(description="adapter id from POST /adapt")] = None,
    mpp: Annotated[float | None, Form(ge=0.01, le=100, allow_inf_nan=False, description=MPP_HELP)] = None,
    tta: Annotated[Literal["none", "dihedral"], Form(description=TTA_HELP)] = "none",
) -> dict:
    """Classify one or more images."""
    check_file_count(len(files), settings.max_files)
    views = inference.DIHEDRAL if tta == "dihedral" else (None,)
    if tta != "none":
        if adapter is not None:
            raise ServiceError(422, "tta_with_adapter", "tta applies to a bundle's own classifier, not to an adapter")
        if len(files) * len(views) > settings.max_queue:
            raise ServiceError(422, "too_many_files_for_tta",
                               f"with tta={tta} each image is classified {len(views)} times: at most "
                               f"{settings.max_queue // len(views)} images per request (HISTOSERVE_MAX_QUEUE "
                               f"{settings.max_queue}), got {len(files)}")
    if adapter is not None:
        chosen = adapter_or_404(adapters, adapter)
        loaded = inference.adapter_model(registry, chosen)  # 404 naming its bundle when that is gone
        if model is not None and model not in (chosen.model, loaded.bundle.ref):
            raise ServiceError(422, "model_mismatch", f"adapter {adapter} was built on {loaded.bundle.ref}, not {model}")
    else:
        chosen, loaded = None, registry.classifier(model)
    rescale = inference.rescale_for(loaded, mpp, fallback_mpp=settings.slide_model_mpp,
                                    max_pixels=settings.max_image_pixels)
    x, rescaled = await inference.prepare(loaded, files, settings.max_image_pixels, rescale, views)
    if chosen is None:
        results = await inference.classify(loaded, x, top_k, len(views))
    else:
        results = await inference.classify_with_adapter(loaded, chosen, x, top_k)
    metrics.images_classified.labels(model=loaded.bundle.name, version=str(loaded.bundle.version)).inc(len(files))
    answers = [{"filename": f.filename, **r} for f, r in zip(files, results, strict=True)]
    for answer, note in zip(answers, rescaled or (), strict=False):  # only with mpp: what was done to the image
        answer["rescaled"] = note
    return {"model": loaded.bundle.name, "version": loaded.bundle.version,
            "adapter": {"id": chosen.id, "name": chosen.name} if chosen else None, "tta": tta, "results": answers}
