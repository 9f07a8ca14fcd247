"""Whole-slide jobs: POST /slides answers 202 with a job; its status, results and Deep Zoom tiles follow.

The slide's own label and macro images, and its metadata beyond size and pixel spacing, never appear
in any answer (service/slides/reader.py keeps only those).
"""
from __future__ import annotations

import asyncio
import io
import math
import re
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from PIL import Image

from ..deps import AdaptersDep, ApiKey, RegistryDep, SettingsDep, adapter_or_404, loaded_state
from ..errors import ServiceError
from ..schemas import SlideDeleted, SlideFileList, SlideJob
from ..settings import MODEL_REF
from ..slides import upload as uploads
from ..slides.jobs import JobManager, JobRecord
from ..slides.service import SlideService

router = APIRouter(prefix="/slides", tags=["slides"])

_FORMATS = {"jpeg": ("jpeg", "image/jpeg"), "png": ("png", "image/png")}


def get_slides(request: Request) -> SlideService:
    return loaded_state(request, "slides", "slide jobs")


SlidesDep = Annotated[SlideService, Depends(get_slides)]


def _number(fields: dict[str, str], name: str, kind, low: float, high: float):
    raw = fields.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = kind(raw.strip())
    except ValueError as e:
        raise ServiceError(422, "invalid_request", f"{name}: {raw[:40]!r} is not a {kind.__name__}") from e
    if isinstance(value, float) and not math.isfinite(value) or not low <= value <= high:
        raise ServiceError(422, "invalid_request", f"{name} must be within {low}..{high}, got {raw[:40]!r}")
    return value


@router.post("", status_code=202, dependencies=[ApiKey], response_model=SlideJob,
             response_model_exclude_unset=True)
async def submit_slide(request: Request, slides: SlidesDep, registry: RegistryDep, adapters: AdaptersDep,
                       settings: SettingsDep) -> dict:
    """Start a slide job from an uploaded `file` or a `path` under HISTOSERVE_SLIDE_ROOT."""
    job_id = JobManager.new_id()
    job_dir = slides.store.job_dir(job_id)

    def destination(extension: str):
        job_dir.mkdir(parents=True, exist_ok=True)
        return job_dir / f"slide{extension}"

    try:
        body = await uploads.receive(request, destination, max_file_bytes=settings.max_slide_bytes)
        fields = body.fields
        if (body.file is None) == (not fields.get("path")):
            raise ServiceError(422, "invalid_request", "give exactly one of `file` (an upload) and `path` "
                               "(a slide under the slide root)")
        mpp = _number(fields, "mpp", float, 0.01, 100.0)
        tile_size = _number(fields, "tile_size", int, 16, 65536)
        level = _number(fields, "level", int, 0, 64)
        model_ref, adapter_id = fields.get("model") or None, fields.get("adapter") or None
        if model_ref is not None and not MODEL_REF.match(model_ref):
            raise ServiceError(404, "model_not_found", f"{model_ref[:80]!r} is not a model name or name/version")
        if adapter_id is not None:
            adapter = adapter_or_404(adapters, adapter_id)
            model = registry.resolve(f"{adapter.model}/{adapter.version}")
            if model_ref is not None and model_ref not in (adapter.model, model.bundle.ref):
                raise ServiceError(422, "model_mismatch", f"adapter {adapter_id} was built on {model.bundle.ref}, "
                                   f"not {model_ref}")
        else:
            adapter, model = None, registry.classifier(model_ref)
        if body.file is not None:
            slide_file, source, relative = body.file, "upload", None
        else:
            relative = fields["path"]
            slide_file, source = slides.resolve_path(relative), "path"
        info = await slides.check_slide(slide_file, mpp)
    except BaseException:
        await asyncio.to_thread(slides.store.delete, job_id)
        raise
    record = JobRecord(id=job_id, status="queued", instance=slides.jobs.instance, model=model.bundle.ref,
                       adapter=adapter.id if adapter else None, source=source, path=relative,
                       slide_file=str(slide_file), mpp=mpp, tile_size=tile_size, level=level, slide=info)
    await slides.submit(record, model, adapter)
    return record.public()


@router.get("/files", response_model=SlideFileList, response_model_exclude_unset=True)
async def list_slide_files(slides: SlidesDep) -> dict:
    """The slides under HISTOSERVE_SLIDE_ROOT, for clients that pick one instead of uploading."""
    return {"files": await asyncio.to_thread(slides.list_files)}


@router.get("/{job_id}", response_model=SlideJob, response_model_exclude_unset=True)
async def get_slide_job(job_id: str, slides: SlidesDep) -> dict:
    """A job's status and progress; its summary once done, its error once failed."""
    return slides.record_or_404(job_id).public()


@router.delete("/{job_id}", dependencies=[ApiKey], response_model=SlideDeleted,
                response_model_exclude_unset=True)
async def delete_slide_job(job_id: str, slides: SlidesDep) -> dict:
    """Cancel a queued or running job; delete a finished one with its files."""
    record = slides.record_or_404(job_id)
    outcome = await slides.delete(record)
    return {"id": record.id, "status": record.status, outcome: True}


@router.get("/{job_id}/tiles.geojson")
async def tiles_geojson(job_id: str, slides: SlidesDep) -> FileResponse:
    """One polygon per tile in level-0 pixels, classified, with every probability as a measurement (QuPath)."""
    path = slides.result_file(slides.record_or_404(job_id), "tiles.geojson")
    return FileResponse(path, media_type="application/geo+json", filename=f"{job_id}.geojson")


@router.get("/{job_id}/tiles.csv")
async def tiles_csv(job_id: str, slides: SlidesDep) -> FileResponse:
    """One row per tile: x, y, width, height (level 0), then one probability column per class."""
    path = slides.result_file(slides.record_or_404(job_id), "tiles.csv")
    return FileResponse(path, media_type="text/csv", filename=f"{job_id}.csv")


@router.get("/{job_id}/heatmap.png")
async def heatmap_png(job_id: str, slides: SlidesDep,
                      class_name: Annotated[str | None, Query(alias="class", max_length=256)] = None) -> Response:
    """Tiles over the thumbnail in their predicted class's colour, or one class's probability (`?class=`)."""
    record = slides.record_or_404(job_id)
    data = await asyncio.to_thread(slides.heatmap, record, class_name)
    return Response(data, media_type="image/png")


@router.get("/{job_id}/thumbnail.png")
async def thumbnail_png(job_id: str, slides: SlidesDep) -> FileResponse:
    """The whole slide, small."""
    return FileResponse(slides.result_file(slides.record_or_404(job_id), "thumbnail.png"), media_type="image/png")


def _dzi(slides: SlideService, job_id: str, kind: str, fmt: str) -> Response:
    generator = slides.deepzoom(slides.record_or_404(job_id), kind)
    return Response(generator.get_dzi(fmt), media_type="application/xml")


_TILE = re.compile(r"^(\d{1,6})_(\d{1,6})\.(jpeg|png)$")


async def _tile(slides: SlideService, job_id: str, kind: str, level: int, name: str) -> Response:
    match = _TILE.match(name)
    if match is None:
        raise ServiceError(404, "tile_not_found", f"{name[:80]!r} is not a tile name of the form COL_ROW.jpeg")
    col, row, fmt = int(match.group(1)), int(match.group(2)), match.group(3)
    record = slides.record_or_404(job_id)
    generator = await asyncio.to_thread(slides.deepzoom, record, kind)

    def render() -> bytes:
        try:
            tile = generator.get_tile(level, (col, row))
        except ValueError as e:
            raise ServiceError(404, "tile_not_found", f"no tile {col}_{row} at level {level}: {e}") from e
        except Exception as e:  # OpenSlide read errors on a damaged slide
            raise ServiceError(422, "unreadable_slide", f"cannot read that tile: {e}") from e
        buf = io.BytesIO()
        if fmt == "jpeg":  # no alpha in JPEG: a transparent overlay tile goes on white, as the library's did
            if tile.mode == "RGBA":
                tile = Image.alpha_composite(Image.new("RGBA", tile.size, (255, 255, 255, 255)), tile)
            tile.convert("RGB").save(buf, format="JPEG", quality=80)
        else:
            tile.save(buf, format="PNG")
        return buf.getvalue()

    return Response(await asyncio.to_thread(render), media_type=_FORMATS[fmt][1])


@router.get("/{job_id}/slide.dzi")
async def slide_dzi(job_id: str, slides: SlidesDep) -> Response:
    """The Deep Zoom descriptor of the slide (OpenSeadragon), JPEG tiles."""
    return await asyncio.to_thread(_dzi, slides, job_id, "slide", "jpeg")


@router.get("/{job_id}/slide_files/{level}/{name}")
async def slide_tile(job_id: str, level: int, name: str, slides: SlidesDep) -> Response:
    """One Deep Zoom tile of the slide: `{col}_{row}.jpeg`."""
    return await _tile(slides, job_id, "slide", level, name)


@router.get("/{job_id}/heatmap.dzi")
async def heatmap_dzi(job_id: str, slides: SlidesDep) -> Response:
    """The Deep Zoom descriptor of the heatmap overlay (transparent PNG tiles; same aspect as the slide)."""
    return await asyncio.to_thread(_dzi, slides, job_id, "heatmap", "png")


@router.get("/{job_id}/heatmap_files/{level}/{name}")
async def heatmap_tile(job_id: str, level: int, name: str, slides: SlidesDep) -> Response:
    """One Deep Zoom tile of the heatmap overlay: `{col}_{row}.png`."""
    return await _tile(slides, job_id, "heatmap", level, name)
