"""POST /gradcam: where the model looked, from the bundle's own Grad-CAM graph."""
from __future__ import annotations

import base64
from typing import Annotated

from fastapi import APIRouter, File, Form, Request, Response, UploadFile

from .. import inference
from ..deps import Multipart, RegistryDep, SettingsDep
from ..schemas import GradcamResponse, error_responses

router = APIRouter(tags=["gradcam"])


@router.post("/gradcam", dependencies=[Multipart], response_model=None,
             responses={200: {"model": GradcamResponse, "content": {"image/png": {}},
                        "description": "JSON with the map as a PNG; the blended overlay PNG with Accept: image/png"},
                        **error_responses(404, 413, 415, 422, 503)})
async def gradcam(
    request: Request, registry: RegistryDep, settings: SettingsDep,
    file: Annotated[UploadFile, File(description="one image")],
    model: Annotated[str | None, Form(description="name or name/version; the default model otherwise")] = None,
    target: Annotated[str | None, Form(description="class to explain; the predicted class otherwise")] = None,
) -> Response | dict:
    """Grad-CAM heatmap for one image: PNG overlay with Accept: image/png, JSON otherwise."""
    loaded = registry.classifier(model)
    image = await inference.read_image(file, settings.max_image_pixels)
    result = await inference.gradcam(loaded, image, target)
    if "image/png" in request.headers.get("accept", ""):
        return Response(inference.overlay_png(image, result["map"]), media_type="image/png")
    heatmap = result["map"]
    return {"model": loaded.bundle.name, "version": loaded.bundle.version, "label": result["label"],
            "score": result["score"], "target": result["target"],
            "map_size": [int(heatmap.shape[0]), int(heatmap.shape[1])], "image_size": [image.height, image.width],
            "heatmap_png": base64.b64encode(inference.map_png(heatmap)).decode("ascii")}
